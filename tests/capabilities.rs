//! Data-node capabilities through a real mount (issue 14, finding 8): a
//! file held open across many capability lifetimes keeps working (the
//! mount renews its capability), and deleting the mount target stops the
//! writes of files already open within seconds, not when an hour-long
//! capability expires.

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::mount::{file_system_with_mount_target, wait_for, Mount};
use common::Server;

#[test]
fn a_file_held_open_across_capability_lifetimes_keeps_working() {
    let lifetime = Duration::from_secs(2);
    let server = Server::start(&["--capability-secs", "2"]);
    let c = server.client();
    let (_id, domain) = file_system_with_mount_target(&c);
    let m = Mount::new(&server, &domain, "m");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.dir.join("long-open"))
        .unwrap();
    // I/O through the one handle, paced over four lifetimes: every
    // capability the handle started with expires on the way.
    let start = Instant::now();
    let mut block = 0u64;
    while start.elapsed() < 4 * lifetime {
        let data = vec![(block % 251) as u8; 4096];
        f.write_all_at(&data, block * 4096)
            .unwrap_or_else(|e| panic!("write {block} after {:?}: {e}", start.elapsed()));
        f.sync_all().unwrap();
        let mut back = vec![0u8; 4096];
        f.read_exact_at(&mut back, block * 4096).unwrap();
        assert_eq!(back, data, "block {block}");
        block += 1;
        std::thread::sleep(lifetime / 4);
    }
    assert!(block >= 8, "{block} rounds");
}

#[test]
fn deleting_the_mount_target_stops_open_files_within_seconds() {
    // The default lifetime (minutes): only a revocation stops them this soon.
    let server = Server::start(&[]);
    let c = server.client();
    let (id, domain) = file_system_with_mount_target(&c);
    let m = Mount::new(&server, &domain, "m");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.dir.join("open"))
        .unwrap();
    f.write_all_at(&[1; 65536], 0).unwrap();
    f.sync_all().unwrap();

    c.ok(
        "DeleteMountTarget",
        &[("FileSystemId", &id), ("MountTargetDomain", &domain)],
    );
    let deleted = Instant::now();
    // Overwrites inside the recorded size go to the nodes only, under the
    // capability of the open file.
    wait_for("writes of an open file to be refused", || {
        f.write_all_at(&[2; 4096], 0).is_err()
    });
    assert!(
        deleted.elapsed() < Duration::from_secs(15),
        "took {:?}",
        deleted.elapsed()
    );
}
