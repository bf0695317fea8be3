//! Test support: start the real `cpfs` binary on free ports and call it
//! with V1-signed requests.
#![allow(dead_code)]

pub mod handover;
pub mod meta_servers;
pub mod mount;
pub mod netns;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const AK: &str = "LTAI5tCpfsIntegration01";
pub const SECRET: &str = "integration-secret/+=";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

/// The database of a test: a fresh SQLite file in the data dir, or, when
/// `CPFS_TEST_DATABASE_URL` names a PostgreSQL server, a fresh database on it.
pub fn database_args(dir: &Path) -> Vec<String> {
    match std::env::var("CPFS_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => vec!["--database-url".into(), fresh_postgres_database(&url)],
        _ => {
            let _ = dir;
            vec![]
        }
    }
}

/// Creates an empty database next to the one in `url` and returns its URL.
pub fn fresh_postgres_database(url: &str) -> String {
    let name = format!("cpfs_t_{}", uuid::Uuid::new_v4().simple());
    let status = Command::new("psql")
        .arg(url)
        .arg("-qc")
        .arg(format!("CREATE DATABASE {name}"))
        .status()
        .expect("psql runs");
    assert!(status.success(), "creating test database {name}");
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    format!("{base}/{name}")
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
        ];
        args.extend(database_args(&dir));
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Server {
            child: None,
            // 0 until the first start, which lets the server choose its
            // port (no window in which another process takes it).
            port: 0,
            dir,
            args,
            env: vec![
                ("CPFS_ACCESS_KEY_ID".into(), AK.into()),
                ("CPFS_ACCESS_KEY_SECRET".into(), SECRET.into()),
            ],
            _tmp: Some(tmp),
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))
            .unwrap();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.out"))
            .unwrap();
        let endpoint_file = self.endpoint_file();
        if self.port == 0 {
            let _ = std::fs::remove_file(&endpoint_file);
        }
        let child = Command::new(env!("CARGO_BIN_EXE_cpfs"))
            .args(&self.args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CPFS_LOG", "info")
            .stdout(out)
            .stderr(log)
            .spawn()
            .expect("cpfs binary starts");
        self.child = Some(child);
        if self.port == 0 {
            self.port = self.wait_port(&endpoint_file);
        }
        self.wait_ready();
    }

    fn endpoint_file(&self) -> PathBuf {
        let data = self
            .args
            .windows(2)
            .find(|p| p[0] == "--data-dir")
            .map(|p| PathBuf::from(&p[1]))
            .unwrap_or_else(|| self.dir.join("data"));
        data.join("api-endpoint")
    }

    /// The port a server started on port 0 chose, from the endpoint file
    /// it writes for operator commands.
    fn wait_port(&mut self, file: &Path) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if let Some(port) = text
                .trim()
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
            {
                return port;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("cpfs serve exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server wrote no endpoint:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server logged (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// What the server printed for its operator (stdout).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.out")).unwrap_or_default()
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = ureq::get(&format!("http://127.0.0.1:{}/healthz", self.port)).call() {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("cpfs serve exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// The flags that find this server for an operator command
    /// (`cpfs account|node|billing`): its data directory, where it records
    /// its API address and admin token.
    pub fn admin_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        for pair in self.args.windows(2) {
            if pair[0] == "--data-dir" {
                out.extend(pair.iter().cloned());
            }
        }
        out
    }

    /// `cpfs node list` against this server's store.
    pub fn node_list(&self) -> Value {
        self.operator(&["node", "list"])
    }

    /// The JSON an operator command (`cpfs node list`, `cpfs meta list`,
    /// ...) prints for this server.
    pub fn operator(&self, command: &[&str]) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_cpfs"))
            .args(command)
            .args(self.admin_args())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn client(&self) -> Client {
        Client::new(self.port, AK, SECRET)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Client {
    pub port: u16,
    pub ak: String,
    pub secret: String,
    pub method: &'static str,
}

pub fn timestamp_now() -> String {
    cpfs_controlplane::clock::format_utc(time::OffsetDateTime::now_utc().unix_timestamp())
}

impl Client {
    pub fn new(port: u16, ak: &str, secret: &str) -> Client {
        Client {
            port,
            ak: ak.into(),
            secret: secret.into(),
            method: "GET",
        }
    }

    /// The common parameters of a V1 call, with a fresh nonce.
    pub fn common(&self, action: &str) -> Vec<(String, String)> {
        vec![
            ("Action".into(), action.into()),
            ("Version".into(), "2017-06-26".into()),
            ("AccessKeyId".into(), self.ak.clone()),
            ("SignatureMethod".into(), "HMAC-SHA1".into()),
            ("SignatureVersion".into(), "1.0".into()),
            (
                "SignatureNonce".into(),
                uuid::Uuid::new_v4().simple().to_string(),
            ),
            ("Timestamp".into(), timestamp_now()),
            ("Format".into(), "JSON".into()),
        ]
    }

    pub fn sign(&self, method: &str, params: &mut Vec<(String, String)>) {
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let sts = cpfs_api::signature::v1::string_to_sign(method, &pairs);
        let sig = cpfs_api::signature::v1::sign(&self.secret, &sts);
        params.push(("Signature".into(), sig));
    }

    /// Sends already-signed parameters in the query string.
    pub fn send(&self, params: &[(String, String)]) -> (u16, String) {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let url = format!("http://127.0.0.1:{}/?{query}", self.port);
        let resp = match self.method {
            "POST" => ureq::post(&url).call(),
            _ => ureq::get(&url).call(),
        };
        match resp {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("transport error: {e}"),
        }
    }

    /// Signs and sends one call; the HTTP status and the parsed reply.
    pub fn call(&self, action: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let mut all = self.common(action);
        all.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.sign(self.method, &mut all);
        let (status, body) = self.send(&all);
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON ({status}): {body}"));
        assert!(
            v["RequestId"].is_string(),
            "every reply carries RequestId: {body}"
        );
        (status, v)
    }

    /// A call that must succeed.
    pub fn ok(&self, action: &str, params: &[(&str, &str)]) -> Value {
        let (status, v) = self.call(action, params);
        assert_eq!(status, 200, "{action} failed: {v}");
        assert!(
            v.get("Code").is_none(),
            "a success must not carry Code: {v}"
        );
        v
    }

    /// A call that must fail with `code`; returns the HTTP status.
    pub fn err(&self, action: &str, params: &[(&str, &str)], code: &str) -> u16 {
        let (status, v) = self.call(action, params);
        assert_eq!(v["Code"], code, "{action}: {v}");
        assert!(v["Message"].as_str().is_some_and(|m| !m.is_empty()));
        status
    }

    pub fn create_fs(&self, capacity: &str) -> String {
        let v = self.ok(
            "CreateFileSystem",
            &[
                ("FileSystemType", "cpfs"),
                ("ProtocolType", "cpfs"),
                ("StorageType", "advance_100"),
                ("Capacity", capacity),
                ("ZoneId", "cn-hangzhou-b"),
                ("VpcId", "vpc-test"),
                ("VSwitchId", "vsw-test"),
            ],
        );
        v["FileSystemId"].as_str().unwrap().to_string()
    }

    /// DescribeFileSystems for one id: the file system, or None once gone.
    pub fn describe_fs(&self, id: &str) -> Option<Value> {
        let v = self.ok("DescribeFileSystems", &[("FileSystemId", id)]);
        v["FileSystems"]["FileSystem"]
            .as_array()
            .unwrap()
            .first()
            .cloned()
    }

    /// Polls until `pred` holds for the file system (or its absence).
    pub fn wait_fs(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(Option<&Value>) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let fs = self.describe_fs(id);
            if pred(fs.as_ref()) {
                return fs;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never became {what}: {fs:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_running(&self, id: &str) -> Value {
        self.wait_fs(id, "Running", |f| {
            f.is_some_and(|f| f["Status"] == "Running")
        })
        .unwrap()
    }
}
