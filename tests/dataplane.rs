//! Data-plane behaviour of the real binaries that the POSIX suite does not
//! cover: node authentication, persistence across restarts, and deletion.

mod common;

use common::mount::{file_system_with_mount_target, wait_for, Mount};
use common::Server;
use std::process::{Command, Stdio};

fn chunk_files(dir: &std::path::Path, fs_id: &str) -> usize {
    let mut n = 0;
    let Ok(nodes) = std::fs::read_dir(dir.join("data").join("nodes")) else {
        return 0;
    };
    for node in nodes.flatten() {
        let base = node.path().join("chunks").join(fs_id);
        if let Ok(inodes) = std::fs::read_dir(base) {
            for i in inodes.flatten() {
                n += std::fs::read_dir(i.path()).map(|c| c.count()).unwrap_or(0);
            }
        }
    }
    n
}

#[test]
fn a_node_with_the_wrong_cluster_token_is_refused() {
    let server = Server::start(&["--nodes", "0"]);
    let out = Command::new(env!("CARGO_BIN_EXE_cpfs"))
        .args(["node", "--data-dir"])
        .arg(server.dir.join("rogue"))
        .args([
            "--controlplane",
            &format!("http://127.0.0.1:{}", server.port),
        ])
        .env("CPFS_CLUSTER_TOKEN", "not-the-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster token"), "{err}");
    // And without any token at all, a clear message.
    let out = Command::new(env!("CARGO_BIN_EXE_cpfs"))
        .args(["node", "--data-dir"])
        .arg(server.dir.join("rogue2"))
        .env_remove("CPFS_CLUSTER_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CPFS_CLUSTER_TOKEN"));
}

#[test]
fn data_survives_a_restart_and_deletion_removes_it() {
    let mut server = Server::start(&[]);
    let c = server.client();
    let (id, domain) = file_system_with_mount_target(&c);
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    {
        let m = Mount::new(&server, &domain, "m1");
        std::fs::write(m.dir.join("data.bin"), &payload).unwrap();
        std::fs::create_dir(m.dir.join("sub")).unwrap();
    }
    // Three 1 MiB chunks, two copies each.
    assert_eq!(chunk_files(&server.dir, &id), 6);

    // kill -9 the whole service (its nodes die with it), start it again.
    server.kill9();
    server.spawn();
    let c = server.client();
    {
        let m = Mount::new(&server, &domain, "m2");
        assert_eq!(std::fs::read(m.dir.join("data.bin")).unwrap(), payload);
        assert!(m.dir.join("sub").is_dir());
    }

    // Deleting the file system removes its chunks from every node.
    c.ok("DeleteFileSystem", &[("FileSystemId", &id)]);
    c.wait_fs(&id, "gone", |f| f.is_none());
    // Nodes drop a deleted file system's chunks on their next heartbeat.
    wait_for("the chunks to be dropped", || {
        chunk_files(&server.dir, &id) == 0
    });
    // A mount of the deleted file system is refused with a clear message.
    let out = Command::new(env!("CARGO_BIN_EXE_cpfs"))
        .args(["mount", &domain])
        .arg(server.dir.join("m2"))
        .args([
            "--controlplane",
            &format!("http://127.0.0.1:{}", server.port),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no mount target"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Nodes whose disks fill up: a write that does not fit fails with ENOSPC
/// (reported by a later write or by fsync), and what was written before is
/// intact.
#[test]
fn a_full_file_system_returns_enospc_and_keeps_its_data() {
    let server = Server::start(&["--nodes", "0"]);
    let token = std::fs::read_to_string(server.dir.join("data").join("cluster-token")).unwrap();
    let mut nodes = Vec::new();
    let mut tmpfs = Vec::new();
    for i in 0..3 {
        let dir = server.dir.join(format!("small-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "mounting a small tmpfs (the test runs as root)"
        );
        tmpfs.push(dir.clone());
        nodes.push(
            Command::new(env!("CARGO_BIN_EXE_cpfs"))
                .args(["node", "--data-dir"])
                .arg(&dir)
                .args([
                    "--controlplane",
                    &format!("http://127.0.0.1:{}", server.port),
                ])
                .env("CPFS_CLUSTER_TOKEN", token.trim())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let c = server.client();
    let (_id, domain) = file_system_with_mount_target(&c);
    let result = std::panic::catch_unwind(|| {
        let m = Mount::new(&server, &domain, "full");
        let keep: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(m.dir.join("keep.bin"), &keep).unwrap();
        // Each node holds 2/3 of all copies: ~24 MiB of data fills 16 MiB nodes.
        use std::io::Write;
        let mut f = std::fs::File::create(m.dir.join("fill.bin")).unwrap();
        let block = vec![0x5au8; 1 << 20];
        let mut err = None;
        for _ in 0..64 {
            if let Err(e) = f.write_all(&block) {
                err = Some(e);
                break;
            }
        }
        // The mount answers writes before the nodes have them (its
        // write-behind): the refusal comes with a later write, or with
        // fsync at the latest.
        let err = err.or_else(|| f.sync_all().err());
        let e = err.expect("writing 64 MiB into 48 MiB of node disks must fail");
        assert_eq!(e.raw_os_error(), Some(libc_enospc()), "{e}");
        drop(f);
        assert_eq!(
            std::fs::read(m.dir.join("keep.bin")).unwrap(),
            keep,
            "earlier data is intact"
        );
    });
    for mut n in nodes {
        let _ = n.kill();
        let _ = n.wait();
    }
    for d in tmpfs {
        let _ = Command::new("umount").arg("-l").arg(&d).status();
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

fn libc_enospc() -> i32 {
    28
}

/// A copy corrupted on disk is detected by its checksum, the read is served
/// from the other copy, and the bad copy is rewritten and counted.
#[test]
fn a_corrupt_copy_is_served_from_the_other_and_repaired() {
    let server = Server::start(&[]);
    let c = server.client();
    let (id, domain) = file_system_with_mount_target(&c);
    let payload: Vec<u8> = (0..600_000u32).map(|i| (i % 241) as u8).collect();
    {
        let m = Mount::new(&server, &domain, "w");
        std::fs::write(m.dir.join("f.bin"), &payload).unwrap();
    }
    // The two copies of chunk 0 of the file.
    let mut copies = Vec::new();
    for node in std::fs::read_dir(server.dir.join("data").join("nodes"))
        .unwrap()
        .flatten()
    {
        let fs_dir = node.path().join("chunks").join(&id);
        for inode in std::fs::read_dir(&fs_dir).into_iter().flatten().flatten() {
            // Chunk 0 of the inode, whatever chain it is on (`0.c<chain>`).
            for chunk in std::fs::read_dir(inode.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if chunk.file_name().to_string_lossy().starts_with("0.c") {
                    copies.push(chunk.path());
                }
            }
        }
    }
    assert_eq!(copies.len(), 2, "R = 2 copies: {copies:?}");
    let good = std::fs::read(&copies[1]).unwrap();
    assert_eq!(
        std::fs::read(&copies[0]).unwrap(),
        good,
        "replicas are identical"
    );
    let errors_before: i64 = server
        .node_list()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["ChecksumErrors"].as_i64().unwrap())
        .sum();
    assert_eq!(errors_before, 0);

    // Reads of a chunk go to one chosen member first; corrupt each copy in
    // turn, so one round corrupts the copy that reads hit.
    let mut repaired = None;
    for (k, victim) in copies.iter().enumerate() {
        let mut bad = good.clone();
        // Flip bytes in the first and in a middle block.
        bad[10] ^= 0xff;
        bad[4100 * 50 + 7] ^= 0xff;
        std::fs::write(victim, &bad).unwrap();
        // A fresh mount returns the original bytes, whichever copy it reads.
        {
            let m = Mount::new(&server, &domain, &format!("r{k}"));
            assert_eq!(
                std::fs::read(m.dir.join("f.bin")).unwrap(),
                payload,
                "copy {k} corrupted"
            );
        }
        // The node whose copy failed its checksum heals it in the
        // background (`Node::heal`), after the read was answered from the
        // other copy: wait a few seconds for it. A copy the reads did not
        // hit stays bad, and the next round corrupts the other one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let healed = loop {
            if std::fs::read(victim).unwrap() == good {
                break true;
            }
            if std::time::Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        if healed {
            repaired = Some(k);
            break;
        }
        std::fs::write(victim, &good).unwrap();
    }
    assert!(
        repaired.is_some(),
        "the copy that was read and failed its checksum was rewritten from the good one"
    );
    // ... and the nodes counted it (reported on their heartbeats).
    wait_for("the counters", || {
        let nodes = server.node_list();
        let sum = |k: &str| {
            nodes
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n[k].as_i64().unwrap())
                .sum::<i64>()
        };
        sum("ChecksumErrors") >= 1 && sum("Repairs") >= 1
    });
}
