//! A test host in its own network namespace, for partitions.
//!
//! The host has two links to this (the test's) namespace, each a veth
//! pair with its own /30: link A carries what the host sends to the
//! control plane and the database, link B what clients send to the host.
//! Taking link A down cuts the host off from the control plane while its
//! clients still reach it, which is the partition a lease must survive.
//! Services of the test namespace listen on loopback, so [`Forward`]s on
//! link A's near address stand for them.
//!
//! Hosts made [`Host::on`] a [`Network`] have their links B on one
//! bridge, one segment: they reach each other (data nodes forward and
//! resync to their peers) and the test namespace reaches them all over
//! it, as clients do. Taking one host's link B down cuts it off from its
//! clients and its peers while it still reaches the control plane.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// Whether this test process may create network namespaces (root).
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A switch for the links B of several hosts: a bridge in the test
/// namespace with its own /24, the test namespace at `.1`.
pub struct Network {
    bridge: String,
    net: (u8, u8),
    next: AtomicU32,
}

impl Network {
    pub fn new() -> Network {
        let n = std::process::id() % 60_000 + NEXT.fetch_add(1, Ordering::Relaxed);
        let net = (233 + (n / 250 % 2) as u8, (n % 250) as u8);
        let bridge = format!("cpfsbr{n}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("10.{}.{}.1/24", net.0, net.1),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        Network {
            bridge,
            net,
            next: AtomicU32::new(2),
        }
    }

    fn address(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net.0, self.net.1, host)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

pub struct Host {
    pub name: String,
    tag: String,
    /// Link A: (this namespace's end, the host's end).
    pub control: (Ipv4Addr, Ipv4Addr),
    /// Link B (on a [`Network`], its near end is the bridge's address).
    pub clients: (Ipv4Addr, Ipv4Addr),
}

impl Host {
    /// A host whose link B is a pair of its own.
    pub fn new() -> Host {
        Host::build(None)
    }

    /// A host whose link B is a port of `network`.
    pub fn on(network: &Network) -> Host {
        Host::build(Some(network))
    }

    fn build(network: Option<&Network>) -> Host {
        let n = std::process::id() % 60_000 + NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{n}");
        let name = format!("cpfs-test-{tag}");
        let (x, y) = ((n / 64 % 250) as u8, (n % 64 * 4) as u8);
        let clients = match network {
            None => (
                Ipv4Addr::new(10, 232, x, y + 1),
                Ipv4Addr::new(10, 232, x, y + 2),
            ),
            Some(net) => {
                let k = net.next.fetch_add(1, Ordering::Relaxed);
                assert!(k < 255, "a network holds at most 253 hosts");
                (net.address(1), net.address(k as u8))
            }
        };
        let host = Host {
            control: (
                Ipv4Addr::new(10, 231, x, y + 1),
                Ipv4Addr::new(10, 231, x, y + 2),
            ),
            clients,
            name,
            tag,
        };
        ip(&["netns", "add", &host.name]);
        ip(&["-n", &host.name, "link", "set", "lo", "up"]);
        for (link, (near, far)) in [("a", host.control), ("b", host.clients)] {
            let (outer, inner) = (host.dev(link), format!("{}n", host.dev(link)));
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &host.name,
            ]);
            let prefix = match (link, network) {
                ("b", Some(net)) => {
                    ip(&["link", "set", &outer, "master", &net.bridge]);
                    24
                }
                _ => {
                    ip(&["addr", "add", &format!("{near}/30"), "dev", &outer]);
                    30
                }
            };
            ip(&["link", "set", &outer, "up"]);
            ip(&[
                "-n",
                &host.name,
                "addr",
                "add",
                &format!("{far}/{prefix}"),
                "dev",
                &inner,
            ]);
            ip(&["-n", &host.name, "link", "set", &inner, "up"]);
        }
        host
    }

    /// The name of this namespace's end of link `a` or `b`.
    fn dev(&self, link: &str) -> String {
        format!("cpfs{link}{}", self.tag)
    }

    /// A command that runs `program` on the host.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Cuts the host off from the control plane and the database.
    pub fn cut_control(&self) {
        ip(&["link", "set", &self.dev("a"), "down"]);
    }

    /// Cuts the host off from its clients (and, on a [`Network`], its
    /// peers); it still reaches the control plane.
    pub fn cut_clients(&self) {
        ip(&["link", "set", &self.dev("b"), "down"]);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace destroys its ends of the pairs, and with
        // them ours.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Accepts on `listen` and relays each connection to `to`, both ways,
/// until dropped.
pub struct Forward {
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Forward {
    pub fn start(listen: Ipv4Addr, to: SocketAddr) -> Forward {
        let listener = TcpListener::bind((listen, 0)).unwrap();
        let address = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(a) = conn else { continue };
                let Ok(b) = TcpStream::connect(to) else {
                    continue;
                };
                relay(a, b);
            }
        });
        Forward { address, stop }
    }
}

fn relay(a: TcpStream, b: TcpStream) {
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        pipe(a, b2);
        pipe(b, a2);
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.address);
    }
}
