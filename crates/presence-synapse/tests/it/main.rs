//! Integration tests of `presence-synapse` against real PostgreSQL and Redis servers.
//!
//! The services come from `support`: the ones named by `PRESENCE_SYNAPSE_TEST_PG` /
//! `PRESENCE_SYNAPSE_TEST_REDIS`, or else private ones started in a temporary directory.
//! If neither is possible the tests fail; they never pass silently.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod pg;
mod replication;
mod support;
