//! The adapter to a Synapse deployment in which Presenced is the presence stream writer
//! (`stream_writers: presence`).
//!
//! - [`command`]: Synapse's replication commands, one line each over Redis pub/sub.
//! - [`rows`]: the rows carried by `RDATA` for the `presence`, `presence_federation` and
//!   `events` streams.
//! - [`pg`]: Synapse's own PostgreSQL tables (read, and `presence_stream` written), never
//!   migrated by us.
//! - [`federation_queue`]: the in-memory `presence_federation` stream the writer keeps.
//! - [`replication`]: the Redis transport (one subscriber and one publisher connection).
//! - `tls`: TLS to PostgreSQL with libpq's `sslmode` meanings (Redis's is the redis crate's).
//!
//! The protocol is Synapse's own: `docs/tcp_replication.md` and
//! `synapse/replication/tcp/commands.py` in its repository (the stream rows in
//! `synapse/replication/tcp/streams/`). The crate does no presence logic of its own, the
//! server wires it to the engine.

pub mod command;
mod error;
pub mod federation_queue;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod json;
pub mod pg;
pub mod replication;
pub mod rows;
mod tls;

pub use command::{Command, CommandError, SyncState};
pub use error::Error;
pub use federation_queue::{FederationQueue, FederationUpdates};
pub use json::to_python_json;
pub use pg::{
    CacheUpdates, PgHost, PgSettings, PresenceUpdates, SslMode, SynapseDb, TESTED_SCHEMA_VERSION,
    TokenInfo, TokenLookup,
};
pub use replication::{Event, Publisher, PublisherTask, RedisAddr, RedisSettings, Subscriber};
pub use rows::{
    CachesRow, EventsRow, PresenceFederationRow, PresenceRow, RowError, StreamEventRow,
    StreamStateRow,
};

/// A position in a Synapse stream (a `stream_id` / token). Synapse's tokens are positive
/// 64-bit integers; `0` means "nothing written yet".
pub type StreamId = u64;

/// The stream name of presence rows (`PresenceStream.NAME`).
pub const PRESENCE_STREAM: &str = "presence";
/// The stream name of the ad-hoc federation sends (`PresenceFederationStream.NAME`).
pub const PRESENCE_FEDERATION_STREAM: &str = "presence_federation";
/// The stream name of cache invalidations, which every process writes (`CachesStream.NAME`).
pub const CACHES_STREAM: &str = "caches";
/// The stream name of events, from which membership changes are learnt.
pub const EVENTS_STREAM: &str = "events";
