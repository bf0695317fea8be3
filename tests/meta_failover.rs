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

use std::time::{Duration, Instant};

use common::meta_servers::{
    embedded_id, meta_list, owner, postgres, wait_for_spread, MetaServer, Writer,
};
use common::mount::{file_system_with_mount_target, wait_for, Mount};
use common::Server;

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
    let list = wait_for_spread(&server, [&fs1, &fs2], "meta-b.log");
    let embedded = embedded_id(&server);
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
    let fresh = Mount::new(&server, &domain, "fresh");
    let names = writer.assert_tree(&fresh.dir.join("w"), "failover");
    eprintln!(
        "moved in {moved:?}; longest stall {longest:?}; {} names",
        names
    );
}
