//! SetUserQuota, DescribeUserQuotas, CancelUserQuota: a CPFS extension
//! (not in the NAS reference) for user and group quotas per file system.
//! Names follow the NAS API's own quota actions (SetDirQuota's `UserType`
//! `Uid`/`Gid`, `UserId`, `SizeLimit`, `FileCountLimit`; DescribeDirQuotas'
//! `SizeReal`, `FileCountReal` for usage).

use cpfs_controlplane::user_quotas::{UserQuota, UserType, MAX_ID};
use cpfs_controlplane::ControlPlane;
use serde_json::{json, Map, Value};

use super::object;
use crate::error::ApiError;
use crate::params::Params;

#[derive(Debug)]
pub enum UserQuotaCommand {
    Set {
        fs_id: String,
        owner: (UserType, u32),
        size_limit: Option<u64>,
        file_limit: Option<u64>,
    },
    Cancel {
        fs_id: String,
        owner: (UserType, u32),
    },
    Describe {
        fs_id: String,
        filter: Option<(UserType, Option<u32>)>,
        page_number: i64,
        page_size: i64,
    },
}

fn user_type(p: &Params, required: bool) -> Result<Option<UserType>, ApiError> {
    let t = p.choice("UserType", &["Uid", "Gid"])?;
    if required && t.is_none() {
        return Err(ApiError::MissingParameter("UserType".into()));
    }
    Ok(t.as_deref().and_then(UserType::parse))
}

fn user_id(p: &Params) -> Result<Option<u32>, ApiError> {
    Ok(p.int("UserId", 0, i64::from(MAX_ID))?.map(|v| v as u32))
}

fn owner(p: &Params) -> Result<(UserType, u32), ApiError> {
    let t = user_type(p, true)?.ok_or_else(|| ApiError::MissingParameter("UserType".into()))?;
    let id = user_id(p)?.ok_or_else(|| ApiError::MissingParameter("UserId".into()))?;
    Ok((t, id))
}

pub fn parse(action: &str, p: &Params) -> Result<Option<UserQuotaCommand>, ApiError> {
    let fs_id = || p.required_string("FileSystemId", 64);
    Ok(Some(match action {
        "SetUserQuota" => UserQuotaCommand::Set {
            fs_id: fs_id()?,
            owner: owner(p)?,
            size_limit: p.int("SizeLimit", 1, i64::MAX)?.map(|v| v as u64),
            file_limit: p.int("FileCountLimit", 1, i64::MAX)?.map(|v| v as u64),
        },
        "CancelUserQuota" => UserQuotaCommand::Cancel {
            fs_id: fs_id()?,
            owner: owner(p)?,
        },
        "DescribeUserQuotas" => {
            let (page_number, page_size) = p.page(10, 100)?;
            let id = user_id(p)?;
            let filter = match (user_type(p, false)?, id) {
                (Some(t), id) => Some((t, id)),
                (None, Some(_)) => {
                    return Err(ApiError::MissingParameter("UserType".into()));
                }
                (None, None) => None,
            };
            UserQuotaCommand::Describe {
                fs_id: fs_id()?,
                filter,
                page_number,
                page_size,
            }
        }
        _ => return Ok(None),
    }))
}

fn item(q: &UserQuota) -> Value {
    let mut v = json!({
        "UserType": q.user_type.as_str(),
        "UserId": q.user_id.to_string(),
        "SizeReal": q.used_bytes,
        "FileCountReal": q.files,
    });
    if let Value::Object(m) = &mut v {
        if let Some(s) = q.size_limit {
            m.insert("SizeLimit".into(), json!(s));
        }
        if let Some(f) = q.file_limit {
            m.insert("FileCountLimit".into(), json!(f));
        }
    }
    v
}

pub async fn execute(
    cp: &ControlPlane,
    account: &str,
    cmd: UserQuotaCommand,
) -> Result<Map<String, Value>, ApiError> {
    match cmd {
        UserQuotaCommand::Set {
            fs_id,
            owner,
            size_limit,
            file_limit,
        } => {
            cp.set_user_quota(account, &fs_id, owner, size_limit, file_limit)
                .await?;
            Ok(Map::new())
        }
        UserQuotaCommand::Cancel { fs_id, owner } => {
            cp.cancel_user_quota(account, &fs_id, owner).await?;
            Ok(Map::new())
        }
        UserQuotaCommand::Describe {
            fs_id,
            filter,
            page_number,
            page_size,
        } => {
            let all = cp.user_quotas(account, &fs_id, filter).await?;
            let skip = ((page_number - 1) * page_size) as usize;
            let page: Vec<Value> = all
                .iter()
                .skip(skip)
                .take(page_size as usize)
                .map(item)
                .collect();
            Ok(object(json!({
                "FileSystemId": fs_id,
                "TotalCount": all.len(),
                "PageNumber": page_number,
                "PageSize": page_size,
                "UserQuotas": { "UserQuota": page },
            })))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::params;

    #[test]
    fn owners_are_a_type_and_an_id() {
        let p = params(&[
            ("FileSystemId", "cpfs-1"),
            ("UserType", "Gid"),
            ("UserId", "100"),
            ("SizeLimit", "1024"),
        ]);
        let Some(UserQuotaCommand::Set {
            owner, size_limit, ..
        }) = parse("SetUserQuota", &p).unwrap()
        else {
            panic!("not a set");
        };
        assert_eq!((owner, size_limit), ((UserType::Gid, 100), Some(1024)));
        for (k, v, code) in [
            ("UserType", "Project", "InvalidParameter.UserType"),
            ("UserId", "-1", "InvalidParameter.UserId"),
            ("UserId", "4294967295", "InvalidParameter.UserId"),
            ("SizeLimit", "0", "InvalidParameter.SizeLimit"),
        ] {
            let mut pairs = vec![
                ("FileSystemId", "cpfs-1"),
                ("UserType", "Uid"),
                ("UserId", "1"),
            ];
            pairs.retain(|(n, _)| *n != k);
            pairs.push((k, v));
            let e = parse("SetUserQuota", &params(&pairs)).unwrap_err();
            assert_eq!(e.code(), code, "{k}={v}");
        }
        let p = params(&[("FileSystemId", "cpfs-1"), ("UserId", "1")]);
        assert_eq!(
            parse("DescribeUserQuotas", &p).unwrap_err().code(),
            "MissingParameter"
        );
    }
}
