//! JSON encoded exactly as Synapse encodes replication rows.
//!
//! Synapse uses `json.JSONEncoder(separators=(",", ":"), allow_nan=False)` (`synapse/util/json.py`):
//! compact, and with Python's default `ensure_ascii=True`, so every character outside printable
//! ASCII (`' '..='~'`) is written as a lowercase `\uXXXX` escape (UTF-16 surrogate pairs above
//! the BMP). Receivers accept any JSON, but producing the same bytes keeps captures comparable.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

/// serde_json's compact formatter with Python's `ensure_ascii` string escaping.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // Control characters never reach here (serde_json escapes them through
        // `write_char_escape`, as `\n` or lowercase `\u00XX`, matching Python); DEL and
        // non-ASCII do, and Python escapes them too.
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Encodes `value` as Synapse's `json_encoder` would: compact separators, non-ASCII escaped.
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut ser)?;
    // The formatter only ever writes valid UTF-8 (ASCII, in fact).
    String::from_utf8(out).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_json_dumps() {
        // Expected values from CPython 3.11:
        // json.JSONEncoder(separators=(",",":")).encode(v)
        let v = serde_json::json!([
            "@bob:test.local",
            "online",
            1,
            null,
            true,
            "h\u{e9}llo \u{1F600}\"\\\n\u{7f}\u{1}"
        ]);
        assert_eq!(
            to_python_json(&v).unwrap(),
            r#"["@bob:test.local","online",1,null,true,"h\u00e9llo \ud83d\ude00\"\\\n\u007f\u0001"]"#
        );
        let m = serde_json::json!({"a": [1, {"b": false}]});
        assert_eq!(to_python_json(&m).unwrap(), r#"{"a":[1,{"b":false}]}"#);
    }
}
