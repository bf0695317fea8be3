//! What counts against a file system's capacity: the bytes of file data
//! that writes reached (a hole a truncate made counts nothing, as `du`
//! would have it) and extended attributes; sizes past the largest file are
//! EFBIG, never a wrapped count.

use cpfs_proto::meta::{errno, Attr, Caller, MetaOp, MetaReply, SetAttr, CREATE_RESERVE, ROOT_INO};
use cpfs_store::Store;

use crate::exactly_once_tests::{backends, create_in, open, Backend};
use crate::ns::MAX_FILE_SIZE;

/// The session's capacity in these tests (`exactly_once_tests::session`).
const CAPACITY: u64 = 1 << 30;

async fn used(b: &Backend) -> u64 {
    match b.run(MetaOp::StatFs, None).await {
        MetaReply::StatFs(st) => st.used_bytes,
        other => panic!("{}: statfs: {other:?}", b.name),
    }
}

async fn attr(b: &Backend, op: MetaOp) -> Attr {
    match b.run(op, None).await {
        MetaReply::Attr(a) => a,
        other => panic!("{}: {other:?}", b.name),
    }
}

fn truncate(ino: u64, size: u64) -> MetaOp {
    MetaOp::SetAttr {
        ino,
        set: SetAttr {
            size: Some(size),
            ..Default::default()
        },
    }
}

fn xattr(ino: u64, name: &str, len: usize) -> MetaOp {
    MetaOp::SetXattr {
        ino,
        name: name.as_bytes().to_vec(),
        value: vec![b'v'; len],
        flags: 0,
    }
}

#[tokio::test]
async fn a_sparse_truncate_counts_nothing_and_writes_count_what_they_reach() {
    for mut b in backends().await {
        let n = b.name;
        let before = used(&b).await;
        let ino = created(&b, "sparse").await.ino;

        // Far past the capacity, but nothing is stored: it succeeds (and
        // what the create set aside for the handle is given back first).
        let huge = 999_999_999_999_999;
        let a = attr(&b, truncate(ino, huge)).await;
        assert_eq!((a.size, a.stored), (huge, 0), "{n}");
        assert_eq!(used(&b).await, before, "{n}: a hole counted");

        // A write inside the hole counts up to where it reached.
        let a = attr(
            &b,
            MetaOp::Written {
                ino,
                size: 4096,
                resumed: false,
            },
        )
        .await;
        assert_eq!((a.size, a.stored), (huge, 4096), "{n}");
        assert_eq!(used(&b).await, before + 4096, "{n}");

        // Reaching past the capacity is ENOSPC, and counts nothing.
        let far = MetaOp::Written {
            ino,
            size: 2 * CAPACITY,
            resumed: false,
        };
        assert_eq!(b.errno(far, None).await, errno::ENOSPC, "{n}");
        assert_eq!(used(&b).await, before + 4096, "{n}");

        // Past the largest file size: EFBIG, for a truncate and a write,
        // where a wrapped sum would have lowered the count.
        for op in [
            truncate(ino, MAX_FILE_SIZE + 1),
            MetaOp::Written {
                ino,
                size: u64::MAX,
                resumed: false,
            },
        ] {
            assert_eq!(b.errno(op, None).await, errno::EFBIG, "{n}");
        }
        assert_eq!(used(&b).await, before + 4096, "{n}");

        // Cutting below what was stored frees the difference.
        let a = attr(&b, truncate(ino, 1000)).await;
        assert_eq!((a.size, a.stored), (1000, 1000), "{n}");
        assert_eq!(used(&b).await, before + 1000, "{n}");

        // What is stored is what a restarted service loads.
        b.svc = open(Store::open(&b.url).await.unwrap());
        let a = attr(&b, MetaOp::GetAttr { ino }).await;
        assert_eq!((a.size, a.stored), (1000, 1000), "{n}: after a restart");
        assert_eq!(used(&b).await, before + 1000, "{n}: after a restart");
    }
}

#[tokio::test]
async fn extended_attributes_count_and_are_bounded_per_inode() {
    for b in backends().await {
        let n = b.name;
        let mkdir = MetaOp::Mkdir {
            parent: ROOT_INO,
            name: b"tagged".to_vec(),
            mode: 0o755,
            umask: 0,
        };
        let dir = match b.run(mkdir, None).await {
            MetaReply::Entry(a) => a.ino,
            other => panic!("{n}: {other:?}"),
        };
        let before = used(&b).await;

        // Name and value count; replacing a value counts the difference.
        assert_eq!(b.errno(xattr(dir, "user.a", 1000), None).await, 0, "{n}");
        assert_eq!(used(&b).await, before + 6 + 1000, "{n}");
        assert_eq!(b.errno(xattr(dir, "user.a", 10), None).await, 0, "{n}");
        assert_eq!(used(&b).await, before + 6 + 10, "{n}");

        // One inode holds at most 64 KiB of them.
        assert_eq!(
            b.errno(xattr(dir, "user.b", 64 * 1024 - 16), None).await,
            errno::ENOSPC,
            "{n}"
        );
        assert_eq!(used(&b).await, before + 6 + 10, "{n}");
        assert_eq!(b.errno(xattr(dir, "user.b", 1000), None).await, 0, "{n}");

        // Removing one, then the inode, gives their bytes back.
        let remove = MetaOp::RemoveXattr {
            ino: dir,
            name: b"user.b".to_vec(),
        };
        assert_eq!(b.errno(remove, None).await, 0, "{n}");
        assert_eq!(used(&b).await, before + 6 + 10, "{n}");
        let rmdir = MetaOp::Rmdir {
            parent: ROOT_INO,
            name: b"tagged".to_vec(),
        };
        assert_eq!(b.errno(rmdir, None).await, 0, "{n}");
        assert_eq!(
            used(&b).await,
            before,
            "{n}: the removed inode still counts"
        );
    }
}

/// Capacity set aside ahead of writes (`Reserve`) counts against the
/// capacity at once and is refused past it; writes within it count
/// nothing more; the last writable handle's release gives back what was
/// not written, and so does a restart (its sessions ended with it).
#[tokio::test]
async fn capacity_set_aside_counts_until_its_handle_goes_and_a_restart_gives_it_back() {
    for mut b in backends().await {
        let n = b.name;
        let before = used(&b).await;
        let ino = created(&b, "ahead").await.ino;
        let mib = 1 << 20;
        // The create set some aside for the first writes.
        let a = attr(&b, MetaOp::GetAttr { ino }).await;
        assert_eq!((a.size, a.stored), (0, CREATE_RESERVE), "{n}");
        assert_eq!(used(&b).await, before + CREATE_RESERVE, "{n}");

        let a = attr(&b, MetaOp::Reserve { ino, upto: mib }).await;
        assert_eq!((a.size, a.stored), (0, mib), "{n}: the size moved");
        assert_eq!(used(&b).await, before + mib, "{n}");

        // A write within what was set aside counts nothing more.
        let a = attr(
            &b,
            MetaOp::Written {
                ino,
                size: 4096,
                resumed: false,
            },
        )
        .await;
        assert_eq!((a.size, a.stored), (4096, mib), "{n}");
        assert_eq!(used(&b).await, before + mib, "{n}");

        // Past the capacity: ENOSPC, nothing more set aside; past the
        // largest file: capped there.
        let far = MetaOp::Reserve {
            ino,
            upto: 2 * CAPACITY,
        };
        assert_eq!(b.errno(far, None).await, errno::ENOSPC, "{n}");
        assert_eq!(used(&b).await, before + mib, "{n}");

        // The handle goes: what was not written is given back.
        let release = MetaOp::Release {
            ino,
            writable: true,
        };
        assert!(matches!(b.run(release, None).await, MetaReply::Done), "{n}");
        let a = attr(&b, MetaOp::GetAttr { ino }).await;
        assert_eq!((a.size, a.stored), (4096, 4096), "{n}");
        assert_eq!(used(&b).await, before + 4096, "{n}");

        // Without a writable handle nothing is set aside.
        let refused = MetaOp::Reserve { ino, upto: mib };
        assert_eq!(b.errno(refused, None).await, errno::EBADF, "{n}");

        // Set aside again, then the service restarts: given back at load.
        let reopen = MetaOp::Open {
            ino,
            read: false,
            write: true,
        };
        assert!(
            matches!(b.run(reopen, None).await, MetaReply::Open(_)),
            "{n}"
        );
        attr(&b, MetaOp::Reserve { ino, upto: 3 * mib }).await;
        assert_eq!(used(&b).await, before + 3 * mib, "{n}");
        b.svc = open(Store::open(&b.url).await.unwrap());
        let a = attr(&b, MetaOp::GetAttr { ino }).await;
        assert_eq!((a.size, a.stored), (4096, 4096), "{n}: after a restart");
        assert_eq!(used(&b).await, before + 4096, "{n}: after a restart");
        // And stays given back once that is committed with a later change.
        attr(&b, truncate(ino, 4096)).await;
        b.svc = open(Store::open(&b.url).await.unwrap());
        assert_eq!(used(&b).await, before + 4096, "{n}: after a second restart");
    }
}

async fn created(b: &Backend, name: &str) -> Attr {
    match b.run(create_in(ROOT_INO, name), None).await {
        MetaReply::Open(o) => o.attr,
        other => panic!("{}: {other:?}", b.name),
    }
}

fn times_and_record(ino: u64, mtime: i64, written: u64) -> MetaOp {
    MetaOp::SetAttr {
        ino,
        set: SetAttr {
            mtime_ns: Some(Some(mtime)),
            written: Some(written),
            ..Default::default()
        },
    }
}

/// A create sets capacity aside for the file's first writes when there is
/// room, and succeeds without when there is none; the releases of a
/// batch of handles give it all back.
#[tokio::test]
async fn a_create_sets_capacity_aside_when_there_is_room_and_releases_give_it_back() {
    for b in backends().await {
        let n = b.name;
        let before = used(&b).await;
        let mut handles = Vec::new();
        for i in 0..3 {
            let a = created(&b, &format!("small-{i}")).await;
            assert_eq!((a.size, a.stored), (0, CREATE_RESERVE), "{n}");
            handles.push((a.ino, true));
        }
        assert_eq!(used(&b).await, before + 3 * CREATE_RESERVE, "{n}");
        let release = MetaOp::ReleaseMany { handles };
        assert!(matches!(b.run(release, None).await, MetaReply::Done), "{n}");
        assert_eq!(used(&b).await, before, "{n}: not given back");

        // No room left: the create still succeeds, with nothing set aside.
        let filler = created(&b, "filler").await;
        let left = CAPACITY - used(&b).await;
        let upto = CREATE_RESERVE + left - CREATE_RESERVE / 2;
        attr(
            &b,
            MetaOp::Reserve {
                ino: filler.ino,
                upto,
            },
        )
        .await;
        let a = created(&b, "no-room").await;
        assert_eq!((a.size, a.stored), (0, 0), "{n}");
    }
}

/// Times set with a record of the size written (`SetAttr::written`) are
/// one change: the size and the times both land, nothing of it without a
/// writable handle, and a refusal of the times leaves the size as it was.
#[tokio::test]
async fn times_set_with_a_record_of_the_size_written_are_one_change() {
    for b in backends().await {
        let n = b.name;
        let a = created(&b, "copied").await;
        let a = attr(&b, times_and_record(a.ino, 5_000, 1000)).await;
        assert_eq!(
            (a.size, a.mtime_ns),
            (1000, 5_000),
            "{n}: the times set last"
        );
        assert_eq!(
            a.stored, CREATE_RESERVE,
            "{n}: within what the create set aside"
        );

        // Another user may not set the times: nothing changes.
        let other = Caller {
            uid: 4242,
            gid: 4242,
            groups: vec![],
        };
        let r = b
            .svc
            .clone()
            .handle_as(
                b.s.clone(),
                other,
                times_and_record(a.ino, 7_000, 9000),
                None,
            )
            .await;
        assert!(
            matches!(r, MetaReply::Err { errno: e, .. } if e == errno::EPERM),
            "{n}: {r:?}"
        );
        let now = attr(&b, MetaOp::GetAttr { ino: a.ino }).await;
        assert_eq!((now.size, now.mtime_ns), (1000, 5_000), "{n}");

        // Only with times alone, and only through a writable handle.
        let with_mode = MetaOp::SetAttr {
            ino: a.ino,
            set: SetAttr {
                mode: Some(0o600),
                mtime_ns: Some(Some(1)),
                written: Some(2000),
                ..Default::default()
            },
        };
        assert_eq!(b.errno(with_mode, None).await, errno::EINVAL, "{n}");
        let release = MetaOp::Release {
            ino: a.ino,
            writable: true,
        };
        assert!(matches!(b.run(release, None).await, MetaReply::Done), "{n}");
        let closed = times_and_record(a.ino, 6_000, 3000);
        assert_eq!(b.errno(closed, None).await, errno::EBADF, "{n}");
        let now = attr(&b, MetaOp::GetAttr { ino: a.ino }).await;
        assert_eq!(
            (now.size, now.stored, now.mtime_ns),
            (1000, 1000, 5_000),
            "{n}"
        );
    }
}

/// A truncate gives back what its own session set aside for the file, and
/// keeps what another session holds.
#[tokio::test]
async fn a_truncate_gives_back_its_session_s_reservation_and_keeps_another_s() {
    for b in backends().await {
        let n = b.name;
        let before = used(&b).await;
        let a = created(&b, "shared").await;
        // Another session of the same file system opens it and sets 1 MiB
        // aside.
        let mut other = b.s.clone();
        other.id = 2;
        let root = Caller {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        let as_other = |op: MetaOp| {
            b.svc
                .clone()
                .handle_as(other.clone(), root.clone(), op, None)
        };
        let open = MetaOp::Open {
            ino: a.ino,
            read: false,
            write: true,
        };
        assert!(matches!(as_other(open).await, MetaReply::Open(_)), "{n}");
        let mib = 1 << 20;
        let r = as_other(MetaOp::Reserve {
            ino: a.ino,
            upto: mib,
        })
        .await;
        assert!(matches!(r, MetaReply::Attr(_)), "{n}: {r:?}");
        assert_eq!(used(&b).await, before + mib, "{n}");

        // The creator's session extends the file: its own 64 KiB is given
        // back, the other's 1 MiB stays.
        let a2 = attr(&b, truncate(a.ino, 10 * mib)).await;
        assert_eq!((a2.size, a2.stored), (10 * mib, mib), "{n}");
        assert_eq!(used(&b).await, before + mib, "{n}");
    }
}
