//! Tags on resources (TagResources, UntagResources, ListTagResources, and
//! the Tags of DescribeFileSystems).

use std::collections::HashMap;

use cpfs_store::placeholders;
use sqlx::{Any, Row, Transaction};

use crate::error::{Error, Result};
use crate::ControlPlane;

pub const FILESYSTEM: &str = "filesystem";
/// Tags one resource may carry.
pub const MAX_TAGS_PER_RESOURCE: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagResource {
    pub resource_id: String,
    pub resource_type: String,
    pub key: String,
    pub value: String,
}

pub fn validate_tags(tags: &[(String, String)]) -> Result<()> {
    if tags.len() > MAX_TAGS_PER_RESOURCE {
        return Err(Error::invalid("Tag", "at most 20 tags per request"));
    }
    let mut seen = std::collections::HashSet::new();
    for (k, v) in tags {
        validate_key(k)?;
        if v.chars().count() > 128 || v.starts_with("http://") || v.starts_with("https://") {
            return Err(Error::invalid(
                "Tag.Value",
                "tag values are at most 128 characters and must not start with http:// or https://",
            ));
        }
        if !seen.insert(k.as_str()) {
            return Err(Error::invalid(
                "Tag.Key",
                format!("tag key {k} is repeated"),
            ));
        }
    }
    Ok(())
}

pub fn validate_key(k: &str) -> Result<()> {
    if k.is_empty()
        || k.chars().count() > 128
        || k.starts_with("aliyun")
        || k.starts_with("acs:")
        || k.starts_with("http://")
        || k.starts_with("https://")
    {
        return Err(Error::invalid(
            "Tag.Key",
            "tag keys are 1-128 characters and must not start with aliyun, acs:, http:// or https://",
        ));
    }
    Ok(())
}

fn check_resource_type(resource_type: &str) -> Result<()> {
    if resource_type != FILESYSTEM {
        return Err(Error::invalid(
            "ResourceType",
            "ResourceType must be filesystem",
        ));
    }
    Ok(())
}

pub(crate) async fn put_tags(
    tx: &mut Transaction<'_, Any>,
    account_id: &str,
    resource_type: &str,
    resource_id: &str,
    tags: &[(String, String)],
) -> Result<()> {
    for (k, v) in tags {
        sqlx::query(
            "DELETE FROM tags WHERE resource_type = $1 AND resource_id = $2 AND tag_key = $3",
        )
        .bind(resource_type)
        .bind(resource_id)
        .bind(k)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO tags (account_id, resource_type, resource_id, tag_key, tag_value) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(account_id)
        .bind(resource_type)
        .bind(resource_id)
        .bind(k)
        .bind(v)
        .execute(&mut **tx)
        .await?;
    }
    let n: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM tags WHERE resource_type = $1 AND resource_id = $2")
            .bind(resource_type)
            .bind(resource_id)
            .fetch_one(&mut **tx)
            .await?
            .try_get("n")?;
    if n as usize > MAX_TAGS_PER_RESOURCE {
        return Err(Error::invalid(
            "Tag",
            format!("resource {resource_id} would carry more than 20 tags"),
        ));
    }
    Ok(())
}

impl ControlPlane {
    /// Tags of the given file systems of an account, keyed by resource id.
    pub async fn tags_of(
        &self,
        account_id: &str,
        resource_ids: &[String],
    ) -> Result<HashMap<String, Vec<(String, String)>>> {
        let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
        if resource_ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT resource_id, tag_key, tag_value FROM tags WHERE account_id = $1 AND resource_id IN ({}) ORDER BY tag_key",
            placeholders(2, resource_ids.len())
        );
        let mut q = sqlx::query(&sql).bind(account_id);
        for id in resource_ids {
            q = q.bind(id);
        }
        for r in q.fetch_all(&self.store.pool).await? {
            out.entry(r.try_get("resource_id")?)
                .or_default()
                .push((r.try_get("tag_key")?, r.try_get("tag_value")?));
        }
        Ok(out)
    }

    pub async fn tag_resources(
        &self,
        account_id: &str,
        resource_type: &str,
        resource_ids: &[String],
        tags: &[(String, String)],
    ) -> Result<()> {
        check_resource_type(resource_type)?;
        validate_tags(tags)?;
        self.check_file_systems_exist(account_id, resource_ids)
            .await?;
        let mut tx = self.store.begin_write().await?;
        for id in resource_ids {
            put_tags(&mut tx, account_id, resource_type, id, tags).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes the named keys, or every tag when `keys` is None.
    pub async fn untag_resources(
        &self,
        account_id: &str,
        resource_type: &str,
        resource_ids: &[String],
        keys: Option<&[String]>,
    ) -> Result<()> {
        check_resource_type(resource_type)?;
        self.check_file_systems_exist(account_id, resource_ids)
            .await?;
        let mut tx = self.store.begin_write().await?;
        for id in resource_ids {
            match keys {
                None => {
                    sqlx::query("DELETE FROM tags WHERE account_id = $1 AND resource_type = $2 AND resource_id = $3")
                        .bind(account_id)
                        .bind(resource_type)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                Some(keys) => {
                    for k in keys {
                        sqlx::query("DELETE FROM tags WHERE account_id = $1 AND resource_type = $2 AND resource_id = $3 AND tag_key = $4")
                            .bind(account_id)
                            .bind(resource_type)
                            .bind(id)
                            .bind(k)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Tag rows matching the resources and/or tags given, in pages of
    /// `page_size`; `offset` comes from the caller's NextToken.
    pub async fn list_tag_resources(
        &self,
        account_id: &str,
        resource_type: &str,
        resource_ids: &[String],
        tag_filter: &[(String, String)],
        offset: i64,
        page_size: i64,
    ) -> Result<(Vec<TagResource>, Option<i64>)> {
        check_resource_type(resource_type)?;
        let mut clauses = vec![
            "account_id = $1".to_string(),
            "resource_type = $2".to_string(),
        ];
        let mut binds = vec![account_id.to_string(), resource_type.to_string()];
        if !resource_ids.is_empty() {
            clauses.push(format!(
                "resource_id IN ({})",
                placeholders(binds.len() + 1, resource_ids.len())
            ));
            binds.extend(resource_ids.iter().cloned());
        }
        if !tag_filter.is_empty() {
            // A resource matches when it carries every given tag; then all
            // of its tags are listed, as the real service does.
            for (k, v) in tag_filter {
                let p = binds.len() + 1;
                clauses.push(format!(
                    "resource_id IN (SELECT resource_id FROM tags WHERE account_id = $1 AND tag_key = ${p}{})",
                    if v.is_empty() { String::new() } else { format!(" AND tag_value = ${}", p + 1) }
                ));
                binds.push(k.clone());
                if !v.is_empty() {
                    binds.push(v.clone());
                }
            }
        }
        let sql = format!(
            "SELECT resource_id, resource_type, tag_key, tag_value FROM tags WHERE {} ORDER BY resource_id, tag_key LIMIT {} OFFSET {}",
            clauses.join(" AND "),
            page_size + 1,
            offset
        );
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.store.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(TagResource {
                resource_id: r.try_get("resource_id")?,
                resource_type: r.try_get("resource_type")?,
                key: r.try_get("tag_key")?,
                value: r.try_get("tag_value")?,
            });
        }
        let next = if out.len() as i64 > page_size {
            out.truncate(page_size as usize);
            Some(offset + page_size)
        } else {
            None
        };
        Ok((out, next))
    }
}
