//! Configuration loading: defaults, units, overlays, unknown keys and error reporting.

use std::{fs, net::IpAddr, path::PathBuf, time::Duration};

use serde_json::json;

use super::*;

const MINIMAL: &str = "
server_name: example.org
listeners:
  - port: 8008
    type: http
    resources: [{names: [client]}]
";

fn load(yaml: &str) -> LoadedConfig {
    match Config::from_yaml(yaml) {
        Ok(loaded) => loaded,
        Err(e) => panic!("config should load, got:\n{e}"),
    }
}

/// The key paths of every problem in `yaml` (which must fail).
fn problem_paths(yaml: &str) -> Vec<String> {
    let err = Config::from_yaml(yaml).expect_err("config should be rejected");
    err.problems().iter().map(|p| p.path.clone()).collect()
}

fn problem_at(yaml: &str, path: &str) -> String {
    let err = Config::from_yaml(yaml).expect_err("config should be rejected");
    let found = err.problems().iter().find(|p| p.path == path);
    match found {
        Some(p) => p.message.clone(),
        None => panic!("no problem at {path}; got:\n{err}"),
    }
}

fn minimal_with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn minimal_config_gets_the_reference_defaults() {
    let loaded = load(MINIMAL);
    assert!(loaded.unknown_keys.is_empty());
    assert!(loaded.warnings.is_empty());
    let c = loaded.config;
    assert_eq!(c.server_name.as_str(), "example.org");

    let listener = &c.listeners[0];
    assert_eq!(listener.port, 8008);
    let all: Vec<IpAddr> = vec!["::".parse().unwrap(), "0.0.0.0".parse().unwrap()];
    assert_eq!(listener.bind_addresses, all);
    assert!(!listener.tls);
    assert!(listener.serves(ResourceName::Client));
    assert!(!listener.serves(ResourceName::Federation));

    assert_eq!(
        c.database,
        DatabaseConfig::Sqlite(SqliteConfig::new("presenced.db"))
    );
    assert_eq!(c.registration, RegistrationConfig::default());
    assert!(!c.registration.enable_registration);
    assert!(c.password_config.enabled);
    assert_eq!(
        c.password_hash_cost,
        PasswordHashCost {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1
        }
    );

    let p = &c.presence;
    assert_eq!(p.enabled, PresenceMode::Enabled);
    assert!(!p.include_offline_users_on_sync);
    assert_eq!(p.last_active_granularity, Duration::from_secs(60));
    assert_eq!(p.sync_online_timeout, Duration::from_secs(30));
    assert_eq!(p.idle_timeout, Duration::from_secs(300));
    assert_eq!(p.busy_timeout, Duration::from_secs(3600));
    assert_eq!(p.federation_timeout, Duration::from_secs(1800));
    assert_eq!(p.federation_ping_interval, Duration::from_secs(1500));
    assert_eq!(p.router_call_timeout, Duration::from_secs(1));
    assert_eq!(p.presence_router, None);
    assert_eq!(p.routing, RoutingMode::Additive);

    assert_eq!(c.rc_presence.per_user.per_second, 0.1);
    assert_eq!(c.rc_presence.per_user.burst_count, 1);
    // The reference's defaults (synapse/config/ratelimiting.py).
    let rc = &c.rc;
    assert_eq!(rc.login.address, RateLimit::new(0.003, 5));
    assert_eq!(rc.login.account, RateLimit::new(0.003, 5));
    assert_eq!(rc.login.failed_attempts, RateLimit::new(0.17, 3));
    assert_eq!(rc.registration, RateLimit::new(0.17, 3));
    assert_eq!(rc.joins.local, RateLimit::new(0.1, 10));
    assert_eq!(rc.joins.remote, RateLimit::new(0.01, 10));
    assert_eq!(rc.joins_per_room, RateLimit::new(1.0, 10));
    assert_eq!(rc.room_creation, RateLimit::new(0.016, 10));
    assert_eq!(rc.message, RateLimit::new(0.2, 10));
    assert_eq!(rc.invites.per_room, RateLimit::new(0.3, 10));
    assert_eq!(rc.invites.per_user, RateLimit::new(0.003, 5));
    assert_eq!(rc.invites.per_issuer, RateLimit::new(0.3, 10));
    assert!(c.modules.is_empty());
    assert!(c.exclude_rooms_from_presence.is_empty());
    assert!(!c.experimental_features.msc3026_enabled);
    assert_eq!(c.max_status_msg_length, 4096);
    assert_eq!(c.max_request_body_size, 1024 * 1024);

    let f = &c.federation;
    assert!(f.federation_verify_certificates);
    assert_eq!(f.federation_domain_whitelist, None);
    assert_eq!(f.trusted_key_servers.len(), 1);
    assert_eq!(f.trusted_key_servers[0].server_name.as_str(), "matrix.org");
    assert_eq!(f.signing_key_path, None);
}

#[test]
fn presence_durations_accept_milliseconds_and_units() {
    let c = load(&minimal_with(
        "
presence:
  last_active_granularity: 30000
  sync_online_timeout: 10s
  idle_timeout: 2m
  busy_timeout: 2h
  federation_timeout: 1d
  federation_ping_interval: 1h
  router_call_timeout: 250ms
  routing: restricting
",
    ))
    .config;
    let p = &c.presence;
    assert_eq!(p.routing, RoutingMode::Restricting);
    assert_eq!(p.last_active_granularity, Duration::from_millis(30_000));
    assert_eq!(p.sync_online_timeout, Duration::from_secs(10));
    assert_eq!(p.idle_timeout, Duration::from_secs(120));
    assert_eq!(p.busy_timeout, Duration::from_secs(7200));
    assert_eq!(p.federation_timeout, Duration::from_secs(86_400));
    assert_eq!(p.federation_ping_interval, Duration::from_secs(3600));
    assert_eq!(p.router_call_timeout, Duration::from_millis(250));
}

#[test]
fn sizes_accept_bytes_and_units() {
    let c = load(&minimal_with(
        "max_request_body_size: 10M\nmax_status_msg_length: 1K\n",
    ))
    .config;
    assert_eq!(c.max_request_body_size, 10 * 1024 * 1024);
    assert_eq!(c.max_status_msg_length, 1024);
    let c = load(&minimal_with("max_request_body_size: 65536\n")).config;
    assert_eq!(c.max_request_body_size, 65536);
    assert_eq!(
        problem_at(
            &minimal_with("max_request_body_size: 10MB\n"),
            "max_request_body_size"
        ),
        "invalid size \"10MB\": expected whole bytes or a number with a unit (K, M, G, T), e.g. \"512K\" or \"10M\""
    );
    assert_eq!(
        problem_at(
            &minimal_with("max_status_msg_length: 0\n"),
            "max_status_msg_length"
        ),
        "must be greater than zero"
    );
}

#[test]
fn presence_enabled_forms_and_use_presence_fallback() {
    let mode = |extra: &str| load(&minimal_with(extra)).config.presence.enabled;
    assert_eq!(mode(""), PresenceMode::Enabled);
    assert_eq!(mode("presence: {enabled: false}\n"), PresenceMode::Disabled);
    assert_eq!(
        mode("presence: {enabled: untracked}\n"),
        PresenceMode::Untracked
    );
    assert_eq!(mode("use_presence: false\n"), PresenceMode::Disabled);
    assert_eq!(
        mode("use_presence: false\npresence: {include_offline_users_on_sync: true}\n"),
        PresenceMode::Disabled
    );
    // presence.enabled wins over use_presence.
    assert_eq!(
        mode("use_presence: false\npresence: {enabled: true}\n"),
        PresenceMode::Enabled
    );
    // YAML 1.1 booleans, as the reference's YAML loader reads them.
    assert_eq!(mode("presence: {enabled: no}\n"), PresenceMode::Disabled);
    assert!(PresenceMode::Untracked.is_enabled() && !PresenceMode::Untracked.tracks());

    assert_eq!(
        problem_at(
            &minimal_with("presence: {enabled: sometimes}\n"),
            "presence.enabled"
        ),
        "expected true, false or \"untracked\", found the string \"sometimes\""
    );
}

#[test]
fn idle_timeout_must_exceed_granularity() {
    let yaml = minimal_with("presence: {last_active_granularity: 1m, idle_timeout: 60s}\n");
    assert_eq!(
        problem_at(&yaml, "presence.idle_timeout"),
        "must be greater than presence.last_active_granularity (1m)"
    );
    // Compared against the default granularity too.
    let yaml = minimal_with("presence: {idle_timeout: 30s}\n");
    assert_eq!(problem_paths(&yaml), ["presence.idle_timeout"]);
    // A bad granularity is reported alone, not also as a spurious comparison.
    let yaml = minimal_with("presence: {last_active_granularity: soon, idle_timeout: 30s}\n");
    assert_eq!(problem_paths(&yaml), ["presence.last_active_granularity"]);
}

#[test]
fn federation_ping_must_be_shorter_than_federation_timeout() {
    let yaml = minimal_with("presence: {federation_timeout: 10m, federation_ping_interval: 10m}\n");
    assert!(
        problem_at(&yaml, "presence.federation_ping_interval")
            .starts_with("must be less than presence.federation_timeout (10m)")
    );
}

#[test]
fn every_bad_value_is_reported_with_its_key_path() {
    let yaml = "
server_name: 'not a server name'
listeners:
  - port: 99999
    type: http
    bind_addresses: ['127.0.0.1', 'localhost']
  - type: http
    port: 8009
    tls: true
database:
  name: sqlite3
  args:
    synchronous: sometimes
presence:
  enabled: true
  idle_timeout: -5
  sync_online_timeout: 0
  router_call_timeout: 1.5
  idel_timeout: 5m
  presence_router:
    config: {}
rc_presence:
  per_user:
    per_second: 0
    burst_count: 0
    burst: 3
exclude_rooms_from_presence: ['!good:example.org', '#alias:example.org']
experimental_features:
  msc3026_enabled: maybe
max_request_body_size: huge
modules:
  - config: {a: 1}
  - module: routers.Good
registration_shared_secret: ''
federation_domain_whitelist: ['ok.org', 'bad host']
trusted_key_servers:
  - verify_keys: {}
ip_range_whitelist: ['127.0.0.1', 'nope']
federation:
  destination_retry_multiplier: 0
password_hash_cost:
  iterations: 0
  memory: 4
";
    let paths = problem_paths(yaml);
    let expected = [
        "database.args.database",
        "database.args.synchronous",
        "exclude_rooms_from_presence[1]",
        "experimental_features.msc3026_enabled",
        "federation.destination_retry_multiplier",
        "federation_domain_whitelist[1]",
        "ip_range_whitelist[1]",
        "listeners[0].bind_addresses[1]",
        "listeners[0].port",
        "max_request_body_size",
        "modules[0].module",
        "password_hash_cost.iterations",
        "password_hash_cost.memory",
        "presence.idel_timeout",
        "presence.idle_timeout",
        "presence.presence_router.module",
        "presence.router_call_timeout",
        "presence.sync_online_timeout",
        "rc_presence.per_user.burst",
        "rc_presence.per_user.burst_count",
        "rc_presence.per_user.per_second",
        "registration_shared_secret",
        "server_name",
        "tls_certificate_path",
        "tls_private_key_path",
        "trusted_key_servers[0].server_name",
    ];
    assert_eq!(paths, expected);
    assert_eq!(problem_at(yaml, "presence.idel_timeout"), "unknown key");
    assert_eq!(
        problem_at(yaml, "presence.idle_timeout"),
        "duration must not be negative, found -5"
    );
    assert_eq!(
        problem_at(yaml, "presence.sync_online_timeout"),
        "must be greater than zero"
    );
    assert_eq!(
        problem_at(yaml, "listeners[0].port"),
        "invalid value: integer `99999`, expected u16"
    );
    assert_eq!(
        problem_at(yaml, "server_name"),
        "invalid server name: \"not a server name\""
    );
    assert_eq!(
        problem_at(yaml, "database.args.synchronous"),
        "unknown variant `sometimes`, expected `normal` or `full`"
    );
}

#[test]
fn missing_required_keys_are_named() {
    let paths = problem_paths("report_stats: false\n");
    assert_eq!(paths, ["listeners", "server_name"]);
    assert_eq!(
        problem_at("report_stats: false\n", "server_name"),
        "is required"
    );
    let yaml = "server_name: a.org\nlisteners: [{type: http}]\n";
    assert_eq!(problem_paths(yaml), ["listeners[0].port"]);
}

#[test]
fn postgres_in_the_standalone_mode_points_at_the_writer_mode() {
    let yaml = minimal_with(
        "database:\n  name: psycopg2\n  args: {user: synapse, password: secret, database: synapse, host: db}\n",
    );
    assert_eq!(problem_paths(&yaml), ["database.name"]);
    let message = problem_at(&yaml, "database.name");
    assert!(
        message.contains("presence writer of a Synapse") && message.contains("sqlite3"),
        "{message}"
    );
}

/// The shared file of a Synapse deployment plus a worker file naming Presenced the writer.
const WRITER: &str = "
server_name: test.local
listeners:
  - {port: 8008, type: http, resources: [{names: [client, federation]}]}
database: {name: psycopg2, args: {user: synapse, dbname: synapse, host: /run/pg, port: 5432, cp_min: 1, cp_max: 3}}
redis: {enabled: true, host: 127.0.0.1, port: 6379}
instance_map:
  main: {host: 127.0.0.1, port: 9093}
  presenced: {host: 127.0.0.1, port: 9094}
stream_writers: {presence: presenced}
worker_replication_secret: s3cret
worker_app: synapse.app.generic_worker
worker_name: presenced
worker_listeners:
  - {port: 9094, type: http, bind_addresses: ['127.0.0.1'], resources: [{names: [replication]}]}
  - {port: 9095, type: http, bind_addresses: ['127.0.0.1'], resources: [{names: [client]}]}
";

#[test]
fn a_worker_named_as_presence_writer_is_the_writer_mode() {
    let c = load(WRITER);
    let writer = c.config.writer.as_ref().expect("writer mode");
    assert_eq!(writer.worker_name, "presenced");
    assert_eq!(
        writer.replication_secret.as_ref().map(Secret::expose),
        Some("s3cret")
    );
    assert!(matches!(c.config.database, DatabaseConfig::Postgres(_)));
    // Main's listeners are main's: Presenced binds the worker's.
    let ports: Vec<u16> = c.config.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [9094, 9095]);
    assert!(c.config.listeners[0].serves(ResourceName::Replication));
    // A list of one writer is the same.
    let listed = WRITER.replace("{presence: presenced}", "{presence: [presenced]}");
    assert!(load(&listed).config.is_writer());
}

#[test]
fn a_worker_log_config_is_reported_as_not_read() {
    let loaded = load(&format!(
        "{WRITER}worker_log_config: /etc/synapse/log.yaml\n"
    ));
    let warnings: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(warnings, ["worker_log_config"]);
    assert!(load(WRITER).warnings.is_empty());
}

#[test]
fn an_inconsistent_deployment_stops_startup_with_the_key() {
    let cases = [
        (WRITER.replace("enabled: true, host", "enabled: false, host"), "redis.enabled"),
        (
            WRITER.replace(
                "{name: psycopg2, args: {user: synapse, dbname: synapse, host: /run/pg, port: 5432, cp_min: 1, cp_max: 3}}",
                "{name: sqlite3, args: {database: x.db}}",
            ),
            "database.name",
        ),
        (WRITER.replace("{presence: presenced}", "{presence: presence1}"), "stream_writers.presence"),
        (
            WRITER.replace("  presenced: {host: 127.0.0.1, port: 9094}\n", ""),
            "instance_map.presenced",
        ),
        (
            WRITER.replace("  presenced: {host: 127.0.0.1, port: 9094}", "  presenced: {path: /run/w.sock}"),
            "instance_map.presenced.path",
        ),
        (
            format!("{WRITER}matrix_authentication_service: {{enabled: true}}\n"),
            "matrix_authentication_service.enabled",
        ),
        (
            WRITER.replace(
                "database: {name: psycopg2,",
                "databases: {main: {name: psycopg2,",
            )
            .replace("cp_max: 3}}", "cp_max: 3}}}"),
            "databases",
        ),
    ];
    for (yaml, path) in cases {
        let message = problem_at(&yaml, path);
        assert!(!message.is_empty(), "{path}");
    }
}

#[test]
fn sqlite_arguments() {
    let c = load(&minimal_with(
        "database: {name: sqlite3, args: {database: /var/lib/presenced/p.db, synchronous: normal, cp_min: 5}}\n",
    ));
    let DatabaseConfig::Sqlite(sqlite) = &c.config.database else {
        panic!("not sqlite: {:?}", c.config.database)
    };
    assert_eq!(sqlite.path, PathBuf::from("/var/lib/presenced/p.db"));
    assert_eq!(sqlite.synchronous, SqliteSynchronous::Normal);
    assert_eq!(c.unknown_keys, ["database.args.cp_min"]);
}

#[test]
fn owned_sections_reject_unknown_keys_and_foreign_ones_report_them() {
    let yaml = minimal_with(
        "presence: {enabled: true, colour: blue}\nrc_presence: {per_user: {}, global: {}}\n",
    );
    assert_eq!(
        problem_paths(&yaml),
        ["presence.colour", "rc_presence.global"]
    );

    let loaded = load(&minimal_with(
        "report_stats: true\nexperimental_features: {msc9999_enabled: true}\npassword_config: {pepper: x}\n",
    ));
    assert_eq!(
        loaded.unknown_keys,
        [
            "experimental_features.msc9999_enabled",
            "password_config.pepper",
            "report_stats"
        ]
    );
}

#[test]
fn a_realistic_reference_homeserver_yaml_loads_with_warnings() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/synapse-homeserver.yaml");
    let loaded = match Config::load(&[path]) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        loaded.unknown_keys,
        [
            "enable_metrics",
            "experimental_features.msc3266_enabled",
            "form_secret",
            "log_config",
            "macaroon_secret_key",
            "max_upload_size",
            "media_store_path",
            "password_config.bcrypt_rounds",
            "password_config.policy",
            "pid_file",
            "public_baseurl",
            "report_stats",
            "retention",
            "serve_server_wellknown",
            "suppress_key_server_warning",
            "url_preview_enabled",
        ]
    );
    let warnings: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(warnings, ["listeners[2].type"]);

    let c = &loaded.config;
    assert_eq!(c.server_name.as_str(), "example.org");
    assert_eq!(c.listeners.len(), 2, "the manhole listener is dropped");
    assert!(
        c.listeners[0].serves(ResourceName::Client)
            && c.listeners[0].serves(ResourceName::Federation)
    );
    assert_eq!(c.listeners[0].bind_addresses.len(), 2);
    assert!(c.listeners[1].serves(ResourceName::Metrics));
    assert_eq!(c.listeners[1].port, 9000);
    assert!(c.registration.registration_shared_secret.is_some());
    assert_eq!(c.rc_presence.per_user.per_second, 0.5);
    assert_eq!(c.rc_presence.per_user.burst_count, 2);
    assert_eq!(c.rc.message, RateLimit::new(0.2, 10));
    assert!(c.experimental_features.msc3026_enabled);
    assert_eq!(c.modules.len(), 1);
    assert_eq!(
        c.modules[0].config["always_send_to_users"],
        json!(["@watcher:example.org"])
    );
    let whitelist = c.federation.federation_domain_whitelist.as_ref().unwrap();
    assert_eq!(
        whitelist.iter().map(ServerName::as_str).collect::<Vec<_>>(),
        ["example.org", "friends.example.net"]
    );
    assert_eq!(
        c.federation.signing_key_path,
        Some(PathBuf::from("/data/example.org.signing.key"))
    );
    assert_eq!(c.federation.trusted_key_servers[0].verify_keys.len(), 1);
}

#[test]
fn the_shipped_example_config_loads() {
    let loaded = match Config::load(&[repo_root().join("presenced.example.yaml")]) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.server_name.as_str(), "localhost:8008");
    assert_eq!(
        c.listeners[0].bind_addresses,
        ["127.0.0.1".parse::<IpAddr>().unwrap()]
    );
    assert!(
        c.listeners[0].serves(ResourceName::Client) && c.listeners[0].serves(ResourceName::Metrics)
    );
    let router = c.presence.presence_router.as_ref().unwrap();
    assert_eq!(router.module, "presenced.routers.ExamplePresenceRouter");
    assert_eq!(
        router.config,
        json!({"always_send_to_users": ["@watcher:localhost:8008"], "blacklisted_users": []})
    );
    assert_eq!(c.rc, RcLimits::default(), "the example shows the defaults");
    assert!(!c.registration.enable_registration);
    assert!(c.registration.registration_shared_secret.is_some());
    // Its secret is the public one the server warns about at startup.
    assert!(c.uses_public_example_secret());
}

#[test]
fn later_files_replace_earlier_top_level_keys() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.yaml");
    let over = dir.path().join("override.yaml");
    fs::write(&base, format!("{MINIMAL}presence:\n  enabled: untracked\n  idle_timeout: 10m\nmax_status_msg_length: 100\n")).unwrap();
    fs::write(
        &over,
        "presence:\n  include_offline_users_on_sync: true\nserver_name: other.org\n",
    )
    .unwrap();

    let c = Config::load(&[base.clone(), over.clone()]).unwrap().config;
    assert_eq!(c.server_name.as_str(), "other.org");
    // The whole `presence` mapping was replaced, not merged key by key.
    assert_eq!(c.presence.enabled, PresenceMode::Enabled);
    assert_eq!(c.presence.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert!(c.presence.include_offline_users_on_sync);
    // Keys only the first file sets survive.
    assert_eq!(c.max_status_msg_length, 100);

    // The other order gives the other answer.
    let c = Config::load(&[over, base]).unwrap().config;
    assert_eq!(c.server_name.as_str(), "example.org");
    assert_eq!(c.presence.enabled, PresenceMode::Untracked);
}

#[test]
fn a_directory_stands_for_its_yaml_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("10-base.yaml"), MINIMAL).unwrap();
    fs::write(dir.path().join("20-name.yaml"), "server_name: second.org\n").unwrap();
    fs::write(
        dir.path().join("30-ignored.yml.bak"),
        "server_name: [broken\n",
    )
    .unwrap();
    let c = Config::load(&[dir.path().to_path_buf()]).unwrap().config;
    assert_eq!(c.server_name.as_str(), "second.org");
}

#[test]
fn unreadable_and_malformed_files_are_all_named() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.yaml");
    let list = dir.path().join("list.yaml");
    let broken = dir.path().join("broken.yaml");
    let missing = dir.path().join("missing.yaml");
    fs::write(&empty, "# nothing here\n").unwrap();
    fs::write(&list, "- a\n- b\n").unwrap();
    fs::write(&broken, "server_name: [unclosed\n").unwrap();
    let err =
        Config::load(&[empty.clone(), list.clone(), broken.clone(), missing.clone()]).unwrap_err();
    let mut paths: Vec<String> = err.problems().iter().map(|p| p.path.clone()).collect();
    paths.sort();
    let mut want: Vec<String> = [empty, list, broken, missing]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    want.sort();
    assert_eq!(paths, want);
    assert!(Config::load(&[]).is_err());
}

#[test]
fn duplicate_keys_are_rejected() {
    let err = Config::from_yaml("server_name: a.org\nserver_name: b.org\n").unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("duplicate"),
        "{err}"
    );
}

#[test]
fn errors_render_as_a_readable_list() {
    let err =
        Config::from_yaml("server_name: a.org\nlisteners: []\npresence: {idle_timeout: 1s}\n")
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the configuration has 2 problems:\n  \
         - listeners: at least one listener of type http is required\n  \
         - presence.idle_timeout: must be greater than presence.last_active_granularity (1m)"
    );
}

#[test]
fn modules_and_the_legacy_router_are_listed_in_build_order() {
    let c = load(&minimal_with(
        "
modules:
  - module: first
  - module: second
    config: {x: 1}
presence:
  presence_router:
    module: legacy
    config: ~
",
    ))
    .config;
    let entries: Vec<(String, &str)> = c
        .module_entries()
        .into_iter()
        .map(|(path, m)| (path, m.module.as_str()))
        .collect();
    assert_eq!(
        entries,
        [
            ("modules[0]".to_owned(), "first"),
            ("modules[1]".to_owned(), "second"),
            ("presence.presence_router".to_owned(), "legacy"),
        ]
    );
    // An absent or null config block is an empty mapping, as in the reference.
    assert_eq!(c.modules[0].config, json!({}));
    assert_eq!(c.presence.presence_router.unwrap().config, json!({}));
}

#[test]
fn listeners_addresses_and_types() {
    let loaded = load(
        "
server_name: a.org
listeners:
  - port: 0
    type: http
    bind_address: 127.0.0.1
    resources: [{names: [client, client, media, bogus], compress: true}]
  - port: 9090
    type: metrics
  - port: 9091
    type: replication
",
    );
    let c = &loaded.config;
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(
        c.listeners[0].bind_addresses,
        ["127.0.0.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(c.listeners[0].resources[0].names, [ResourceName::Client]);
    assert!(c.listeners[0].resources[0].compress);
    assert_eq!(
        c.listeners[1].bind_addresses,
        ["0.0.0.0".parse::<IpAddr>().unwrap()]
    );
    assert!(c.listeners[1].serves(ResourceName::Metrics));
    let warnings: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        warnings,
        [
            "listeners[0].resources[0].names[2]",
            "listeners[0].resources[0].names[3]",
            "listeners[2].type"
        ]
    );
}

#[test]
fn registration_settings() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    fs::write(&secret_file, "from-a-file\n").unwrap();
    let c = load(&minimal_with(&format!(
        "registration_shared_secret_path: {}\n",
        secret_file.display()
    )))
    .config;
    let secret = c.registration.registration_shared_secret.unwrap();
    assert_eq!(secret.expose(), "from-a-file");
    assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");

    let both = minimal_with(&format!(
        "registration_shared_secret: x\nregistration_shared_secret_path: {}\n",
        secret_file.display()
    ));
    assert_eq!(problem_paths(&both), ["registration_shared_secret_path"]);

    assert_eq!(
        problem_paths(&minimal_with("enable_registration: true\n")),
        ["enable_registration"]
    );
    let c = load(&minimal_with(
        "enable_registration: true\nenable_registration_without_verification: true\n",
    ))
    .config;
    assert!(c.registration.enable_registration);
}

#[test]
fn rate_limits_and_excluded_rooms() {
    let c = load(&minimal_with(
        "rc_presence: {per_user: {per_second: 10000, burst_count: 10000}}\nexclude_rooms_from_presence: ['!busy:example.org']\n",
    ))
    .config;
    assert_eq!(c.rc_presence.per_user.per_second, 10000.0);
    assert_eq!(c.rc_presence.per_user.burst_count, 10000);
    assert_eq!(
        c.exclude_rooms_from_presence[0].as_str(),
        "!busy:example.org"
    );
}

#[test]
fn rc_sections_are_read_with_their_defaults_and_key_paths() {
    let c = load(&minimal_with(
        "rc_login:\n  address: {per_second: 0.15, burst_count: 5.0}\n  failed_attempts: {burst_count: 7}\n\
         rc_registration: {per_second: 2}\n\
         rc_joins: {local: {per_second: 0.2, burst_count: 15.0}}\n\
         rc_joins_per_room: {burst_count: 20}\n\
         rc_room_creation: {per_second: 1.0, burst_count: 5.0}\n\
         rc_invites: {per_issuer: {per_second: 0.5, burst_count: 5}}\n\
         rc_message: {per_second: 0.5, burst_count: 15.0}\n",
    ))
    .config;
    let d = RcLimits::default();
    assert_eq!(c.rc.login.address, RateLimit::new(0.15, 5));
    assert_eq!(c.rc.login.account, d.login.account);
    assert_eq!(c.rc.login.failed_attempts, RateLimit::new(0.17, 7));
    assert_eq!(c.rc.registration, RateLimit::new(2.0, 3));
    assert_eq!(c.rc.joins.local, RateLimit::new(0.2, 15));
    assert_eq!(c.rc.joins.remote, d.joins.remote);
    assert_eq!(c.rc.joins_per_room, RateLimit::new(1.0, 20));
    assert_eq!(c.rc.room_creation, RateLimit::new(1.0, 5));
    assert_eq!(c.rc.invites.per_issuer, RateLimit::new(0.5, 5));
    assert_eq!(c.rc.invites.per_room, d.invites.per_room);
    assert_eq!(c.rc.message, RateLimit::new(0.5, 15));

    // The older message keys count only without `rc_message`, as in the reference.
    let old = "rc_messages_per_second: 3\nrc_message_burst_count: 30\n";
    assert_eq!(
        load(&minimal_with(old)).config.rc.message,
        RateLimit::new(3.0, 30)
    );
    let both = format!("{old}rc_message: {{per_second: 1}}\n");
    let loaded = load(&minimal_with(&both));
    assert_eq!(loaded.config.rc.message, RateLimit::new(1.0, 10));

    let bad = minimal_with(
        "rc_login: {address: {per_second: 0}, acount: {}}\nrc_joins: {local: {burst_count: 0.5}}\n\
         rc_room_creation: {per_second: fast}\nrc_message_burst_count: 0\n",
    );
    assert_eq!(
        problem_paths(&bad),
        [
            "rc_joins.local.burst_count",
            "rc_login.acount",
            "rc_login.address.per_second",
            "rc_message_burst_count",
            "rc_room_creation.per_second",
        ]
    );
    assert_eq!(
        problem_at(&bad, "rc_joins.local.burst_count"),
        "must be at least 1"
    );
}

#[test]
fn rc_sections_presenced_does_not_apply_are_reported_as_unused() {
    let loaded = load(&minimal_with(
        "rc_3pid_validation: {per_second: 1}\nrc_federation: {window_size: 750}\n\
         rc_admin_redaction: {per_second: 1}\nrc_media_create: {per_second: 1}\n\
         rc_login: {address: {per_second: 1}}\n",
    ));
    assert_eq!(
        loaded.unknown_keys,
        [
            "rc_3pid_validation",
            "rc_admin_redaction",
            "rc_media_create"
        ]
    );
}

#[test]
fn sync_gather_defaults_to_a_few_milliseconds_and_is_bounded() {
    assert_eq!(
        load(MINIMAL).config.presence.sync_gather,
        Duration::from_millis(5)
    );
    let off = load(&minimal_with("presence: {sync_gather: 0s}\n")).config;
    assert_eq!(off.presence.sync_gather, Duration::ZERO);
    assert!(
        problem_at(
            &minimal_with("presence: {sync_gather: 200ms}\n"),
            "presence.sync_gather"
        )
        .contains("at most 100ms")
    );
}

#[test]
fn rc_federation_and_its_older_keys_are_read() {
    let d = presence_federation::FederationRateLimit::default();
    assert_eq!(load(MINIMAL).config.federation.rc_federation, d);
    let c = load(&minimal_with(
        "rc_federation: {window_size: 750, sleep_limit: 5, sleep_delay: 250, reject_limit: 20, concurrent: 2}\n",
    ))
    .config;
    let r = &c.federation.rc_federation;
    assert_eq!(
        (
            r.window,
            r.sleep_limit,
            r.sleep_delay,
            r.reject_limit,
            r.concurrent
        ),
        (
            Duration::from_millis(750),
            5,
            Duration::from_millis(250),
            20,
            2
        )
    );
    // The reference's older top-level keys, when the section is absent.
    let c = load(&minimal_with(
        "federation_rc_sleep_limit: 7\nfederation_rc_concurrent: 4\n",
    ))
    .config;
    let r = &c.federation.rc_federation;
    assert_eq!((r.sleep_limit, r.concurrent, r.window), (7, 4, d.window));
    assert_eq!(
        problem_at(
            &minimal_with("rc_federation: {concurrent: 0}\n"),
            "rc_federation.concurrent"
        ),
        "must be at least 1"
    );
    assert_eq!(
        load(&minimal_with("rc_federation: {windw_size: 1}\n")).unknown_keys,
        ["rc_federation.windw_size"]
    );
}

#[test]
fn python_section_defaults_and_errors() {
    let c = load(MINIMAL).config;
    assert_eq!(c.python, PythonConfig::default());
    assert_eq!(c.python.twisted, TwistedSetting::Auto);

    let c = load(&minimal_with(
        "python: {paths: [/opt/routers, ./more], venv: /opt/venv, twisted: required, \
         load_timeout: 5s}\n",
    ))
    .config;
    assert_eq!(
        c.python.paths,
        vec![PathBuf::from("/opt/routers"), PathBuf::from("./more")]
    );
    assert_eq!(c.python.venv, Some(PathBuf::from("/opt/venv")));
    assert_eq!(c.python.twisted, TwistedSetting::Required);
    assert_eq!(c.python.load_timeout, Duration::from_secs(5));

    assert!(
        problem_at(
            &minimal_with("python: {twisted: maybe}\n"),
            "python.twisted"
        )
        .contains("maybe")
    );
    assert_eq!(
        problem_paths(&minimal_with("python: {load_timeout: 0s, path: [x]}\n")),
        vec!["python.load_timeout", "python.path"]
    );
}

#[test]
fn connections_section_defaults_and_errors() {
    let c = load(MINIMAL).config;
    assert_eq!(c.connections, ConnectionsConfig::default());
    assert_eq!(c.connections.max_connections, None);

    let loaded = load(&minimal_with(
        "connections: {max_connections: 500, header_read_timeout: 10s, idle_timeout: 2m, \
         replication_idle_timeout: 1m}\n",
    ));
    let c = loaded.config.connections;
    assert_eq!(c.max_connections, Some(500));
    assert_eq!(c.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.idle_timeout, Duration::from_secs(120));
    assert_eq!(c.replication_idle_timeout, Duration::from_secs(60));
    // Shorter than Synapse's pool: accepted, with a warning naming the key.
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.path == "connections.replication_idle_timeout"),
        "{:?}",
        loaded.warnings
    );

    assert_eq!(
        problem_paths(&minimal_with(
            "connections: {max_connections: 0, idle_timeout: 0s, header_read_timeout: soon, \
             max_conections: 3}\n"
        )),
        vec![
            "connections.header_read_timeout",
            "connections.idle_timeout",
            "connections.max_conections",
            "connections.max_connections",
        ]
    );
}

#[test]
fn tls_listeners_need_their_files_and_federation_needs_a_signing_key() {
    let yaml = "
server_name: example.org
listeners:
  - {port: 8448, type: http, tls: true, resources: [{names: [federation]}]}
";
    assert_eq!(
        problem_at(yaml, "tls_certificate_path"),
        "is required: listeners[0] has tls: true (a PEM file)"
    );
    assert!(problem_at(yaml, "tls_private_key_path").starts_with("is required"));
    assert!(
        problem_at(yaml, "signing_key_path")
            .starts_with("is required: listeners[0] serves federation or keys")
    );
}

#[test]
fn a_plain_federation_listener_needs_tls_or_a_reverse_proxy() {
    let yaml = "
server_name: example.org
signing_key_path: signing.key
listeners:
  - {port: 8008, type: http, resources: [{names: [client, federation]}]}
";
    assert!(
        problem_at(yaml, "listeners[0].tls")
            .starts_with("this listener serves federation without TLS")
    );
    let proxied = yaml.replace("type: http,", "type: http, x_forwarded: true,");
    let loaded = load(&proxied);
    assert!(loaded.config.listeners[0].x_forwarded);
    assert!(loaded.config.federates());
}

#[test]
fn federation_settings_are_read() {
    let yaml = "
server_name: 127.0.0.1:8448
listeners:
  - {port: 8448, type: http, tls: true, resources: [{names: [federation, keys]}]}
signing_key_path: keys/signing.key
tls_certificate_path: tls.crt
tls_private_key_path: tls.key
federation_verify_certificates: false
federation_ip_range_blacklist: ['10.0.0.0/8']
ip_range_whitelist: ['127.0.0.1', '::1']
key_refresh_interval: 2h
trusted_key_servers: []
federation:
  client_timeout: 3s
  connect_timeout: 1s
  destination_min_retry_interval: 100ms
  destination_retry_multiplier: 3
  destination_max_retry_interval: 1s
  transaction_timeout: 2s
  pending_presence_ttl: 30s
  key_refetch_interval: 500ms
  inbound_body_buffer: 16M
  max_short_retries: 3
";
    let loaded = load(yaml);
    let c = &loaded.config;
    assert!(c.federates());
    assert!(c.listeners[0].tls);
    let f = &c.federation;
    assert!(!f.federation_verify_certificates);
    assert_eq!(f.ip_range_blacklist, Some(vec!["10.0.0.0/8".to_owned()]));
    assert_eq!(f.ip_range_whitelist, ["127.0.0.1", "::1"]);
    assert_eq!(f.key_refresh_interval, Duration::from_secs(7200));
    assert!(f.trusted_key_servers.is_empty());
    let t = &f.timers;
    assert_eq!(t.client_timeout, Duration::from_secs(3));
    assert_eq!(t.connect_timeout, Duration::from_secs(1));
    assert_eq!(t.destination_min_retry_interval, Duration::from_millis(100));
    assert_eq!(t.destination_retry_multiplier, 3);
    assert_eq!(t.destination_max_retry_interval, Duration::from_secs(1));
    assert_eq!(t.transaction_timeout, Duration::from_secs(2));
    assert_eq!(t.pending_presence_ttl, Duration::from_secs(30));
    assert_eq!(t.key_refetch_interval, Duration::from_millis(500));
    assert_eq!(t.inbound_body_buffer, 16 * 1024 * 1024);
    // The reference's other retry keys are known to exist but not used.
    assert_eq!(loaded.unknown_keys, ["federation.max_short_retries"]);
}

#[test]
fn the_general_ip_blacklist_applies_unless_the_federation_one_is_set() {
    let yaml = minimal_with("ip_range_blacklist: ['10.0.0.0/8']\n");
    assert_eq!(
        load(&yaml).config.federation.ip_range_blacklist,
        Some(vec!["10.0.0.0/8".to_owned()])
    );
    assert_eq!(
        load(&minimal_with("")).config.federation.ip_range_blacklist,
        None
    );
    let yaml = minimal_with(
        "federation: {destination_min_retry_interval: 10s, destination_max_retry_interval: 1s}\n",
    );
    assert!(
        problem_at(&yaml, "federation.destination_max_retry_interval")
            .starts_with("must not be less than")
    );
}

#[test]
fn the_shipped_synapse_examples_load_as_the_writer_mode() {
    let dir = repo_root().join("contrib/synapse");
    let loaded = match Config::load(&[
        dir.join("homeserver.yaml"),
        dir.join("presenced-writer.yaml"),
    ]) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
    let c = loaded.config;
    let writer = c.writer.as_ref().expect("the examples are the writer mode");
    assert_eq!(writer.worker_name, "presenced");
    assert!(writer.replication_secret.is_some());
    assert!(matches!(c.database, DatabaseConfig::Postgres(_)));
    let ports: Vec<u16> = c.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [9094, 9095]);
    assert_eq!(c.module_entries().len(), 1);
}
