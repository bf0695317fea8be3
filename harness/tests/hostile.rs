//! A hostile client against real data nodes (issue 14, the node parts of
//! findings 2, 5 and 9): requests a real client never sends, straight to a
//! node over the wire. Each is refused before any I/O, throttle charge or
//! allocation, no worker panics, and the node goes on serving everyone.

use std::sync::atomic::Ordering;
use std::time::Duration;

use cpfs_harness::{check_bytes, pattern, stats_request, Cluster};
use cpfs_proto::capability::{NodeAuth, ADMIN, ANY_INODE, READ, WRITE};
use cpfs_proto::heartbeat::HeartbeatReply;
use cpfs_proto::layout::{BLOCK, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use cpfs_proto::meta::OpenFile;
use cpfs_proto::node::{ChainRef, NodeClient, NodeError, NodeRequest, NodeResponse};

const CHUNK: u64 = MIN_CHUNK_SIZE;
/// Where the finding's write landed: 48 GiB into one chunk.
const FAR: u64 = 48 << 30;
/// Long enough for any answer on a loaded machine; the refusals come at once.
const ANSWER: Duration = Duration::from_secs(10);

/// A client connection to the head of chunk `index`'s chain.
fn head_of(c: &Cluster, f: &OpenFile, index: u64) -> NodeClient {
    let chain = f.layout.chain_of(index);
    let head = c.table().chain(chain).unwrap().members[0].address.clone();
    NodeClient::new(head)
}

fn chain_ref(c: &Cluster, f: &OpenFile, index: u64) -> ChainRef {
    ChainRef {
        id: f.layout.chain_of(index),
        version: c.table().version,
    }
}

fn write_at(c: &Cluster, f: &OpenFile, offset: u64, data: Vec<u8>) -> NodeRequest {
    NodeRequest::Write {
        cap: c.cap(f.attr.ino, WRITE),
        chain: chain_ref(c, f, 0),
        key: c.chunk_key(f, 0),
        offset,
        data,
        forwarded: None,
    }
}

fn read_at(c: &Cluster, f: &OpenFile, offset: u64, len: u64) -> NodeRequest {
    NodeRequest::Read {
        cap: c.cap(f.attr.ino, READ),
        chain: chain_ref(c, f, 0),
        key: c.chunk_key(f, 0),
        offset,
        len,
    }
}

async fn answer(node: &NodeClient, req: NodeRequest) -> NodeResponse {
    tokio::time::timeout(ANSWER, node.call(req))
        .await
        .expect("the node did not answer in time")
        .expect("the node hung up")
}

fn out_of_range(r: &NodeResponse) -> bool {
    matches!(r, NodeResponse::Failed(NodeError::OutOfRange { .. }))
}

/// Chunk files of `f` on every node, and their bytes on disk.
fn stored(c: &Cluster, f: &OpenFile) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for n in c.nodes() {
        let dir = n
            .dir()
            .join("chunks")
            .join(c.fs())
            .join(f.attr.ino.to_string());
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            files += 1;
            bytes += e.metadata().map_or(0, |m| m.len());
        }
    }
    (files, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_the_chunk_size_is_refused_before_any_io() {
    let c = Cluster::start(2, 2).await;
    let f = c.create("far").await.unwrap();
    let head = head_of(&c, &f, 0);

    // One byte 48 GiB into a chunk: refused, and no chunk file appears on
    // any node (it made a 51 GB sparse file).
    let r = answer(&head, write_at(&c, &f, FAR, vec![1])).await;
    assert!(out_of_range(&r), "{r:?}");
    // Just past the largest chunk, and straddling its end: refused too.
    let r = answer(&head, write_at(&c, &f, MAX_CHUNK_SIZE, vec![1])).await;
    assert!(out_of_range(&r), "{r:?}");
    let r = answer(&head, write_at(&c, &f, MAX_CHUNK_SIZE - 1, vec![1, 2])).await;
    assert!(out_of_range(&r), "{r:?}");
    assert_eq!(stored(&c, &f), (0, 0), "a refused write left a chunk file");

    // Reads, truncates and repairs past the chunk are refused the same way.
    let r = answer(&head, read_at(&c, &f, FAR, 1)).await;
    assert!(out_of_range(&r), "{r:?}");
    let truncate = NodeRequest::Truncate {
        cap: c.cap(f.attr.ino, WRITE),
        chain: chain_ref(&c, &f, 0),
        key: c.chunk_key(&f, 0),
        len: FAR,
        forwarded: None,
    };
    let r = answer(&head, truncate).await;
    assert!(out_of_range(&r), "{r:?}");
    let repair = NodeRequest::Repair {
        cap: c.cap(f.attr.ino, WRITE),
        chain: chain_ref(&c, &f, 0),
        key: c.chunk_key(&f, 0),
        offset: FAR,
        data: vec![0; BLOCK as usize],
    };
    let r = answer(&head, repair).await;
    assert!(out_of_range(&r), "{r:?}");

    // The last byte of the largest chunk is still a chunk's byte.
    let r = answer(&head, write_at(&c, &f, MAX_CHUNK_SIZE - 1, vec![7])).await;
    assert!(matches!(r, NodeResponse::Done), "{r:?}");
    let r = answer(&head, read_at(&c, &f, MAX_CHUNK_SIZE - 1, 1)).await;
    assert!(matches!(&r, NodeResponse::Data(d) if d[..] == [7]), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_that_overflow_are_refused_and_no_worker_panics() {
    let c = Cluster::start(1, 1).await;
    let f = c.create("wrap").await.unwrap();
    let data = pattern(1, CHUNK as usize);
    c.write(&f, 0, &data).await.unwrap();
    let head = head_of(&c, &f, 0);
    let failures = c.node(0).node().unwrap().service_stats.clone();
    let before = failures.failures.load(Ordering::Relaxed);

    // offset + len wraps past 2^64: each is a clean refusal, not a panic
    // (a panicking worker answers nothing, or an I/O error).
    let hostile = [
        write_at(&c, &f, u64::MAX - 1, vec![1, 2, 3]),
        write_at(&c, &f, 1 << 63, vec![1]),
        read_at(&c, &f, u64::MAX, 1),
        read_at(&c, &f, 1, u64::MAX),
        read_at(&c, &f, 1 << 63, 1 << 63),
        NodeRequest::Repair {
            cap: c.cap(f.attr.ino, WRITE),
            chain: chain_ref(&c, &f, 0),
            key: c.chunk_key(&f, 0),
            offset: u64::MAX - (BLOCK - 1),
            data: vec![0; BLOCK as usize],
        },
        NodeRequest::Truncate {
            cap: c.cap(f.attr.ino, WRITE),
            chain: chain_ref(&c, &f, 0),
            key: c.chunk_key(&f, 0),
            len: u64::MAX,
            forwarded: None,
        },
    ];
    let n = hostile.len() as u64;
    for req in hostile {
        let r = answer(&head, req.clone()).await;
        assert!(out_of_range(&r), "{req:?} was answered {r:?}");
    }
    assert_eq!(failures.failures.load(Ordering::Relaxed), before + n);

    // The chunk is untouched and served as before.
    check_bytes("read", &c.read(&f, 0, CHUNK).await.unwrap(), &data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_huge_read_does_not_stall_other_clients() {
    // 1 MiB/s: a forged read of u64::MAX bytes charged to the throttle
    // would hold every client for half a million years.
    let c = Cluster::builder()
        .nodes(1)
        .replicas(1)
        .max_bandwidth(1 << 20)
        .build()
        .await
        .unwrap();
    let f = c.create("victim").await.unwrap();
    let data = pattern(2, BLOCK as usize);
    c.write(&f, 0, &data).await.unwrap();
    let head = head_of(&c, &f, 0);

    // Without a capability that covers it...
    let mut forged = read_at(&c, &f, 0, u64::MAX);
    if let NodeRequest::Read { cap, .. } = &mut forged {
        cap.mac = [0; 16];
    }
    let r = answer(&head, forged).await;
    assert!(
        matches!(r, NodeResponse::Failed(NodeError::BadCapability)),
        "{r:?}"
    );
    // ...and with one, but a length no chunk has.
    let r = answer(&head, read_at(&c, &f, 0, u64::MAX)).await;
    assert!(out_of_range(&r), "{r:?}");

    // Everyone else is served at the configured rate, not after them.
    let back = tokio::time::timeout(ANSWER, c.read(&f, 0, BLOCK))
        .await
        .expect("a genuine read stalled behind forged ones")
        .unwrap();
    check_bytes("read", &back, &data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_stats_need_the_cluster_capability() {
    let c = Cluster::start(1, 1).await;
    let f = c.create("tenant").await.unwrap();
    c.write(&f, 0, &pattern(3, BLOCK as usize)).await.unwrap();
    let node = NodeClient::new(c.node(0).addr().to_string());

    // A client holds capabilities of its own file system only, even the
    // widest: none of them passes for the node proof that lists the
    // node's tenants.
    for cap in [
        c.cap(f.attr.ino, READ | WRITE),
        c.key().issue(c.fs(), ANY_INODE, ADMIN, i64::MAX),
        c.key().issue("", ANY_INODE, ADMIN, i64::MAX),
    ] {
        let auth = NodeAuth {
            expires: cap.expires,
            mac: cap.mac,
        };
        let r = answer(&node, NodeRequest::Stats { auth }).await;
        assert!(
            matches!(r, NodeResponse::Failed(NodeError::BadCapability)),
            "{r:?}"
        );
    }
    // The cluster (control plane, operator tools, other nodes) may ask.
    match answer(&node, stats_request(c.key())).await {
        NodeResponse::Stats(s) => assert!(s.file_systems.iter().any(|u| u.fs == c.fs())),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_sends_requests_only_for_chunks_that_exist() {
    let c = Cluster::start(2, 2).await;
    let f = c.create("sparse").await.unwrap();
    c.write(&f, 0, &pattern(4, 3 * CHUNK as usize))
        .await
        .unwrap();
    // One chunk far out, as a sparse file has.
    let far = 1_000_000 * CHUNK;
    c.write(&f, far, &pattern(5, 10)).await.unwrap();
    let requests = |c: &Cluster| -> u64 {
        c.nodes()
            .iter()
            .map(|n| {
                n.node()
                    .unwrap()
                    .service_stats
                    .requests
                    .load(Ordering::Relaxed)
            })
            .sum()
    };
    let before = requests(&c);

    // From a size of 2^50 bytes (2^34 chunks) down to half a chunk: one
    // request per chunk of the range would never end.
    let cut = tokio::time::timeout(
        ANSWER,
        c.data().truncate(
            &c.cap(f.attr.ino, WRITE),
            &f.layout,
            f.attr.ino,
            CHUNK / 2,
            1 << 50,
        ),
    )
    .await
    .expect("the truncate did not finish");
    cut.unwrap();
    // The listing of each chain, the kept chunk and the three cut ones
    // (each applied on the head and forwarded to the other copy).
    let sent = requests(&c) - before;
    let chains = {
        let mut ch = f.layout.chains.clone();
        ch.sort_unstable();
        ch.dedup();
        ch.len() as u64
    };
    assert!(sent <= chains + 4 * 2, "{sent} requests");
    // Only the first half chunk is left, on both copies.
    assert_eq!(stored(&c, &f).0, 2);
    let back = c.read(&f, 0, CHUNK).await.unwrap();
    check_bytes(
        "kept",
        &back[..CHUNK as usize / 2],
        &pattern(4, CHUNK as usize / 2),
    )
    .unwrap();
    assert!(back[CHUNK as usize / 2..].iter().all(|b| *b == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_file_past_the_largest_size_is_resynced_in_bounded_pieces() {
    let mut c = Cluster::start(2, 2).await;
    c.fail_over(1).await.unwrap();
    let f = c.create("grown").await.unwrap();
    let data = pattern(6, 2 * CHUNK as usize);
    c.write(&f, 0, &data).await.unwrap();
    // A chunk file 48 GiB long (sparse), as the unbounded write left one:
    // a resync that read it whole would allocate 48 GiB and abort.
    let path = c
        .node(0)
        .dir()
        .join("chunks")
        .join(c.fs())
        .join(f.attr.ino.to_string())
        .join(format!("0.c{}", f.layout.chain_of(0)));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(FAR)
        .unwrap();

    c.restart_node(1).await.unwrap();
    c.add_syncing_members().await.unwrap();
    let reports = c.wait_resynced(Duration::from_secs(60)).await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    // The member got the chunk up to the largest chunk size, no more.
    let copy = c
        .node(1)
        .dir()
        .join("chunks")
        .join(c.fs())
        .join(f.attr.ino.to_string())
        .join(format!("0.c{}", f.layout.chain_of(0)));
    let len = std::fs::metadata(&copy).unwrap().len();
    assert_eq!(len, MAX_CHUNK_SIZE / BLOCK * (BLOCK + 4));
    c.promote_synced().await.unwrap();
    c.fail_over(0).await.unwrap();
    check_bytes("read", &c.read(&f, 0, 2 * CHUNK).await.unwrap(), &data).unwrap();
}

/// A read of chunk 0 of `f` from one member, with `cap`.
async fn read_member(c: &Cluster, f: &OpenFile, addr: &str, len: u64) -> NodeResponse {
    let mut req = read_at(c, f, 0, len);
    if let NodeRequest::Read { cap, .. } = &mut req {
        *cap = c.cap(f.attr.ino, READ);
    }
    answer(&NodeClient::new(addr.to_string()), req).await
}

/// The addresses of the members of chunk 0's chain, head first.
fn members(c: &Cluster, f: &OpenFile) -> Vec<String> {
    let chain = f.layout.chain_of(0);
    let t = c.table();
    t.chain(chain)
        .unwrap()
        .members
        .iter()
        .map(|m| m.address.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_pass_its_write_off_as_forwarded_to_a_replica() {
    let c = Cluster::start(2, 2).await;
    let f = c.create("copies").await.unwrap();
    let data = pattern(7, BLOCK as usize);
    c.write(&f, 0, &data).await.unwrap();
    let m = members(&c, &f);
    let replica = NodeClient::new(m[1].clone());

    // Straight to the second copy, marked forwarded: with no proof a node
    // could check, with the client's own MAC posing as one, with a proof
    // of another cluster. Each is refused, and the copies still agree.
    let posing = c.cap(f.attr.ino, WRITE);
    let proofs = [
        NodeAuth {
            expires: i64::MAX,
            mac: [0; 16],
        },
        NodeAuth {
            expires: posing.expires,
            mac: posing.mac,
        },
        cpfs_proto::capability::NodeKey::from_cluster_token("another cluster").issue(i64::MAX),
    ];
    for proof in proofs {
        let mut w = write_at(&c, &f, 0, vec![0xee; BLOCK as usize]);
        if let NodeRequest::Write { forwarded, .. } = &mut w {
            *forwarded = Some(proof);
        }
        let r = answer(&replica, w).await;
        assert!(
            matches!(r, NodeResponse::Failed(NodeError::BadCapability)),
            "{r:?}"
        );
        let mut t = NodeRequest::Truncate {
            cap: c.cap(f.attr.ino, WRITE),
            chain: chain_ref(&c, &f, 0),
            key: c.chunk_key(&f, 0),
            len: 0,
            forwarded: None,
        };
        if let NodeRequest::Truncate { forwarded, .. } = &mut t {
            *forwarded = Some(NodeAuth {
                expires: posing.expires,
                mac: posing.mac,
            });
        }
        let r = answer(&replica, t).await;
        assert!(
            matches!(r, NodeResponse::Failed(NodeError::BadCapability)),
            "{r:?}"
        );
    }
    for addr in &m {
        match read_member(&c, &f, addr, BLOCK).await {
            NodeResponse::Data(d) => check_bytes(addr, &d, &data).unwrap(),
            other => panic!("{addr}: {other:?}"),
        }
    }
    // Resync's and repair's requests need the proof too.
    let block = NodeRequest::ReadBlock {
        auth: NodeAuth {
            expires: posing.expires,
            mac: posing.mac,
        },
        chain: chain_ref(&c, &f, 0),
        key: c.chunk_key(&f, 0),
        block: 0,
    };
    let r = answer(&replica, block).await;
    assert!(
        matches!(r, NodeResponse::Failed(NodeError::BadCapability)),
        "{r:?}"
    );
    // A client write through the head still reaches both copies.
    let again = pattern(8, BLOCK as usize);
    c.write(&f, 0, &again).await.unwrap();
    for addr in &m {
        match read_member(&c, &f, addr, BLOCK).await {
            NodeResponse::Data(d) => check_bytes(addr, &d, &again).unwrap(),
            other => panic!("{addr}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_cannot_repair_a_damaged_block_and_the_node_heals_it() {
    let c = Cluster::start(2, 2).await;
    let f = c.create("damaged").await.unwrap();
    let data = pattern(9, BLOCK as usize);
    c.write(&f, 0, &data).await.unwrap();
    let m = members(&c, &f);
    // Damage the first block of the second copy on disk.
    let victim = c
        .index_of(&c.table().chain(f.layout.chain_of(0)).unwrap().members[1].id)
        .unwrap();
    let path = c
        .node(victim)
        .dir()
        .join("chunks")
        .join(c.fs())
        .join(f.attr.ino.to_string())
        .join(format!("0.c{}", f.layout.chain_of(0)));
    let mut raw = std::fs::read(&path).unwrap();
    raw[10] ^= 0xff;
    std::fs::write(&path, &raw).unwrap();

    // A client with read rights only offers its own bytes for the block.
    let repair = NodeRequest::Repair {
        cap: c.cap(f.attr.ino, READ),
        chain: chain_ref(&c, &f, 0),
        key: c.chunk_key(&f, 0),
        offset: 0,
        data: vec![0x66; BLOCK as usize],
    };
    let r = answer(&NodeClient::new(m[1].clone()), repair).await;
    assert!(
        matches!(r, NodeResponse::Failed(NodeError::BadCapability)),
        "{r:?}"
    );
    // The damaged copy is not served; the read makes the node heal it
    // from the other member, and then it serves the written bytes.
    let deadline = tokio::time::Instant::now() + ANSWER;
    loop {
        match read_member(&c, &f, &m[1], BLOCK).await {
            NodeResponse::Data(d) => {
                check_bytes("healed", &d, &data).unwrap();
                break;
            }
            NodeResponse::Failed(NodeError::Checksum) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not heal its copy"
        );
        tokio::task::yield_now().await;
    }
}

/// A heartbeat reply as the control plane sends it, naming the file
/// systems over capacity (`None`: it could not tell).
fn reply_with_full(c: &Cluster, full: Option<Vec<String>>) -> HeartbeatReply {
    HeartbeatReply {
        chain_table: c.table().clone(),
        dropped: vec![],
        lease_ms: 0,
        revoked: vec![],
        full,
        peers: vec![],
        qos: None,
    }
}

/// Gives every node of `c` a heartbeat reply naming `full`.
async fn apply(c: &Cluster, full: Option<Vec<String>>) {
    let reply = reply_with_full(c, full);
    for n in c.nodes() {
        n.node().unwrap().apply(reply.clone()).await;
    }
}

/// Finding 5, node side: a file system whose nodes store more than its
/// capacity (raw writes past the size the namespace recorded count only
/// there) gets no more blocks. The chain head refuses client writes that
/// would add blocks; rewriting stored blocks goes on; the refusal lasts
/// until a heartbeat reply no longer names the file system.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_system_over_capacity_on_the_nodes_gets_no_more_blocks() {
    let c = Cluster::start(2, 2).await;
    let f = c.create("full").await.unwrap();
    let head = head_of(&c, &f, 0);
    let first = pattern(1, 2 * BLOCK as usize);
    let r = answer(&head, write_at(&c, &f, 0, first.clone())).await;
    assert!(matches!(r, NodeResponse::Done), "{r:?}");
    let before = stored(&c, &f);

    apply(&c, Some(vec![c.fs().to_string()])).await;
    let grow = || write_at(&c, &f, 2 * BLOCK, vec![1; 10]);
    let r = answer(&head, grow()).await;
    assert!(
        matches!(r, NodeResponse::Failed(NodeError::NoSpace)),
        "{r:?}"
    );
    assert_eq!(stored(&c, &f), before, "a refused write stored blocks");
    // A rewrite adds nothing: it goes on, on every copy.
    let r = answer(&head, write_at(&c, &f, 100, vec![9; 100])).await;
    assert!(matches!(r, NodeResponse::Done), "{r:?}");
    let r = answer(&head, read_at(&c, &f, 0, 2 * BLOCK)).await;
    let mut expect = first.clone();
    expect[100..200].fill(9);
    assert!(matches!(&r, NodeResponse::Data(d) if d == &expect), "{r:?}");

    // A reply that cannot tell keeps the refusal; one that no longer names
    // the file system lifts it.
    apply(&c, None).await;
    let r = answer(&head, grow()).await;
    assert!(
        matches!(r, NodeResponse::Failed(NodeError::NoSpace)),
        "{r:?}"
    );
    apply(&c, Some(vec![])).await;
    let r = answer(&head, grow()).await;
    assert!(matches!(r, NodeResponse::Done), "{r:?}");
}
