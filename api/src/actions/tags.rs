//! TagResources, UntagResources, ListTagResources.

use cpfs_controlplane::ControlPlane;
use serde_json::{json, Map, Value};

use super::object;
use crate::error::ApiError;
use crate::params::Params;

const LIST_PAGE: i64 = 50;

#[derive(Debug)]
pub enum TagCommand {
    Tag {
        resource_type: String,
        resource_ids: Vec<String>,
        tags: Vec<(String, String)>,
    },
    Untag {
        resource_type: String,
        resource_ids: Vec<String>,
        /// None: remove every tag (`All=true`).
        keys: Option<Vec<String>>,
    },
    List {
        resource_type: String,
        resource_ids: Vec<String>,
        tags: Vec<(String, String)>,
        offset: i64,
    },
}

fn resource_ids(p: &Params, required: bool) -> Result<Vec<String>, ApiError> {
    let ids = p.list("ResourceId", 50)?;
    if required && ids.is_empty() {
        return Err(ApiError::MissingParameter("ResourceId.1".into()));
    }
    Ok(ids)
}

pub fn parse(action: &str, p: &Params) -> Result<Option<TagCommand>, ApiError> {
    let resource_type = || p.required_string("ResourceType", 32);
    Ok(Some(match action {
        "TagResources" => {
            let tags = p.key_values("Tag", 20)?;
            if tags.is_empty() {
                return Err(ApiError::MissingParameter("Tag.1.Key".into()));
            }
            TagCommand::Tag {
                resource_type: resource_type()?,
                resource_ids: resource_ids(p, true)?,
                tags,
            }
        }
        "UntagResources" => {
            let keys = p.list("TagKey", 20)?;
            let all = p.flag("All")?;
            if all && !keys.is_empty() {
                return Err(ApiError::invalid(
                    "All",
                    "All=true cannot be combined with TagKey.N",
                ));
            }
            if !all && keys.is_empty() {
                return Err(ApiError::MissingParameter("TagKey.1".into()));
            }
            TagCommand::Untag {
                resource_type: resource_type()?,
                resource_ids: resource_ids(p, true)?,
                keys: if all { None } else { Some(keys) },
            }
        }
        "ListTagResources" => {
            let offset = match p.opt("NextToken") {
                None => 0,
                Some(t) => t.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::invalid("NextToken", "NextToken is not one this service issued")
                })?,
            };
            TagCommand::List {
                resource_type: resource_type()?,
                resource_ids: resource_ids(p, false)?,
                tags: p.key_values("Tag", 20)?,
                offset,
            }
        }
        _ => return Ok(None),
    }))
}

pub async fn execute(
    cp: &ControlPlane,
    account: &str,
    cmd: TagCommand,
) -> Result<Map<String, Value>, ApiError> {
    match cmd {
        TagCommand::Tag {
            resource_type,
            resource_ids,
            tags,
        } => {
            cp.tag_resources(account, &resource_type, &resource_ids, &tags)
                .await?;
            Ok(Map::new())
        }
        TagCommand::Untag {
            resource_type,
            resource_ids,
            keys,
        } => {
            cp.untag_resources(account, &resource_type, &resource_ids, keys.as_deref())
                .await?;
            Ok(Map::new())
        }
        TagCommand::List {
            resource_type,
            resource_ids,
            tags,
            offset,
        } => {
            let (rows, next) = cp
                .list_tag_resources(
                    account,
                    &resource_type,
                    &resource_ids,
                    &tags,
                    offset,
                    LIST_PAGE,
                )
                .await?;
            let items: Vec<Value> = rows
                .iter()
                .map(|t| json!({"ResourceId": t.resource_id, "ResourceType": t.resource_type, "TagKey": t.key, "TagValue": t.value}))
                .collect();
            Ok(object(json!({
                "NextToken": next.map(|n| n.to_string()).unwrap_or_default(),
                "TagResources": { "TagResource": items },
            })))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::params;

    #[test]
    fn untag_needs_keys_or_all_but_not_both() {
        let base = [("ResourceType", "filesystem"), ("ResourceId.1", "cpfs-1")];
        assert_eq!(
            parse("UntagResources", &params(&base)).unwrap_err().code(),
            "MissingParameter"
        );
        let mut both = base.to_vec();
        both.extend([("All", "true"), ("TagKey.1", "k")]);
        assert_eq!(
            parse("UntagResources", &params(&both)).unwrap_err().code(),
            "InvalidParameter.All"
        );
        let mut all = base.to_vec();
        all.push(("All", "True"));
        assert!(matches!(
            parse("UntagResources", &params(&all)).unwrap(),
            Some(TagCommand::Untag { keys: None, .. })
        ));
    }

    #[test]
    fn next_token_must_be_ours() {
        let p = params(&[("ResourceType", "filesystem"), ("NextToken", "abc")]);
        assert_eq!(
            parse("ListTagResources", &p).unwrap_err().code(),
            "InvalidParameter.NextToken"
        );
    }
}
