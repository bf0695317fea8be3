//! Metadata servers fail over like data nodes: a `cpfs meta` process beside
//! the one inside `cpfs serve` takes a share of the file systems; killed
//! with -9 under a busy mount, its file systems move to the survivor within
//! the failure timeout plus a few seconds, and the mount sees a stall, not
//! an error, with every acknowledged operation kept.
//!
//! Several metadata servers share one store, so this runs on PostgreSQL
//! (CI's second pass, `CPFS_TEST_DATABASE_URL`); on SQLite it says so and
//! does nothing.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mount::{file_system_with_mount_target, wait_for, Mount};
use common::Server;
use serde_json::Value;

fn postgres() -> bool {
    std::env::var("CPFS_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty())
}

/// A `cpfs meta` process of the test.
struct MetaServer {
    child: Child,
}

impl MetaServer {
    fn start(server: &Server, name: &str) -> MetaServer {
        let url = server
            .args
            .windows(2)
            .find(|p| p[0] == "--database-url")
            .map(|p| p[1].clone())
            .expect("the server runs on PostgreSQL");
        let token = std::fs::read_to_string(server.dir.join("data").join("cluster-token"))
            .unwrap()
            .trim()
            .to_string();
        let log = std::fs::File::create(server.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cpfs"))
            .args(["meta", "--data-dir"])
            .arg(server.dir.join(name))
            .args(["--database-url", &url])
            .args([
                "--controlplane",
                &format!("http://127.0.0.1:{}", server.port),
            ])
            .env("CPFS_CLUSTER_TOKEN", token)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        MetaServer { child }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MetaServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn meta_list(server: &Server) -> Vec<Value> {
    server
        .operator(&["meta", "list"])
        .as_array()
        .cloned()
        .unwrap()
}

/// The live server serving `fs`, if one does.
fn owner(list: &[Value], fs: &str) -> Option<String> {
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

/// Creates, renames and unlinks files under `dir` until told to stop;
/// what it was told succeeded is in `names`, what failed in `errors`.
struct Writer {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicUsize>,
    names: Arc<Mutex<BTreeSet<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
    longest: Arc<Mutex<Duration>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(dir: std::path::PathBuf) -> Writer {
        let w = Writer {
            stop: Arc::default(),
            ops: Arc::default(),
            names: Arc::default(),
            errors: Arc::default(),
            longest: Arc::default(),
            thread: None,
        };
        let (stop, ops, names, errors, longest) = (
            w.stop.clone(),
            w.ops.clone(),
            w.names.clone(),
            w.errors.clone(),
            w.longest.clone(),
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

    fn wait_ops(&self, more: usize) {
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

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

#[test]
fn a_dead_metadata_servers_file_systems_move_and_its_clients_carry_on() {
    if !postgres() {
        eprintln!(
            "skipped: metadata failover needs the shared PostgreSQL store (CPFS_TEST_DATABASE_URL)"
        );
        return;
    }
    let server = Server::start(&[]);
    let c = server.client();
    let (fs1, dom1) = file_system_with_mount_target(&c);
    let (fs2, dom2) = file_system_with_mount_target(&c);
    let mut other = MetaServer::start(&server, "meta-b");

    // Two live servers, one file system each: the newcomer got a share.
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = loop {
        let list = meta_list(&server);
        let (o1, o2) = (owner(&list, &fs1), owner(&list, &fs2));
        if list.len() == 2 && o1.is_some() && o2.is_some() && o1 != o2 {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "file systems never spread: {list:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let embedded = std::fs::read_to_string(server.dir.join("data").join("meta-server-id"))
        .unwrap()
        .trim()
        .to_string();
    let (fs, domain) = if owner(&list, &fs1).as_deref() == Some(embedded.as_str()) {
        (fs2, dom2)
    } else {
        (fs1, dom1)
    };
    assert_ne!(owner(&list, &fs).as_deref(), Some(embedded.as_str()));

    let m = Mount::new(&server, &domain, "busy");
    let dir = m.dir.join("w");
    std::fs::create_dir(&dir).unwrap();
    let mut writer = Writer::start(dir);
    writer.wait_ops(30);

    other.kill9();
    let killed = Instant::now();
    wait_for("the file system to move to the surviving server", || {
        owner(&meta_list(&server), &fs).as_deref() == Some(embedded.as_str())
    });
    let moved = killed.elapsed();
    // The failure timeout is 3 s; the move follows the next heartbeat.
    assert!(moved < Duration::from_secs(8), "took {moved:?} to move");
    writer.wait_ops(30);
    writer.stop();
    let errors = writer.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "the mount saw errors across the failover: {errors:?}"
    );
    let longest = *writer.longest.lock().unwrap();
    assert!(
        longest < Duration::from_secs(15),
        "an operation stalled {longest:?}"
    );

    // Every acknowledged operation is there, seen from a fresh mount.
    let expected = writer.names.lock().unwrap().clone();
    let fresh = Mount::new(&server, &domain, "fresh");
    let got: BTreeSet<String> = std::fs::read_dir(fresh.dir.join("w"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, expected, "the tree differs after the failover");
    for name in &got {
        let body = std::fs::read(fresh.dir.join("w").join(name)).unwrap();
        let want = format!("f{}", &name[1..]);
        assert_eq!(body, want.as_bytes(), "{name} holds the wrong data");
    }
    eprintln!(
        "moved in {moved:?}; longest stall {longest:?}; {} names",
        got.len()
    );
}
