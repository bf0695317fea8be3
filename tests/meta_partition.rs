//! A metadata server cut off from the control plane and the database (its
//! host's link to them goes down; its clients still reach it) stops
//! answering for its file system before another server starts to, and a
//! busy mount of that file system sees a stall, not an error, with every
//! acknowledged operation kept.
//!
//! Needs PostgreSQL (CI's second pass) and root (network namespaces); it
//! says so and does nothing otherwise.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::handover::{one_owner_at_a_time, timeline};
use common::meta_servers::{
    database_url, embedded_id, meta_list, owner, postgres, wait_for_spread, MetaServer, Writer,
};
use common::mount::{file_system_with_mount_target, wait_for, Mount};
use common::netns::{self, Forward, Host};
use common::Server;
use cpfs_proto::meta::{errno, Caller, MetaClient as Connection, MetaOp, MetaReply, MetaRequest};

/// What one probe of a metadata server got.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Served,
    Moved,
    Other,
    Unreachable,
}

/// Asks the metadata server at `address` for the root of `domain`'s file
/// system every 20 ms (mounting first), until `stop`; every answer with
/// when it came. Pinned to that one server: it never follows a move.
type Answers = Arc<Mutex<Vec<(Instant, Answer)>>>;

fn probe(address: String, domain: String, stop: Arc<AtomicBool>) -> Answers {
    let answers = Answers::default();
    let seen = answers.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            // From a privileged port, as the client library connects (the
            // default access group's rules want one).
            let conn = Connection::reserved(&address);
            let root = Caller {
                uid: 0,
                gid: 0,
                groups: vec![],
            };
            let mut session = 0;
            while !stop.load(Ordering::Relaxed) {
                let op = if session == 0 {
                    MetaOp::Mount {
                        domain: domain.clone(),
                    }
                } else {
                    MetaOp::GetAttr { ino: 1 }
                };
                let req = MetaRequest {
                    session,
                    caller: root.clone(),
                    op,
                    id: None,
                };
                // Longer than an access decision may wait for the store.
                let call = tokio::time::timeout(Duration::from_secs(5), conn.call(req)).await;
                let answer = match call {
                    Ok(Ok(MetaReply::Mounted(m))) => {
                        session = m.session;
                        Answer::Served
                    }
                    Ok(Ok(MetaReply::Attr(_))) => Answer::Served,
                    Ok(Ok(MetaReply::Err {
                        errno: errno::EMOVED,
                        ..
                    })) => Answer::Moved,
                    Ok(Ok(_)) => Answer::Other,
                    Ok(Err(_)) | Err(_) => Answer::Unreachable,
                };
                seen.lock().unwrap().push((Instant::now(), answer));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    answers
}

/// `url` with its host and port replaced by `to`.
fn through(url: &str, to: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, rest) = rest.split_once('@').unwrap();
    let (_, db) = rest.split_once('/').unwrap();
    format!("{scheme}://{user}@{to}/{db}")
}

fn database_address(url: &str) -> SocketAddr {
    let rest = url.split_once('@').unwrap().1;
    let hostport = rest.split_once('/').unwrap().0;
    std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .unwrap()
        .next()
        .unwrap()
}

#[test]
fn a_metadata_server_cut_off_from_the_control_plane_stops_before_its_successor_starts() {
    if !postgres() || !netns::available() {
        eprintln!(
            "skipped: needs PostgreSQL (CPFS_TEST_DATABASE_URL) and root for network namespaces"
        );
        return;
    }
    // The busy mount reaches the cut-off server over link B (10.232/16).
    let server = Server::start(&["--default-access-networks", "127.0.0.0/8,10.0.0.0/8"]);
    let c = server.client();
    let (fs1, dom1) = file_system_with_mount_target(&c);
    let (fs2, dom2) = file_system_with_mount_target(&c);

    // The second metadata server runs on its own host; the control plane
    // and the database are reached through link A.
    let host = Host::new();
    let api = Forward::start(
        host.control.0,
        SocketAddr::from(([127, 0, 0, 1], server.port)),
    );
    let url = database_url(&server);
    let db = Forward::start(host.control.0, database_address(&url));
    let listen = SocketAddr::from((host.clients.1, 7100)).to_string();
    let mut cut_off = MetaServer::start_with(
        &server,
        "meta-cut",
        host.command(env!("CARGO_BIN_EXE_cpfs")),
        |cmd| {
            cmd.args(["--database-url", &through(&url, db.address)])
                .args(["--controlplane", &format!("http://{}", api.address)])
                .args(["--listen", &listen, "--advertise", &listen])
                .args(["--default-access-networks", "127.0.0.0/8,10.0.0.0/8"]);
        },
    );

    // Each server gets one of the two file systems.
    let list = wait_for_spread(&server, [&fs1, &fs2], "meta-cut.log");
    let embedded = embedded_id(&server);
    let embedded_address = list
        .iter()
        .find(|s| s["Id"] == embedded.as_str())
        .and_then(|s| s["Address"].as_str())
        .unwrap()
        .to_string();
    let (fs, domain) = if owner(&list, &fs1).as_deref() == Some(embedded.as_str()) {
        (fs2, dom2)
    } else {
        (fs1, dom1)
    };

    // A mount of the cut-off server's file system, busy, and two probes:
    // one pinned to each server.
    let m = Mount::new(&server, &domain, "busy");
    let dir = m.dir.join("w");
    std::fs::create_dir(&dir).unwrap();
    let mut writer = Writer::start(dir);
    writer.wait_ops(30);
    let stop = Arc::new(AtomicBool::new(false));
    let old = probe(listen.clone(), domain.clone(), stop.clone());
    let new = probe(embedded_address, domain.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(300));

    host.cut_control();
    let cut = Instant::now();
    wait_for("the file system to move to the other server", || {
        owner(&meta_list(&server), &fs).as_deref() == Some(embedded.as_str())
    });
    let moved = cut.elapsed();
    writer.wait_ops(30);
    // Until the cut-off server refuses: its lease has ended, but a call
    // that came before may still wait for the store (at most the access
    // decision's 2 s, then the lease's end).
    wait_for("the cut-off server to answer 'moved'", || {
        old.lock()
            .unwrap()
            .iter()
            .any(|(t, a)| *t > cut && *a == Answer::Moved)
    });
    stop.store(true, Ordering::Relaxed);
    let old = old.lock().unwrap().clone();
    let new = new.lock().unwrap().clone();
    writer.stop();

    eprintln!("cut-off server: {}", timeline(&old, cut));
    eprintln!("successor: {}", timeline(&new, cut));
    let (last_old, first_new) = one_owner_at_a_time(&old, &new, cut, &Answer::Served, "two owners");
    // It refused (moved) rather than went silent: it is still reachable.
    assert!(
        old.iter()
            .any(|(t, a)| *t > last_old && *a == Answer::Moved),
        "the cut-off server never answered 'moved': {:?}",
        &old[old.len().saturating_sub(10)..]
    );
    assert!(moved < Duration::from_secs(12), "took {moved:?} to move");

    let errors = writer.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "the mount saw errors across the partition: {errors:?}\nthe mount's log ends:\n{}\nthe server on revocations:\n{}",
        log_tail(&server.dir.join("busy.mount.log")),
        server
            .log()
            .lines()
            .filter(|l| l.contains("revoked") || l.contains("capabilit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let longest = *writer.longest.lock().unwrap();
    assert!(
        longest < Duration::from_secs(15),
        "an operation stalled {longest:?}; slow ones: {:?}",
        writer.slow.lock().unwrap()
    );
    let fresh = Mount::new(&server, &domain, "fresh");
    writer.assert_tree(&fresh.dir.join("w"), "partition");
    eprintln!(
        "cut-off server's last answer {:?} after the cut, successor's first {:?}; moved in {moved:?}; longest stall {longest:?}",
        last_old.saturating_duration_since(cut),
        first_new.saturating_duration_since(cut)
    );
    cut_off.kill9();
}

/// The last lines a process logged, for a failure's message.
fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Negative lookups are the writer's every create: not news.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("no such entry"))
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
