//! CreateFileset, DescribeFilesets, GetFileset, ModifyFileset,
//! DeleteFileset, SetFilesetQuota, CancelFilesetQuota: parameters and
//! replies as the NAS 2017-06-26 models have them.

use cpfs_controlplane::clock::format_utc;
use cpfs_controlplane::filesets::{Fileset, FilesetChange, NewFileset, MAX_PATH_LEN};
use cpfs_controlplane::ControlPlane;
use serde_json::{json, Map, Value};

use super::object;
use crate::error::ApiError;
use crate::params::Params;

/// At most this many ids in one `FsetIds` filter (the reference's bound).
const MAX_FILTER_IDS: usize = 10;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct FilesetFilter {
    pub ids: Option<Vec<String>>,
    pub path: Option<String>,
    pub description: Option<String>,
    pub quota_exists: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderBy {
    FileCountLimit,
    SizeLimit,
    FileCountUsage,
    SpaceUsage,
}

#[derive(Debug)]
pub enum FilesetCommand {
    Create(NewFileset),
    Describe {
        fs_id: String,
        filter: FilesetFilter,
        order: Option<(OrderBy, bool)>,
        max_results: usize,
        /// Where the page starts (the NextToken of the previous page).
        offset: usize,
    },
    Get {
        fs_id: String,
        fset_id: String,
    },
    Change {
        fs_id: String,
        fset_id: String,
        change: FilesetChange,
        dry_run: bool,
        client_token: Option<String>,
    },
}

fn size(p: &Params, name: &str) -> Result<Option<u64>, ApiError> {
    Ok(p.int(name, 1, i64::MAX)?.map(|v| v as u64))
}

fn parse_filter(p: &Params) -> Result<FilesetFilter, ApiError> {
    let mut f = FilesetFilter::default();
    for (key, value) in p.key_values("Filters", 10)? {
        match key.as_str() {
            "FsetIds" => {
                let ids: Vec<String> = value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if ids.len() > MAX_FILTER_IDS {
                    return Err(ApiError::invalid(
                        "Filters",
                        format!("FsetIds holds at most {MAX_FILTER_IDS} ids"),
                    ));
                }
                f.ids = Some(ids);
            }
            "FileSystemPath" => f.path = Some(value),
            "Description" => f.description = Some(value),
            "QuotaExists" => {
                f.quota_exists = Some(match value.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::invalid(
                            "Filters",
                            "QuotaExists must be true or false",
                        ))
                    }
                })
            }
            other => {
                return Err(ApiError::invalid(
                    "Filters",
                    format!(
                        "unknown filter key \"{}\"; use FsetIds, FileSystemPath, Description or QuotaExists",
                        other.chars().take(64).collect::<String>()
                    ),
                ))
            }
        }
    }
    Ok(f)
}

pub fn parse(action: &str, p: &Params) -> Result<Option<FilesetCommand>, ApiError> {
    let fs_id = || p.required_string("FileSystemId", 64);
    let fset_id = || p.required_string("FsetId", 64);
    let token = || p.string("ClientToken", 64);
    let change = |change| -> Result<FilesetCommand, ApiError> {
        Ok(FilesetCommand::Change {
            fs_id: fs_id()?,
            fset_id: fset_id()?,
            change,
            dry_run: p.flag("DryRun")?,
            client_token: token()?,
        })
    };
    Ok(Some(match action {
        "CreateFileset" => FilesetCommand::Create(NewFileset {
            fs_id: fs_id()?,
            path: p.required_string("FileSystemPath", MAX_PATH_LEN)?,
            description: p.string("Description", 128)?,
            deletion_protection: p.flag("DeletionProtection")?,
            size_limit: size(p, "Quota.SizeLimit")?,
            file_limit: size(p, "Quota.FileCountLimit")?,
            dry_run: p.flag("DryRun")?,
            client_token: token()?,
        }),
        "DescribeFilesets" => {
            let order = match p.choice(
                "OrderByField",
                &[
                    "FileCountLimit",
                    "SizeLimit",
                    "FileCountUsage",
                    "SpaceUsage",
                ],
            )? {
                None => None,
                Some(field) => {
                    let by = match field.as_str() {
                        "FileCountLimit" => OrderBy::FileCountLimit,
                        "SizeLimit" => OrderBy::SizeLimit,
                        "FileCountUsage" => OrderBy::FileCountUsage,
                        _ => OrderBy::SpaceUsage,
                    };
                    let desc = p.choice("SortOrder", &["asc", "desc"])?.as_deref() == Some("desc");
                    Some((by, desc))
                }
            };
            let offset = match p.opt("NextToken") {
                None => 0,
                Some(t) => t
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= 100_000)
                    .ok_or_else(|| {
                        ApiError::invalid("NextToken", "NextToken is not one this service gave")
                    })?,
            };
            FilesetCommand::Describe {
                fs_id: fs_id()?,
                filter: parse_filter(p)?,
                order,
                max_results: p.int("MaxResults", 10, 100)?.unwrap_or(20) as usize,
                offset,
            }
        }
        "GetFileset" => FilesetCommand::Get {
            fs_id: fs_id()?,
            fset_id: fset_id()?,
        },
        "ModifyFileset" => change(FilesetChange::Modify {
            description: p.string("Description", 128)?,
            deletion_protection: p.bool("DeletionProtection")?,
        })?,
        "DeleteFileset" => change(FilesetChange::Delete)?,
        "SetFilesetQuota" => change(FilesetChange::SetQuota {
            size_limit: size(p, "SizeLimit")?,
            file_limit: size(p, "FileCountLimit")?,
        })?,
        "CancelFilesetQuota" => change(FilesetChange::CancelQuota)?,
        _ => return Ok(None),
    }))
}

fn matches(f: &Fileset, filter: &FilesetFilter) -> bool {
    filter.ids.as_ref().is_none_or(|ids| ids.contains(&f.id))
        && filter
            .path
            .as_ref()
            .is_none_or(|p| f.path.contains(p.as_str()))
        && filter
            .description
            .as_ref()
            .is_none_or(|d| f.description.contains(d.as_str()))
        && filter
            .quota_exists
            .is_none_or(|q| q == (f.size_limit.is_some() || f.file_limit.is_some()))
}

fn sort_key(f: &Fileset, by: OrderBy) -> u64 {
    match by {
        OrderBy::FileCountLimit => f.file_limit.unwrap_or(u64::MAX),
        OrderBy::SizeLimit => f.size_limit.unwrap_or(u64::MAX),
        OrderBy::FileCountUsage => f.files,
        OrderBy::SpaceUsage => f.used_bytes,
    }
}

fn quota(f: &Fileset) -> Value {
    let mut q = Map::new();
    if let Some(s) = f.size_limit {
        q.insert("SizeLimit".into(), json!(s));
    }
    if let Some(c) = f.file_limit {
        q.insert("FileCountLimit".into(), json!(c));
    }
    Value::Object(q)
}

fn entry(f: &Fileset) -> Value {
    json!({
        "FsetId": f.id,
        "FileSystemId": f.fs_id,
        "FileSystemPath": f.path,
        "Description": f.description,
        "Status": f.status,
        "CreateTime": format_utc(f.created_at),
        "UpdateTime": format_utc(f.updated_at),
        "DeletionProtection": f.deletion_protection,
        "FileCountUsage": f.files,
        "SpaceUsage": f.used_bytes,
        "Quota": quota(f),
    })
}

/// GetFileset's times: `yyyy-MM-dd HH:mm:ss` (UTC), as its model says.
fn plain_time(unix: i64) -> String {
    format_utc(unix)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

pub async fn execute(
    cp: &ControlPlane,
    account: &str,
    cmd: FilesetCommand,
) -> Result<Map<String, Value>, ApiError> {
    match cmd {
        FilesetCommand::Create(req) => {
            let id = cp.create_fileset(account, req).await?;
            Ok(object(json!({ "FsetId": id })))
        }
        FilesetCommand::Describe {
            fs_id,
            filter,
            order,
            max_results,
            offset,
        } => {
            let mut list: Vec<Fileset> = cp
                .filesets(account, &fs_id)
                .await?
                .into_iter()
                .filter(|f| matches(f, &filter))
                .collect();
            if let Some((by, desc)) = order {
                list.sort_by_key(|f| sort_key(f, by));
                if desc {
                    list.reverse();
                }
            }
            let page: Vec<Value> = list
                .iter()
                .skip(offset)
                .take(max_results)
                .map(entry)
                .collect();
            let end = offset + page.len();
            let next = if end < list.len() {
                end.to_string()
            } else {
                String::new()
            };
            Ok(object(json!({
                "FileSystemId": fs_id,
                "NextToken": next,
                "Entries": { "Entrie": page },
            })))
        }
        FilesetCommand::Get { fs_id, fset_id } => {
            let f = cp.fileset(account, &fs_id, &fset_id).await?;
            let mut data = entry(&f);
            if let Value::Object(m) = &mut data {
                m.insert("CreateTime".into(), json!(plain_time(f.created_at)));
                m.insert("UpdateTime".into(), json!(plain_time(f.updated_at)));
            }
            Ok(object(json!({ "Data": data })))
        }
        FilesetCommand::Change {
            fs_id,
            fset_id,
            change,
            dry_run,
            client_token,
        } => {
            cp.change_fileset(
                account,
                &fs_id,
                &fset_id,
                change,
                dry_run,
                client_token.as_deref(),
            )
            .await?;
            Ok(Map::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::params;

    #[test]
    fn create_reads_the_flattened_quota() {
        let p = params(&[
            ("FileSystemId", "cpfs-1"),
            ("FileSystemPath", "/a/"),
            ("Quota.SizeLimit", "10737418240"),
            ("Quota.FileCountLimit", "10000"),
            ("DeletionProtection", "True"),
        ]);
        let Some(FilesetCommand::Create(c)) = parse("CreateFileset", &p).unwrap() else {
            panic!("not a create");
        };
        assert_eq!(
            (c.size_limit, c.file_limit, c.deletion_protection),
            (Some(10 << 30), Some(10_000), true)
        );
    }

    #[test]
    fn describe_checks_filters_paging_and_order() {
        let p = params(&[
            ("FileSystemId", "cpfs-1"),
            ("Filters.1.Key", "FsetIds"),
            ("Filters.1.Value", "fset-a,fset-b"),
            ("Filters.2.Key", "QuotaExists"),
            ("Filters.2.Value", "true"),
            ("OrderByField", "SpaceUsage"),
            ("SortOrder", "desc"),
            ("MaxResults", "10"),
            ("NextToken", "10"),
        ]);
        let Some(FilesetCommand::Describe {
            filter,
            order,
            max_results,
            offset,
            ..
        }) = parse("DescribeFilesets", &p).unwrap()
        else {
            panic!("not a describe");
        };
        assert_eq!(filter.ids, Some(vec!["fset-a".into(), "fset-b".into()]));
        assert_eq!(filter.quota_exists, Some(true));
        assert_eq!(order, Some((OrderBy::SpaceUsage, true)));
        assert_eq!((max_results, offset), (10, 10));
        for (k, v) in [
            ("MaxResults", "9"),
            ("MaxResults", "101"),
            ("NextToken", "abc"),
            ("OrderByField", "Name"),
        ] {
            let p = params(&[("FileSystemId", "cpfs-1"), (k, v)]);
            let e = parse("DescribeFilesets", &p).unwrap_err();
            assert_eq!(e.code(), format!("InvalidParameter.{k}"), "{k}={v}");
        }
        let p = params(&[
            ("FileSystemId", "cpfs-1"),
            ("Filters.1.Key", "Name"),
            ("Filters.1.Value", "x"),
        ]);
        assert_eq!(
            parse("DescribeFilesets", &p).unwrap_err().code(),
            "InvalidParameter.Filters"
        );
    }

    #[test]
    fn changes_need_both_ids() {
        for action in [
            "GetFileset",
            "ModifyFileset",
            "DeleteFileset",
            "SetFilesetQuota",
            "CancelFilesetQuota",
        ] {
            let p = params(&[("FileSystemId", "cpfs-1")]);
            let e = parse(action, &p).unwrap_err();
            assert_eq!(e.code(), "MissingParameter", "{action}");
            assert!(e.to_string().contains("FsetId"), "{action}");
        }
    }

    #[test]
    fn get_times_have_no_t_and_no_z() {
        assert_eq!(plain_time(0), "1970-01-01 00:00:00");
    }
}
