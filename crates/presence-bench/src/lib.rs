//! Benchmarks of Presenced.
//!
//! - [`world`]: the synthetic server (users, Zipf-sized rooms, who is online).
//! - [`engine_bench`]: drives [`presence_engine::Engine`] on one thread as the server does
//!   (apply, route, finish, then a sync read for every woken user) and reports updates,
//!   deliveries and syncs per second and the engine's heap per user.
//! - [`baseline`]: the simplest fan-out loops over the same rooms, to put the engine's figures
//!   in proportion.
//! - [`heap`]: the counting allocator the memory figure comes from.
//!
//! The `presence-bench` binary is a thin command line over these; the criterion benches in
//! `benches/` reuse [`engine_bench::Bench`] at a small size.

pub mod baseline;
pub mod engine_bench;
pub mod heap;
pub mod rng;
pub mod world;

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
    /// Writing a report failed.
    #[error("writing the report failed: {0}")]
    Io(#[from] std::io::Error),
}
