//! The one percent-encoding every Alibaba signature uses: RFC 3986
//! unreserved characters stay, every other UTF-8 byte becomes `%XX` with
//! upper-case hex. (So space is `%20`, `*` is `%2A`, `~` stays.)

pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[(b >> 4) as usize]));
            out.push(char::from(b"0123456789ABCDEF"[(b & 0xf) as usize]));
        }
    }
    out
}

/// Decodes an `application/x-www-form-urlencoded` string (`+` is a space).
pub fn form_decode(s: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_sdks() {
        assert_eq!(
            percent_encode("a b*c~d/e+f:g=h&i"),
            "a%20b%2Ac~d%2Fe%2Bf%3Ag%3Dh%26i"
        );
        assert_eq!(percent_encode("ü"), "%C3%BC");
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
    }

    #[test]
    fn form_decoding_turns_plus_into_space() {
        assert_eq!(
            form_decode("a=1+2&b=%2B&c="),
            vec![
                ("a".to_string(), "1 2".to_string()),
                ("b".to_string(), "+".to_string()),
                ("c".to_string(), String::new())
            ]
        );
    }
}
