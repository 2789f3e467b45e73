//! `GET /_matrix/client/{v3,r0}/capabilities`: what a client may do on this server. Clients
//! read it at start-up to decide which settings to offer. Presenced has no password change,
//! no profile changes, no third-party IDs and no login tokens, so those say `false`.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#capabilities-negotiation>.

use axum::Json;
use serde_json::{Map, Value, json};

use crate::{
    app::rooms::{DEFAULT_ROOM_VERSION, ROOM_VERSIONS},
    http::auth::Requester,
};

/// The paths (current and legacy versions).
pub(super) const PATHS: [&str; 2] = [
    "/_matrix/client/v3/capabilities",
    "/_matrix/client/r0/capabilities",
];

/// `GET /capabilities` (authenticated, as in the reference).
pub(super) async fn get_capabilities(_auth: Requester) -> Json<Value> {
    // Every version a room may be created with is a stable one of the specification.
    let available: Map<String, Value> = ROOM_VERSIONS
        .iter()
        .map(|v| ((*v).to_owned(), json!("stable")))
        .collect();
    let off = json!({"enabled": false});
    Json(json!({
        "capabilities": {
            "m.room_versions": {"default": DEFAULT_ROOM_VERSION, "available": available},
            "m.change_password": off,
            "m.set_displayname": off,
            "m.set_avatar_url": off,
            "m.3pid_changes": off,
            "m.get_login_token": off,
        }
    }))
}
