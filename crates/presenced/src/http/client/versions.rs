//! `GET /_matrix/client/versions`: which specification versions and unstable features this
//! server supports. Clients call it before anything else, without authentication.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#get_matrixclientversions>.

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use serde::Serialize;

use crate::app::App;

/// The endpoint's path.
pub(super) const PATH: &str = "/_matrix/client/versions";

/// Specification versions served, oldest first.
const SPEC_VERSIONS: [&str; 15] = [
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11",
    "v1.12", "v1.13", "v1.14", "v1.15",
];

/// The unstable feature flag of MSC3026 (the `busy` presence state).
const MSC3026_FEATURE: &str = "org.matrix.msc3026.busy_presence";

/// The response body.
#[derive(Debug, Serialize)]
pub(super) struct VersionsResponse {
    versions: &'static [&'static str],
    unstable_features: BTreeMap<&'static str, bool>,
}

/// `GET /_matrix/client/versions`.
///
/// Unstable features are always listed with a boolean, as the reference homeserver does, so
/// a client can tell "off" from "unknown".
pub(super) async fn get_versions(State(state): State<App>) -> Json<VersionsResponse> {
    let msc3026 = state.config().experimental_features.msc3026_enabled;
    Json(VersionsResponse {
        versions: &SPEC_VERSIONS,
        unstable_features: BTreeMap::from([(MSC3026_FEATURE, msc3026)]),
    })
}
