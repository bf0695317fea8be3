//! A stand-in for a server a tenant names as its LDAP server: it records
//! every byte it receives (to see which password reached it) and answers
//! as a minimal LDAP server, not at all, or with something that is not
//! LDAP. Only what CreateLDAPConfig's check sends is understood: a simple
//! bind, a base search and an unbind.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Accepts any bind and finds the search base.
    Ldap,
    /// Accepts the connection and never answers.
    Silent,
    /// Answers with bytes that are not LDAP and hangs up.
    NotLdap,
}

pub struct FakeLdap {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
}

/// This host's address on its default route: an ordinary unicast address
/// (no packet is sent to find it).
pub fn host_address() -> IpAddr {
    let s = UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    s.connect("198.51.100.1:9")
        .expect("these tests need a non-loopback IPv4 address with a route");
    let ip = s.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

impl FakeLdap {
    pub fn start(ip: IpAddr, behaviour: Behaviour) -> FakeLdap {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (r, c) = (received.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                std::thread::spawn(move || serve(stream, behaviour, r));
            }
        });
        FakeLdap {
            addr,
            received,
            connections,
        }
    }

    pub fn uri(&self) -> String {
        format!("ldap://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Whether `needle` arrived on any connection so far.
    pub fn received(&self, needle: &str) -> bool {
        let r = self.received.lock().unwrap();
        r.windows(needle.len()).any(|w| w == needle.as_bytes())
    }
}

fn serve(mut s: TcpStream, behaviour: Behaviour, received: Arc<Mutex<Vec<u8>>>) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if let Behaviour::NotLdap = behaviour {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    while let Some((id, op)) = read_message(&mut s, &received) {
        let reply = match (behaviour, op) {
            (Behaviour::Silent, _) => continue,
            // BindRequest -> BindResponse(success)
            (_, 0x60) => vec![result(&id, 0x61)],
            // SearchRequest -> one entry, then SearchResultDone(success)
            (_, 0x63) => {
                let dn = b"dc=example,dc=com";
                let mut entry = vec![0x04, dn.len() as u8];
                entry.extend_from_slice(dn);
                entry.extend_from_slice(&[0x30, 0x00]);
                vec![envelope(&id, 0x64, &entry), result(&id, 0x65)]
            }
            // UnbindRequest, or anything else: hang up.
            _ => return,
        };
        for r in reply {
            if s.write_all(&r).is_err() {
                return;
            }
        }
    }
}

/// One LDAPMessage: its id and the tag of its operation.
fn read_message(s: &mut TcpStream, received: &Mutex<Vec<u8>>) -> Option<(Vec<u8>, u8)> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).ok()?;
    let len = match head[1] {
        n if n < 0x80 => n as usize,
        n => {
            let mut bytes = vec![0u8; (n & 0x7f) as usize];
            s.read_exact(&mut bytes).ok()?;
            bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b))
        }
    };
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    received.lock().unwrap().extend_from_slice(&body);
    // body: INTEGER messageID, then the operation.
    let id_len = *body.get(1)? as usize;
    let id = body.get(2..2 + id_len)?.to_vec();
    let op = *body.get(2 + id_len)?;
    Some((id, op))
}

fn envelope(id: &[u8], op: u8, content: &[u8]) -> Vec<u8> {
    let mut msg = vec![0x02, id.len() as u8];
    msg.extend_from_slice(id);
    msg.push(op);
    msg.push(content.len() as u8);
    msg.extend_from_slice(content);
    let mut out = vec![0x30, msg.len() as u8];
    out.extend(msg);
    out
}

/// An LDAPResult of `op` with resultCode success and empty texts.
fn result(id: &[u8], op: u8) -> Vec<u8> {
    envelope(id, op, &[0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00])
}
