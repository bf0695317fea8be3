//! Data nodes on hosts of their own (network namespaces), partitioned
//! while a client writes:
//!
//! - a node cut off from the control plane (its link A down; clients and
//!   peers still reach it) stops serving before its chains get another
//!   head, and the writer sees a stall, not an error;
//! - a node cut off from its clients and peers (link B down; it still
//!   heartbeats) is reported by its peers and replaced, and the writer
//!   sees a stall, not an error.
//!
//! Either way every byte the writer was told is written reads back from a
//! fresh mount, and the longest stall stays within the failure timeout
//! plus a few seconds, as for a killed node: a blackholed peer costs a
//! deadline, not TCP's retransmissions.
//!
//! Needs root (network namespaces); says so and does nothing otherwise.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::handover::{one_owner_at_a_time, timeline};
use common::mount::{file_system_with_mount_target, wait_for, Mount};
use common::netns::{self, Forward, Host, Network};
use common::Server;
use cpfs_proto::capability::Capability;
use cpfs_proto::chains::ChainTable;
use cpfs_proto::meta::{Caller, MetaClient, MetaOp, MetaReply, MetaRequest};
use cpfs_proto::node::{ChainRef, ChunkKey, NodeClient, NodeError, NodeRequest, NodeResponse};

/// The control plane's failure timeout in these tests (`--failure-timeout`).
const FAILURE_TIMEOUT: Duration = Duration::from_secs(3);
/// What a partition may cost the writer beyond the failure timeout: the
/// next heartbeat and planning step, the client's retry delay and table
/// refresh, and one write of the writer itself on a busy test machine.
const SLACK: Duration = Duration::from_secs(4);
const FILE: usize = 1 << 20;

/// `cpfs serve` (API, metadata, control plane; no data nodes of its own)
/// and three `cpfs node`s, each on a host with link A to the control plane
/// and link B on a network shared with the others and the test (the client).
struct Cluster {
    server: Server,
    // Dropped after the nodes: the namespaces go with the hosts.
    nodes: Vec<Child>,
    hosts: Vec<Host>,
    _forwards: Vec<Forward>,
    _network: Network,
    /// Node id and address, per host.
    ids: Vec<(String, String)>,
}

impl Cluster {
    fn start() -> Cluster {
        let server = Server::start(&[
            "--nodes",
            "0",
            "--failure-timeout",
            &FAILURE_TIMEOUT.as_secs().to_string(),
        ]);
        let token = std::fs::read_to_string(server.dir.join("data").join("cluster-token"))
            .unwrap()
            .trim()
            .to_string();
        let network = Network::new();
        let (mut hosts, mut forwards, mut nodes) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..3 {
            let host = Host::on(&network);
            let api = Forward::start(
                host.control.0,
                SocketAddr::from(([127, 0, 0, 1], server.port)),
            );
            let listen = SocketAddr::from((host.clients.1, 7300)).to_string();
            let log = std::fs::File::create(server.dir.join(format!("node{i}.log"))).unwrap();
            let child = host
                .command(env!("CARGO_BIN_EXE_cpfs"))
                .args(["node", "--data-dir"])
                .arg(server.dir.join(format!("node{i}")))
                .args(["--controlplane", &format!("http://{}", api.address)])
                .args(["--listen", &listen, "--advertise", &listen])
                .env("CPFS_CLUSTER_TOKEN", &token)
                .env("CPFS_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            hosts.push(host);
            forwards.push(api);
            nodes.push(child);
        }
        let mut c = Cluster {
            server,
            nodes,
            hosts,
            _forwards: forwards,
            _network: network,
            ids: Vec::new(),
        };
        wait_for("three nodes in settled chains", || {
            let status = c.server.operator(&["node", "status"]);
            let table: ChainTable = serde_json::from_value(status["Table"].clone()).unwrap();
            status["Settled"] == true && table.node_ids().len() == 3
        });
        let list = c.server.node_list();
        for h in &c.hosts {
            let address = SocketAddr::from((h.clients.1, 7300)).to_string();
            let node = list
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["Address"] == address.as_str())
                .unwrap_or_else(|| panic!("no node at {address}: {list}"));
            c.ids
                .push((node["Id"].as_str().unwrap().to_string(), address));
        }
        c
    }

    fn table(&self) -> ChainTable {
        serde_json::from_value(self.server.operator(&["node", "status"])["Table"].clone()).unwrap()
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.server.dir.join(format!("node{i}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

fn content(i: u64) -> Vec<u8> {
    (0..FILE as u64)
        .map(|j| ((i * 131 + j * 7) % 251) as u8)
        .collect()
}

/// Writes 1 MiB files, each made durable (fsync) before the next, until
/// told to stop; remembers which were acknowledged and how long each took.
struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    written: Arc<Mutex<Vec<u64>>>,
    errors: Arc<Mutex<Vec<String>>>,
    /// (when it ended, how long it took) per file.
    took: Arc<Mutex<Vec<(Instant, Duration)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(dir: std::path::PathBuf) -> Writer {
        let w = Writer {
            stop: Arc::default(),
            done: Arc::default(),
            written: Arc::default(),
            errors: Arc::default(),
            took: Arc::default(),
            thread: None,
        };
        let (stop, done, written, errors, took) = (
            w.stop.clone(),
            w.done.clone(),
            w.written.clone(),
            w.errors.clone(),
            w.took.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = content(i);
                let t = Instant::now();
                let r = std::fs::File::create(dir.join(format!("f{i}")))
                    .and_then(|mut f| f.write_all(&body).and_then(|_| f.sync_all()));
                took.lock().unwrap().push((Instant::now(), t.elapsed()));
                match r {
                    Ok(()) => written.lock().unwrap().push(i),
                    Err(e) => errors.lock().unwrap().push(format!("f{i}: {e}")),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
        Writer {
            thread: Some(thread),
            ..w
        }
    }

    fn wait_files(&self, more: usize) {
        let target = self.done.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.done.load(Ordering::Relaxed) < target {
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

    /// The longest file write that ended after `since`.
    fn longest_since(&self, since: Instant) -> Duration {
        self.took
            .lock()
            .unwrap()
            .iter()
            .filter(|(end, _)| *end > since)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }

    /// No errors, and every acknowledged file reads back whole from `dir`
    /// (a fresh mount); how many.
    fn check(&self, dir: &std::path::Path, after: &str) -> usize {
        let errors = self.errors.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "the writer saw errors {after}: {errors:?}"
        );
        let written = self.written.lock().unwrap().clone();
        for i in &written {
            let got = std::fs::read(dir.join(format!("f{i}"))).unwrap();
            assert!(got == content(*i), "f{i} reads back wrong {after}");
        }
        written.len()
    }
}

/// What a probe needs to send raw requests for one file: a capability
/// and the metadata session that renews it.
#[derive(Clone)]
struct Grant {
    cap: Capability,
    ino: u64,
    meta: String,
    session: u64,
}

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    groups: vec![],
};

fn meta_request(session: u64, op: MetaOp) -> MetaRequest {
    MetaRequest {
        session,
        caller: ROOT,
        op,
        id: None,
    }
}

/// A grant for the file `name` in the root of `domain`'s file system.
fn grant(server: &Server, domain: &str, name: &str) -> Grant {
    let meta = server.operator(&["meta", "list"])[0]["Address"]
        .as_str()
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let conn = MetaClient::reserved(meta.clone());
        let mount = MetaOp::Mount {
            domain: domain.to_string(),
        };
        let m = match conn.call(meta_request(0, mount)).await.unwrap() {
            MetaReply::Mounted(m) => m,
            other => panic!("mount refused: {other:?}"),
        };
        let lookup = MetaOp::Lookup {
            parent: 1,
            name: name.as_bytes().to_vec(),
        };
        let MetaReply::Entry(attr) = conn.call(meta_request(m.session, lookup)).await.unwrap()
        else {
            panic!("{name} not found")
        };
        let open = MetaOp::Open {
            ino: attr.ino,
            read: true,
            write: true,
        };
        match conn.call(meta_request(m.session, open)).await.unwrap() {
            MetaReply::Open(f) => Grant {
                cap: f.cap,
                ino: attr.ino,
                meta,
                session: m.session,
            },
            other => panic!("open refused: {other:?}"),
        }
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Served,
    /// The node refused: it has no lease.
    NoLease,
    /// Not the head (yet), or an older table.
    NotHead,
    /// The capability was refused and has been renewed.
    Renewed,
    Other(String),
    Unreachable,
}

type Answers = Arc<Mutex<Vec<(Instant, Answer)>>>;

/// Sends `request` (built for a table version) to the node at `address`
/// every 20 ms until `stop`; every answer with when it came. A stale
/// table refusal moves the probe on to the node's version.
fn probe(
    address: String,
    version: u64,
    grant: &Grant,
    request: impl Fn(u64, Capability) -> NodeRequest + Send + 'static,
    stop: Arc<AtomicBool>,
) -> Answers {
    let grant = grant.clone();
    let answers = Answers::default();
    let seen = answers.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let conn = NodeClient::new(address);
            let meta = MetaClient::reserved(grant.meta);
            let (mut version, mut cap) = (version, grant.cap);
            while !stop.load(Ordering::Relaxed) {
                let req = request(version, cap.clone());
                let call = tokio::time::timeout(Duration::from_secs(2), conn.call(req));
                let answer = match call.await {
                    Ok(Ok(NodeResponse::Data(_) | NodeResponse::Done)) => Answer::Served,
                    Ok(Ok(NodeResponse::Failed(NodeError::NoLease))) => Answer::NoLease,
                    Ok(Ok(NodeResponse::Failed(NodeError::StaleChainTable { current }))) => {
                        version = current;
                        Answer::NotHead
                    }
                    Ok(Ok(NodeResponse::Failed(NodeError::NotMember))) => Answer::NotHead,
                    // Revoked by a change of the grant the control plane
                    // saw after the capability was issued (the mount
                    // target's activation, at the start): renewed, as a
                    // client does.
                    Ok(Ok(NodeResponse::Failed(NodeError::BadCapability))) => {
                        let renew = MetaOp::Renew { cap: cap.clone() };
                        if let Ok(MetaReply::Renewed(c)) =
                            meta.call(meta_request(grant.session, renew)).await
                        {
                            cap = c;
                        }
                        Answer::Renewed
                    }
                    Ok(Ok(other)) => Answer::Other(format!("{other:?}")),
                    Ok(Err(_)) | Err(_) => Answer::Unreachable,
                };
                seen.lock().unwrap().push((Instant::now(), answer));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    answers
}

#[test]
fn a_node_cut_off_from_the_control_plane_stops_serving_before_it_is_replaced() {
    if !netns::available() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let cluster = Cluster::start();
    let (_fs, domain) = file_system_with_mount_target(&cluster.server.client());
    let m = Mount::new(&cluster.server, &domain, "busy");
    std::fs::write(m.dir.join("probe"), b"probe").unwrap();
    let grant = grant(&cluster.server, &domain, "probe");

    // The cut-off node heads a chain; its second member will succeed it.
    let table = cluster.table();
    let (cut_id, cut_address) = cluster.ids[0].clone();
    let chain = table
        .chains
        .iter()
        .find(|c| c.head().is_some_and(|h| h.id == cut_id))
        .expect("every node heads a chain");
    let successor = chain.members[1].address.clone();
    let key = ChunkKey {
        fs: grant.cap.fs.clone(),
        inode: grant.ino,
        index: 0,
        chain: chain.id,
    };
    let stop = Arc::new(AtomicBool::new(false));
    // Reads of the old head: what a lease must stop once it may have been
    // replaced. Writes at the successor: served once it is the head.
    let (id, k2) = (chain.id, key.clone());
    let old = probe(
        cut_address,
        table.version,
        &grant,
        move |version, cap| NodeRequest::Read {
            cap,
            chain: ChainRef { id, version },
            key: k2.clone(),
            offset: 0,
            len: 4096,
        },
        stop.clone(),
    );
    let new = probe(
        successor,
        table.version,
        &grant,
        move |version, cap| NodeRequest::Write {
            cap,
            chain: ChainRef { id, version },
            key: key.clone(),
            offset: 0,
            data: vec![7; 4096],
            forwarded: None,
        },
        stop.clone(),
    );

    let dir = m.dir.join("w");
    std::fs::create_dir(&dir).unwrap();
    let mut writer = Writer::start(dir);
    writer.wait_files(3);
    cluster.hosts[0].cut_control();
    let cut = Instant::now();
    wait_for("the cut-off node to leave its chains", || {
        !cluster.table().node_ids().contains(&cut_id)
    });
    let replaced = cut.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !new
        .lock()
        .unwrap()
        .iter()
        .any(|(t, a)| *t > cut && *a == Answer::Served)
    {
        assert!(
            Instant::now() < deadline,
            "the successor never served as head: {}\n{:#?}",
            timeline(&new.lock().unwrap(), cut),
            cluster.table()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    writer.wait_files(5);
    stop.store(true, Ordering::Relaxed);
    writer.stop();
    let old = old.lock().unwrap().clone();
    let new = new.lock().unwrap().clone();
    eprintln!("cut-off node: {}", timeline(&old, cut));
    eprintln!("successor: {}", timeline(&new, cut));

    let (last_old, first_new) = one_owner_at_a_time(&old, &new, cut, &Answer::Served, "two heads");
    // It refused (no lease) rather than went silent: it is still reachable.
    assert!(
        old.iter()
            .any(|(t, a)| *t > last_old && *a == Answer::NoLease),
        "the cut-off node never refused for want of a lease: {}\n{}",
        timeline(&old, cut),
        cluster.log(0)
    );
    let longest = writer.longest_since(cut);
    let fresh = Mount::new(&cluster.server, &domain, "fresh");
    let files = writer.check(&fresh.dir.join("w"), "across the partition");
    eprintln!(
        "link A cut: the cut-off node's last read {:?} after the cut, the successor's first write {:?}; replaced in {replaced:?}; longest write stall {longest:?}; {files} files read back",
        last_old.saturating_duration_since(cut),
        first_new.saturating_duration_since(cut)
    );
    assert!(
        longest < FAILURE_TIMEOUT + SLACK,
        "a 1 MiB write stalled {longest:?} (failure timeout {FAILURE_TIMEOUT:?})"
    );
}

#[test]
fn a_node_cut_off_from_its_clients_is_replaced_without_an_error() {
    replaced_without_an_error("link B", |h| h.cut_clients(), true);
}

/// The host gone from the network altogether: the case of the issue (30 s
/// for a write that took 4 s after a `kill -9` of the node).
#[test]
fn a_node_cut_off_from_everything_is_replaced_without_an_error() {
    replaced_without_an_error(
        "both links",
        |h| {
            h.cut_clients();
            h.cut_control();
        },
        false,
    );
}

/// Cuts one node's host with `cut` under a busy writer; `heartbeats`: the
/// node still reaches the control plane, so only its peers can tell.
fn replaced_without_an_error(what: &str, cut: impl Fn(&Host), heartbeats: bool) {
    if !netns::available() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let cluster = Cluster::start();
    let (_fs, domain) = file_system_with_mount_target(&cluster.server.client());
    let m = Mount::new(&cluster.server, &domain, "busy");
    let dir = m.dir.join("w");
    std::fs::create_dir(&dir).unwrap();
    let mut writer = Writer::start(dir);
    // A file per chain (files start at the chain their inode picks): the
    // mount holds connections to every node, as a busy one does, and
    // the cut leaves calls waiting on one of them.
    writer.wait_files(cluster.table().chains.len());

    let (cut_id, _) = cluster.ids[1].clone();
    cut(&cluster.hosts[1]);
    let cut = Instant::now();
    wait_for("the cut-off node to leave its chains", || {
        !cluster.table().node_ids().contains(&cut_id)
    });
    let replaced = cut.elapsed();
    writer.wait_files(5);
    writer.stop();
    if heartbeats {
        // It was replaced while it still heartbeats: its peers told.
        let node = cluster.server.node_list();
        let silent = node
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["Id"] == cut_id.as_str())
            .map(|n| n["SecondsSinceHeartbeat"].as_f64().unwrap());
        assert!(
            silent.is_some_and(|s| s < FAILURE_TIMEOUT.as_secs_f64()),
            "the cut-off node stopped heartbeating: {node}"
        );
    }
    let longest = writer.longest_since(cut);
    let fresh = Mount::new(&cluster.server, &domain, "fresh");
    let files = writer.check(&fresh.dir.join("w"), "across the partition");
    eprintln!(
        "{what} cut: replaced in {replaced:?}; longest write stall {longest:?}; {files} files read back"
    );
    assert!(
        longest < FAILURE_TIMEOUT + SLACK,
        "a 1 MiB write stalled {longest:?} (failure timeout {FAILURE_TIMEOUT:?})"
    );
}
