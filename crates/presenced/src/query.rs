//! Query-string values: finding a key's value as sent and decoding `%XX` escapes and `+`.
//! Shared by the HTTP edge (query parameters) and the core (the `/sync` filter cache is keyed
//! by the parameter as sent and decodes it only on a miss).

use std::borrow::Cow;

/// The first value of `key` in a query string, percent-decoded.
pub fn form_urlencoded_get(query: &str, key: &str) -> Option<String> {
    form_urlencoded_raw(query, key).map(|v| percent_decode(v).into_owned())
}

/// The first value of `key` in a query string as sent (still percent-encoded).
pub fn form_urlencoded_raw<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

/// Decodes `%XX` escapes and `+` (a space); borrows when there is nothing to decode.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            form_urlencoded_get("a=1&access_token=x%2By+z", "access_token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(form_urlencoded_get("a=1", "access_token"), None);
        assert_eq!(
            form_urlencoded_get("x=%zz%4", "x").as_deref(),
            Some("%zz%4")
        );
    }
}
