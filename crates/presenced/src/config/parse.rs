//! Builds the typed [`Config`] from the merged YAML tree, one section at a time, so that
//! every problem in the file is reported together with its key path.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use presence_router::{RoomId, ServerName};
use serde_json::{Map, Value};

use super::{
    Config, ConfigError, ConnectionsConfig, DEFAULT_MAX_REQUEST_BODY_SIZE,
    DEFAULT_MAX_STATUS_MSG_LENGTH, DEFAULT_SQLITE_PATH, DatabaseConfig, ExperimentalFeatures,
    FederationConfig, FederationTimers, ListenerConfig, ListenerResources, LoadedConfig,
    ModuleConfig, PasswordConfig, PasswordHashCost, PresenceConfig, PresenceMode, PythonConfig,
    RateLimit, RcInvitesConfig, RcJoinsConfig, RcLimits, RcLoginConfig, RcPresenceConfig,
    RegistrationConfig, ResourceName, RoutingMode, Secret, SqliteConfig, SqliteSynchronous,
    TrustedKeyServer,
    section::{Diagnostics, Leftovers, Section, describe},
    units::{ConfigDuration, ConfigSize, display_duration},
};

/// Default bind addresses of an HTTP listener: every interface, IPv6 and IPv4.
const DEFAULT_BIND_ADDRESSES: [&str; 2] = ["::", "0.0.0.0"];
/// Default bind address of a `metrics` listener (the reference binds it to IPv4 only).
const DEFAULT_METRICS_BIND_ADDRESS: &str = "0.0.0.0";

/// Resource names the reference homeserver serves but Presenced does not.
const FOREIGN_RESOURCES: [&str; 5] = ["consent", "media", "openid", "static", "webclient"];

/// Validates the merged configuration tree.
pub(super) fn build(root: Map<String, Value>) -> Result<LoadedConfig, ConfigError> {
    let diag = Diagnostics::default();
    let config = read_root(&diag, root);
    let (problems, warnings, unknown_keys) = diag.into_parts();
    match config {
        Some(config) if problems.is_empty() => Ok(LoadedConfig {
            config,
            unknown_keys,
            warnings,
        }),
        _ => Err(ConfigError::new(problems)),
    }
}

fn read_root(diag: &Diagnostics, root: Map<String, Value>) -> Option<Config> {
    let mut top = Section::new(diag, String::new(), Value::Object(root), Leftovers::Report)?;

    let server_name = top.require::<ServerName>("server_name");
    let writer = super::synapse::read_writer(&mut top);
    let is_writer = matches!(writer, Some(Some(_))) || top.has("worker_name");
    let listeners = if is_writer {
        // Main's listeners are main's: the writer serves its worker_listeners.
        let _ = top.take_raw("listeners");
        read_listeners(&mut top, "worker_listeners")
    } else {
        read_listeners(&mut top, "listeners")
    };
    if !is_writer {
        for (i, l) in listeners.iter().enumerate() {
            if l.serves(ResourceName::Replication) {
                top.warning(
                    &format!("listeners[{i}].resources"),
                    "the replication resource is served only as a Synapse deployment's \
                     presence writer (worker_name in stream_writers.presence); ignored",
                );
            }
        }
    }
    let database = read_database(&mut top, is_writer);
    let registration = read_registration(&mut top);
    let password_config = read_password_config(&mut top);
    let password_hash_cost = read_password_hash_cost(&mut top);
    let presence = read_presence(&mut top);
    let modules = read_modules(&mut top);
    let python = read_python(&mut top);
    let rc_presence = read_rc_presence(&mut top);
    let rc = read_rc_limits(&mut top);
    let exclude_rooms_from_presence = read_room_ids(&mut top, "exclude_rooms_from_presence");
    let experimental_features = read_experimental(&mut top);
    let max_status_msg_length = read_size(
        &mut top,
        "max_status_msg_length",
        DEFAULT_MAX_STATUS_MSG_LENGTH,
    );
    let max_request_body_size = read_size(
        &mut top,
        "max_request_body_size",
        DEFAULT_MAX_REQUEST_BODY_SIZE,
    );
    let connections = read_connections(&mut top);
    let federation = read_federation(&mut top);
    check_federation_files(&top, &listeners, &federation);
    top.finish();

    if diag.has_problems() {
        return None;
    }
    Some(Config {
        server_name: server_name?,
        listeners,
        database: database?,
        registration: registration?,
        password_config,
        password_hash_cost: password_hash_cost?,
        presence: presence?,
        modules,
        python: python?,
        rc_presence: rc_presence?,
        rc: rc?,
        exclude_rooms_from_presence,
        experimental_features,
        max_status_msg_length: max_status_msg_length?,
        max_request_body_size: max_request_body_size?,
        connections: connections?,
        federation,
        writer: writer?,
    })
}

// ---------------------------------------------------------------------------------------
// listeners

fn read_listeners(top: &mut Section<'_>, key: &str) -> Vec<ListenerConfig> {
    let diag = top.diagnostics();
    let problems_before = diag.problem_count();
    let entries = top.list(key);
    let listeners: Vec<ListenerConfig> = entries
        .into_iter()
        .filter_map(|(path, value)| read_listener(diag, path, value))
        .collect();
    // Only complain about "no listener" when nothing else already explains it.
    if listeners.is_empty() && diag.problem_count() == problems_before {
        top.problem(key, "at least one listener of type http is required");
    }
    listeners
}

fn read_listener(diag: &Diagnostics, path: String, value: Value) -> Option<ListenerConfig> {
    let mut s = Section::new(diag, path, value, Leftovers::Report)?;
    let port = s.require::<u16>("port");
    let kind = s.require::<String>("type");
    let tls = s.get_or("tls", false);
    let x_forwarded = s.get_or("x_forwarded", false);
    let mut bind_addresses: Vec<IpAddr> = s.get_or("bind_addresses", Vec::new());
    if let Some(legacy) = s.get::<IpAddr>("bind_address") {
        bind_addresses.push(legacy);
    }
    let mut resources = Vec::new();
    for (rpath, rvalue) in s.list("resources") {
        if let Some(r) = read_resources(diag, rpath, rvalue) {
            resources.push(r);
        }
    }

    let default_bind: &[&str] = match kind.as_deref() {
        Some("http") => &DEFAULT_BIND_ADDRESSES,
        Some("metrics") => {
            // A metrics listener serves metrics whatever its resources say.
            resources = vec![ListenerResources {
                names: vec![ResourceName::Metrics],
                compress: false,
            }];
            &[DEFAULT_METRICS_BIND_ADDRESS]
        }
        Some(other) => {
            s.warning(
                "type",
                format!("listener type {other:?} is not supported, this listener is ignored"),
            );
            s.finish();
            return None;
        }
        None => &[],
    };
    if bind_addresses.is_empty() {
        bind_addresses = default_bind.iter().filter_map(|a| a.parse().ok()).collect();
    }
    s.finish();
    Some(ListenerConfig {
        port: port?,
        bind_addresses,
        tls,
        x_forwarded,
        resources,
    })
}

fn read_resources(diag: &Diagnostics, path: String, value: Value) -> Option<ListenerResources> {
    let mut s = Section::new(diag, path, value, Leftovers::Report)?;
    let names_path = s.path_of("names");
    let raw_names: Vec<String> = s.get_or("names", Vec::new());
    let compress = s.get_or("compress", false);
    s.finish();
    let mut names = Vec::new();
    for (i, name) in raw_names.iter().enumerate() {
        let at = format!("{names_path}[{i}]");
        match ResourceName::from_name(name) {
            Some(r) if !names.contains(&r) => names.push(r),
            Some(_) => {}
            None if FOREIGN_RESOURCES.contains(&name.as_str()) => {
                diag.warning(
                    at,
                    format!("resource {name:?} is not served by Presenced, ignored"),
                );
            }
            None => diag.warning(at, format!("unknown resource {name:?}, ignored")),
        }
    }
    Some(ListenerResources { names, compress })
}

// ---------------------------------------------------------------------------------------
// database

fn read_database(top: &mut Section<'_>, writer: bool) -> Option<DatabaseConfig> {
    let Some(mut s) = top.section("database", Leftovers::Report) else {
        if writer && top.has("databases") {
            top.problem(
                "databases",
                "(several databases) is not supported: the presence writer needs the \
                 deployment's single `database` (name: psycopg2)",
            );
            return None;
        }
        if writer && !top.has("database") {
            top.problem(
                "database",
                "is required: the presence writer uses the deployment's PostgreSQL \
                 (name: psycopg2)",
            );
            return None;
        }
        return (!top.has("database"))
            .then(|| DatabaseConfig::Sqlite(SqliteConfig::new(DEFAULT_SQLITE_PATH)));
    };
    let name = s.require::<String>("name");
    let result = match name.as_deref() {
        Some("sqlite3") if writer => {
            s.problem(
                "name",
                "a Synapse deployment with workers runs on PostgreSQL (name: psycopg2); \
                 the presence writer cannot use SQLite",
            );
            s.take_raw("args");
            None
        }
        Some("sqlite3") => read_sqlite_args(&mut s),
        Some("psycopg2") if writer => {
            super::synapse::read_postgres(&mut s).map(DatabaseConfig::Postgres)
        }
        Some("psycopg2") => {
            s.problem(
                "name",
                "PostgreSQL (psycopg2) is used only as the presence writer of a Synapse \
                 deployment (worker_name named in stream_writers.presence); the standalone \
                 mode uses name: sqlite3",
            );
            // Its connection settings are not reported one by one: the whole section is
            // unusable as it stands.
            s.take_raw("args");
            None
        }
        Some(other) => {
            s.problem(
                "name",
                format!("unknown database engine {other:?}; expected sqlite3"),
            );
            s.take_raw("args");
            None
        }
        None => None,
    };
    s.finish();
    result
}

fn read_sqlite_args(database: &mut Section<'_>) -> Option<DatabaseConfig> {
    let Some(mut args) = database.section("args", Leftovers::Report) else {
        if !database.has("args") {
            database.problem("args.database", "is required (the SQLite database file)");
        }
        return None;
    };
    let path = args.require::<PathBuf>("database");
    let synchronous = args.get_or("synchronous", SqliteSynchronous::default());
    args.finish();
    Some(DatabaseConfig::Sqlite(SqliteConfig {
        path: path?,
        synchronous,
    }))
}

// ---------------------------------------------------------------------------------------
// registration and passwords

fn read_registration(top: &mut Section<'_>) -> Option<RegistrationConfig> {
    let inline = top.get::<String>("registration_shared_secret");
    let secret_path = top.get::<PathBuf>("registration_shared_secret_path");
    let enable_registration = top.get_or("enable_registration", false);
    let without_verification = top.get_or("enable_registration_without_verification", false);

    let secret = match (inline, secret_path) {
        (Some(_), Some(_)) => {
            top.problem(
                "registration_shared_secret_path",
                "cannot be used together with registration_shared_secret",
            );
            return None;
        }
        (Some(secret), None) => Some(secret),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim_end().to_owned()),
            Err(e) => {
                top.problem(
                    "registration_shared_secret_path",
                    format!("cannot read {}: {e}", path.display()),
                );
                return None;
            }
        },
        (None, None) => None,
    };
    if secret.as_deref().is_some_and(str::is_empty) {
        top.problem("registration_shared_secret", "must not be empty");
        return None;
    }
    if enable_registration && !without_verification {
        // The reference refuses this too: open registration with no email or captcha check
        // is an invitation to spam bots.
        top.problem(
            "enable_registration",
            "open registration without verification must be confirmed with \
             enable_registration_without_verification: true",
        );
        return None;
    }
    Some(RegistrationConfig {
        registration_shared_secret: secret.map(Secret::new),
        enable_registration,
        enable_registration_without_verification: without_verification,
    })
}

fn read_password_config(top: &mut Section<'_>) -> PasswordConfig {
    let mut config = PasswordConfig::default();
    if let Some(mut s) = top.section("password_config", Leftovers::Report) {
        config.enabled = s.get_or("enabled", config.enabled);
        s.finish();
    }
    config
}

/// Argon2's own lower bound on memory is 8 KiB per lane.
const ARGON2_MIN_KIB_PER_LANE: u32 = 8;
/// Argon2 allows at most 2^24 - 1 lanes.
const ARGON2_MAX_LANES: u32 = (1 << 24) - 1;

fn read_password_hash_cost(top: &mut Section<'_>) -> Option<PasswordHashCost> {
    let default = PasswordHashCost::default();
    let Some(mut s) = top.section("password_hash_cost", Leftovers::Reject) else {
        return (!top.has("password_hash_cost")).then_some(default);
    };
    let memory_kib = s.get_or("memory_kib", default.memory_kib);
    let iterations = s.get_or("iterations", default.iterations);
    let parallelism = s.get_or("parallelism", default.parallelism);
    let mut ok = true;
    if iterations == 0 {
        s.problem("iterations", "must be at least 1");
        ok = false;
    }
    if parallelism == 0 || parallelism > ARGON2_MAX_LANES {
        s.problem(
            "parallelism",
            format!("must be between 1 and {ARGON2_MAX_LANES}"),
        );
        ok = false;
    } else if memory_kib < ARGON2_MIN_KIB_PER_LANE.saturating_mul(parallelism) {
        s.problem(
            "memory_kib",
            format!(
                "must be at least {ARGON2_MIN_KIB_PER_LANE} KiB per lane ({} for parallelism {parallelism})",
                ARGON2_MIN_KIB_PER_LANE.saturating_mul(parallelism)
            ),
        );
        ok = false;
    }
    s.finish();
    ok.then_some(PasswordHashCost {
        memory_kib,
        iterations,
        parallelism,
    })
}

// ---------------------------------------------------------------------------------------
// presence

fn read_presence(top: &mut Section<'_>) -> Option<PresenceConfig> {
    // The reference falls back to the older top-level `use_presence` when
    // `presence.enabled` is not set.
    let use_presence = top.get::<bool>("use_presence");
    let fallback = match use_presence {
        Some(false) => PresenceMode::Disabled,
        _ => PresenceMode::Enabled,
    };
    let Some(mut s) = top.section("presence", Leftovers::Reject) else {
        return (!top.has("presence")).then(|| PresenceConfig {
            enabled: fallback,
            ..PresenceConfig::default()
        });
    };
    let defaults = PresenceConfig::default();
    let enabled = match s.take_raw("enabled") {
        None => Some(fallback),
        Some(Value::Bool(true)) => Some(PresenceMode::Enabled),
        Some(Value::Bool(false)) => Some(PresenceMode::Disabled),
        Some(Value::String(text)) if text == "untracked" => Some(PresenceMode::Untracked),
        Some(other) => {
            s.problem(
                "enabled",
                format!(
                    "expected true, false or \"untracked\", found {}",
                    describe(&other)
                ),
            );
            None
        }
    };
    let include_offline = s.get_or("include_offline_users_on_sync", false);
    let granularity = positive_duration(
        &mut s,
        "last_active_granularity",
        defaults.last_active_granularity,
    );
    let sync_online =
        positive_duration(&mut s, "sync_online_timeout", defaults.sync_online_timeout);
    let idle = positive_duration(&mut s, "idle_timeout", defaults.idle_timeout);
    let busy = positive_duration(&mut s, "busy_timeout", defaults.busy_timeout);
    let fed_timeout = positive_duration(&mut s, "federation_timeout", defaults.federation_timeout);
    let fed_ping = positive_duration(
        &mut s,
        "federation_ping_interval",
        defaults.federation_ping_interval,
    );
    let router_timeout =
        positive_duration(&mut s, "router_call_timeout", defaults.router_call_timeout);
    let routing = match s.take_raw("routing") {
        None | Some(Value::Null) => Some(RoutingMode::Additive),
        Some(Value::String(text)) if text == "additive" => Some(RoutingMode::Additive),
        Some(Value::String(text)) if text == "restricting" => Some(RoutingMode::Restricting),
        Some(other) => {
            s.problem(
                "routing",
                format!(
                    "expected \"additive\" or \"restricting\", found {}",
                    describe(&other)
                ),
            );
            None
        }
    };
    let sync_gather = match s.get::<ConfigDuration>("sync_gather") {
        None => Some(defaults.sync_gather),
        Some(ConfigDuration(d)) if d > super::MAX_SYNC_GATHER => {
            s.problem(
                "sync_gather",
                format!(
                    "must be at most {} (it delays every answer under load)",
                    display_duration(super::MAX_SYNC_GATHER)
                ),
            );
            None
        }
        Some(ConfigDuration(d)) => Some(d),
    };
    let router = match s.section("presence_router", Leftovers::Reject) {
        Some(r) => read_module(r).map(Some),
        None => Some(None),
    };

    if let (Some(granularity), Some(idle)) = (granularity, idle)
        && idle <= granularity
    {
        s.problem(
            "idle_timeout",
            format!(
                "must be greater than presence.last_active_granularity ({})",
                display_duration(granularity)
            ),
        );
    }
    if let (Some(timeout), Some(ping)) = (fed_timeout, fed_ping)
        && ping >= timeout
    {
        s.problem(
            "federation_ping_interval",
            format!(
                "must be less than presence.federation_timeout ({}), or remote servers \
                 expire local users between two announcements",
                display_duration(timeout)
            ),
        );
    }
    s.finish();
    Some(PresenceConfig {
        enabled: enabled?,
        include_offline_users_on_sync: include_offline,
        last_active_granularity: granularity?,
        sync_online_timeout: sync_online?,
        idle_timeout: idle?,
        busy_timeout: busy?,
        federation_timeout: fed_timeout?,
        federation_ping_interval: fed_ping?,
        router_call_timeout: router_timeout?,
        sync_gather: sync_gather?,
        presence_router: router?,
        routing: routing?,
    })
}

/// A duration that must be greater than zero; `None` if it is invalid (problem recorded).
fn positive_duration(s: &mut Section<'_>, key: &str, default: Duration) -> Option<Duration> {
    if !s.has(key) {
        s.take_raw(key);
        return Some(default);
    }
    let value = s.get::<ConfigDuration>(key)?.0;
    if value.is_zero() {
        s.problem(key, "must be greater than zero");
        return None;
    }
    Some(value)
}

fn read_modules(top: &mut Section<'_>) -> Vec<ModuleConfig> {
    let diag = top.diagnostics();
    top.list("modules")
        .into_iter()
        .filter_map(|(path, value)| {
            let s = Section::new(diag, path, value, Leftovers::Report)?;
            read_module(s)
        })
        .collect()
}

/// Reads `{module, config}`; the config stays opaque for the module's own `parse_config`.
fn read_module(mut s: Section<'_>) -> Option<ModuleConfig> {
    let module = s.require::<String>("module");
    let config = s
        .take_raw("config")
        .unwrap_or_else(|| Value::Object(Map::new()));
    if module.as_deref().is_some_and(|m| m.trim().is_empty()) {
        s.problem("module", "must not be empty");
        s.finish();
        return None;
    }
    s.finish();
    Some(ModuleConfig {
        module: module?,
        config,
    })
}

fn read_python(top: &mut Section<'_>) -> Option<PythonConfig> {
    let defaults = PythonConfig::default();
    let Some(mut s) = top.section("python", Leftovers::Reject) else {
        return (!top.has("python")).then_some(defaults);
    };
    let paths = s.get_or("paths", defaults.paths);
    let venv = s.get::<PathBuf>("venv");
    let twisted = s.get_or("twisted", defaults.twisted);
    let load_timeout = positive_duration(&mut s, "load_timeout", defaults.load_timeout);
    s.finish();
    Some(PythonConfig {
        paths,
        venv,
        twisted,
        load_timeout: load_timeout?,
    })
}

fn read_connections(top: &mut Section<'_>) -> Option<ConnectionsConfig> {
    let defaults = ConnectionsConfig::default();
    let Some(mut s) = top.section("connections", Leftovers::Reject) else {
        return (!top.has("connections")).then_some(defaults);
    };
    let max_connections = match s.get::<usize>("max_connections") {
        Some(0) => {
            s.problem("max_connections", "must be at least 1");
            None
        }
        // Absent, or not a number (that problem is recorded and stops the load).
        other => Some(other),
    };
    let header_read_timeout =
        positive_duration(&mut s, "header_read_timeout", defaults.header_read_timeout);
    let idle_timeout = positive_duration(&mut s, "idle_timeout", defaults.idle_timeout);
    let replication_idle_timeout = positive_duration(
        &mut s,
        "replication_idle_timeout",
        defaults.replication_idle_timeout,
    );
    if let Some(t) = replication_idle_timeout
        && t <= super::SYNAPSE_REPLICATION_POOL_TIMEOUT
    {
        s.warning(
            "replication_idle_timeout",
            format!(
                "Synapse keeps idle replication connections for {}: a shorter timeout can \
                 close one as Synapse sends a request on it, failing that request",
                display_duration(super::SYNAPSE_REPLICATION_POOL_TIMEOUT)
            ),
        );
    }
    s.finish();
    Some(ConnectionsConfig {
        max_connections: max_connections?,
        header_read_timeout: header_read_timeout?,
        idle_timeout: idle_timeout?,
        replication_idle_timeout: replication_idle_timeout?,
    })
}

fn read_rc_presence(top: &mut Section<'_>) -> Option<RcPresenceConfig> {
    let Some(mut s) = top.section("rc_presence", Leftovers::Reject) else {
        return (!top.has("rc_presence")).then(RcPresenceConfig::default);
    };
    let per_user = read_rate_limit(&mut s, "per_user", RateLimit::default());
    s.finish();
    Some(RcPresenceConfig {
        per_user: per_user?,
    })
}

/// Reads a `{per_second, burst_count}` section at `key`, `default` where it or a field is
/// absent. `burst_count` may be written as a float (the reference's documentation does),
/// and is truncated as the reference's `int()` does.
fn read_rate_limit(top: &mut Section<'_>, key: &str, default: RateLimit) -> Option<RateLimit> {
    let Some(mut p) = top.section(key, Leftovers::Reject) else {
        return (!top.has(key)).then_some(default);
    };
    let per_second = p.get::<f64>("per_second");
    let burst_count = p.get::<f64>("burst_count");
    let mut ok = true;
    let per_second = match per_second {
        Some(v) if !(v.is_finite() && v > 0.0) => {
            p.problem("per_second", "must be a number greater than zero");
            ok = false;
            v
        }
        Some(v) => v,
        None => default.per_second,
    };
    let burst_count = match burst_count {
        Some(v) if !(v.is_finite() && v >= 1.0) => {
            p.problem("burst_count", "must be at least 1");
            ok = false;
            0
        }
        // Truncation is the reference's `int()`; values past u32 saturate.
        Some(v) => v as u32,
        None => default.burst_count,
    };
    p.finish();
    ok.then_some(RateLimit {
        per_second,
        burst_count,
    })
}

/// Reads a section of named rate limits (`rc_login: {address, account, ...}`), each with
/// its own default; `None` when any of them has a problem.
fn read_rate_limit_group<const N: usize>(
    top: &mut Section<'_>,
    key: &str,
    defaults: [(&str, RateLimit); N],
) -> Option<[RateLimit; N]> {
    let Some(mut s) = top.section(key, Leftovers::Reject) else {
        return (!top.has(key)).then(|| defaults.map(|(_, d)| d));
    };
    let read = defaults.map(|(name, d)| read_rate_limit(&mut s, name, d));
    s.finish();
    let mut out = defaults.map(|(_, d)| d);
    for (slot, value) in out.iter_mut().zip(read) {
        *slot = value?;
    }
    Some(out)
}

/// The `rc_*` limits on logins, registration, rooms and messages, with the reference's
/// defaults.
fn read_rc_limits(top: &mut Section<'_>) -> Option<RcLimits> {
    let d = RcLimits::default();
    let login = read_rate_limit_group(
        top,
        "rc_login",
        [
            ("address", d.login.address),
            ("account", d.login.account),
            ("failed_attempts", d.login.failed_attempts),
        ],
    );
    let registration = read_rate_limit(top, "rc_registration", d.registration);
    let joins = read_rate_limit_group(
        top,
        "rc_joins",
        [("local", d.joins.local), ("remote", d.joins.remote)],
    );
    let joins_per_room = read_rate_limit(top, "rc_joins_per_room", d.joins_per_room);
    let room_creation = read_rate_limit(top, "rc_room_creation", d.room_creation);
    let invites = read_rate_limit_group(
        top,
        "rc_invites",
        [
            ("per_room", d.invites.per_room),
            ("per_user", d.invites.per_user),
            ("per_issuer", d.invites.per_issuer),
        ],
    );
    let message = if top.has("rc_message") {
        read_rate_limit(top, "rc_message", d.message)
    } else {
        // The reference's older keys, read only when `rc_message` is absent (as it does).
        let per_second = top.get::<f64>("rc_messages_per_second");
        let burst_count = top.get::<f64>("rc_message_burst_count");
        let mut message = d.message;
        let mut ok = true;
        if let Some(v) = per_second {
            if v.is_finite() && v > 0.0 {
                message.per_second = v;
            } else {
                top.problem(
                    "rc_messages_per_second",
                    "must be a number greater than zero",
                );
                ok = false;
            }
        }
        if let Some(v) = burst_count {
            if v.is_finite() && v >= 1.0 {
                message.burst_count = v as u32;
            } else {
                top.problem("rc_message_burst_count", "must be at least 1");
                ok = false;
            }
        }
        ok.then_some(message)
    };
    let [address, account, failed_attempts] = login?;
    let [local, remote] = joins?;
    let [per_room, per_user, per_issuer] = invites?;
    Some(RcLimits {
        login: RcLoginConfig {
            address,
            account,
            failed_attempts,
        },
        registration: registration?,
        joins: RcJoinsConfig { local, remote },
        joins_per_room: joins_per_room?,
        room_creation: room_creation?,
        message: message?,
        invites: RcInvitesConfig {
            per_room,
            per_user,
            per_issuer,
        },
    })
}

/// Reads a list of room IDs, naming each bad entry by its index.
fn read_room_ids(top: &mut Section<'_>, key: &str) -> Vec<RoomId> {
    let raw: Vec<String> = top.get_or(key, Vec::new());
    let path = top.path_of(key);
    let diag = top.diagnostics();
    raw.iter()
        .enumerate()
        .filter_map(|(i, text)| match RoomId::parse(text) {
            Ok(id) => Some(id),
            Err(_) => {
                diag.problem(
                    format!("{path}[{i}]"),
                    format!("{text:?} is not a room ID (expected !opaque_id:server.name)"),
                );
                None
            }
        })
        .collect()
}

fn read_experimental(top: &mut Section<'_>) -> ExperimentalFeatures {
    let mut features = ExperimentalFeatures::default();
    if let Some(mut s) = top.section("experimental_features", Leftovers::Report) {
        features.msc3026_enabled = s.get_or("msc3026_enabled", false);
        s.finish();
    }
    features
}

/// A byte size that must be positive and fit in memory sizes.
fn read_size(top: &mut Section<'_>, key: &str, default: usize) -> Option<usize> {
    if !top.has(key) {
        top.take_raw(key);
        return Some(default);
    }
    let bytes = top.get::<ConfigSize>(key)?.0;
    match usize::try_from(bytes) {
        Ok(0) => {
            top.problem(key, "must be greater than zero");
            None
        }
        Ok(n) => Some(n),
        Err(_) => {
            top.problem(key, "is too large for this machine");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------
// federation

fn read_federation(top: &mut Section<'_>) -> FederationConfig {
    let defaults = FederationConfig::default();
    let signing_key_path = top.get::<PathBuf>("signing_key_path");
    let key_refresh_interval =
        positive_duration(top, "key_refresh_interval", defaults.key_refresh_interval)
            .unwrap_or(defaults.key_refresh_interval);
    let whitelist = read_server_names(top, "federation_domain_whitelist");
    let verify = top.get_or(
        "federation_verify_certificates",
        defaults.federation_verify_certificates,
    );
    let federation_custom_ca_list: Vec<PathBuf> =
        top.get_or("federation_custom_ca_list", Vec::new());
    // The reference reads `ip_range_blacklist` for all outbound traffic and lets the older
    // `federation_ip_range_blacklist` override it for federation.
    let general_blacklist = read_ip_ranges(top, "ip_range_blacklist");
    let ip_range_blacklist =
        read_ip_ranges(top, "federation_ip_range_blacklist").or(general_blacklist);
    let ip_range_whitelist = read_ip_ranges(top, "ip_range_whitelist").unwrap_or_default();
    let tls_certificate_path = top.get::<PathBuf>("tls_certificate_path");
    let tls_private_key_path = top.get::<PathBuf>("tls_private_key_path");
    let trusted_key_servers = if top.has("trusted_key_servers") {
        let diag = top.diagnostics();
        top.list("trusted_key_servers")
            .into_iter()
            .filter_map(|(path, value)| {
                let mut s = Section::new(diag, path, value, Leftovers::Report)?;
                let server_name = s.require::<ServerName>("server_name");
                let verify_keys = s.get_or("verify_keys", Default::default());
                let accept_keys_insecurely = s.get_or("accept_keys_insecurely", false);
                s.finish();
                Some(TrustedKeyServer {
                    server_name: server_name?,
                    verify_keys,
                    accept_keys_insecurely,
                })
            })
            .collect()
    } else {
        top.take_raw("trusted_key_servers");
        defaults.trusted_key_servers
    };
    let timers = read_federation_timers(top).unwrap_or_default();
    let rc_federation = read_rc_federation(top);
    FederationConfig {
        signing_key_path,
        key_refresh_interval,
        federation_domain_whitelist: whitelist,
        federation_verify_certificates: verify,
        federation_custom_ca_list,
        ip_range_blacklist,
        ip_range_whitelist,
        trusted_key_servers,
        tls_certificate_path,
        tls_private_key_path,
        timers,
        rc_federation,
    }
}

/// `rc_federation: {window_size, sleep_limit, sleep_delay, reject_limit, concurrent}`
/// (milliseconds and counts, the reference's defaults), or when it is absent the older
/// top-level `federation_rc_window_size`, `federation_rc_sleep_limit`, ... keys, as the
/// reference reads them.
fn read_rc_federation(top: &mut Section<'_>) -> presence_federation::FederationRateLimit {
    let d = presence_federation::FederationRateLimit::default();
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let read = |get: &mut dyn FnMut(&str, u64) -> Option<u64>| {
        let mut c = d.clone();
        let window = get("window_size", ms(d.window));
        let sleep_limit = get("sleep_limit", d.sleep_limit as u64);
        let sleep_delay = get("sleep_delay", ms(d.sleep_delay));
        let reject_limit = get("reject_limit", d.reject_limit as u64);
        let concurrent = get("concurrent", d.concurrent as u64);
        let count =
            |v: Option<u64>, or: usize| v.map_or(or, |v| usize::try_from(v).unwrap_or(usize::MAX));
        c.window = window.map_or(d.window, std::time::Duration::from_millis);
        c.sleep_limit = count(sleep_limit, d.sleep_limit);
        c.sleep_delay = sleep_delay.map_or(d.sleep_delay, std::time::Duration::from_millis);
        c.reject_limit = count(reject_limit, d.reject_limit);
        c.concurrent = count(concurrent, d.concurrent);
        c
    };
    // Zero would mean no window, or no request ever handled.
    let positive = ["window_size", "concurrent"];
    if top.has("rc_federation") {
        let Some(mut s) = top.section("rc_federation", Leftovers::Report) else {
            return d;
        };
        let c = read(&mut |key, default| {
            let v: u64 = s.get_or(key, default);
            if v == 0 && positive.contains(&key) {
                s.problem(key, "must be at least 1");
                return None;
            }
            Some(v)
        });
        s.finish();
        c
    } else {
        read(&mut |key, default| {
            let key = format!("federation_rc_{key}");
            let v: u64 = top.get_or(&key, default);
            if v == 0 && positive.iter().any(|p| key.ends_with(p)) {
                top.problem(&key, "must be at least 1");
                return None;
            }
            Some(v)
        })
    }
}

/// The `federation` section (the reference's retry settings, plus Presenced's own timers).
/// `None` when absent or invalid (problems recorded).
fn read_federation_timers(top: &mut Section<'_>) -> Option<FederationTimers> {
    let mut s = top.section("federation", Leftovers::Report)?;
    let d = FederationTimers::default();
    let client_timeout = positive_duration(&mut s, "client_timeout", d.client_timeout);
    let connect_timeout = positive_duration(&mut s, "connect_timeout", d.connect_timeout);
    let min_retry = positive_duration(
        &mut s,
        "destination_min_retry_interval",
        d.destination_min_retry_interval,
    );
    let multiplier = s.get_or(
        "destination_retry_multiplier",
        d.destination_retry_multiplier,
    );
    if multiplier == 0 {
        s.problem("destination_retry_multiplier", "must be at least 1");
    }
    let max_retry = positive_duration(
        &mut s,
        "destination_max_retry_interval",
        d.destination_max_retry_interval,
    );
    let transaction_timeout =
        positive_duration(&mut s, "transaction_timeout", d.transaction_timeout);
    let pending_ttl = positive_duration(&mut s, "pending_presence_ttl", d.pending_presence_ttl);
    let key_refetch = positive_duration(&mut s, "key_refetch_interval", d.key_refetch_interval);
    let body_buffer = read_size(&mut s, "inbound_body_buffer", d.inbound_body_buffer);
    if let (Some(min), Some(max)) = (min_retry, max_retry)
        && max < min
    {
        s.problem(
            "destination_max_retry_interval",
            format!(
                "must not be less than federation.destination_min_retry_interval ({})",
                display_duration(min)
            ),
        );
    }
    s.finish();
    Some(FederationTimers {
        client_timeout: client_timeout?,
        connect_timeout: connect_timeout?,
        destination_min_retry_interval: min_retry?,
        destination_retry_multiplier: multiplier.max(1),
        destination_max_retry_interval: max_retry?,
        transaction_timeout: transaction_timeout?,
        pending_presence_ttl: pending_ttl?,
        key_refetch_interval: key_refetch?,
        inbound_body_buffer: body_buffer?,
    })
}

/// Reads an optional list of IP ranges (CIDR or single addresses), naming each bad entry.
fn read_ip_ranges(top: &mut Section<'_>, key: &str) -> Option<Vec<String>> {
    let raw: Vec<String> = top.get(key)?;
    let path = top.path_of(key);
    let diag = top.diagnostics();
    for (i, range) in raw.iter().enumerate() {
        if presence_federation::IpRangeFilter::parse(std::slice::from_ref(range), &[]).is_err() {
            diag.problem(
                format!("{path}[{i}]"),
                format!("{range:?} is not an IP range (expected e.g. 10.0.0.0/8 or ::1)"),
            );
        }
    }
    Some(raw)
}

/// TLS listeners need the certificate and key; federation needs a signing key.
fn check_federation_files(
    top: &Section<'_>,
    listeners: &[ListenerConfig],
    federation: &FederationConfig,
) {
    if let Some(i) = listeners.iter().position(|l| l.tls) {
        for (key, value) in [
            ("tls_certificate_path", &federation.tls_certificate_path),
            ("tls_private_key_path", &federation.tls_private_key_path),
        ] {
            if value.is_none() {
                top.problem(
                    key,
                    format!("is required: listeners[{i}] has tls: true (a PEM file)"),
                );
            }
        }
    }
    // Other servers only connect over HTTPS: a plain federation listener must be behind a
    // TLS-terminating proxy, which the reference's `x_forwarded` says.
    for (i, l) in listeners.iter().enumerate() {
        if (l.serves(ResourceName::Federation) || l.serves(ResourceName::Keys))
            && !l.tls
            && !l.x_forwarded
        {
            top.problem(
                &format!("listeners[{i}].tls"),
                "this listener serves federation without TLS, and other servers only connect \
                 over HTTPS: set tls: true (with tls_certificate_path and tls_private_key_path), \
                 or x_forwarded: true if a reverse proxy terminates TLS in front of it",
            );
        }
    }
    let federating = listeners
        .iter()
        .position(|l| l.serves(ResourceName::Federation) || l.serves(ResourceName::Keys));
    if let Some(i) = federating
        && federation.signing_key_path.is_none()
    {
        top.problem(
            "signing_key_path",
            format!(
                "is required: listeners[{i}] serves federation or keys \
                 (a new key is written to this file if it does not exist)"
            ),
        );
    }
}

/// Reads an optional list of server names, naming each bad entry by its index.
fn read_server_names(top: &mut Section<'_>, key: &str) -> Option<Vec<ServerName>> {
    let raw: Vec<String> = top.get(key)?;
    let path = top.path_of(key);
    let diag = top.diagnostics();
    Some(
        raw.iter()
            .enumerate()
            .filter_map(|(i, text)| match ServerName::parse(text) {
                Ok(name) => Some(name),
                Err(_) => {
                    diag.problem(
                        format!("{path}[{i}]"),
                        format!("{text:?} is not a valid server name"),
                    );
                    None
                }
            })
            .collect(),
    )
}
