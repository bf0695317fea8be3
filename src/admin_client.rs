//! How operator commands (`cpfs account|node|billing`) reach the running
//! server: its admin API over HTTP, never the database. On the server's
//! machine `--data-dir` (or `--config`) is enough: `cpfs serve` records
//! its API address and admin token there. From elsewhere, give
//! `--endpoint` and `--admin-token` (or `CPFS_ENDPOINT`,
//! `CPFS_ADMIN_TOKEN`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::config::{Settings, StoreArgs};

/// Where `cpfs serve` records the address its API listens on.
pub const ENDPOINT_FILE: &str = "api-endpoint";
/// Where `cpfs serve` keeps the admin token (mode 0600).
pub const TOKEN_FILE: &str = "admin-token";

#[derive(Args, Debug, Default, Clone)]
pub struct AdminArgs {
    /// The server's data directory (holds its API address and admin token)
    #[arg(long, env = "CPFS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's TOML settings file (for its data_dir and listen)
    #[arg(long, env = "CPFS_CONFIG")]
    pub config: Option<PathBuf>,
    /// The server's API, e.g. http://10.0.0.5:8080 (default: the address the
    /// data directory records, else the configured listen address)
    #[arg(long, env = "CPFS_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The admin token (default: the one in the data directory)
    #[arg(long, env = "CPFS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn from_args(args: AdminArgs) -> anyhow::Result<AdminClient> {
        let settings = Settings::load_store(StoreArgs {
            data_dir: args.data_dir,
            database_url: None,
            config: args.config,
            secret_key_file: None,
        })?;
        let recorded = || {
            std::fs::read_to_string(settings.data_dir.join(ENDPOINT_FILE))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        };
        let base = args
            .endpoint
            .or_else(recorded)
            .unwrap_or_else(|| format!("http://{}", settings.listen));
        let token = match args.admin_token {
            Some(t) => t,
            None => {
                let path = settings.data_dir.join(TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "reading the admin token {} (start `cpfs serve` once, or give --admin-token)",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// GET of the admin route made of `segments` (each percent-encoded),
    /// with `query`; the answer as JSON.
    pub async fn get(&self, segments: &[&str], query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let text = self.get_text(segments, query).await?;
        Ok(serde_json::from_str(&text)?)
    }

    pub async fn get_text(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let url = self.url(segments, query)?;
        self.send(self.http.get(url)).await
    }

    pub async fn post(&self, segments: &[&str], body: Value) -> anyhow::Result<Value> {
        let url = self.url(segments, &[])?;
        let text = self.send(self.http.post(url).json(&body)).await?;
        Ok(serde_json::from_str(&text)?)
    }

    pub async fn delete(&self, segments: &[&str]) -> anyhow::Result<Value> {
        let url = self.url(segments, &[])?;
        let text = self.send(self.http.delete(url)).await?;
        Ok(serde_json::from_str(&text)?)
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> anyhow::Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&self.base)
            .with_context(|| format!("endpoint {:?} is not a URL", self.base))?;
        url.path_segments_mut()
            .map_err(|_| anyhow::anyhow!("endpoint {:?} cannot take a path", self.base))?
            .pop_if_empty()
            .extend(cpfs_api::admin::PREFIX.split('/').filter(|p| !p.is_empty()))
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// The answer's body, or the server's code and message, or why the
    /// server could not be reached.
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<String> {
        let unreachable = || {
            format!(
                "cannot reach the server at {} (is `cpfs serve` running?)",
                self.base
            )
        };
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(unreachable)?;
        let status = response.status();
        let text = response.text().await.with_context(unreachable)?;
        if status.is_success() {
            return Ok(text);
        }
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        anyhow::bail!(
            "{}: {}",
            v["Code"].as_str().unwrap_or(status.as_str()),
            v["Message"].as_str().unwrap_or(&text)
        )
    }
}
