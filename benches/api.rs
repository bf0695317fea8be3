//! API benchmark (not a test): signed DescribeFileSystems throughput and
//! latency with 1,000 file systems stored, and CreateFileSystem → Running
//! latency. Starts the real `cpfs serve` on a fresh SQLite data dir, and,
//! as the ceiling to compare with, a bare axum handler in its own process
//! (this binary again) driven by the same load generator in the same run.
//!
//!     cargo bench --bench api            (CPFS_BENCH_SECS, CPFS_BENCH_CONNS to tune)
//!
//! Prints a Markdown report and writes it to target/bench-api.md.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpfs_api::signature::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const AK: &str = "LTAI5tCpfsBenchKey00001";
const SECRET: &str = "bench-secret-0123456789";

fn timestamp() -> String {
    cpfs_controlplane::clock::format_utc(time::OffsetDateTime::now_utc().unix_timestamp())
}

fn signed_query(action: &str, params: &[(&str, String)]) -> String {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mut all: Vec<(String, String)> = vec![
        ("Action".into(), action.into()),
        ("Version".into(), "2017-06-26".into()),
        ("AccessKeyId".into(), AK.into()),
        ("SignatureMethod".into(), "HMAC-SHA1".into()),
        ("SignatureVersion".into(), "1.0".into()),
        ("SignatureNonce".into(), nonce),
        ("Timestamp".into(), timestamp()),
        ("Format".into(), "JSON".into()),
    ];
    all.extend(params.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sig = v1::sign(SECRET, &v1::string_to_sign("GET", &pairs));
    all.push(("Signature".into(), sig));
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(all.iter())
        .finish()
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Sends a GET and returns (status, body).
    async fn get(&mut self, query: &str) -> (u16, String) {
        let req = format!("GET /?{query} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
        self.stream.write_all(req.as_bytes()).await.unwrap();
        self.buf.clear();
        loop {
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])
                    .unwrap()
                    .to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let status: u16 = head[9..12].parse().unwrap();
                    let body =
                        String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).to_string();
                    return (status, body);
                }
            }
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn start_server(dir: &std::path::Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_cpfs"))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--rate-limit",
            "10000000",
        ])
        .env("CPFS_ACCESS_KEY_ID", AK)
        .env("CPFS_ACCESS_KEY_SECRET", SECRET)
        .env("CPFS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn create_params(i: usize) -> Vec<(&'static str, String)> {
    vec![
        ("FileSystemType", "cpfs".into()),
        ("ProtocolType", "cpfs".into()),
        ("StorageType", "advance_100".into()),
        ("Capacity", "2048".into()),
        ("ZoneId", "cn-hangzhou-b".into()),
        ("VpcId", "vpc-bench".into()),
        ("VSwitchId", "vsw-bench".into()),
        ("Description", format!("bench{i}")),
    ]
}

fn id_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["FileSystemId"].as_str().unwrap().to_string()
}

async fn status_of(conn: &mut Conn, id: &str) -> String {
    let (_, body) = conn
        .get(&signed_query(
            "DescribeFileSystems",
            &[("FileSystemId", id.to_string())],
        ))
        .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["FileSystems"]["FileSystem"][0]["Status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Every file system's status, in listing order.
async fn statuses(conn: &mut Conn) -> Vec<String> {
    let mut out = Vec::new();
    for page in 1..=10 {
        let (_, body) = conn
            .get(&signed_query(
                "DescribeFileSystems",
                &[("PageNumber", page.to_string()), ("PageSize", "100".into())],
            ))
            .await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for fs in v["FileSystems"]["FileSystem"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.push(fs["Status"].as_str().unwrap_or("").to_string());
        }
    }
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// What one load phase measured.
struct Load {
    rps: f64,
    /// Sorted.
    latencies: Vec<Duration>,
    errors: u64,
}

/// `conns` keep-alive connections sending signed `action` calls (pages of
/// 10 across the 1,000) to `port` for `secs` seconds.
async fn load(port: u16, action: &str, conns: usize, secs: u64) -> Load {
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for c in 0..conns {
        let errors = errors.clone();
        let action = action.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(port).await;
            let mut lat = Vec::new();
            let mut page = c % 100 + 1;
            while Instant::now() < stop {
                let q = signed_query(
                    &action,
                    &[("PageNumber", page.to_string()), ("PageSize", "10".into())],
                );
                let t = Instant::now();
                let (s, _) = conn.get(&q).await;
                lat.push(t.elapsed());
                if s != 200 {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                page = page % 100 + 1;
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    Load {
        rps: all.len() as f64 / elapsed,
        latencies: all,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
    }
}

const BARE_ENV: &str = "CPFS_BENCH_BARE_AXUM_PORT";

/// This binary again, serving only a bare axum handler (a fixed JSON
/// body, the request ignored) on a runtime shaped like `cpfs serve`'s.
fn start_bare() -> (u16, Child) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(std::env::current_exe().unwrap())
        .env(BARE_ENV, port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "bare server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (port, child)
}

async fn serve_bare(port: u16) {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                r#"{"RequestId":"bare","TotalCount":0}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match std::env::var(BARE_ENV).ok().and_then(|p| p.parse().ok()) {
        Some(port) => rt.block_on(serve_bare(port)),
        None => rt.block_on(bench()),
    }
}

async fn bench() {
    let secs: u64 = std::env::var("CPFS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let conns: usize = std::env::var("CPFS_BENCH_CONNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let action =
        std::env::var("CPFS_BENCH_ACTION").unwrap_or_else(|_| "DescribeFileSystems".into());
    let tmp = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = start_server(tmp.path(), port);
    let mut conn = Conn::open(port).await;

    // CreateFileSystem -> Running latency, 50 samples.
    let mut to_running = Vec::new();
    for i in 0..50 {
        let t0 = Instant::now();
        let (s, body) = conn
            .get(&signed_query("CreateFileSystem", &create_params(i)))
            .await;
        assert_eq!(s, 200, "{body}");
        let id = id_of(&body);
        while status_of(&mut conn, &id).await != "Running" {}
        to_running.push(t0.elapsed());
    }
    to_running.sort();

    // Fill to 1,000 file systems.
    let t0 = Instant::now();
    for i in 50..1000 {
        let (s, body) = conn
            .get(&signed_query("CreateFileSystem", &create_params(i)))
            .await;
        assert_eq!(s, 200, "{body}");
    }
    let create_rate = 950.0 / t0.elapsed().as_secs_f64();

    // The measurement is of a settled deployment: wait until the
    // reconciler has placed what it can (two scans a second apart see the
    // same statuses), so its writes do not overlap the reads.
    let mut last = statuses(&mut conn).await;
    let settle = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = statuses(&mut conn).await;
        if now == last || settle.elapsed() > Duration::from_secs(120) {
            break;
        }
        last = now;
    }
    let settled_secs = settle.elapsed().as_secs_f64();

    // Signed DescribeFileSystems, pages of 10 across the 1,000, from `conns`
    // keep-alive connections for `secs` seconds; then the bare handler.
    let api = load(port, &action, conns, secs).await;
    let (bare_port, mut bare) = start_bare();
    let ceiling = load(bare_port, &action, conns, secs).await;
    let _ = bare.kill();
    let _ = bare.wait();
    let ratio = api.rps / ceiling.rps;
    let all = &api.latencies;
    let bare = &ceiling.latencies;
    let report = format!(
        "# API benchmark\n\n\
         Machine: {} cores; server and load generator share them. SQLite, 1,000 file systems stored.\n\n\
         | measure | value |\n|---|---|\n\
         | signed {action} (PageSize 10), {conns} connections, {secs} s | {:.0} requests/s |\n\
         | latency p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |\n\
         | non-200 replies | {} |\n\
         | bare axum handler, same load generator, same run | {:.0} requests/s, p50 / p99 {:.2} / {:.2} ms |\n\
         | {action} ÷ bare axum | {:.1} % |\n\
         | CreateFileSystem → Running, 50 samples: p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |\n\
         | CreateFileSystem, sequential, one connection | {create_rate:.0} requests/s |\n\
         | reconciler settled after the creates (waited) | {settled_secs:.1} s |\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        api.rps,
        pct(all, 0.5).as_secs_f64() * 1e3,
        pct(all, 0.99).as_secs_f64() * 1e3,
        all.last().unwrap().as_secs_f64() * 1e3,
        api.errors,
        ceiling.rps,
        pct(bare, 0.5).as_secs_f64() * 1e3,
        pct(bare, 0.99).as_secs_f64() * 1e3,
        ratio * 100.0,
        pct(&to_running, 0.5).as_secs_f64() * 1e3,
        pct(&to_running, 0.99).as_secs_f64() * 1e3,
        to_running.last().unwrap().as_secs_f64() * 1e3,
    );
    println!("{report}");
    let _ = std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-api.md"),
        &report,
    );
    let _ = server.kill();
    let _ = server.wait();
}
