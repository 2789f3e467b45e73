//! Integration tests of the module API crate: how [`presence_router::RouterSet`] calls several
//! routers, merges their answers and isolates the ones that misbehave.

// Helpers of a test binary fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod set_failures;
mod set_merge;
mod set_props;
mod support;
