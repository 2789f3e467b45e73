//! In-process tests of the HTTP skeleton: routes, Matrix error shapes, CORS and JSON bodies.

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
    response::Response,
    routing::put,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::config::Config;

fn test_config(extra: &str) -> Config {
    let dir = tempfile::tempdir().unwrap().keep();
    let db = dir.join("test.db");
    let yaml = format!(
        "server_name: test\nlisteners: [{{port: 0, type: http, resources: [{{names: [client]}}]}}]\ndatabase: {{name: sqlite3, args: {{database: {}}}}}\n{extra}",
        db.display()
    );
    Config::from_yaml(&yaml).unwrap().config
}

async fn state(config: Config) -> App {
    App::build(config).await.unwrap().0
}

async fn test_app(extra: &str) -> Router {
    app(state(test_config(extra)).await)
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, Response) {
    let response = app.oneshot(request).await.unwrap();
    (response.status(), response)
}

async fn json_body(response: Response) -> Value {
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn versions_lists_spec_versions_and_msc3026() {
    let (status, response) = send(test_app("").await, get("/_matrix/client/versions")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body = json_body(response).await;
    let versions: Vec<&str> = body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(versions.first(), Some(&"v1.1"));
    assert_eq!(versions.last(), Some(&"v1.15"));
    assert_eq!(versions.len(), 15);
    assert_eq!(
        body["unstable_features"],
        json!({"org.matrix.msc3026.busy_presence": false})
    );

    let app = test_app("experimental_features: {msc3026_enabled: true}\n").await;
    let (_, response) = send(app, get("/_matrix/client/versions")).await;
    assert_eq!(
        json_body(response).await["unstable_features"]["org.matrix.msc3026.busy_presence"],
        true
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_are_matrix_errors() {
    let (status, response) = send(test_app("").await, get("/_matrix/client/v3/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        json_body(response).await,
        json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
    );

    let request = Request::delete("/_matrix/client/versions")
        .body(Body::empty())
        .unwrap();
    let (status, response) = send(test_app("").await, request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        json_body(response).await,
        json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
    );
}

#[tokio::test]
async fn listeners_serve_only_their_resources() {
    let state = state(test_config("")).await;
    let metrics_only = app_for(state, &[ResourceName::Metrics]);
    let (status, _) = send(metrics_only.clone(), get("/_matrix/client/versions")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The health check is everywhere.
    let (status, response) = send(metrics_only, get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(to_bytes(response.into_body(), 100).await.unwrap(), "OK");
}

#[tokio::test]
async fn cors_headers_on_responses_errors_and_preflight() {
    let request = Request::get("/_matrix/client/versions")
        .header(header::ORIGIN, "https://app.example")
        .body(Body::empty())
        .unwrap();
    let (_, response) = send(test_app("").await, request).await;
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");

    let request = Request::get("/missing")
        .header(header::ORIGIN, "https://app.example")
        .body(Body::empty())
        .unwrap();
    let (status, response) = send(test_app("").await, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");

    let request = Request::options("/_matrix/client/v3/presence/%40a%3Atest/status")
        .header(header::ORIGIN, "https://app.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization, content-type",
        )
        .body(Body::empty())
        .unwrap();
    let (status, response) = send(test_app("").await, request).await;
    assert_eq!(status, StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let methods = headers[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .unwrap();
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["authorization", "content-type", "x-requested-with"] {
        assert!(allowed.contains(name), "{allowed}");
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Status {
    presence: String,
    #[allow(dead_code)]
    status_msg: Option<String>,
}

/// A router with one JSON endpoint and the common layers (so the configured body limit).
async fn echo_app(limit: usize) -> Router {
    let mut config = test_config("");
    config.max_request_body_size = limit;
    let routes = Router::new().route(
        "/echo",
        put(|MatrixJson(body): MatrixJson<Status>| async move { body.presence }),
    );
    with_common_layers(routes, state(config).await)
}

fn put_body(body: impl Into<Body>) -> Request<Body> {
    Request::put("/echo").body(body.into()).unwrap()
}

#[tokio::test]
async fn matrix_json_accepts_bodies_without_content_type() {
    let (status, response) = send(echo_app(1024).await, put_body(r#"{"presence":"online"}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(to_bytes(response.into_body(), 100).await.unwrap(), "online");

    let request = Request::put("/echo")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"presence":"busy"}"#))
        .unwrap();
    let (status, _) = send(echo_app(1024).await, request).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn matrix_json_rejects_non_json_as_not_json() {
    for body in [
        "",
        "{",
        "presence=online",
        r#"{"presence": "online"} trailing"#,
        "{\"presence\": 5",
    ] {
        let (status, response) = send(echo_app(1024).await, put_body(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(
            json_body(response).await,
            json!({"errcode": "M_NOT_JSON", "error": "Content not JSON."}),
            "{body:?}"
        );
    }
}

#[tokio::test]
async fn matrix_json_rejects_wrong_shapes_as_bad_json() {
    let cases = [
        ("[]", "Content must be a JSON object."),
        (r#"["online", null]"#, "Content must be a JSON object."),
        ("\"online\"", "Content must be a JSON object."),
        (
            r#"{"presence": 5}"#,
            "Invalid JSON at presence: invalid type: integer `5`, expected a string",
        ),
        (
            r#"{"status_msg": "hi"}"#,
            "Invalid JSON: missing field `presence`",
        ),
    ];
    for (body, error) in cases {
        let (status, response) = send(echo_app(1024).await, put_body(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            json_body(response).await,
            json!({"errcode": "M_BAD_JSON", "error": error}),
            "{body}"
        );
    }
}

#[tokio::test]
async fn matrix_json_rejects_oversized_bodies() {
    let body = format!(
        r#"{{"presence":"online","status_msg":"{}"}}"#,
        "x".repeat(100)
    );
    let (status, response) = send(echo_app(64).await, put_body(body.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_body(response).await["errcode"], "M_TOO_LARGE");
    // Just under the limit is fine.
    let (status, _) = send(echo_app(body.len()).await, put_body(body)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn matrix_json_errors_keep_cors_headers() {
    let request = Request::put("/echo")
        .header(header::ORIGIN, "https://app.example")
        .body(Body::from("nope"))
        .unwrap();
    let (status, response) = send(echo_app(1024).await, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}
