//! The Synapse writer mode's configuration: the keys of a Synapse deployment's shared
//! `homeserver.yaml` and of a worker file that make Presenced the deployment's presence
//! stream writer (`worker_name` named in `stream_writers.presence`).
//!
//! Anything inconsistent stops startup with its key path: no Redis, a SQLite database,
//! another writer named, the worker missing from `instance_map`, a Unix-socket
//! `instance_map` entry, or authentication delegated to Matrix Authentication Service.
//! Reference: <https://element-hq.github.io/synapse/latest/workers.html>.

use presence_synapse::{pg::PgSettings, replication::RedisSettings};
use serde_json::Value;

use super::{Secret, SynapseWriterConfig, section::Section};

/// Reads the writer-mode keys if `worker_name` is set; `None` for the standalone mode or
/// when there were problems (each reported).
pub(super) fn read_writer(top: &mut Section<'_>) -> Option<Option<SynapseWriterConfig>> {
    if !top.has("worker_name") {
        return Some(None);
    }
    let problems_before = top.diagnostics().problem_count();
    let worker_name = top.require::<String>("worker_name");
    // Accepted for the worker convention; Presenced logs to stderr (or as `--log-format`).
    let _ = top.take_raw("worker_app");
    if top.take_raw("worker_log_config").is_some() {
        top.warning(
            "worker_log_config",
            "is Synapse's Python logging config and is not read: Presenced logs to stderr \
             (RUST_LOG or --log-level for the level, --log-format json for JSON lines)",
        );
    }
    let _ = top.take_raw("worker_pid_file");
    let _ = top.take_raw("worker_daemonize");
    let writer = read_stream_writer(top);
    let instance_map = top.take_raw("instance_map");
    let redis = top.take_raw("redis");
    let secret = top
        .get::<String>("worker_replication_secret")
        .map(Secret::new);
    let mas = top.take_raw("matrix_authentication_service");
    if mas
        .as_ref()
        .and_then(|m| m.get("enabled"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        top.problem(
            "matrix_authentication_service.enabled",
            "authentication is delegated to Matrix Authentication Service, which leaves no \
             access tokens in Synapse's database for Presenced to check; the writer mode \
             needs Synapse's own access tokens",
        );
    }
    let worker_name = worker_name?;
    match writer.as_deref() {
        Some(w) if w == worker_name => {}
        Some(other) => top.problem(
            "stream_writers.presence",
            format!(
                "names {other:?} as the presence writer, not this worker ({worker_name:?}); \
                 Presenced runs beside Synapse only as the presence writer"
            ),
        ),
        None => top.problem(
            "stream_writers.presence",
            format!("is required: set it to this worker's name ({worker_name:?})"),
        ),
    }
    check_instance_map(top, instance_map.as_ref(), &worker_name);
    let redis = read_redis(top, redis.as_ref());
    if top.diagnostics().problem_count() > problems_before {
        return None;
    }
    Some(Some(SynapseWriterConfig {
        worker_name,
        replication_secret: secret,
        redis: redis?,
        allow_untested_synapse: false,
    }))
}

/// `stream_writers.presence`: a name or a one-element list.
fn read_stream_writer(top: &mut Section<'_>) -> Option<String> {
    let writers = top.take_raw("stream_writers")?;
    match writers.get("presence") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(items)) if items.len() == 1 => items[0].as_str().map(str::to_owned),
        Some(Value::Array(_)) => {
            top.problem(
                "stream_writers.presence",
                "Synapse allows exactly one presence writer",
            );
            None
        }
        Some(_) => {
            top.problem(
                "stream_writers.presence",
                "must be a name or a list of one name",
            );
            None
        }
    }
}

fn check_instance_map(top: &Section<'_>, map: Option<&Value>, worker: &str) {
    let Some(entry) = map.and_then(|m| m.get(worker)) else {
        top.problem(
            &format!("instance_map.{worker}"),
            "is required: the other processes find the presence writer's replication \
             listener there ({host: ..., port: ...})",
        );
        return;
    };
    if entry.get("path").is_some() {
        top.problem(
            &format!("instance_map.{worker}.path"),
            "Unix-socket replication is not supported; give host and port",
        );
    } else if entry.get("port").and_then(Value::as_u64).is_none() {
        top.problem(&format!("instance_map.{worker}.port"), "is required");
    }
}

fn read_redis(top: &Section<'_>, redis: Option<&Value>) -> Option<RedisSettings> {
    let enabled = redis
        .and_then(|r| r.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !enabled {
        top.problem(
            "redis.enabled",
            "must be true: Synapse's workers replicate over Redis, and so does the presence \
             writer",
        );
        return None;
    }
    match RedisSettings::from_config(redis.unwrap_or(&Value::Null)) {
        Ok(settings) => Some(settings),
        Err(e) => {
            top.problem("redis", e);
            None
        }
    }
}

/// `database` with `name: psycopg2`: Synapse's PostgreSQL, read as its psycopg2 reads the
/// `args`.
pub(super) fn read_postgres(database: &mut Section<'_>) -> Option<PgSettings> {
    let args = database.take_raw("args").unwrap_or(Value::Null);
    let _ = database.take_raw("allow_unsafe_locale");
    let _ = database.take_raw("txn_limit");
    match PgSettings::from_args(&args) {
        Ok(settings) => Some(settings),
        Err(e) => {
            database.problem("args", e);
            None
        }
    }
}
