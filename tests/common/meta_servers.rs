//! `cpfs meta` processes beside a test server, and a writer that works a
//! mount through a failover and remembers what it was told succeeded.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Server;

/// Whether the tests run on PostgreSQL (several metadata servers share one
/// store, so the failover tests need it).
pub fn postgres() -> bool {
    std::env::var("CPFS_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty())
}

/// The PostgreSQL database `server` runs on.
pub fn database_url(server: &Server) -> String {
    server
        .args
        .windows(2)
        .find(|p| p[0] == "--database-url")
        .map(|p| p[1].clone())
        .expect("the server runs on PostgreSQL")
}

/// A `cpfs meta` process of the test.
pub struct MetaServer {
    child: Child,
}

impl MetaServer {
    pub fn start(server: &Server, name: &str) -> MetaServer {
        let url = database_url(server);
        let controlplane = format!("http://127.0.0.1:{}", server.port);
        MetaServer::start_with(
            server,
            name,
            Command::new(env!("CARGO_BIN_EXE_cpfs")),
            |c| {
                c.args(["--database-url", &url, "--controlplane", &controlplane]);
            },
        )
    }

    /// Runs `cpfs meta` through `cmd` (the binary itself, or a wrapper such
    /// as `ip netns exec`), with the flags `flags` adds.
    pub fn start_with(
        server: &Server,
        name: &str,
        mut cmd: Command,
        flags: impl FnOnce(&mut Command),
    ) -> MetaServer {
        let token = std::fs::read_to_string(server.dir.join("data").join("cluster-token"))
            .unwrap()
            .trim()
            .to_string();
        let log = std::fs::File::create(server.dir.join(format!("{name}.log"))).unwrap();
        cmd.args(["meta", "--data-dir"]).arg(server.dir.join(name));
        flags(&mut cmd);
        let child = cmd
            .env("CPFS_CLUSTER_TOKEN", token)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        MetaServer { child }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MetaServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn meta_list(server: &Server) -> Vec<Value> {
    server
        .operator(&["meta", "list"])
        .as_array()
        .cloned()
        .unwrap()
}

/// The live server serving `fs`, if one does.
pub fn owner(list: &[Value], fs: &str) -> Option<String> {
    list.iter()
        .filter(|s| s["State"] == "Up")
        .find(|s| {
            s["FileSystems"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["FileSystemId"] == fs && f["State"] == "Serving")
        })
        .map(|s| s["Id"].as_str().unwrap().to_string())
}

/// Waits until two metadata servers are up and serve one of `fs` each;
/// the list they were seen in. `log`: a file under the server's directory
/// to show when they never do.
pub fn wait_for_spread(server: &Server, fs: [&str; 2], log: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = meta_list(server);
        let (o1, o2) = (owner(&list, fs[0]), owner(&list, fs[1]));
        if list.len() == 2 && o1.is_some() && o2.is_some() && o1 != o2 {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "file systems never spread: {list:#?}\n{}",
            std::fs::read_to_string(server.dir.join(log)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The id of the metadata server inside `cpfs serve`.
pub fn embedded_id(server: &Server) -> String {
    std::fs::read_to_string(server.dir.join("data").join("meta-server-id"))
        .unwrap()
        .trim()
        .to_string()
}

/// Creates, renames and unlinks files under `dir` until told to stop;
/// what it was told succeeded is in `names`, what failed in `errors`.
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub ops: Arc<AtomicUsize>,
    pub names: Arc<Mutex<BTreeSet<String>>>,
    pub errors: Arc<Mutex<Vec<String>>>,
    pub longest: Arc<Mutex<Duration>>,
    /// Operations that took over a second, with how long.
    pub slow: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(dir: std::path::PathBuf) -> Writer {
        let w = Writer {
            stop: Arc::default(),
            ops: Arc::default(),
            names: Arc::default(),
            errors: Arc::default(),
            longest: Arc::default(),
            slow: Arc::default(),
            thread: None,
        };
        let (stop, ops, names, errors, longest, slow) = (
            w.stop.clone(),
            w.ops.clone(),
            w.names.clone(),
            w.errors.clone(),
            w.longest.clone(),
            w.slow.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let f = format!("f{i}");
                let step = |what: &str, r: std::io::Result<()>, t: Instant| {
                    let took = t.elapsed();
                    let mut l = longest.lock().unwrap();
                    *l = (*l).max(took);
                    if took > Duration::from_secs(1) {
                        slow.lock().unwrap().push(format!("{what} {i}: {took:?}"));
                    }
                    if let Err(e) = r {
                        errors.lock().unwrap().push(format!("{what} {i}: {e}"));
                    }
                };
                let t = Instant::now();
                let r = std::fs::write(dir.join(&f), f.as_bytes());
                let ok = r.is_ok();
                step("create", r, t);
                if !ok {
                    continue;
                }
                names.lock().unwrap().insert(f.clone());
                if i.is_multiple_of(3) {
                    let g = format!("g{i}");
                    let t = Instant::now();
                    let r = std::fs::rename(dir.join(&f), dir.join(&g));
                    if r.is_ok() {
                        let mut n = names.lock().unwrap();
                        n.remove(&f);
                        n.insert(g);
                    }
                    step("rename", r, t);
                }
                if i.is_multiple_of(5) {
                    let victim = format!("f{}", i - 1);
                    if names.lock().unwrap().contains(&victim) {
                        let t = Instant::now();
                        let r = std::fs::remove_file(dir.join(&victim));
                        if r.is_ok() {
                            names.lock().unwrap().remove(&victim);
                        }
                        step("unlink", r, t);
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
        });
        Writer {
            thread: Some(thread),
            ..w
        }
    }

    pub fn wait_ops(&self, more: usize) {
        let target = self.ops.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.ops.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "the writer is stuck; errors: {:?}",
                self.errors.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Checks that `dir` (the writer's directory seen from a fresh mount)
    /// holds exactly the names the writer was told succeeded, each with
    /// its data; how many.
    pub fn assert_tree(&self, dir: &std::path::Path, after: &str) -> usize {
        let expected = self.names.lock().unwrap().clone();
        let got: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, expected, "the tree differs after the {after}");
        for name in &got {
            let body = std::fs::read(dir.join(name)).unwrap();
            let want = format!("f{}", &name[1..]);
            assert_eq!(body, want.as_bytes(), "{name} holds the wrong data");
        }
        got.len()
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}
