//! `kill -9` of `cpfs serve` at arbitrary points while file systems are
//! being provisioned, upgraded and deleted: after a restart everything
//! converges, and node reservations match exactly what exists.

mod common;

use common::Server;
use std::time::Duration;

#[test]
fn converges_after_sigkill_during_provisioning() {
    let mut server = Server::start(&[]);
    let c = server.client();
    let mut ids = Vec::new();
    let mut deleted = Vec::new();
    for round in 0..6u64 {
        // Issue work, then kill at a different moment each round.
        for _ in 0..3 {
            ids.push(c.create_fs("2048"));
        }
        if round % 2 == 1 {
            let victim = ids.remove(0);
            let _ = c.call("DeleteFileSystem", &[("FileSystemId", &victim)]);
            deleted.push(victim);
        }
        if let Some(first) = ids.first() {
            let _ = c.call(
                "UpgradeFileSystem",
                &[("FileSystemId", first), ("Capacity", "51200")],
            );
        }
        std::thread::sleep(Duration::from_millis(round * 3));
        server.kill9();
        server.spawn();
    }
    let c = server.client();
    for id in &ids {
        c.wait_running(id);
    }
    for id in &deleted {
        c.wait_fs(id, "gone", |f| f.is_none());
    }
    // Every surviving file system is placed exactly once: capacity x 2
    // replicas over the 3 embedded nodes, nothing left of deleted ones.
    let v = c.ok("DescribeFileSystems", &[("PageSize", "100")]);
    assert_eq!(v["TotalCount"].as_u64().unwrap() as usize, ids.len());
    let total_gib: i64 = v["FileSystems"]["FileSystem"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["Capacity"].as_i64().unwrap())
        .sum();
    // Everything has converged, so the reservations are at rest; read
    // through the running server's admin API.
    let nodes = server.node_list();
    let reserved: i64 = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["ReservedBytes"].as_i64().unwrap())
        .sum();
    let want = total_gib * (1 << 30) * 2;
    // Per-node rounding adds at most a few bytes per file system.
    assert!(
        reserved >= want && reserved - want < 16 * ids.len() as i64,
        "reserved {reserved}, want {want}"
    );
}
