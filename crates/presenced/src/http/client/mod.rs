//! The client-server API (`/_matrix/client`): one file per group of endpoints.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/>.

pub(crate) mod account;
mod account_data;
mod body;
mod capabilities;
pub(crate) mod filter;
mod presence;
mod profile;
mod push_rules;
pub(crate) mod rooms;
pub(crate) mod sync;
mod versions;

use axum::{Router, routing::get};

use super::App;

pub(crate) use body::RawBody;

/// The client-server API routes the presence writer of a Synapse deployment serves: the
/// `/presence/` routes of every prefix Synapse's worker routing sends to it.
pub(super) fn writer_routes() -> Router<App> {
    let mut router = Router::new();
    for path in presence::WRITER_PATHS {
        router = router.route(
            path,
            get(presence::get_presence).put(presence::set_presence),
        );
    }
    router
}

/// The client-server API routes.
pub(super) fn routes() -> Router<App> {
    let mut router = Router::new().route(versions::PATH, get(versions::get_versions));
    for path in presence::PATHS {
        router = router.route(
            path,
            get(presence::get_presence).put(presence::set_presence),
        );
    }
    for path in sync::PATHS {
        router = router.route(path, get(sync::sync));
    }
    for path in capabilities::PATHS {
        router = router.route(path, get(capabilities::get_capabilities));
    }
    router = router
        .merge(account::routes())
        .merge(account_data::routes())
        .merge(rooms::routes())
        .merge(filter::routes())
        .merge(profile::routes())
        .merge(push_rules::routes());
    router
}
