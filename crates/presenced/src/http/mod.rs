//! The HTTP layer: one axum [`Router`] per listener, built from the resources the listener
//! serves, around a shared [`App`].
//!
//! Every router gets the same outer behaviour: Matrix CORS headers on every response
//! (browser clients need them, errors included), a request body limit
//! (`max_request_body_size`), request tracing, and JSON Matrix errors for unknown endpoints
//! (404 `M_UNRECOGNIZED`) and wrong methods (405 `M_UNRECOGNIZED`).
//! [`app`] builds the router with every resource, so tests can drive it in-process.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#web-browser-clients>.

pub(crate) mod admin;
pub(crate) mod admin_rooms;
pub mod auth;
pub(crate) mod client;
mod extract;
mod json;
pub(crate) mod replication;
mod response;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, Method, header},
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use tower_http::{
    cors::{Any, CorsLayer},
    trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer},
};
use tracing::Level;

pub use self::{
    extract::ForwardedFor,
    json::{MatrixJson, parse_json_body},
};
use crate::{app::App, config::ResourceName, error::ApiError};

/// The path of the health check, served on every listener as the reference does.
pub const HEALTH_PATH: &str = "/health";

/// The path of the Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";

/// `GET /metrics`: every metric in the Prometheus text format.
async fn metrics(axum::extract::State(state): axum::extract::State<App>) -> String {
    state.collect_metrics();
    crate::metrics::render(state.metrics())
}

/// `X-Requested-With`, which Matrix lists among the allowed CORS headers.
const X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");

/// The application with every resource, as tests and single-listener setups want it.
pub fn app(state: App) -> Router {
    app_for(state, &ResourceName::ALL)
}

/// The application for a listener serving `resources`.
pub fn app_for(state: App, resources: &[ResourceName]) -> Router {
    let mut router = Router::new().route(HEALTH_PATH, get(health));
    // The federation crate's routes carry their own state.
    let mut federation_routes = Router::new();
    let writer = state.writer().is_some();
    for resource in resources {
        router = match resource {
            // Beside Synapse, accounts, rooms and /sync stay Synapse's.
            ResourceName::Client if writer => {
                router.merge(client::writer_routes()).merge(admin::routes())
            }
            ResourceName::Client => router
                .merge(client::routes())
                .merge(admin::routes())
                .merge(admin_rooms::routes()),
            ResourceName::Replication if writer => router.merge(replication::routes()),
            ResourceName::Metrics => router.route(METRICS_PATH, get(metrics)),
            _ => router,
        };
        if let (ResourceName::Federation, Some(f)) = (resource, state.federation()) {
            federation_routes = federation_routes.merge(f.federation_router());
        }
    }
    // The key document goes with `federation` as well as `keys`, as the reference serves it:
    // a stock `names: [client, federation]` listener must let other servers verify our
    // signatures. Merged once, whichever of the two (or both) the listener names.
    let serves_keys = resources
        .iter()
        .any(|r| matches!(r, ResourceName::Federation | ResourceName::Keys));
    if let (true, Some(f)) = (serves_keys, state.federation()) {
        federation_routes = federation_routes.merge(f.keys_router());
    }
    layered(
        router.with_state(state.clone()).merge(federation_routes),
        &state,
    )
}

/// Adds what every listener shares around `routes`: the Matrix fallbacks, the body limit,
/// CORS and request tracing.
#[cfg(test)]
pub(crate) fn with_common_layers(routes: Router<App>, state: App) -> Router {
    layered(routes.with_state(state.clone()), &state)
}

fn layered(routes: Router, state: &App) -> Router {
    let body_limit = state.config().max_request_body_size;
    routes
        // Only matched routes: their patterns are a bounded set of labels.
        .route_layer(middleware::from_fn(time_request))
        .fallback(unrecognized)
        // Set after every route: it applies to the routes registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(json::BodyLimit(body_limit)))
        .layer(cors())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                // 500s are logged once, with their cause, where `ApiError` becomes a response.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
}

/// Records how long a routed request took, by route pattern and method.
async fn time_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    if let Some(route) = route {
        crate::metrics::http_request(route, method, started.elapsed());
    }
    response
}

/// The CORS policy the Matrix specification asks every server to send, with the methods
/// and headers Synapse's listeners allow (`synapse/http/server.py` `set_cors_headers`), so a
/// browser calling the `/presence/` routes on Presenced is answered as by Synapse.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            X_REQUESTED_WITH,
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::DATE,
        ])
        .expose_headers([header::SERVER])
}

/// The span of one request: method and path only, because the query string may carry an
/// access token (`?access_token=`) that must not reach the logs.
fn request_span(request: &Request) -> tracing::Span {
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
}

/// `GET /health`: the process is up and serving.
async fn health() -> &'static str {
    "OK"
}

/// Any path no route matches.
async fn unrecognized() -> ApiError {
    ApiError::unrecognized()
}

/// A known path with a method it does not accept.
async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

#[cfg(test)]
mod tests;
