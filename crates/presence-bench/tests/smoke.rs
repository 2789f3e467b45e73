//! Runs the real `presence-bench` binary at a tiny size and checks its summary line, the
//! contract CI and the benchmark notes rely on.

use std::process::Command;

/// Parses `engine users=.. updates_per_sec=.. deliveries_per_sec=.. syncs_per_sec=..
/// bytes_per_user=..` exactly, returning the five integers.
fn parse_summary(line: &str) -> Option<[u64; 5]> {
    let rest = line.strip_prefix("engine ")?;
    let keys = [
        "users",
        "updates_per_sec",
        "deliveries_per_sec",
        "syncs_per_sec",
        "bytes_per_user",
    ];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() != keys.len() {
        return None;
    }
    let mut out = [0u64; 5];
    for ((field, key), slot) in fields.iter().zip(keys).zip(&mut out) {
        let value = field.strip_prefix(key)?.strip_prefix('=')?;
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = value.parse().ok()?;
    }
    Some(out)
}

#[test]
fn summary_parser_is_strict() {
    let good =
        "engine users=5 updates_per_sec=1 deliveries_per_sec=2 syncs_per_sec=3 bytes_per_user=4";
    assert_eq!(parse_summary(good), Some([5, 1, 2, 3, 4]));
    for bad in [
        "engine users=5 updates_per_sec=1.5 deliveries_per_sec=2 syncs_per_sec=3 bytes_per_user=4",
        "engine users=5 updates_per_sec=1 deliveries_per_sec=2 syncs_per_sec=3",
        "engine users=5 updates_per_sec=1 deliveries_per_sec=2 syncs_per_sec=3 bytes_per_user=4 x=1",
        "engine  users=5 updates_per_sec=1 deliveries_per_sec=2 syncs_per_sec=3 bytes_per_user=4",
        "engine users=5 deliveries_per_sec=2 updates_per_sec=1 syncs_per_sec=3 bytes_per_user=4",
        "engine users=-5 updates_per_sec=1 deliveries_per_sec=2 syncs_per_sec=3 bytes_per_user=4",
    ] {
        assert_eq!(parse_summary(bad), None, "{bad}");
    }
}

#[test]
fn engine_smoke_prints_the_summary_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_presence-bench"))
        .args(["engine", "--users", "2000", "--batches", "3", "--baseline"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    let [users, updates, deliveries, syncs, bytes] = parse_summary(last)
        .unwrap_or_else(|| panic!("bad summary line {last:?}\nstderr:\n{stderr}"));
    assert_eq!(users, 2000);
    assert!(updates > 0 && deliveries > 0 && syncs > 0, "{last}");
    // Every user has an ID, a record and memberships: the engine cannot be smaller than this.
    assert!(bytes > 50, "{last}");
    assert!(
        stdout.lines().any(|l| l.starts_with("baseline batches=3 ")),
        "{stdout}"
    );
}

#[test]
fn engine_refuses_bad_arguments() {
    let output = Command::new(env!("CARGO_BIN_EXE_presence-bench"))
        .args(["engine", "--users", "2000", "--batch", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--batch"));
}
