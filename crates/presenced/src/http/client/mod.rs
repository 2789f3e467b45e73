//! The client-server API (`/_matrix/client`): one file per group of endpoints.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/>.

mod versions;

use axum::{Router, routing::get};

use super::AppState;

/// The client-server API routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new().route(versions::PATH, get(versions::get_versions))
}
