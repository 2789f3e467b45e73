//! Integration tests of `presence-python`: Python presence routers loaded from the fixture
//! modules in `tests/python/`, called through the `PresenceRouter` trait.

// Helpers of a test binary fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod example;
mod loading;
mod misbehaving;
mod reference;
mod shim;
mod support;
mod twisted;
