//! Benchmarks of Presenced.
//!
//! - [`world`]: the synthetic server (users, Zipf-sized rooms, who is online).
//! - [`engine_bench`]: drives [`presence_engine::Engine`] on one thread as the server does
//!   (apply, route, finish, then a sync read for every woken user) and reports updates,
//!   deliveries and syncs per second and the engine's heap per user.
//! - [`baseline`]: the simplest fan-out loops over the same rooms, to put the engine's figures
//!   in proportion.
//! - [`heap`]: the counting allocator the memory figure comes from.
//! - [`soak_bench`]: the real server for a long time under mixed load with restarts: memory
//!   over time and no acknowledged update lost.
//! - [`http_bench`]: the end-to-end load generator over the Matrix client-server API, for
//!   Presenced and the reference homeserver alike.
//!
//! The `presence-bench` binary is a thin command line over these; the criterion benches in
//! `benches/` reuse [`engine_bench::Bench`] at a small size.

pub mod baseline;
pub mod engine_bench;
pub mod heap;
pub mod http_bench;
pub mod rng;
pub mod soak_bench;
pub mod world;
pub mod writer_bench;

/// What can stop a benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A command-line value is out of range.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// A generated identifier was refused (a bug in the generator).
    #[error("invalid generated identifier: {0}")]
    Id(#[from] presence_router::IdError),
    /// Writing a report failed, or the runtime could not start.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An HTTP request failed before the server answered, or its answer was unreadable.
    #[error("HTTP: {0}")]
    Http(String),
    /// The server answered with a Matrix error.
    #[error("server answered {status} {errcode}: {error}")]
    Matrix {
        /// HTTP status.
        status: u16,
        /// Matrix `errcode` (empty if none).
        errcode: String,
        /// Matrix `error`, or the body.
        error: String,
        /// `retry_after_ms` of a 429.
        retry_after_ms: Option<u64>,
    },
}
