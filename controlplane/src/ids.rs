//! Resource identifiers, in the formats the real service uses.

use rand::Rng;

fn random_hex(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect()
}

fn random_alnum(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `cpfs-` + 16 lower-case hex digits.
pub fn file_system_id() -> String {
    format!("cpfs-{}", random_hex(16))
}

/// `fset-` + 16 lower-case hex digits.
pub fn fileset_id() -> String {
    format!("fset-{}", random_hex(16))
}

/// `ap-` + 16 lower-case hex digits.
pub fn access_point_id() -> String {
    format!("ap-{}", random_hex(16))
}

/// `<fsid>-<6 lower alnum>.<region>.cpfs.nas.<domain>`
pub fn mount_target_domain(fs_id: &str, region: &str, domain: &str) -> String {
    format!("{fs_id}-{}.{region}.cpfs.nas.{domain}", random_alnum(6))
}

pub fn account_id() -> String {
    // Alibaba account ids are 16 digits.
    let mut rng = rand::thread_rng();
    format!(
        "{:016}",
        rng.gen_range(1_000_000_000_000_000u64..10_000_000_000_000_000)
    )
}

/// `LTAI` + 20 alphanumerics, like the real service's key ids.
pub fn access_key_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("LTAI{tail}")
}

/// 30 characters from a 62-symbol alphabet: about 178 bits.
pub fn access_key_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..30)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_documented_shapes() {
        let id = file_system_id();
        assert!(id.starts_with("cpfs-") && id.len() == 21);
        assert!(id[5..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let d = mount_target_domain(&id, "cn-hangzhou", "localhost");
        assert!(d.starts_with(&format!("{id}-")));
        assert!(d.ends_with(".cn-hangzhou.cpfs.nas.localhost"));
        assert_eq!(access_key_id().len(), 24);
        assert_eq!(account_id().len(), 16);
        assert_ne!(access_key_secret(), access_key_secret());
    }
}
