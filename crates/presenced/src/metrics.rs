//! Metrics, exported in the Prometheus text format on `/metrics`.
//!
//! A leaf: names are constants here, each with its `# HELP` text, and each is recorded
//! through one function, so that every metric has exactly one definition. Components that
//! keep their own counters (routers, Python, federation) are read into it in one place,
//! `App::collect_metrics`, just before rendering.

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Notified presence updates persisted.
pub const PRESENCE_UPDATES: &str = "presenced_presence_updates_total";
/// Presence changes put back because their commit failed.
pub const PRESENCE_ROLLBACKS: &str = "presenced_presence_rollbacks_total";
/// (recipient, user) presence entries returned by syncs.
pub const PRESENCE_DELIVERIES: &str = "presenced_presence_deliveries_total";
/// Woken syncs that waited `presence.sync_gather` for more changes before answering.
pub const SYNC_GATHERED: &str = "presenced_sync_gathered_total";
/// Wall time of `/sync` requests.
pub const SYNC_SECONDS: &str = "presenced_sync_duration_seconds";
/// Presence store write latency (from request to COMMIT).
pub const STORE_WRITE_SECONDS: &str = "presenced_store_write_duration_seconds";
/// Router calls, by router.
pub const ROUTER_CALLS: &str = "presenced_router_calls_total";
/// Router calls whose answer was dropped, by router.
pub const ROUTER_FAILURES: &str = "presenced_router_failures_total";
/// Router calls that overran their budget, by router.
pub const ROUTER_TIMEOUTS: &str = "presenced_router_timeouts_total";
/// Router calls that panicked, by router.
pub const ROUTER_PANICS: &str = "presenced_router_panics_total";
/// Time spent in router calls so far, by router (a gauge: Prometheus reserves `_total` for
/// counters, and this one is fractional).
pub const ROUTER_SECONDS: &str = "presenced_router_call_time_seconds";
/// Inbound federation presence entries dropped by validation.
pub const REMOTE_DROPPED: &str = "presenced_remote_presence_dropped_total";
/// Times Python module code kept the interpreter's event loop from running too long.
pub const PYTHON_STALLS: &str = "presenced_python_stalls_total";
/// Memory blocks the Python interpreter has allocated (`sys.getallocatedblocks()`).
pub const PYTHON_ALLOCATED_BLOCKS: &str = "presenced_python_allocated_blocks";
/// Exceptions raised inside Python module code that kept the loop stuck.
pub const PYTHON_INTERRUPTS: &str = "presenced_python_interrupts_total";
/// Background work of Python modules that raised.
pub const PYTHON_BACKGROUND_FAILURES: &str = "presenced_python_background_failures_total";
/// Python router calls that raised, by router.
pub const PYTHON_EXCEPTIONS: &str = "presenced_python_exceptions_total";
/// Python router answers of the wrong type or naming states or users it was not given.
pub const PYTHON_INVALID_ANSWERS: &str = "presenced_python_invalid_answers_total";
/// Python router calls refused at once (interpreter stuck, queue full or stopped).
pub const PYTHON_REJECTED: &str = "presenced_python_rejected_total";
/// Local presence changes per batch (each batch is one router call and one commit).
pub const PRESENCE_BATCH_SIZE: &str = "presenced_presence_batch_size";
/// Federation transactions delivered to other servers.
pub const FEDERATION_TXN_SENT: &str = "presenced_federation_transactions_sent_total";
/// Presence states delivered to other servers.
pub const FEDERATION_PRESENCE_SENT: &str = "presenced_federation_presence_sent_total";
/// Outbound transactions that failed (each is retried with backoff).
pub const FEDERATION_SEND_FAILURES: &str = "presenced_federation_send_failures_total";
/// Queued presence dropped because its server stayed unreachable.
pub const FEDERATION_PRESENCE_EXPIRED: &str = "presenced_federation_presence_expired_total";
/// Inbound transactions accepted.
pub const FEDERATION_TXN_RECEIVED: &str = "presenced_federation_transactions_received_total";
/// Inbound transactions refused (bad body or limits).
pub const FEDERATION_TXN_REJECTED: &str = "presenced_federation_transactions_rejected_total";
/// Bytes of inbound federation request bodies being read or handled right now.
pub const FEDERATION_BODY_BYTES: &str = "presenced_federation_body_bytes_buffered";
/// Inbound federation requests answered 429 because the body budget stayed full.
pub const FEDERATION_REFUSED_BUSY: &str = "presenced_federation_requests_refused_busy_total";
/// Inbound presence entries handed to the engine.
pub const FEDERATION_PRESENCE_RECEIVED: &str = "presenced_federation_presence_received_total";
/// HTTP requests refused with 429.
pub const RATE_LIMITED: &str = "presenced_rate_limited_total";
/// Password hashes computed and checked (Argon2id), dummy checks for unknown users included.
pub const PASSWORD_HASHES: &str = "presenced_password_hashes_total";
/// Users the presence engine holds (local and remote).
pub const USERS: &str = "presenced_users";
/// Room memberships the presence engine holds.
pub const ROOM_MEMBERSHIPS: &str = "presenced_room_memberships";
/// Bytes held by the cache of parsed `/sync` filters (counted against its budget).
pub const SYNC_FILTER_CACHE_BYTES: &str = "presenced_sync_filter_cache_bytes";
/// Beside Synapse: replication commands received over Redis, by command.
pub const REPLICATION_COMMANDS_IN: &str = "presenced_replication_commands_received_total";
/// Beside Synapse: `RDATA presence` rows published.
pub const REPLICATION_RDATA_OUT: &str = "presenced_replication_rdata_published_total";
/// Beside Synapse: devices each Synapse process reports as syncing, by its instance ID.
pub const REPLICATION_SYNCING_DEVICES: &str = "presenced_replication_syncing_devices";
/// Beside Synapse: replication commands published over Redis, by command.
pub const REPLICATION_COMMANDS_OUT: &str = "presenced_replication_commands_sent_total";
/// Beside Synapse: Redis connections lost and re-established, by connection.
pub const REPLICATION_RECONNECTS: &str = "presenced_replication_reconnects_total";
/// Beside Synapse: time to commit one batch of presence to Synapse's PostgreSQL.
pub const SYNAPSE_COMMIT_SECONDS: &str = "presenced_synapse_commit_duration_seconds";
/// Handling time of HTTP requests, by route (the route's pattern) and method.
pub const HTTP_REQUEST_SECONDS: &str = "presenced_http_request_duration_seconds";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls reuse it).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ])
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(PRESENCE_BATCH_SIZE.to_owned()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0],
                    )
                })
                .map(PrometheusBuilder::build_recorder);
            let handle = match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::debug!("A metrics recorder was already installed.");
                    }
                    handle
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Metrics buckets rejected; using the defaults.");
                    let recorder = PrometheusBuilder::new().build_recorder();
                    let handle = recorder.handle();
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
            };
            // After the recorder is installed: descriptions go to the current recorder.
            describe();
            handle
        })
        .clone()
}

/// Renders every metric.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.render()
}

/// Records the routers' counters as they are now.
pub fn router_stats<'a>(
    stats: impl IntoIterator<Item = (&'a str, &'a std::sync::Arc<presence_router::RouterStats>)>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    for (name, stats) in stats {
        let labels = [("router", name.to_owned())];
        metrics::counter!(ROUTER_CALLS, &labels).absolute(stats.calls.load(Relaxed));
        metrics::counter!(ROUTER_FAILURES, &labels).absolute(stats.failures.load(Relaxed));
        metrics::counter!(ROUTER_TIMEOUTS, &labels).absolute(stats.timeouts.load(Relaxed));
        metrics::counter!(ROUTER_PANICS, &labels).absolute(stats.panics.load(Relaxed));
        metrics::gauge!(ROUTER_SECONDS, &labels).set(stats.nanos.load(Relaxed) as f64 / 1e9);
    }
}

/// Records the engine's size.
pub fn engine_size(users: usize, memberships: usize) {
    metrics::gauge!(USERS).set(users as f64);
    metrics::gauge!(ROOM_MEMBERSHIPS).set(memberships as f64);
}

/// Records the size of the `/sync` filter cache.
pub fn sync_filter_cache(bytes: usize) {
    metrics::gauge!(SYNC_FILTER_CACHE_BYTES).set(bytes as f64);
}

/// Counts one replication command received (beside Synapse).
pub fn replication_command_in(command: &'static str) {
    metrics::counter!(REPLICATION_COMMANDS_IN, "command" => command).increment(1);
}

/// Counts `RDATA presence` rows published (beside Synapse).
pub fn replication_rdata_out(rows: u64) {
    metrics::counter!(REPLICATION_RDATA_OUT).increment(rows);
}

/// Counts one replication command published (beside Synapse).
pub fn replication_command_out(command: &'static str) {
    metrics::counter!(REPLICATION_COMMANDS_OUT, "command" => command).increment(1);
}

/// Counts a lost Redis connection (`subscribe` or `publish`) that is being re-established.
pub fn replication_reconnect(connection: &'static str) {
    metrics::counter!(REPLICATION_RECONNECTS, "connection" => connection).increment(1);
}

/// Records the publisher's reconnections so far (it counts them itself).
pub fn replication_publisher_reconnects(total: u64) {
    metrics::counter!(REPLICATION_RECONNECTS, "connection" => "publish").absolute(total);
}

/// Records one presence commit to Synapse's database.
pub fn synapse_commit(d: Duration) {
    metrics::histogram!(SYNAPSE_COMMIT_SECONDS).record(d.as_secs_f64());
}

/// Records one HTTP request's handling time.
pub fn http_request(route: String, method: String, d: Duration) {
    metrics::histogram!(HTTP_REQUEST_SECONDS, "route" => route, "method" => method)
        .record(d.as_secs_f64());
}

/// Records how many devices each Synapse process reports as syncing.
pub fn replication_syncing_devices<'a>(processes: impl IntoIterator<Item = (&'a str, usize)>) {
    for (instance, devices) in processes {
        let labels = [("instance_id", instance.to_owned())];
        metrics::gauge!(REPLICATION_SYNCING_DEVICES, &labels).set(devices as f64);
    }
}

/// Records the federation counters as they are now.
pub fn federation_stats(
    out: &presence_federation::OutboxStats,
    inbound: &presence_federation::InboundStats,
) {
    metrics::counter!(FEDERATION_TXN_SENT).absolute(out.transactions_sent);
    metrics::counter!(FEDERATION_PRESENCE_SENT).absolute(out.states_sent);
    metrics::counter!(FEDERATION_SEND_FAILURES).absolute(out.failed_attempts);
    metrics::counter!(FEDERATION_PRESENCE_EXPIRED).absolute(out.dropped_expired);
    metrics::counter!(FEDERATION_TXN_RECEIVED).absolute(inbound.transactions);
    metrics::counter!(FEDERATION_TXN_REJECTED).absolute(inbound.rejected);
    metrics::gauge!(FEDERATION_BODY_BYTES).set(inbound.buffered_body_bytes as f64);
    metrics::counter!(FEDERATION_REFUSED_BUSY).absolute(inbound.refused_busy);
}

/// Records the password hashing gate's count.
pub fn password_hashes(performed: u64) {
    metrics::counter!(PASSWORD_HASHES).absolute(performed);
}

/// Gives every metric its `# HELP` line (once, when the recorder is installed).
fn describe() {
    metrics::describe_gauge!(USERS, "Users the presence engine holds (local and remote).");
    metrics::describe_gauge!(
        SYNC_FILTER_CACHE_BYTES,
        "Bytes held by the cache of parsed /sync filters."
    );
    metrics::describe_gauge!(
        ROOM_MEMBERSHIPS,
        "Room memberships the presence engine holds."
    );
    metrics::describe_counter!(
        PASSWORD_HASHES,
        "Password hashes computed and checked, checks for unknown users included."
    );
    metrics::describe_counter!(
        REPLICATION_COMMANDS_IN,
        "Replication commands received over Redis, by command (beside Synapse)."
    );
    metrics::describe_counter!(
        REPLICATION_RDATA_OUT,
        "RDATA presence rows published (beside Synapse)."
    );
    metrics::describe_gauge!(
        REPLICATION_SYNCING_DEVICES,
        "Devices a Synapse process reports as syncing, by its instance ID (beside Synapse)."
    );
    metrics::describe_counter!(PRESENCE_UPDATES, "Notified presence updates persisted.");
    metrics::describe_counter!(
        PRESENCE_DELIVERIES,
        "(recipient, user) presence entries returned by syncs."
    );
    metrics::describe_counter!(
        SYNC_GATHERED,
        "Woken syncs that waited presence.sync_gather for more changes before answering."
    );
    metrics::describe_counter!(
        REPLICATION_COMMANDS_OUT,
        "Beside Synapse: replication commands published over Redis, by command."
    );
    metrics::describe_counter!(
        REPLICATION_RECONNECTS,
        "Beside Synapse: Redis connections lost and re-established, by connection (subscribe, publish)."
    );
    metrics::describe_histogram!(
        SYNAPSE_COMMIT_SECONDS,
        "Beside Synapse: time to commit one batch of presence to Synapse's PostgreSQL."
    );
    metrics::describe_histogram!(
        HTTP_REQUEST_SECONDS,
        "Handling time of HTTP requests, by route pattern and method."
    );
    metrics::describe_histogram!(SYNC_SECONDS, "Wall time of `/sync` requests.");
    metrics::describe_histogram!(
        STORE_WRITE_SECONDS,
        "Presence store write latency (from request to COMMIT)."
    );
    metrics::describe_counter!(ROUTER_CALLS, "Router calls, by router.");
    metrics::describe_counter!(
        ROUTER_FAILURES,
        "Router calls whose answer was dropped, by router."
    );
    metrics::describe_counter!(
        ROUTER_TIMEOUTS,
        "Router calls that overran their budget, by router."
    );
    metrics::describe_counter!(ROUTER_PANICS, "Router calls that panicked, by router.");
    metrics::describe_gauge!(
        ROUTER_SECONDS,
        "Time spent in router calls so far, by router ."
    );
    metrics::describe_counter!(
        REMOTE_DROPPED,
        "Inbound federation presence entries dropped by validation."
    );
    metrics::describe_counter!(
        PYTHON_STALLS,
        "Times Python module code kept the interpreter's event loop from running too long."
    );
    metrics::describe_gauge!(
        PYTHON_ALLOCATED_BLOCKS,
        "Memory blocks the Python interpreter has allocated (sys.getallocatedblocks()); steady growth means a leaking module."
    );
    metrics::describe_counter!(
        PYTHON_INTERRUPTS,
        "Exceptions raised inside Python module code that kept the loop stuck."
    );
    metrics::describe_counter!(
        PYTHON_BACKGROUND_FAILURES,
        "Background work of Python modules that raised."
    );
    metrics::describe_counter!(
        PYTHON_EXCEPTIONS,
        "Python router calls that raised, by router."
    );
    metrics::describe_counter!(
        PYTHON_INVALID_ANSWERS,
        "Python router answers of the wrong type or naming states or users it was not given."
    );
    metrics::describe_counter!(
        PYTHON_REJECTED,
        "Python router calls refused at once (interpreter stuck, queue full or stopped)."
    );
    metrics::describe_counter!(
        PRESENCE_ROLLBACKS,
        "Presence changes put back because they could not be committed."
    );
    metrics::describe_histogram!(
        PRESENCE_BATCH_SIZE,
        "Local presence changes per batch (each batch is one router call and one commit)."
    );
    metrics::describe_counter!(
        FEDERATION_TXN_SENT,
        "Federation transactions delivered to other servers."
    );
    metrics::describe_counter!(
        FEDERATION_PRESENCE_SENT,
        "Presence states delivered to other servers."
    );
    metrics::describe_counter!(
        FEDERATION_SEND_FAILURES,
        "Outbound transactions that failed (each is retried with backoff)."
    );
    metrics::describe_counter!(
        FEDERATION_PRESENCE_EXPIRED,
        "Queued presence dropped because its server stayed unreachable."
    );
    metrics::describe_counter!(FEDERATION_TXN_RECEIVED, "Inbound transactions accepted.");
    metrics::describe_counter!(
        FEDERATION_TXN_REJECTED,
        "Inbound transactions refused (bad body or limits)."
    );
    metrics::describe_gauge!(
        FEDERATION_BODY_BYTES,
        "Bytes of inbound federation request bodies being read or handled right now."
    );
    metrics::describe_counter!(
        FEDERATION_REFUSED_BUSY,
        "Inbound federation requests answered 429 because the body budget stayed full."
    );
    metrics::describe_counter!(
        FEDERATION_PRESENCE_RECEIVED,
        "Inbound presence entries handed to the engine."
    );
    metrics::describe_counter!(RATE_LIMITED, "HTTP requests refused with 429.");
}

/// Records inbound presence entries handed to the engine.
pub fn federation_received(n: usize) {
    metrics::counter!(FEDERATION_PRESENCE_RECEIVED).increment(n as u64);
}

/// Records persisted presence updates.
pub fn presence_updates(n: usize) {
    metrics::counter!(PRESENCE_UPDATES).increment(n as u64);
}

/// Records presence entries delivered by a sync.
pub fn deliveries(n: usize) {
    metrics::counter!(PRESENCE_DELIVERIES).increment(n as u64);
}

/// Records a woken sync that gathered before answering.
pub fn sync_gathered() {
    metrics::counter!(SYNC_GATHERED).increment(1);
}

/// Records a presence store write.
pub fn store_write(d: Duration) {
    metrics::histogram!(STORE_WRITE_SECONDS).record(d.as_secs_f64());
}

/// Records a `/sync` request.
pub fn sync_duration(d: Duration) {
    metrics::histogram!(SYNC_SECONDS).record(d.as_secs_f64());
}

/// Records dropped inbound presence entries.
pub fn remote_dropped(n: usize) {
    metrics::counter!(REMOTE_DROPPED).increment(n as u64);
}

/// Records a rate-limited request.
pub fn rate_limited(endpoint: &'static str) {
    metrics::counter!(RATE_LIMITED, "endpoint" => endpoint).increment(1);
}

/// Records a change put back after its commit failed.
pub fn presence_rollback() {
    metrics::counter!(PRESENCE_ROLLBACKS).increment(1);
}

/// Records the number of changes in a processed batch.
pub fn presence_batch(changes: usize) {
    metrics::histogram!(PRESENCE_BATCH_SIZE).record(changes as f64);
}
