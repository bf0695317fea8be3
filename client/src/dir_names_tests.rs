use super::*;
use cpfs_proto::meta::{Attr, Kind};
use std::time::Duration;

const ROOT_DIR: u64 = 1;
const NEW_DIR: u64 = 42;
/// The whole lease, as a service with a long lease of its own gives it.
const FULL: u32 = DELEGATION_LEASE.as_millis() as u32;

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

/// A client's names and change marks, its lease renewed at `now`.
struct Client {
    names: DirNames,
    changes: DirChanges,
}

impl Client {
    fn new(now: Instant) -> Client {
        let c = Client {
            names: DirNames::default(),
            changes: DirChanges::default(),
        };
        c.names.renew(now, FULL, 0);
        c
    }

    fn done(&self, op: MetaOp, who: &Caller, result: Result<MetaReply, i32>, now: Instant) {
        self.done_as(op, who, result, false, now)
    }

    fn done_as(
        &self,
        op: MetaOp,
        who: &Caller,
        result: Result<MetaReply, i32>,
        delegated: bool,
        now: Instant,
    ) {
        let since = self.changes.generation();
        self.changes.after(&op);
        let outcome = Outcome {
            result: &result,
            sent: now,
            breaks: 0,
            delegated_ms: if delegated { FULL } else { 0 },
        };
        self.names
            .after(Touch::of(&op), who, outcome, &self.changes, since, now);
    }

    fn absent(&self, dir: u64, name: &str, who: &Caller, now: Instant) -> bool {
        self.names.absent(dir, name.as_bytes(), who, now, 0)
    }
}

/// A client after Alice made `NEW_DIR` (owned by her, searchable) at
/// `now`, delegated to it.
fn made_by_alice(now: Instant) -> Client {
    mkdir_by_alice(now, 0o755, true)
}

/// A client whose mkdir of NEW_DIR (mode `perm`) alice made, the service
/// granting the delegation or not.
fn mkdir_by_alice(now: Instant, perm: u32, delegated: bool) -> Client {
    let c = Client::new(now);
    let reply = Ok(MetaReply::Entry(dir_attr(NEW_DIR, 1000, perm)));
    c.done_as(mkdir(ROOT_DIR, "d"), &alice(), reply, delegated, now);
    c
}

#[test]
fn a_delegated_directory_has_no_names_but_the_clients_own() {
    let now = Instant::now();
    let c = made_by_alice(now);
    assert!(c.absent(NEW_DIR, "f", &alice(), now));
    c.done(create(NEW_DIR, "f"), &alice(), Ok(MetaReply::Done), now);
    assert!(!c.absent(NEW_DIR, "f", &alice(), now));
    assert!(c.absent(NEW_DIR, "g", &alice(), now));
    let unlink = MetaOp::Unlink {
        parent: NEW_DIR,
        name: b"f".to_vec(),
    };
    c.done(unlink, &alice(), Ok(MetaReply::Done), now);
    assert!(
        c.absent(NEW_DIR, "f", &alice(), now),
        "removed: absent again"
    );
    // Never for the names every directory has, nor for other directories.
    assert!(!c.absent(NEW_DIR, "..", &alice(), now));
    assert!(!c.absent(ROOT_DIR, "f", &alice(), now));
}

#[test]
fn a_directory_not_delegated_is_not_known() {
    let now = Instant::now();
    let c = mkdir_by_alice(now, 0o755, false);
    assert!(!c.absent(NEW_DIR, "f", &alice(), now));
}

#[test]
fn only_callers_the_service_let_search_are_answered() {
    let now = Instant::now();
    let c = made_by_alice(now);
    assert!(!c.absent(NEW_DIR, "f", &bob(), now));
    let lookup = MetaOp::Lookup {
        parent: NEW_DIR,
        name: b"f".to_vec(),
    };
    c.done(lookup.clone(), &bob(), Err(errno::ENOENT), now);
    assert!(c.absent(NEW_DIR, "g", &bob(), now));
    c.done(lookup, &bob(), Err(errno::EACCES), now);
    assert!(!c.absent(NEW_DIR, "g", &bob(), now));
    // An owner without the search bit is not answered either.
    let c = mkdir_by_alice(now, 0o600, true);
    assert!(!c.absent(NEW_DIR, "f", &alice(), now));
}

#[test]
fn a_recall_a_lost_stream_or_a_change_of_attributes_forgets_the_directory() {
    let now = Instant::now();
    let c = made_by_alice(now);
    c.names.invalidate(NEW_DIR);
    assert!(!c.absent(NEW_DIR, "f", &alice(), now));

    let c = made_by_alice(now);
    c.names.clear();
    assert!(!c.absent(NEW_DIR, "f", &alice(), now));

    let c = made_by_alice(now);
    let chmod = MetaOp::SetAttr {
        ino: NEW_DIR,
        set: Default::default(),
    };
    c.done(chmod, &alice(), Ok(MetaReply::Done), now);
    assert!(!c.absent(NEW_DIR, "f", &alice(), now));
}

#[test]
fn a_notice_heard_while_the_mkdir_was_under_way_wins() {
    let now = Instant::now();
    let c = Client::new(now);
    let since = c.changes.generation();
    // The recall (or another client's change) arrived before the answer.
    c.changes.invalidate(NEW_DIR);
    let op = mkdir(ROOT_DIR, "d");
    let result = Ok(MetaReply::Entry(dir_attr(NEW_DIR, 1000, 0o755)));
    let outcome = Outcome {
        result: &result,
        sent: now,
        breaks: 0,
        delegated_ms: FULL,
    };
    c.names
        .after(Touch::of(&op), &alice(), outcome, &c.changes, since, now);
    assert!(!c.absent(NEW_DIR, "theirs", &alice(), now));
}

#[test]
fn answers_stop_with_the_lease_and_the_kernels_ttl() {
    let now = Instant::now();
    let names = DirNames::default();
    let changes = DirChanges::default();
    let op = mkdir(ROOT_DIR, "d");
    let result = Ok(MetaReply::Entry(dir_attr(NEW_DIR, 1000, 0o755)));
    let outcome = Outcome {
        result: &result,
        sent: now,
        breaks: 0,
        delegated_ms: FULL,
    };
    names.after(Touch::of(&op), &alice(), outcome, &changes, 0, now);
    // No recall predates the grant: the mkdir's sending starts the lease.
    let end = now + DELEGATION_LEASE;
    assert!(names.absent(NEW_DIR, b"f", &alice(), end - Duration::from_millis(1), 0));
    assert!(!names.absent(NEW_DIR, b"f", &alice(), end, 0));
    // Each Watch answered renews it from that Watch's sending...
    names.renew(now + Duration::from_secs(2), FULL, 0);
    let end = now + Duration::from_secs(2) + DELEGATION_LEASE;
    assert!(names.absent(NEW_DIR, b"f", &alice(), end - Duration::from_millis(1), 0));
    assert!(!names.absent(NEW_DIR, b"f", &alice(), end, 0));
    // ...and an older Watch's answer does not shorten it.
    names.renew(now, FULL, 0);
    assert!(names.absent(NEW_DIR, b"f", &alice(), end - Duration::from_millis(1), 0));
    // A service whose own lease ends sooner cuts it...
    let cut = Client {
        names: DirNames::default(),
        changes: DirChanges::default(),
    };
    let reply = Ok(MetaReply::Entry(dir_attr(NEW_DIR, 1000, 0o755)));
    let outcome = Outcome {
        result: &reply,
        sent: now,
        breaks: 0,
        delegated_ms: 500,
    };
    cut.names
        .after(Touch::of(&op), &alice(), outcome, &cut.changes, 0, now);
    assert!(cut.absent(NEW_DIR, "f", &alice(), now + Duration::from_millis(499)));
    assert!(!cut.absent(NEW_DIR, "f", &alice(), now + Duration::from_millis(500)));
    // ...and one that gives more than the protocol's lease is not believed.
    let long = Client {
        names: DirNames::default(),
        changes: DirChanges::default(),
    };
    long.names.renew(now, 60_000, 0);
    long.done_as(op.clone(), &alice(), reply, true, now);
    assert!(!long.absent(NEW_DIR, "f", &alice(), now + DELEGATION_LEASE));
    // Knowledge itself ends DELEGATION_TTL after the mkdir was sent.
    names.renew(now + DELEGATION_TTL, FULL, 0);
    assert!(!names.absent(NEW_DIR, b"f", &alice(), now + DELEGATION_TTL, 0));
}

#[test]
fn failures_of_unknown_outcome_forget_and_renames_move_names() {
    let now = Instant::now();
    let c = made_by_alice(now);
    c.done(create(NEW_DIR, "f"), &alice(), Err(errno::EEXIST), now);
    assert!(
        !c.absent(NEW_DIR, "f", &alice(), now),
        "EEXIST: it is there"
    );
    c.done(create(NEW_DIR, "g"), &alice(), Err(errno::EIO), now);
    assert!(!c.absent(NEW_DIR, "h", &alice(), now), "EIO: unknown");

    let c = made_by_alice(now);
    c.done(create(NEW_DIR, "a"), &alice(), Ok(MetaReply::Done), now);
    let rename = |flags| MetaOp::Rename {
        parent: NEW_DIR,
        name: b"a".to_vec(),
        new_parent: NEW_DIR,
        new_name: b"b".to_vec(),
        flags,
    };
    c.done(rename(0), &alice(), Ok(MetaReply::Done), now);
    assert!(c.absent(NEW_DIR, "a", &alice(), now));
    assert!(!c.absent(NEW_DIR, "b", &alice(), now));
    // An exchange keeps both names.
    c.done(create(NEW_DIR, "a"), &alice(), Ok(MetaReply::Done), now);
    c.done(
        rename(libc::RENAME_EXCHANGE),
        &alice(),
        Ok(MetaReply::Done),
        now,
    );
    assert!(!c.absent(NEW_DIR, "a", &alice(), now));
    assert!(!c.absent(NEW_DIR, "b", &alice(), now));
}

#[test]
fn directories_beyond_the_bound_are_not_taken_in() {
    let now = Instant::now();
    let c = Client::new(now);
    for ino in 100..100 + MAX_DIRS as u64 + 10 {
        let reply = Ok(MetaReply::Entry(dir_attr(ino, 1000, 0o755)));
        c.done_as(mkdir(ROOT_DIR, "d"), &alice(), reply, true, now);
    }
    assert_eq!(c.names.lock().dirs.len(), MAX_DIRS);
    // Once the first have expired, new ones replace them.
    let later = now + DELEGATION_TTL;
    c.names.renew(later, FULL, 0);
    let reply = Ok(MetaReply::Entry(dir_attr(7, 1000, 0o755)));
    c.done_as(mkdir(ROOT_DIR, "d"), &alice(), reply, true, later);
    assert!(c.absent(7, "f", &alice(), later));
    assert_eq!(c.names.lock().dirs.len(), 1);
}

#[test]
fn a_broken_connection_ends_every_delegation() {
    let now = Instant::now();
    let c = made_by_alice(now);
    assert!(c.names.absent(NEW_DIR, b"f", &alice(), now, 0));
    // The service may have restarted and forgotten it.
    assert!(!c.names.absent(NEW_DIR, b"f", &alice(), now, 1));
    // A Watch over the new connection does not bring it back.
    c.names.renew(now, FULL, 1);
    assert!(!c.names.absent(NEW_DIR, b"f", &alice(), now, 1));
}
