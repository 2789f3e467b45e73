//! The key file and the published key document.

use std::{sync::Arc, time::Duration};

use presence_federation::{
    Error, KeyFileOrigin, OldVerifyKey, ServerKeys, SigningKey, keys::parse_key_file,
    load_or_generate, remote_keys::verify_server_keys,
};

use crate::support::{NOW, RFC8032_PUBLIC_B64, RFC8032_SEED_B64, clock, key, key_document, server};

#[test]
fn key_file_line_in_the_reference_format_loads_the_right_key() {
    let line = format!("ed25519 a_test {RFC8032_SEED_B64}\n");
    let keys = parse_key_file("k".as_ref(), &line).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].key_id().as_str(), "ed25519:a_test");
    assert_eq!(keys[0].public_key_base64(), RFC8032_PUBLIC_B64);
    assert_eq!(keys[0].to_key_file_line(), line.trim_end());
}

#[test]
fn padded_seed_and_several_keys_are_accepted() {
    let text = format!(
        "ed25519 one {RFC8032_SEED_B64}=\n\n{}\n",
        key("two", 7).to_key_file_line()
    );
    let keys = parse_key_file("k".as_ref(), &text).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].public_key_base64(), RFC8032_PUBLIC_B64);
    assert_eq!(keys[1].version(), "two");
}

#[test]
fn bad_key_files_name_the_line_and_the_problem() {
    let cases = [
        ("", "no key"),
        ("ed25519 a_1\n", "line 1: expected three fields"),
        ("rsa a_1 AAAA\n", "line 1: unsupported algorithm"),
        ("ed25519 a_1 not*base64\n", "line 1: the seed is not base64"),
        (
            "ed25519 a_1 AAAA\n",
            "line 1: an ed25519 seed has 32 bytes, not 3",
        ),
        (
            "\ned25519 bad-version! AAAA\n",
            "line 2: invalid key version \"bad-version!\"",
        ),
    ];
    for (text, want) in cases {
        let err = parse_key_file("/etc/k.key".as_ref(), text).unwrap_err();
        assert!(matches!(err, Error::KeyFile { .. }), "{text:?}: {err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("signing key file /etc/k.key: "), "{msg}");
        assert!(msg.contains(want), "{text:?}: {msg}");
    }
}

#[test]
fn generated_key_round_trips_through_its_file_line() {
    let generated = SigningKey::generate().unwrap();
    assert!(
        generated.version().starts_with("a_"),
        "{}",
        generated.version()
    );
    let again = parse_key_file("k".as_ref(), &generated.to_key_file_line()).unwrap();
    assert_eq!(again[0].public_key(), generated.public_key());
    assert_eq!(again[0].key_id(), generated.key_id());
    assert_ne!(
        SigningKey::generate().unwrap().public_key(),
        generated.public_key()
    );
}

#[test]
fn missing_key_file_is_generated_private_then_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/server.signing.key");
    let (keys, origin) = load_or_generate(&path).unwrap();
    assert_eq!(origin, KeyFileOrigin::Generated);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, format!("{}\n", keys[0].to_key_file_line()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (again, origin) = load_or_generate(&path).unwrap();
    assert_eq!(origin, KeyFileOrigin::Loaded);
    assert_eq!(again[0].public_key(), keys[0].public_key());
    assert_eq!(again[0].key_id(), keys[0].key_id());
}

#[test]
fn corrupt_key_file_is_an_error_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.key");
    std::fs::write(&path, "garbage\n").unwrap();
    let err = load_or_generate(&path).unwrap_err();
    assert!(matches!(err, Error::KeyFile { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage\n");
}

#[test]
fn published_document_is_self_signed_and_valid_for_the_configured_time() {
    let doc = key_document("a.example", key("k1", 1), NOW);
    let verified = verify_server_keys(&doc, &server("a.example"), NOW, 0).unwrap();
    assert_eq!(verified.valid_until_ts, NOW + 24 * 3600 * 1000);
    assert_eq!(
        verified.verify_keys.keys().cloned().collect::<Vec<_>>(),
        ["ed25519:k1"]
    );
    assert_eq!(
        verified.verify_keys["ed25519:k1"].encode(),
        key("k1", 1).public_key_base64()
    );
}

#[test]
fn published_document_wire_shape() {
    let keys = ServerKeys::new(
        &server("a.example"),
        vec![Arc::new(
            SigningKey::from_seed("a_test", &rfc_seed()).unwrap(),
        )],
        &[OldVerifyKey::new(
            "ed25519:old",
            key("old", 9).public_key_base64(),
            NOW - 1000,
        )],
        Duration::from_secs(3600),
        clock(NOW),
    )
    .unwrap();
    let doc: serde_json::Value = serde_json::from_str(keys.document().unwrap().get()).unwrap();
    insta::assert_json_snapshot!("key_document", doc);
}

fn rfc_seed() -> Vec<u8> {
    ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(RFC8032_SEED_B64)
        .unwrap()
        .into_inner()
}

#[test]
fn tampered_wrong_server_or_expired_documents_are_refused() {
    let doc = key_document("a.example", key("k1", 1), NOW);
    // Another server's name.
    assert!(verify_server_keys(&doc, &server("b.example"), NOW, 0).is_err());
    // Changed validity: the signature no longer matches.
    let mut value: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    value["valid_until_ts"] = serde_json::json!(NOW + 999_999_999);
    let tampered = serde_json::to_vec(&value).unwrap();
    let err = verify_server_keys(&tampered, &server("a.example"), NOW, 0).unwrap_err();
    assert!(err.to_string().contains("bad self-signature"), "{err}");
    // A verify key that did not sign.
    let mut value: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    value["verify_keys"]["ed25519:extra"] =
        serde_json::json!({"key": key("x", 3).public_key_base64()});
    let err = verify_server_keys(
        &serde_json::to_vec(&value).unwrap(),
        &server("a.example"),
        NOW,
        0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("did not sign"), "{err}");
    // Expired: refused, unless within the allowed clock skew.
    let day = 24 * 3600 * 1000;
    let skew = 5 * 60 * 1000;
    assert!(verify_server_keys(&doc, &server("a.example"), NOW + day + 1, 0).is_err());
    assert!(verify_server_keys(&doc, &server("a.example"), NOW + day + skew, skew).is_ok());
    assert!(verify_server_keys(&doc, &server("a.example"), NOW + day + skew + 1, skew).is_err());
}

#[test]
fn document_is_cached_then_resigned_after_half_its_validity() {
    let clock = clock(NOW);
    let keys = ServerKeys::new(
        &server("a.example"),
        vec![Arc::new(key("k1", 1))],
        &[],
        Duration::from_secs(3600),
        clock.clone(),
    )
    .unwrap();
    let first = keys.document().unwrap();
    clock.advance(29 * 60 * 1000);
    assert_eq!(keys.document().unwrap().get(), first.get());
    clock.advance(2 * 60 * 1000);
    let second = keys.document().unwrap();
    assert_ne!(second.get(), first.get());
    let v = verify_server_keys(
        second.get().as_bytes(),
        &server("a.example"),
        clock_now(&clock),
        0,
    )
    .unwrap();
    assert_eq!(v.valid_until_ts, NOW + 31 * 60 * 1000 + 3600 * 1000);
}

fn clock_now(c: &presence_federation::ManualClock) -> u64 {
    use presence_federation::Clock as _;
    c.now_ms()
}
