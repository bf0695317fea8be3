//! The one percent-encoding every Alibaba signature uses: RFC 3986
//! unreserved characters stay, every other UTF-8 byte becomes `%XX` with
//! upper-case hex. (So space is `%20`, `*` is `%2A`, `~` stays.) Form
//! encoding differs (space is `+`), and a signature computed with it fails.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything except RFC 3986's unreserved `A-Z a-z 0-9 - _ . ~`.
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, RESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_sdks() {
        assert_eq!(
            encode("a b*c~d/e+f:g=h&i"),
            "a%20b%2Ac~d%2Fe%2Bf%3Ag%3Dh%26i"
        );
        assert_eq!(encode("ü"), "%C3%BC");
        assert_eq!(encode("AZaz09-_.~"), "AZaz09-_.~");
    }

    #[test]
    fn every_ascii_character_is_kept_only_if_unreserved() {
        for b in 0u8..128 {
            let c = char::from(b);
            let unreserved = c.is_ascii_alphanumeric() || "-_.~".contains(c);
            let expected = if unreserved {
                c.to_string()
            } else {
                format!("%{b:02X}")
            };
            assert_eq!(encode(&c.to_string()), expected, "byte {b}");
        }
    }
}
