use super::*;
use cpfs_proto::meta::{Attr, Kind};

const ROOT_DIR: u64 = 1;
const NEW_DIR: u64 = 42;

fn alice() -> Caller {
    Caller {
        uid: 1000,
        gid: 1000,
        groups: vec![1000],
    }
}

fn bob() -> Caller {
    Caller {
        uid: 1001,
        gid: 1001,
        groups: vec![],
    }
}

fn dir_attr(ino: u64, uid: u32, perm: u32) -> Attr {
    Attr {
        ino,
        kind: Kind::Dir,
        perm,
        nlink: 2,
        uid,
        gid: uid,
        size: 0,
        stored: 0,
        atime_ns: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        rdev: 0,
    }
}

fn mkdir(parent: u64, name: &str) -> MetaOp {
    MetaOp::Mkdir {
        parent,
        name: name.into(),
        mode: 0o755,
        umask: 0o022,
    }
}

fn create(parent: u64, name: &str) -> MetaOp {
    MetaOp::Create {
        parent,
        name: name.into(),
        mode: 0o644,
        umask: 0o022,
        read: false,
    }
}

/// `names` after Alice made `NEW_DIR` (owned by her, searchable) at `now`.
fn made_by_alice(now: Instant) -> DirNames {
    let names = DirNames::default();
    let since = names.generation();
    let reply = Ok(MetaReply::Entry(dir_attr(NEW_DIR, 1000, 0o755)));
    names.after(
        Touch::of(&mkdir(ROOT_DIR, "d")),
        &alice(),
        &reply,
        since,
        now,
    );
    names
}

fn done(names: &DirNames, op: MetaOp, who: &Caller, result: Result<MetaReply, i32>, now: Instant) {
    let since = names.generation();
    names.after(Touch::of(&op), who, &result, since, now);
}

#[test]
fn a_directory_this_client_made_has_no_names_but_its_own_creates() {
    let now = Instant::now();
    let names = made_by_alice(now);
    let ttl = names
        .absent(NEW_DIR, b"f", &alice(), now)
        .expect("known empty");
    assert!(ttl <= ATTR_TTL);
    done(
        &names,
        create(NEW_DIR, "f"),
        &alice(),
        Ok(MetaReply::Done),
        now,
    );
    assert_eq!(
        names.absent(NEW_DIR, b"f", &alice(), now),
        None,
        "f was created"
    );
    assert!(names.absent(NEW_DIR, b"g", &alice(), now).is_some());
    let unlink = MetaOp::Unlink {
        parent: NEW_DIR,
        name: b"f".to_vec(),
    };
    done(&names, unlink, &alice(), Ok(MetaReply::Done), now);
    assert!(
        names.absent(NEW_DIR, b"f", &alice(), now).is_some(),
        "f was removed"
    );
    // Never for the names every directory has, nor for directories it did
    // not make.
    assert_eq!(names.absent(NEW_DIR, b"..", &alice(), now), None);
    assert_eq!(names.absent(ROOT_DIR, b"f", &alice(), now), None);
}

#[test]
fn only_callers_the_service_let_search_are_answered() {
    let now = Instant::now();
    let names = made_by_alice(now);
    assert_eq!(names.absent(NEW_DIR, b"f", &bob(), now), None);
    // The service answers Bob's lookup: from then on he is answered here.
    let lookup = MetaOp::Lookup {
        parent: NEW_DIR,
        name: b"f".to_vec(),
    };
    done(&names, lookup.clone(), &bob(), Err(errno::ENOENT), now);
    assert!(names.absent(NEW_DIR, b"g", &bob(), now).is_some());
    // A refusal takes him out again.
    done(&names, lookup, &bob(), Err(errno::EACCES), now);
    assert_eq!(names.absent(NEW_DIR, b"g", &bob(), now), None);

    // A directory whose owner may not search it (mode 0): nobody yet.
    let names = DirNames::default();
    let reply = Ok(MetaReply::Entry(dir_attr(NEW_DIR, 1000, 0o000)));
    names.after(Touch::of(&mkdir(ROOT_DIR, "d")), &alice(), &reply, 0, now);
    assert_eq!(names.absent(NEW_DIR, b"f", &alice(), now), None);
    // Nor when the service gave the directory another owner (root squash).
    let names = DirNames::default();
    let reply = Ok(MetaReply::Entry(dir_attr(NEW_DIR, 65534, 0o755)));
    names.after(Touch::of(&mkdir(ROOT_DIR, "d")), &alice(), &reply, 0, now);
    assert_eq!(names.absent(NEW_DIR, b"f", &alice(), now), None);
}

#[test]
fn another_clients_change_or_a_lost_stream_forgets_the_directory() {
    let now = Instant::now();
    let names = made_by_alice(now);
    names.invalidate(NEW_DIR);
    assert_eq!(names.absent(NEW_DIR, b"f", &alice(), now), None);

    let names = made_by_alice(now);
    names.clear();
    assert_eq!(names.absent(NEW_DIR, b"f", &alice(), now), None);

    // A chmod of the directory by this client: its permissions changed.
    let names = made_by_alice(now);
    let chmod = MetaOp::SetAttr {
        ino: NEW_DIR,
        set: Default::default(),
    };
    done(&names, chmod, &alice(), Ok(MetaReply::Done), now);
    assert_eq!(names.absent(NEW_DIR, b"f", &alice(), now), None);
}

#[test]
fn a_change_notified_while_the_mkdir_was_under_way_wins() {
    let now = Instant::now();
    let names = DirNames::default();
    let since = names.generation();
    // Another client created a name in the new directory, and its notice
    // arrived before the answer to the mkdir.
    names.invalidate(NEW_DIR);
    let reply = Ok(MetaReply::Entry(dir_attr(NEW_DIR, 1000, 0o755)));
    names.after(
        Touch::of(&mkdir(ROOT_DIR, "d")),
        &alice(),
        &reply,
        since,
        now,
    );
    assert_eq!(names.absent(NEW_DIR, b"theirs", &alice(), now), None);
}

#[test]
fn knowledge_ends_with_the_kernels_ttl() {
    let now = Instant::now();
    let names = made_by_alice(now);
    let later = now + ATTR_TTL / 2;
    let left = names
        .absent(NEW_DIR, b"f", &alice(), later)
        .expect("still known");
    assert!(left <= ATTR_TTL / 2, "{left:?}");
    assert_eq!(names.absent(NEW_DIR, b"f", &alice(), now + ATTR_TTL), None);
}

#[test]
fn failures_of_unknown_outcome_forget_and_renames_move_names() {
    let now = Instant::now();
    let names = made_by_alice(now);
    done(
        &names,
        create(NEW_DIR, "f"),
        &alice(),
        Err(errno::EEXIST),
        now,
    );
    assert_eq!(
        names.absent(NEW_DIR, b"f", &alice(), now),
        None,
        "EEXIST: it is there"
    );
    done(&names, create(NEW_DIR, "g"), &alice(), Err(errno::EIO), now);
    assert_eq!(
        names.absent(NEW_DIR, b"h", &alice(), now),
        None,
        "EIO: unknown"
    );

    let names = made_by_alice(now);
    done(
        &names,
        create(NEW_DIR, "a"),
        &alice(),
        Ok(MetaReply::Done),
        now,
    );
    let rename = |flags| MetaOp::Rename {
        parent: NEW_DIR,
        name: b"a".to_vec(),
        new_parent: NEW_DIR,
        new_name: b"b".to_vec(),
        flags,
    };
    done(&names, rename(0), &alice(), Ok(MetaReply::Done), now);
    assert!(names.absent(NEW_DIR, b"a", &alice(), now).is_some());
    assert_eq!(names.absent(NEW_DIR, b"b", &alice(), now), None);
    // An exchange keeps both names.
    done(
        &names,
        create(NEW_DIR, "a"),
        &alice(),
        Ok(MetaReply::Done),
        now,
    );
    done(
        &names,
        rename(libc::RENAME_EXCHANGE),
        &alice(),
        Ok(MetaReply::Done),
        now,
    );
    assert_eq!(names.absent(NEW_DIR, b"a", &alice(), now), None);
    assert_eq!(names.absent(NEW_DIR, b"b", &alice(), now), None);
}

#[test]
fn directories_beyond_the_bound_are_not_taken_in() {
    let now = Instant::now();
    let names = DirNames::default();
    for ino in 100..100 + MAX_DIRS as u64 + 10 {
        let reply = Ok(MetaReply::Entry(dir_attr(ino, 1000, 0o755)));
        names.after(Touch::of(&mkdir(ROOT_DIR, "d")), &alice(), &reply, 0, now);
    }
    assert_eq!(names.lock().dirs.len(), MAX_DIRS);
    // Once the first have expired, new ones replace them.
    let later = now + ATTR_TTL;
    let reply = Ok(MetaReply::Entry(dir_attr(7, 1000, 0o755)));
    names.after(Touch::of(&mkdir(ROOT_DIR, "d")), &alice(), &reply, 0, later);
    assert!(names.absent(7, b"f", &alice(), later).is_some());
    assert_eq!(names.lock().dirs.len(), 1);
}
