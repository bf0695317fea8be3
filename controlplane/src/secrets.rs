//! Secrets at rest: access-key secrets and tenant LDAP bind passwords are
//! stored sealed (XChaCha20-Poly1305) with a key kept in its own file,
//! readable by the service only. A copy of the database alone (a backup,
//! a replica, a local user reading the file) holds no usable secret.
//!
//! HMAC verification needs the plaintext secret, so values are opened in
//! memory when used; they are never written back unsealed.
//!
//! Stored format: `enc1:` followed by base64 of a 24-byte random nonce and
//! the ciphertext. The associated data names the table, column and row, so
//! a sealed value copied into another row does not open there. A value
//! without the prefix is a plaintext row from before sealing; it is still
//! read, and `seal_plaintext_secrets` rewrites such rows at start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// Marks a sealed value (and its format version).
pub const SEALED_PREFIX: &str = "enc1:";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    /// Only for messages beyond 2^38 bytes; inputs here are bounded far
    /// below, but a value that could not be sealed must never be stored.
    #[error("a secret ({context}) could not be sealed")]
    Seal { context: String },
    /// Wrong key, a damaged value or one moved from another row.
    #[error("a stored secret ({context}) cannot be opened with this key")]
    Open { context: String },
}

/// The key that seals secrets at rest.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key>)")
    }
}

impl SecretBox {
    pub fn from_key(key: &[u8; KEY_LEN]) -> Self {
        SecretBox {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// A key that exists only in this process (tests, and processes that
    /// were given no key file: what they seal no other process can open).
    pub fn ephemeral() -> Self {
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        SecretBox::from_key(&key)
    }

    /// Reads the key (64 hex digits) from `path`.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let bad = |reason: String| SecretError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let bytes = hex::decode(text.trim()).map_err(|_| bad("not hex".into()))?;
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| bad(format!("not {KEY_LEN} bytes")))?;
        Ok(SecretBox::from_key(&key))
    }

    /// Reads the key at `path`, generating it (mode 0600, never replaced)
    /// when the file does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut f) => {
                let write = f
                    .write_all(hex::encode(key).as_bytes())
                    .and_then(|_| f.sync_all());
                write.map_err(|e| SecretError::KeyFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                tracing::info!(path = %path.display(), "generated the key that seals secrets at rest");
                Ok(SecretBox::from_key(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => SecretBox::load(path),
            Err(e) => Err(SecretError::KeyFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Seals `plaintext` for the row named by `context`.
    pub fn seal(&self, context: &str, plaintext: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context.as_bytes(),
        };
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .map_err(|_| SecretError::Seal {
                context: context.to_string(),
            })?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// The plaintext of a stored value (sealed, or plaintext from before
    /// sealing).
    pub fn open(&self, context: &str, stored: &str) -> Result<String, SecretError> {
        let Some(encoded) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_string());
        };
        let failed = || SecretError::Open {
            context: context.to_string(),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| failed())?;
        if bytes.len() < NONCE_LEN {
            return Err(failed());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| failed())?;
        String::from_utf8(plain).map_err(|_| failed())
    }
}

pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

/// The associated data of an access key's secret.
pub fn access_key_context(access_key_id: &str) -> String {
    format!("access_keys.secret:{access_key_id}")
}

/// The associated data of a file system's LDAP bind password.
pub fn ldap_password_context(fs_id: &str) -> String {
    format!("ldap_configs.bind_password:{fs_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_binds_to_the_row() {
        let b = SecretBox::ephemeral();
        let s = b.seal("access_keys.secret:a", "hunter22").unwrap();
        assert!(is_sealed(&s) && !s.contains("hunter22"));
        assert_eq!(b.open("access_keys.secret:a", &s).unwrap(), "hunter22");
        assert!(b.open("access_keys.secret:b", &s).is_err(), "moved row");
        assert!(SecretBox::ephemeral()
            .open("access_keys.secret:a", &s)
            .is_err());
        assert_ne!(
            s,
            b.seal("access_keys.secret:a", "hunter22").unwrap(),
            "fresh nonce"
        );
        assert_eq!(b.open("x", "legacy-plain").unwrap(), "legacy-plain");
    }

    #[test]
    fn the_key_file_is_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret-key");
        let a = SecretBox::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = a.seal("c", "v").unwrap();
        let b = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(b.open("c", &sealed).unwrap(), "v");
    }
}
