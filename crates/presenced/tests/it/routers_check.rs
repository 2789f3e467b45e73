//! `presenced routers check`: the real binary loads the configured routers as the server does
//! and checks their two methods against each other.

use std::{path::PathBuf, process::Stdio, time::Duration};

use presence_router::RouterRegistry;

use crate::support::{Workspace, config_yaml};

/// The repository root, where the CI configurations' relative paths start.
fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Runs the binary in `dir`: (exit code, stdout, stderr).
async fn run_in(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_presenced"))
            .args(args)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("routers check did not finish")
    .unwrap();
    (
        output.status.code().expect("ended by a signal"),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// The configurations `scripts/routers-check.sh` runs in CI, with their expected outcome.
/// `presenced routers check -c CONFIG ARGS...` in `ws`: (exit code, stdout, stderr).
async fn routers_check(
    ws: &Workspace,
    config: &std::path::Path,
    args: &[&str],
) -> (i32, String, String) {
    let mut all = vec!["routers", "check", "-c", config.to_str().unwrap()];
    all.extend_from_slice(args);
    ws.run(&all).await
}

fn ci_configs() -> Vec<(PathBuf, bool)> {
    let mut configs: Vec<(PathBuf, bool)> =
        std::fs::read_dir(repo_root().join("tests/routers-check"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_owned();
                if name.ends_with(".yaml") {
                    Some((p, true))
                } else if name.ends_with(".yaml.inconsistent") {
                    Some((p, false))
                } else {
                    None
                }
            })
            .collect();
    configs.sort();
    configs
}

/// Every built-in router has a configuration that CI checks.
#[test]
fn every_builtin_router_is_checked_in_ci() {
    let mut registry = RouterRegistry::new();
    presence_routers::register_builtin(&mut registry);
    let texts: Vec<String> = ci_configs()
        .iter()
        .filter(|(_, consistent)| *consistent)
        .map(|(p, _)| std::fs::read_to_string(p).unwrap())
        .collect();
    let builtins: Vec<&str> = registry
        .names()
        .filter(|n| n.starts_with(presence_routers::BUILTIN_NAMESPACE))
        .collect();
    assert!(!builtins.is_empty());
    for name in builtins {
        assert!(
            texts.iter().any(|t| t.contains(&format!("module: {name}"))),
            "no configuration in tests/routers-check names {name}"
        );
    }
}

/// What CI runs: the consistent configurations pass, the inconsistent one is caught.
#[tokio::test]
async fn the_ci_configurations_pass_and_the_inconsistent_one_fails() {
    let root = repo_root();
    for (config, consistent) in ci_configs() {
        let text = std::fs::read_to_string(&config).unwrap();
        if !cfg!(feature = "python") && text.contains("python:") {
            continue;
        }
        let path = config.to_str().unwrap();
        let (code, stdout, stderr) =
            run_in(&root, &["routers", "check", "-c", path, "--cases", "100"]).await;
        if consistent {
            assert_eq!(code, 0, "{path}:\n{stdout}{stderr}");
            assert!(!stdout.contains("disagreement"), "{stdout}");
            assert!(
                stdout.contains("Checked ") && stdout.contains(" on 100 generated and 0 recorded"),
                "{stdout}"
            );
            assert!(stdout.contains(": consistent ("), "{stdout}");
        } else {
            assert_eq!(code, 1, "{path} passed:\n{stdout}{stderr}");
            assert!(stdout.contains("disagreement in "), "{stdout}");
        }
    }
}

/// Both configuration forms of the example router, with a merged check when there are two.
#[tokio::test]
async fn the_example_router_is_consistent_in_both_forms_and_merged() {
    let ws = Workspace::new();
    let config = ws.write(
        "presenced.yaml",
        &config_yaml(
            "modules:\n  - module: example\n    config: {always_send_to_users: ['@all:test'], \
             blacklisted_users: ['@hidden:test']}\n\
             presence: {presence_router: {module: presenced.routers.ExamplePresenceRouter, \
             config: {always_send_to_users: ['@all:other.example']}}}\n",
        ),
    );
    let (code, stdout, stderr) =
        routers_check(&ws, &config, &["--cases", "200", "--seed", "5"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    for line in [
        "modules[0] (example): consistent (200 batches, ",
        "presence.presence_router (presenced.routers.ExamplePresenceRouter): consistent (200 batches, ",
        "all routers, merged: consistent (200 batches, ",
        "Checked 2 routers with ",
    ] {
        assert!(stdout.contains(line), "{line:?} not in:\n{stdout}");
    }
    // The same seed tries the same cases.
    let (_, again, _) = routers_check(&ws, &config, &["--cases", "200", "--seed", "5"]).await;
    assert_eq!(stdout, again);
}

/// A configuration the server refuses is refused the same way, and no router means nothing
/// to check.
#[tokio::test]
async fn a_refused_configuration_fails_as_check_config_does() {
    let ws = Workspace::new();
    let bad = ws.write(
        "bad.yaml",
        &config_yaml("modules: [{module: example, config: {always_send_to_users: '@a:test'}}]\n"),
    );
    let (code, stdout, stderr) = routers_check(&ws, &bad, &[]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("modules[0].config.always_send_to_users: "),
        "{stderr}"
    );
    let (_, _, check) = ws.run(&["check-config", "-c", bad.to_str().unwrap()]).await;
    assert_eq!(
        check.lines().find(|l| l.starts_with("presenced: ")),
        stderr.lines().find(|l| l.starts_with("presenced: "))
    );

    let none = ws.write("none.yaml", &config_yaml(""));
    let (code, stdout, _) = routers_check(&ws, &none, &[]).await;
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "No presence router is configured: nothing to check.\n"
    );

    let states = ws.write(
        "states.jsonl",
        "{\"user_id\": \"@a:test\", \"presence\": \"here\"}\n",
    );
    let good = ws.write("good.yaml", &config_yaml("modules: [{module: example}]\n"));
    let (code, _, stderr) =
        routers_check(&ws, &good, &["--states", states.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("states.jsonl: line 1.presence: unknown presence state"),
        "{stderr}"
    );
}

#[cfg(feature = "python")]
mod python {
    use super::*;

    fn inconsistent(legacy: bool) -> String {
        let paths = format!(
            "python: {{paths: ['{}']}}\n",
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/python")
                .display()
        );
        let config = "{watcher: '@watcher:test', friend: '@friend:test', nosy: '@nosy:test'}";
        if legacy {
            config_yaml(&format!(
                "{paths}presence: {{presence_router: {{module: \
                 inconsistent_router.InconsistentRouter, config: {config}}}}}\n"
            ))
        } else {
            config_yaml(&format!(
                "{paths}modules: [{{module: inconsistent_router.InconsistentRouterModule, \
                 config: {config}}}]\n"
            ))
        }
    }

    /// Both ways the inconsistent Python router's methods disagree are printed as
    /// single-state examples, in both configuration forms.
    #[tokio::test]
    async fn an_inconsistent_python_router_is_caught_in_both_forms() {
        let ws = Workspace::new();
        for (legacy, label) in [
            (
                true,
                "presence.presence_router (inconsistent_router.InconsistentRouter)",
            ),
            (
                false,
                "modules[0] (inconsistent_router.InconsistentRouterModule)",
            ),
        ] {
            let config = ws.write("presenced.yaml", &inconsistent(legacy));
            let (code, stdout, stderr) = routers_check(&ws, &config, &["--cases", "100"]).await;
            assert_eq!(code, 1, "{stdout}{stderr}");
            let not_sent = format!("disagreement in {label} (interested but not sent):");
            assert!(stdout.contains(&not_sent), "{not_sent:?} not in:\n{stdout}");
            assert!(
                stdout.contains(&format!(
                    "disagreement in {label} (sent but not interested):"
                )),
                "{stdout}"
            );
            for line in [
                "  user:  @watcher:test\n",
                "  get_interested_users(@watcher:test) = {@friend:test} (contains @friend:test)\n",
                "  get_users_for_states([that state]) does not send it to @watcher:test\n",
                "  user:  @nosy:test\n",
                "  get_interested_users(@nosy:test) = {} (does not contain @friend:test)\n",
                "  get_users_for_states([that state]) sends it to @nosy:test\n",
            ] {
                assert!(stdout.contains(line), "{line:?} not in:\n{stdout}");
            }
            // The watcher's example is a state the router holds back: not online.
            let watcher = &stdout[stdout.find(&not_sent).unwrap()..];
            let state = watcher.lines().nth(2).unwrap();
            assert!(state.starts_with("  state: @friend:test "), "{state}");
            assert!(
                !state.starts_with("  state: @friend:test online"),
                "{state}"
            );
            assert!(
                stdout.contains(&format!("{label}: 2 disagreements, 0 failed calls")),
                "{stdout}"
            );
        }
    }

    /// Recorded states alone (no generated case) are enough to catch it, and a recorded
    /// state's user joins the pool.
    #[tokio::test]
    async fn recorded_states_are_checked() {
        let ws = Workspace::new();
        let config = ws.write("presenced.yaml", &inconsistent(true));
        let states = ws.write(
            "states.jsonl",
            "{\"type\": \"m.presence\", \"sender\": \"@friend:test\", \
             \"content\": {\"presence\": \"unavailable\", \"status_msg\": \"away\"}}\n",
        );
        let (code, stdout, stderr) = routers_check(
            &ws,
            &config,
            &["--cases", "0", "--states", states.to_str().unwrap()],
        )
        .await;
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(
            stdout.contains("  state: @friend:test unavailable, status \"away\"\n"),
            "{stdout}"
        );
        assert!(
            stdout.contains(" on 0 generated and 1 recorded batches"),
            "{stdout}"
        );
    }
}
