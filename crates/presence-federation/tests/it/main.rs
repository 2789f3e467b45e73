//! Integration tests of presence-federation: keys, X-Matrix auth, the outbox, inbound
//! transactions, the wire shapes and a real HTTPS round trip between two servers.

// Helpers of a test binary fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod https_round_trip;
mod inbound;
mod keys;
mod notary;
mod outbox;
mod resolve;
mod support;
mod wire;
