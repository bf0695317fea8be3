//! Capabilities: `(file system, inode, rights, identity, expiry)` signed
//! with a key shared by the metadata service and the nodes. A node serves a
//! request only when its capability covers it, so a client can touch
//! exactly what the metadata service allowed. The identity is the one the
//! metadata service decided the caller acts as (after access rules,
//! squashing and LDAP), so nodes can attribute what they serve.

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
    /// Unix seconds.
    pub expires: i64,
    pub mac: [u8; 16],
}

#[derive(Clone)]
pub struct CapabilityKey {
    key: [u8; 32],
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
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()).unwrap_or_else(|_| {
                <Hmac<Sha256> as Mac>::new_from_slice(b"cpfs").expect("HMAC takes any key length")
            });
        mac.update(b"cpfs capability key v1");
        let mut key = [0u8; 32];
        key.copy_from_slice(&mac.finalize().into_bytes());
        CapabilityKey { key }
    }

    fn mac(&self, fs: &str, inode: u64, rights: u8, uid: u32, expires: i64) -> [u8; 16] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&(fs.len() as u32).to_le_bytes());
        mac.update(fs.as_bytes());
        mac.update(&inode.to_le_bytes());
        mac.update(&[rights]);
        mac.update(&uid.to_le_bytes());
        mac.update(&expires.to_le_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        out
    }

    /// A capability for the service itself (uid 0), e.g. dropping chunks.
    pub fn issue(&self, fs: &str, inode: u64, rights: u8, expires: i64) -> Capability {
        self.issue_for(0, fs, inode, rights, expires)
    }

    /// A capability for `uid`, as the metadata service decided it.
    pub fn issue_for(
        &self,
        uid: u32,
        fs: &str,
        inode: u64,
        rights: u8,
        expires: i64,
    ) -> Capability {
        Capability {
            fs: fs.to_string(),
            inode,
            rights,
            uid,
            expires,
            mac: self.mac(fs, inode, rights, uid, expires),
        }
    }

    /// Whether `cap` is genuine, unexpired at `now`, and covers `(fs, inode, need)`.
    pub fn allows(&self, cap: &Capability, fs: &str, inode: u64, need: u8, now: i64) -> bool {
        let genuine: bool = self
            .mac(&cap.fs, cap.inode, cap.rights, cap.uid, cap.expires)
            .ct_eq(&cap.mac)
            .into();
        genuine
            && cap.expires >= now
            && cap.fs == fs
            && (cap.inode == ANY_INODE || cap.inode == inode)
            && (cap.rights & need == need || cap.rights & ADMIN != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
