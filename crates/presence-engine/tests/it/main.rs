#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]
//! Engine tests: the reference's engine-level cases (by number, see
//! `docs/reference-tests.md`), Presenced's own read rules, and property tests.

mod harness;
mod props;
mod reads;
mod restricting;
mod set_and_sync;
mod timeouts;
mod writes;
