//! What the journal committed is what a restarted metadata service loads:
//! names, attributes, extended attributes, orphans, counters, the next
//! inode number and request records, on SQLite and PostgreSQL; and a server
//! whose file system went to another owner writes nothing more (fencing by
//! epoch).

use cpfs_proto::meta::{Attr, FsStat, MetaOp, MetaReply, RequestId, SetAttr, ROOT_INO};
use cpfs_store::Store;

use crate::exactly_once_tests::{backends, open, Backend};

/// Everything a client can see of the namespace, walked from the root.
async fn snapshot(b: &Backend) -> (Vec<(String, Attr, Vec<(Vec<u8>, Vec<u8>)>)>, FsStat) {
    let mut out = Vec::new();
    let mut dirs = vec![(ROOT_INO, String::new())];
    while let Some((dir, path)) = dirs.pop() {
        let entries = match b
            .run(
                MetaOp::ReadDir {
                    ino: dir,
                    after: None,
                    limit: 1000,
                },
                None,
            )
            .await
        {
            MetaReply::Dir { entries, .. } => entries,
            other => panic!("{}: readdir: {other:?}", b.name),
        };
        for e in entries {
            let p = format!("{path}/{}", String::from_utf8_lossy(&e.name));
            let MetaReply::Attr(a) = b.run(MetaOp::GetAttr { ino: e.ino }, None).await else {
                panic!("{}: getattr {p}", b.name)
            };
            let mut xattrs = Vec::new();
            if let MetaReply::XattrNames(names) =
                b.run(MetaOp::ListXattr { ino: e.ino }, None).await
            {
                for name in names {
                    if let MetaReply::Xattr(v) = b
                        .run(
                            MetaOp::GetXattr {
                                ino: e.ino,
                                name: name.clone(),
                            },
                            None,
                        )
                        .await
                    {
                        xattrs.push((name, v));
                    }
                }
            }
            if a.kind == cpfs_proto::meta::Kind::Dir {
                dirs.push((a.ino, p.clone()));
            }
            out.push((p, a, xattrs));
        }
    }
    out.sort_by(|x, y| x.0.cmp(&y.0));
    let MetaReply::StatFs(st) = b.run(MetaOp::StatFs, None).await else {
        panic!("{}: statfs", b.name)
    };
    (out, st)
}

/// Creating and opening `name` in `parent` with `mode` (no umask).
fn create_op(parent: u64, name: &[u8], mode: u32) -> MetaOp {
    MetaOp::Create {
        parent,
        name: name.to_vec(),
        mode,
        umask: 0,
        read: true,
    }
}

fn id(seq: u64) -> Option<RequestId> {
    Some(RequestId { client: 9, seq })
}

async fn entry(b: &Backend, op: MetaOp, seq: u64) -> Attr {
    match b.run(op, id(seq)).await {
        MetaReply::Entry(a) | MetaReply::Attr(a) => a,
        MetaReply::Open(o) => o.attr,
        other => panic!("{}: {other:?}", b.name),
    }
}

#[tokio::test]
async fn a_restarted_service_loads_exactly_what_was_committed() {
    for mut b in backends().await {
        let n = b.name;
        let d = entry(
            &b,
            MetaOp::Mkdir {
                parent: ROOT_INO,
                name: b"d".to_vec(),
                mode: 0o755,
                umask: 0,
            },
            1,
        )
        .await;
        let f = entry(&b, create_op(d.ino, b"f", 0o640), 2).await;
        entry(
            &b,
            MetaOp::Written {
                ino: f.ino,
                size: 12345,
                resumed: false,
            },
            3,
        )
        .await;
        // Closed: what its create set aside is given back (a restart
        // gives back what open handles hold).
        let close = MetaOp::Release {
            ino: f.ino,
            writable: true,
        };
        assert!(matches!(b.run(close, None).await, MetaReply::Done), "{n}");
        entry(
            &b,
            MetaOp::Symlink {
                parent: ROOT_INO,
                name: b"s".to_vec(),
                target: b"d/f".to_vec(),
            },
            4,
        )
        .await;
        entry(
            &b,
            MetaOp::Link {
                ino: f.ino,
                new_parent: ROOT_INO,
                new_name: b"hard".to_vec(),
            },
            5,
        )
        .await;
        let g = entry(&b, create_op(ROOT_INO, b"gone", 0o600), 6).await;
        // Held open through a handle without capacity set aside (a
        // restart gives that back): released and opened again.
        let close = MetaOp::Release {
            ino: g.ino,
            writable: true,
        };
        assert!(matches!(b.run(close, None).await, MetaReply::Done), "{n}");
        let reopen = MetaOp::Open {
            ino: g.ino,
            read: true,
            write: true,
        };
        assert!(
            matches!(b.run(reopen, None).await, MetaReply::Open(_)),
            "{n}"
        );
        entry(
            &b,
            MetaOp::Written {
                ino: g.ino,
                size: 4096,
                resumed: false,
            },
            7,
        )
        .await;
        let set = SetAttr {
            mode: Some(0o600),
            ..Default::default()
        };
        entry(&b, MetaOp::SetAttr { ino: f.ino, set }, 8).await;
        let xattr = MetaOp::SetXattr {
            ino: d.ino,
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
            flags: 0,
        };
        assert!(matches!(b.run(xattr, id(9)).await, MetaReply::Done), "{n}");
        let rename = MetaOp::Rename {
            parent: ROOT_INO,
            name: b"hard".to_vec(),
            new_parent: d.ino,
            new_name: b"h2".to_vec(),
            flags: 0,
        };
        assert!(
            matches!(b.run(rename, id(10)).await, MetaReply::Done),
            "{n}"
        );
        let unlink = MetaOp::Unlink {
            parent: ROOT_INO,
            name: b"gone".to_vec(),
        };
        assert!(
            matches!(b.run(unlink.clone(), id(11)).await, MetaReply::Done),
            "{n}"
        );
        // The newest inode number, gone with its directory: its row is
        // deleted, so only the stored counter keeps it from reuse.
        let tmp = entry(
            &b,
            MetaOp::Mkdir {
                parent: ROOT_INO,
                name: b"tmp".to_vec(),
                mode: 0o755,
                umask: 0,
            },
            13,
        )
        .await;
        let rmdir = MetaOp::Rmdir {
            parent: ROOT_INO,
            name: b"tmp".to_vec(),
        };
        assert!(matches!(b.run(rmdir, id(14)).await, MetaReply::Done), "{n}");
        let before = snapshot(&b).await;

        // A new service on the same database, as after kill -9.
        b.svc = open(Store::open(&b.url).await.unwrap());
        let after = snapshot(&b).await;
        assert_eq!(
            format!("{:?}", before.0),
            format!("{:?}", after.0),
            "{n}: the tree changed"
        );
        assert_eq!(
            format!("{:?}", before.1),
            format!("{:?}", after.1),
            "{n}: the counters changed"
        );
        assert_eq!(
            after.1.used_bytes,
            12345 + 4096 + "user.k".len() as u64 + 1,
            "{n}: used bytes (the orphan still counts, and so does the xattr; a symlink does not)"
        );

        // The retry of an operation applied before the restart is answered
        // as applied, not applied again.
        assert!(
            matches!(b.run(unlink, id(11)).await, MetaReply::Done),
            "{n}"
        );
        // New inodes never reuse a number.
        let newest = before
            .0
            .iter()
            .map(|e| e.1.ino)
            .max()
            .unwrap()
            .max(g.ino)
            .max(tmp.ino);
        let h = entry(&b, create_op(ROOT_INO, b"new", 0o600), 12).await;
        assert!(
            h.ino > newest,
            "{n}: inode {} reused (newest was {newest})",
            h.ino
        );
    }
}

/// A server that still believes in its lease after the control plane gave
/// its file system to another (a newer epoch) gets nothing into the store,
/// and answers "moved" so that the client retries at the new owner.
#[tokio::test]
async fn a_server_whose_file_system_was_reassigned_writes_nothing_more() {
    use cpfs_proto::heartbeat::Owned;
    for b in backends().await {
        let n = b.name;
        let fs = b.s.fs.clone();
        sqlx::query(
            "INSERT INTO meta_assignments (fs_id, server_id, epoch, since_ms) VALUES ($1, 'a', 1, 0)",
        )
        .bind(&fs)
        .execute(&b.svc.store.pool)
        .await
        .unwrap();
        let lease = std::time::Instant::now() + std::time::Duration::from_secs(60);
        b.svc.serve_by_lease().renew(
            vec![Owned {
                fs: fs.clone(),
                epoch: 1,
            }],
            lease,
        );
        let create = |name: &str| create_op(ROOT_INO, name.as_bytes(), 0o644);
        assert!(
            matches!(b.run(create("kept"), id(1)).await, MetaReply::Open(_)),
            "{n}"
        );
        sqlx::query("UPDATE meta_assignments SET epoch = 2, server_id = 'b' WHERE fs_id = $1")
            .bind(&fs)
            .execute(&b.svc.store.pool)
            .await
            .unwrap();
        match b.run(create("lost"), id(2)).await {
            // "Moved": the client retries where the file system went.
            MetaReply::Err { errno, .. } => {
                assert_eq!(errno, cpfs_proto::meta::errno::EMOVED, "{n}")
            }
            other => panic!("{n}: a fenced create answered {other:?}"),
        }
        // The next owner folds what the journal's log holds (PostgreSQL)
        // before it reads the tables: "kept" is there, "lost" nowhere.
        let key: std::sync::Arc<str> = fs.as_str().into();
        b.svc.shards.journal.recover(&key, Some(2)).await.unwrap();
        for (name, want) in [("kept", 1i64), ("lost", 0)] {
            let (count,): (i64,) = sqlx::query_as(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM dentries WHERE fs_id = $1 AND name = $2",
            )
            .bind(&fs)
            .bind(name.as_bytes())
            .fetch_one(&b.svc.store.pool)
            .await
            .unwrap();
            assert_eq!(count, want, "{n}: rows of {name}");
        }
    }
}
