//! Capabilities: `(file system, inode, rights, identity, issue time,
//! expiry)` signed with a key shared by the metadata service and the nodes.
//! A node serves a request only when its capability covers it, so a client
//! can touch exactly what the metadata service allowed. The identity is the
//! one the metadata service decided the caller acts as (after access rules,
//! squashing and LDAP), so nodes can attribute what they serve.
//!
//! Capabilities are short-lived (minutes) and renewed by the client while
//! it holds the file open; the issue time lets a node refuse every
//! capability of a file system issued before a revocation it learned from
//! the control plane (a mount target deleted, a rule changed).
//!
//! Node-to-node traffic (forwarded writes, resync, block repair, stats) is
//! authenticated with a [`NodeAuth`] under a second key derived from the
//! cluster token: no client capability, whatever its rights, passes for one.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const READ: u8 = 1;
pub const WRITE: u8 = 2;
/// Whole-file-system operations (delete a file system, forward replicas).
pub const ADMIN: u8 = 4;

/// Inode 0 in a capability means "every inode of the file system".
pub const ANY_INODE: u64 = 0;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    pub fs: String,
    pub inode: u64,
    pub rights: u8,
    /// The uid the metadata service granted the rights to.
    pub uid: u32,
    /// Unix milliseconds at which the metadata service decided the grant
    /// behind it: a revocation at a later time refuses it.
    pub issued_ms: i64,
    /// Unix seconds.
    pub expires: i64,
    pub mac: [u8; 16],
}

#[derive(Clone)]
pub struct CapabilityKey {
    key: Keyed,
    node: NodeKey,
}

/// Derives a 32-byte key from the cluster token for one purpose.
fn derive(token: &str, label: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()).unwrap_or_else(|_| {
        <Hmac<Sha256> as Mac>::new_from_slice(b"cpfs").expect("HMAC takes any key length")
    });
    mac.update(label);
    let mut key = [0u8; 32];
    key.copy_from_slice(&mac.finalize().into_bytes());
    key
}

/// An HMAC-SHA256 with its key already absorbed. Keying hashes two
/// blocks (the padded key, inner and outer), half the work of a MAC over a
/// capability; every MAC starts from a copy of this instead, on every
/// issued capability and every request a node checks.
#[derive(Clone)]
struct Keyed(Hmac<Sha256>);

impl Keyed {
    fn new(key: [u8; 32]) -> Keyed {
        Keyed(<Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length"))
    }

    fn start(&self) -> Hmac<Sha256> {
        self.0.clone()
    }
}

impl std::fmt::Debug for CapabilityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapabilityKey(..)")
    }
}

impl CapabilityKey {
    /// Derives the key from the cluster token, so that every process that
    /// holds the token agrees on it without another secret to distribute.
    pub fn from_cluster_token(token: &str) -> CapabilityKey {
        CapabilityKey {
            // v2: the issue time joined the signed fields.
            key: Keyed::new(derive(token, b"cpfs capability key v2")),
            node: NodeKey::from_cluster_token(token),
        }
    }

    /// The key nodes authenticate each other with, from the same token.
    pub fn node_key(&self) -> &NodeKey {
        &self.node
    }

    fn mac(&self, c: &Capability) -> [u8; 16] {
        let mut mac = self.key.start();
        mac.update(&(c.fs.len() as u32).to_le_bytes());
        mac.update(c.fs.as_bytes());
        mac.update(&c.inode.to_le_bytes());
        mac.update(&[c.rights]);
        mac.update(&c.uid.to_le_bytes());
        mac.update(&c.issued_ms.to_le_bytes());
        mac.update(&c.expires.to_le_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        out
    }

    /// A capability for the service itself (uid 0), e.g. dropping chunks.
    pub fn issue(&self, fs: &str, inode: u64, rights: u8, expires: i64) -> Capability {
        self.issue_for(0, fs, inode, rights, expires)
    }

    /// A capability for `uid`, as the metadata service decided it, issued now.
    pub fn issue_for(
        &self,
        uid: u32,
        fs: &str,
        inode: u64,
        rights: u8,
        expires: i64,
    ) -> Capability {
        self.issue_at(uid, fs, inode, rights, now_ms(), expires)
    }

    /// A capability for `uid` whose grant was decided at `issued_ms`.
    pub fn issue_at(
        &self,
        uid: u32,
        fs: &str,
        inode: u64,
        rights: u8,
        issued_ms: i64,
        expires: i64,
    ) -> Capability {
        let mut c = Capability {
            fs: fs.to_string(),
            inode,
            rights,
            uid,
            issued_ms,
            expires,
            mac: [0; 16],
        };
        c.mac = self.mac(&c);
        c
    }

    /// Whether this key signed `cap` as it is, expired or not (the
    /// metadata service renews expired capabilities after deciding anew).
    pub fn genuine(&self, cap: &Capability) -> bool {
        self.mac(cap).ct_eq(&cap.mac).into()
    }

    /// Whether `cap` is genuine, unexpired at `now`, and covers `(fs, inode, need)`.
    pub fn allows(&self, cap: &Capability, fs: &str, inode: u64, need: u8, now: i64) -> bool {
        self.genuine(cap)
            && cap.expires >= now
            && cap.fs == fs
            && (cap.inode == ANY_INODE || cap.inode == inode)
            && (cap.rights & need == need || cap.rights & ADMIN != 0)
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Proof that a request comes from the cluster (another node, or a tool
/// holding the cluster token), not from a client: a MAC under the node key
/// over an expiry. Only nodes send it, only to nodes, so no client learns
/// one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAuth {
    /// Unix seconds.
    pub expires: i64,
    pub mac: [u8; 16],
}

/// How long a [`NodeAuth`] a node makes is good for.
pub const NODE_AUTH_SECS: i64 = 60;

#[derive(Clone)]
pub struct NodeKey {
    key: Keyed,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(..)")
    }
}

impl NodeKey {
    /// A key of its own (another label than the capability key's), so
    /// nothing signed for a client can ever verify as a node's.
    pub fn from_cluster_token(token: &str) -> NodeKey {
        NodeKey {
            key: Keyed::new(derive(token, b"cpfs node key v1")),
        }
    }

    fn mac(&self, expires: i64) -> [u8; 16] {
        let mut mac = self.key.start();
        mac.update(b"node");
        mac.update(&expires.to_le_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        out
    }

    /// A proof good until `expires` (unix seconds).
    pub fn issue(&self, expires: i64) -> NodeAuth {
        NodeAuth {
            expires,
            mac: self.mac(expires),
        }
    }

    /// Whether `auth` is genuine and unexpired at `now` (unix seconds).
    pub fn allows(&self, auth: &NodeAuth, now: i64) -> bool {
        let genuine: bool = self.mac(auth.expires).ct_eq(&auth.mac).into();
        genuine && auth.expires >= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MAC from a keyed state copied for each use is the one a fresh
    /// HMAC computes over the same fields (so nodes of the version before
    /// agree with this one), and copies do not share what they absorbed.
    #[test]
    fn a_copied_keyed_state_signs_as_a_fresh_hmac_does() {
        let k = CapabilityKey::from_cluster_token("t");
        let cap = k.issue_at(1000, "cpfs-a", 7, READ | WRITE, 1_234, 5_678);
        let mut fresh =
            <Hmac<Sha256> as Mac>::new_from_slice(&derive("t", b"cpfs capability key v2")).unwrap();
        fresh.update(&6u32.to_le_bytes());
        fresh.update(b"cpfs-a");
        fresh.update(&7u64.to_le_bytes());
        fresh.update(&[READ | WRITE]);
        fresh.update(&1000u32.to_le_bytes());
        fresh.update(&1_234i64.to_le_bytes());
        fresh.update(&5_678i64.to_le_bytes());
        assert_eq!(cap.mac[..], fresh.finalize().into_bytes()[..16]);
        // Again: the first MAC left the keyed state as it was.
        assert_eq!(
            k.issue_at(1000, "cpfs-a", 7, READ | WRITE, 1_234, 5_678)
                .mac,
            cap.mac
        );
    }

    #[test]
    fn capabilities_cover_only_what_they_name() {
        let k = CapabilityKey::from_cluster_token("t");
        let cap = k.issue("cpfs-a", 7, READ, 100);
        assert!(k.allows(&cap, "cpfs-a", 7, READ, 50));
        assert!(
            !k.allows(&cap, "cpfs-a", 7, WRITE, 50),
            "read cap cannot write"
        );
        assert!(!k.allows(&cap, "cpfs-a", 8, READ, 50), "other inode");
        assert!(!k.allows(&cap, "cpfs-b", 7, READ, 50), "other fs");
        assert!(!k.allows(&cap, "cpfs-a", 7, READ, 101), "expired");
        let mut forged = cap.clone();
        forged.rights = READ | WRITE;
        assert!(
            !k.allows(&forged, "cpfs-a", 7, WRITE, 50),
            "tampered rights"
        );
        let mut other_user = k.issue_for(1000, "cpfs-a", 7, READ, 100);
        assert!(k.allows(&other_user, "cpfs-a", 7, READ, 50));
        other_user.uid = 0;
        assert!(
            !k.allows(&other_user, "cpfs-a", 7, READ, 50),
            "tampered identity"
        );
        let other = CapabilityKey::from_cluster_token("u");
        assert!(!other.allows(&cap, "cpfs-a", 7, READ, 50), "other cluster");
        let admin = k.issue("cpfs-a", ANY_INODE, ADMIN, 100);
        assert!(k.allows(&admin, "cpfs-a", 99, WRITE, 50));
        let mut backdated = k.issue_at(0, "cpfs-a", 7, READ, 5_000, 100);
        assert!(k.genuine(&backdated));
        backdated.issued_ms = 9_000;
        assert!(!k.genuine(&backdated), "tampered issue time");
    }

    #[test]
    fn node_proofs_are_apart_from_capabilities() {
        let k = CapabilityKey::from_cluster_token("t");
        let node = k.node_key();
        let auth = node.issue(100);
        assert!(node.allows(&auth, 50));
        assert!(!node.allows(&auth, 101), "expired");
        assert!(
            !NodeKey::from_cluster_token("u").allows(&auth, 50),
            "other cluster"
        );
        // The widest client capability's MAC is no node proof.
        let admin = k.issue("", ANY_INODE, ADMIN | READ | WRITE, 100);
        let posing = NodeAuth {
            expires: admin.expires,
            mac: admin.mac,
        };
        assert!(!node.allows(&posing, 50));
    }
}
