//! Integration tests of the built-in routers: the conformance suite run against them as an
//! outside crate would run it, checks that the suite catches broken routers, and property
//! tests of the example router.

// Helpers of a test binary fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod example_props;
