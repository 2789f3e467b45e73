#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Black-box tests of Presenced: the real binary, and the server started in-process, both
//! spoken to over HTTP only.

mod account_data;
mod accounts;
mod binary;
mod builtin_routers;
mod clients;
mod conformance;
mod connections;
mod federation;
mod limits;
mod matrix;
mod presence;
#[cfg(feature = "python")]
mod python;
mod restricting;
mod rooms;
mod routers_check;
mod server;
mod startup;
mod support;
mod synapse_writer;
