//! Sessions: who may open one (privileged source ports unless the rule
//! opts out), who may use one (the address and port rules of the mount
//! that made it), how long one lives unused (its lease), and that an
//! inode number alone reaches nothing a path walk would not.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpfs_directory::{Identity, LdapConfig};
use cpfs_proto::meta::{errno, Caller, MetaClient as Connection, MetaOp, MetaReply, MetaRequest};
use cpfs_proto::meta::{SetAttr, ROOT_INO};

use crate::exactly_once_tests::{provisioned, FS};
use crate::identity::{IdentitySettings, Resolved};
use crate::policy::{parse_net, MountPolicy, PolicyFuture, PolicySource, Rule, Squash};
use crate::MetaService;

const DOMAIN: &str = "sessions.mount.cpfs";
const USER: u32 = 1000;

/// One mount target whose access group admits loopback, from privileged
/// ports unless `insecure` is set, with an LDAP configuration (so that
/// uids other than root may act; the directory's answers are put in the
/// service's cache by [`user_known`], no directory server is asked).
struct OneRule {
    insecure: AtomicBool,
}

fn ldap() -> LdapConfig {
    LdapConfig {
        uri: "ldap://directory.invalid".into(),
        search_base: "dc=example,dc=com".into(),
        bind_dn: String::new(),
        bind_password: None,
    }
}

impl PolicySource for OneRule {
    fn mount_policy<'a>(&'a self, domain: &'a str) -> PolicyFuture<'a> {
        let policy = (domain == DOMAIN).then(|| MountPolicy {
            fs: FS.into(),
            mount_target_status: "Active".into(),
            fs_status: "Running".into(),
            capacity_bytes: 1 << 30,
            access_group: "sessions".into(),
            rules: Some(vec![Rule {
                ipv4: parse_net("127.0.0.0/8"),
                ipv6: None,
                writable: true,
                squash: Squash::None,
                insecure_ports: self.insecure.load(Ordering::SeqCst),
            }]),
            ldap: Some(ldap()),
            fenced: vec![],
        });
        Box::pin(async move { Ok(policy) })
    }
}

struct Setup {
    svc: Arc<MetaService>,
    rules: Arc<OneRule>,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let store = provisioned(&url).await;
    let rules = Arc::new(OneRule {
        insecure: AtomicBool::new(false),
    });
    let svc = MetaService::new(
        store,
        rules.clone(),
        cpfs_proto::capability::CapabilityKey::from_cluster_token("test"),
        IdentitySettings::default(),
    )
    .unwrap();
    user_known(&svc, USER);
    Setup {
        svc,
        rules,
        _dir: dir,
    }
}

/// The directory's answer for `uid`, as if it had been asked.
fn user_known(svc: &MetaService, uid: u32) {
    svc.access.identities.lock().unwrap().insert(
        (FS.to_string(), uid),
        Resolved::known(
            ldap(),
            Identity {
                uid,
                gid: uid,
                groups: vec![uid],
            },
        ),
    );
}

fn caller(uid: u32) -> Caller {
    Caller {
        uid,
        gid: uid,
        groups: vec![],
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A host's privileged and unprivileged ports.
const ROOT_PORT: &str = "127.0.0.1:700";
const USER_PORT: &str = "127.0.0.1:40000";
const OTHER_HOST: &str = "127.0.0.2:700";

async fn call(svc: &Arc<MetaService>, from: &str, session: u64, uid: u32, op: MetaOp) -> MetaReply {
    let req = MetaRequest {
        session,
        caller: caller(uid),
        op,
        id: None,
    };
    svc.clone().handle(addr(from), req).await.without_dirs()
}

async fn mount(svc: &Arc<MetaService>, from: &str) -> Result<u64, (i32, String)> {
    let op = MetaOp::Mount {
        domain: DOMAIN.into(),
    };
    match call(svc, from, 0, 0, op).await {
        MetaReply::Mounted(m) => Ok(m.session),
        MetaReply::Err { errno, message } => Err((errno, message)),
        other => panic!("mount: {other:?}"),
    }
}

fn errno_of(r: &MetaReply) -> i32 {
    match r {
        MetaReply::Err { errno, .. } => *errno,
        _ => 0,
    }
}

fn ino_of(r: &MetaReply) -> u64 {
    match r {
        MetaReply::Open(o) => o.attr.ino,
        MetaReply::Entry(a) | MetaReply::Attr(a) => a.ino,
        other => panic!("no inode in {other:?}"),
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// Over TCP, as clients connect: from an ordinary port a mount is refused
/// under a rule without InsecurePorts, saying why; from a privileged one
/// (the client library binds one) it is accepted; with InsecurePorts the
/// ordinary port is accepted too.
#[tokio::test]
async fn a_session_needs_a_privileged_port_unless_the_rule_opts_out() {
    let t = setup().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(crate::serve(t.svc.clone(), listener));
    let mount_req = || MetaRequest {
        session: 0,
        caller: caller(0),
        op: MetaOp::Mount {
            domain: DOMAIN.into(),
        },
        id: None,
    };
    let ordinary = Connection::new(&address);
    match ordinary.call(mount_req()).await.unwrap() {
        MetaReply::Err { errno, message } => {
            assert_eq!(errno, errno::EACCES, "{message}");
            assert!(message.contains("privileged source port"), "{message}");
        }
        other => panic!("mounted from an ordinary port: {other:?}"),
    }
    if is_root() {
        let reserved = Connection::reserved(&address);
        let session = match reserved.call(mount_req()).await.unwrap() {
            MetaReply::Mounted(m) => m.session,
            other => panic!("mount from a privileged port: {other:?}"),
        };
        let getattr = |session| MetaRequest {
            session,
            caller: caller(0),
            op: MetaOp::GetAttr { ino: ROOT_INO },
            id: None,
        };
        assert!(matches!(
            reserved.call(getattr(session)).await.unwrap(),
            MetaReply::Attr(_)
        ));
        // The session's id does not work from the ordinary port.
        let r = ordinary.call(getattr(session)).await.unwrap();
        assert_eq!(errno_of(&r), errno::ESTALE, "{r:?}");
    } else {
        eprintln!("not root: the privileged-port half is skipped");
    }
    t.rules.insecure.store(true, Ordering::SeqCst);
    let session = match ordinary.call(mount_req()).await.unwrap() {
        MetaReply::Mounted(m) => m.session,
        other => panic!("InsecurePorts did not admit an ordinary port: {other:?}"),
    };
    let r = ordinary
        .call(MetaRequest {
            session,
            caller: caller(0),
            op: MetaOp::GetAttr { ino: ROOT_INO },
            id: None,
        })
        .await
        .unwrap();
    assert!(matches!(r, MetaReply::Attr(_)), "{r:?}");
    server.abort();
}

/// A session id is not a bearer token: another address, or an ordinary
/// port where the rule wants a privileged one, gets "unknown session" as
/// for an id never issued; another privileged port of the same host (a
/// reconnection) keeps it.
#[tokio::test]
async fn a_session_works_only_from_the_address_that_mounted() {
    let t = setup().await;
    let s = mount(&t.svc, ROOT_PORT).await.unwrap();
    let getattr = || MetaOp::GetAttr { ino: ROOT_INO };
    for from in [OTHER_HOST, USER_PORT, "[::1]:700"] {
        let r = call(&t.svc, from, s, 0, getattr()).await;
        match r {
            MetaReply::Err { errno, message } => {
                assert_eq!(errno, errno::ESTALE, "{from}: {message}");
                assert_eq!(message, "unknown session; mount again", "{from}");
            }
            other => panic!("{from} used the session: {other:?}"),
        }
    }
    let never = call(&t.svc, ROOT_PORT, s ^ 2, 0, getattr()).await;
    assert_eq!(errno_of(&never), errno::ESTALE);
    let r = call(&t.svc, "127.0.0.1:701", s, 0, getattr()).await;
    assert!(matches!(r, MetaReply::Attr(_)), "{r:?}");
    let r = call(&t.svc, "[::ffff:127.0.0.1]:702", s, 0, getattr()).await;
    assert!(
        matches!(r, MetaReply::Attr(_)),
        "an IPv4-mapped address is the same host: {r:?}"
    );
}

/// A session unused for its lease ends: the file it held open after it
/// was deleted is open no more (the collector may take it), its watcher is
/// gone and its id answers "unknown session". A mount with a Watch
/// outstanding, or one used within the lease, keeps its session.
#[tokio::test]
async fn an_idle_session_expires_and_lets_go_of_its_open_files() {
    let t = setup().await;
    let lease = Duration::from_secs(30);
    t.svc.set_session_lease(lease);
    let idle = mount(&t.svc, ROOT_PORT).await.unwrap();
    let watching = mount(&t.svc, ROOT_PORT).await.unwrap();
    let used = mount(&t.svc, ROOT_PORT).await.unwrap();
    let create = MetaOp::Create {
        parent: ROOT_INO,
        name: b"held".to_vec(),
        mode: 0o644,
        umask: 0,
        read: true,
    };
    let ino = ino_of(&call(&t.svc, ROOT_PORT, idle, 0, create).await);
    let unlink = MetaOp::Unlink {
        parent: ROOT_INO,
        name: b"held".to_vec(),
    };
    assert_eq!(errno_of(&call(&t.svc, ROOT_PORT, idle, 0, unlink).await), 0);
    assert!(t.svc.is_open(FS, ino), "the creator holds it open");
    let orphan = |svc: Arc<MetaService>| async move {
        svc.shards
            .read(FS, |st| Ok(st.orphans.contains_key(&ino)))
            .await
            .unwrap()
    };
    assert!(orphan(t.svc.clone()).await);

    // Nothing ends within the lease.
    assert_eq!(t.svc.expire_sessions(Instant::now() + lease / 2), 0);

    // A mount keeps a Watch outstanding: start one and wait until it waits
    // (one may return at once, woken by a change queued before).
    let deadline = Instant::now() + Duration::from_secs(10);
    let watch = loop {
        let svc = t.svc.clone();
        let watch = tokio::spawn(async move {
            let op = MetaOp::Watch { wait_ms: 10_000 };
            call(&svc, ROOT_PORT, watching, 0, op).await
        });
        while !t.svc.watchers.waiting(watching) && !watch.is_finished() {
            assert!(Instant::now() < deadline, "the Watch never started waiting");
            tokio::task::yield_now().await;
        }
        if !watch.is_finished() {
            break watch;
        }
        let r = watch.await.unwrap();
        assert!(matches!(r, MetaReply::Changes { .. }), "{r:?}");
    };

    let later = Instant::now() + lease + Duration::from_secs(1);
    // `used` is used just before the clock is read again: still inside.
    let r = call(&t.svc, ROOT_PORT, used, 0, MetaOp::StatFs).await;
    assert!(matches!(r, MetaReply::StatFs(_)), "{r:?}");
    assert_eq!(
        t.svc.expire_sessions(later),
        2,
        "the idle session and the one used before `later - lease` end"
    );
    assert!(
        !t.svc.is_open(FS, ino),
        "an expired session still pins the file"
    );
    assert!(
        orphan(t.svc.clone()).await,
        "still an orphan, now collectable"
    );
    let r = call(
        &t.svc,
        ROOT_PORT,
        idle,
        0,
        MetaOp::GetAttr { ino: ROOT_INO },
    )
    .await;
    assert_eq!(errno_of(&r), errno::ESTALE, "{r:?}");
    assert!(
        t.svc.session(watching, addr(ROOT_PORT)).is_some(),
        "a watching mount expired"
    );
    assert_eq!(t.svc.session_count(), 1);
    // A client whose session expired mounts again.
    assert!(mount(&t.svc, ROOT_PORT).await.is_ok());
    watch.abort();
}

/// An inode number is no key: uid 1000 cannot open, stat, list or read the
/// attributes of what lies in root's 0700 directory by sending its number,
/// and can once the directory is 0755. Renames and unlinks of one of
/// several links keep the walk going through a directory that holds it.
/// Capacity a session set aside for its writes is given back when the
/// session ends without releasing its handle (a client that died), but
/// not what another session still holds.
#[tokio::test]
async fn an_ended_session_gives_back_the_capacity_it_set_aside() {
    let t = setup().await;
    let lease = Duration::from_secs(30);
    t.svc.set_session_lease(lease);
    let gone = mount(&t.svc, ROOT_PORT).await.unwrap();
    let staying = mount(&t.svc, ROOT_PORT).await.unwrap();
    let create = MetaOp::Create {
        parent: ROOT_INO,
        name: b"ahead".to_vec(),
        mode: 0o644,
        umask: 0,
        read: true,
    };
    let ino = ino_of(&call(&t.svc, ROOT_PORT, gone, 0, create).await);
    let open = MetaOp::Open {
        ino,
        read: false,
        write: true,
    };
    assert_eq!(
        errno_of(&call(&t.svc, ROOT_PORT, staying, 0, open).await),
        0
    );
    let stored = |r: MetaReply| match r {
        MetaReply::Attr(a) => (a.size, a.stored),
        other => panic!("{other:?}"),
    };
    let reserve = |upto| MetaOp::Reserve { ino, upto };
    let r = call(&t.svc, ROOT_PORT, gone, 0, reserve(1 << 20)).await;
    assert_eq!(stored(r), (0, 1 << 20));
    // Sessions' use is timed in milliseconds: the other one's last use
    // comes a few later, so that one instant ends only the first.
    let last_use = Instant::now();
    tokio::time::sleep_until((last_use + Duration::from_millis(5)).into()).await;
    let r = call(&t.svc, ROOT_PORT, staying, 0, reserve(1 << 19)).await;
    assert_eq!(stored(r), (0, 1 << 20), "less than set aside already");

    let later = last_use + lease + Duration::from_millis(2);
    assert_eq!(t.svc.expire_sessions(later), 1);
    // No data nodes here: the cut fails (and is tried again later), the
    // capacity is given back all the same.
    let no_nodes: cpfs_client::data::ChainSource =
        Arc::new(|| Box::pin(async { Err("no data nodes in this test".to_string()) }));
    let data = cpfs_client::data::DataClient::new(Default::default(), no_nodes);
    t.svc.settle_tails(&data).await;
    let r = call(&t.svc, ROOT_PORT, staying, 0, MetaOp::GetAttr { ino }).await;
    assert_eq!(
        stored(r),
        (0, 1 << 19),
        "what the other session holds stays"
    );
    let used = |r: MetaReply| match r {
        MetaReply::StatFs(st) => st.used_bytes,
        other => panic!("{other:?}"),
    };
    let r = call(&t.svc, ROOT_PORT, staying, 0, MetaOp::StatFs).await;
    assert_eq!(used(r), 1 << 19);
}

#[tokio::test]
async fn an_inode_number_reaches_only_what_a_path_walk_would() {
    let t = setup().await;
    let s = mount(&t.svc, ROOT_PORT).await.unwrap();
    let root = |op| call(&t.svc, ROOT_PORT, s, 0, op);
    let user = |op| call(&t.svc, ROOT_PORT, s, USER, op);
    let mkdir = |parent, name: &str, mode| MetaOp::Mkdir {
        parent,
        name: name.into(),
        mode,
        umask: 0,
    };
    let create = |parent, name: &str| MetaOp::Create {
        parent,
        name: name.into(),
        mode: 0o644,
        umask: 0,
        read: true,
    };
    let secret = ino_of(&root(mkdir(ROOT_INO, "secret", 0o700)).await);
    let open_dir = ino_of(&root(mkdir(ROOT_INO, "open", 0o755)).await);
    let inner = ino_of(&root(mkdir(secret, "inner", 0o755)).await);
    let f = ino_of(&root(create(secret, "f")).await);
    let deep = ino_of(&root(create(inner, "deep")).await);

    let by_number = |ino| {
        vec![
            MetaOp::Open {
                ino,
                read: true,
                write: false,
            },
            MetaOp::GetAttr { ino },
            MetaOp::Access { ino, mask: 4 },
            MetaOp::ListXattr { ino },
            MetaOp::GetXattr {
                ino,
                name: b"user.x".to_vec(),
            },
            MetaOp::GetStripe { ino },
        ]
    };
    for ino in [f, deep] {
        for op in by_number(ino) {
            let what = format!("{op:?}");
            assert_eq!(errno_of(&user(op).await), errno::EACCES, "{what}");
        }
    }
    let list = MetaOp::ReadDirPlus {
        ino: inner,
        after: None,
        limit: 10,
    };
    assert_eq!(errno_of(&user(list.clone()).await), errno::EACCES);
    let lookup = MetaOp::Lookup {
        parent: inner,
        name: b"deep".to_vec(),
    };
    assert_eq!(errno_of(&user(lookup.clone()).await), errno::EACCES);
    // Root searches everything.
    assert_eq!(errno_of(&root(MetaOp::GetAttr { ino: deep }).await), 0);

    // Renamed out of the closed directory: reachable through the new one.
    let rename = MetaOp::Rename {
        parent: secret,
        name: b"f".to_vec(),
        new_parent: open_dir,
        new_name: b"f".to_vec(),
        flags: 0,
    };
    assert_eq!(errno_of(&root(rename).await), 0);
    assert_eq!(errno_of(&user(MetaOp::GetAttr { ino: f }).await), 0);

    // Two links, the recorded one in the closed directory: the other one
    // reaches it; once the closed one is unlinked, the open one is what
    // the inode records.
    let g = ino_of(&root(create(secret, "g")).await);
    assert_eq!(
        errno_of(&user(MetaOp::GetAttr { ino: g }).await),
        errno::EACCES
    );
    let link = MetaOp::Link {
        ino: g,
        new_parent: open_dir,
        new_name: b"g2".to_vec(),
    };
    assert_eq!(errno_of(&root(link).await), 0);
    assert_eq!(errno_of(&user(MetaOp::GetAttr { ino: g }).await), 0);
    let unlink = MetaOp::Unlink {
        parent: secret,
        name: b"g".to_vec(),
    };
    assert_eq!(errno_of(&root(unlink).await), 0);
    let recorded = t
        .svc
        .shards
        .read(FS, |st| Ok(st.inode(g)?.parent))
        .await
        .unwrap();
    assert_eq!(recorded, open_dir);

    // Opened up: the same numbers work.
    let chmod = MetaOp::SetAttr {
        ino: secret,
        set: SetAttr {
            mode: Some(0o755),
            ..Default::default()
        },
    };
    assert_eq!(errno_of(&root(chmod).await), 0);
    for op in by_number(deep) {
        let what = format!("{op:?}");
        let e = errno_of(&user(op).await);
        assert!(e == 0 || e == errno::ENODATA, "{what}: {e}");
    }
    assert_eq!(errno_of(&user(list).await), 0);
    assert_eq!(errno_of(&user(lookup).await), 0);
}

/// The walk is a few map lookups per directory level: a deep path costs
/// microseconds, far below the lock and journal work of any operation.
#[tokio::test]
async fn the_walk_is_cheap() {
    let t = setup().await;
    let s = mount(&t.svc, ROOT_PORT).await.unwrap();
    let mut dir = ROOT_INO;
    for i in 0..32 {
        let op = MetaOp::Mkdir {
            parent: dir,
            name: format!("d{i}").into_bytes(),
            mode: 0o755,
            umask: 0,
        };
        dir = ino_of(&call(&t.svc, ROOT_PORT, s, 0, op).await);
    }
    let who = caller(USER);
    let n = 20_000;
    let started = Instant::now();
    t.svc
        .shards
        .read(FS, |st| {
            for _ in 0..n {
                st.reach(&who, dir)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let per_walk = started.elapsed() / n;
    eprintln!("a walk of 32 levels takes {per_walk:?}");
    assert!(per_walk < Duration::from_millis(1), "{per_walk:?}");
}
