//! Accounts and sessions:
//! - `GET`/`POST /_synapse/admin/v1/register`: shared-secret registration, compatible with
//!   the reference's `register_new_matrix_user` tool (nonce, then HMAC-SHA1 of the request
//!   under `registration_shared_secret`).
//! - `POST /register` (with the `m.login.dummy` user-interactive auth stage) and
//!   `GET /register/available`, when `enable_registration` is on.
//! - `GET`/`POST /login` (`m.login.password`), `POST /logout`, `POST /logout/all`,
//!   `GET /account/whoami`.
//!
//! Errors follow the reference's order and texts where clients or tools look at them.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#client-authentication>;
//! admin API: <https://element-hq.github.io/synapse/latest/admin_api/register_api.html>.

use std::time::Instant;

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use presence_router::{DeviceId, UserId};
use presence_store::{NewDevice, NewUser, PresenceStore, StoreError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::RawBody;
use crate::{
    app::{
        App,
        accounts::{
            MAX_SECRET_INPUT_LEN, RegistrationMac, login_user, new_access_token, new_device_id,
            new_localpart, validate_new_localpart,
        },
        rooms::set_displayname,
    },
    error::ApiError,
    http::{MatrixJson, auth::Requester, extract::ClientIp},
    presence::now_ms,
    query::form_urlencoded_get,
};

/// Shared-secret registration.
const ADMIN_REGISTER_PATH: &str = "/_synapse/admin/v1/register";
/// The client API prefixes Presenced serves (current and legacy).
const PREFIXES: [&str; 2] = ["/_matrix/client/v3", "/_matrix/client/r0"];
/// The password login type.
const PASSWORD_LOGIN: &str = "m.login.password";
/// The user-interactive auth stage of open registration.
const DUMMY_AUTH: &str = "m.login.dummy";
/// The identifier type naming a user.
const USER_IDENTIFIER: &str = "m.id.user";
/// The one answer to every failed password login, so it does not tell which part was wrong.
const BAD_LOGIN: &str = "Invalid username or password";
/// User types the reference knows (`user_type` in shared-secret registration).
const USER_TYPES: [&str; 2] = ["support", "bot"];

/// The account routes.
pub(super) fn routes() -> Router<App> {
    let mut router = Router::new().route(
        ADMIN_REGISTER_PATH,
        get(get_registration_nonce).post(register_with_shared_secret),
    );
    for prefix in PREFIXES {
        router = router
            .route(&format!("{prefix}/register"), post(register))
            .route(
                &format!("{prefix}/register/available"),
                get(check_username_available),
            )
            .route(&format!("{prefix}/login"), get(get_login_flows).post(login))
            .route(&format!("{prefix}/logout"), post(logout))
            .route(&format!("{prefix}/logout/all"), post(logout_all))
            .route(&format!("{prefix}/account/whoami"), get(whoami));
    }
    router
}

/// Who asks for an account: a client at an address (`rc_registration` applies), or the
/// holder of the shared secret (not limited, as in the reference).
#[derive(Clone, Copy)]
enum Registrant {
    Client(Option<std::net::IpAddr>),
    SharedSecret,
}

/// Creates the account (its password hashed), records its display name, or fails with
/// 400 `M_USER_IN_USE` when the ID is taken.
async fn create_account(
    state: &App,
    user: &UserId,
    password: Option<String>,
    admin: bool,
    displayname: Option<&str>,
    registrant: Registrant,
) -> Result<(), ApiError> {
    // Checked first so a taken name does not cost a password hash.
    if state.store()?.user_exists(user).await? {
        return Err(ApiError::user_in_use("User ID already taken."));
    }
    if let Registrant::Client(client) = registrant {
        state.limits().registration(client)?;
    }
    let mut new = NewUser::new(user.clone(), now_ms()).with_admin(admin);
    if let Some(password) = password {
        new = new.with_password_hash(state.passwords().hash(password).await?);
    }
    match state.store()?.create_user(new).await {
        Ok(()) => {}
        Err(StoreError::UserExists) => {
            return Err(ApiError::user_in_use("User ID already taken."));
        }
        Err(e) => return Err(e.into()),
    }
    // The reference names a user after their localpart until they choose a name.
    set_displayname(state, user, displayname.unwrap_or(user.localpart())).await?;
    tracing::info!(user = %user, admin, "Registered a user.");
    Ok(())
}

/// Logs a device in: a new device, or a new token for an existing one (whose old token
/// stops working at once). Returns the device and its token.
async fn log_in_device(
    state: &App,
    user: &UserId,
    device: Option<DeviceId>,
    display_name: Option<String>,
) -> Result<(DeviceId, String), ApiError> {
    let device = match device {
        Some(d) => d,
        None => new_device_id()?,
    };
    let token = new_access_token()?;
    let mut new = NewDevice::new(user.clone(), device.clone(), now_ms());
    if let Some(name) = display_name {
        new = new.with_display_name(name);
    }
    state.store()?.create_device(new, &token).await?;
    // A reused device ID replaced the device's token: forget the cached old one.
    state.tokens().remove_device(user, &device);
    Ok((device, token))
}

/// The body of a successful registration or login.
fn session_body(state: &App, user: &UserId, session: Option<(DeviceId, String)>) -> Value {
    let mut body = json!({
        "user_id": user.as_str(),
        "home_server": state.config().server_name.as_str(),
    });
    if let Some((device, token)) = session {
        body["device_id"] = json!(device.as_str());
        body["access_token"] = json!(token);
    }
    body
}

/// Parses an optional device ID from a request body.
fn device_param(raw: Option<String>) -> Result<Option<DeviceId>, ApiError> {
    raw.map(|d| DeviceId::parse(&d).map_err(|_| ApiError::invalid_param("Invalid device_id")))
        .transpose()
}

/// `GET /_synapse/admin/v1/register`: a nonce for one registration within 60 seconds.
async fn get_registration_nonce(State(state): State<App>) -> Result<Json<Value>, ApiError> {
    let nonce = state.pending_auth().issue_nonce(Instant::now())?;
    Ok(Json(json!({"nonce": nonce})))
}

/// A string field of the shared-secret body, checked as the reference does: present (else
/// `M_BAD_JSON`), a string of at most 512 bytes without NUL (else `invalid`).
fn secret_field<'a>(
    body: &'a Map<String, Value>,
    key: &str,
    invalid: &'static str,
) -> Result<&'a str, ApiError> {
    let value = body
        .get(key)
        .ok_or_else(|| ApiError::bad_json(format!("{key} must be specified")))?;
    match value.as_str() {
        Some(s) if s.len() <= MAX_SECRET_INPUT_LEN && !s.contains('\0') => Ok(s),
        _ => Err(ApiError::unknown(invalid)),
    }
}

/// `POST /_synapse/admin/v1/register`: registers a user whose request is signed with the
/// shared secret, and logs them in.
async fn register_with_shared_secret(
    State(state): State<App>,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let Some(secret) = state
        .config()
        .registration
        .registration_shared_secret
        .clone()
    else {
        return Err(ApiError::unknown(
            "Shared secret registration is not enabled",
        ));
    };
    let body: Map<String, Value> = body.json()?;
    let nonce = match body.get("nonce") {
        None => return Err(ApiError::bad_json("nonce must be specified")),
        Some(n) => n.as_str().unwrap_or_default(),
    };
    // Taken even when the rest of the request is wrong, so a nonce is never tried twice.
    if !state.pending_auth().take_nonce(nonce, Instant::now()) {
        return Err(ApiError::unknown("unrecognised nonce"));
    }
    let username = secret_field(&body, "username", "Invalid username")?;
    let password = secret_field(&body, "password", "Invalid password")?;
    // The reference treats any truthy `admin` as admin; the tool sends a boolean.
    let admin = match body.get("admin") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(ApiError::bad_json("admin must be a boolean")),
    };
    let user_type = match body.get("user_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if USER_TYPES.contains(&t.as_str()) => Some(t.as_str()),
        Some(_) => return Err(ApiError::unknown("Invalid user type")),
    };
    let displayname = match body.get("displayname") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.as_str()),
        Some(_) => return Err(ApiError::bad_json("displayname must be a string")),
    };
    let mac = body
        .get("mac")
        .ok_or_else(|| ApiError::bad_json("mac must be specified"))?
        .as_str()
        .unwrap_or_default();
    let signed = RegistrationMac {
        nonce,
        username,
        password,
        admin,
        user_type,
    };
    if !signed.verify(secret.expose(), mac) {
        return Err(ApiError::forbidden("HMAC incorrect"));
    }
    if !state.pending_auth().confirm_nonce(nonce, Instant::now()) {
        return Err(ApiError::unknown("unrecognised nonce"));
    }
    let user = validate_new_localpart(&username.to_lowercase(), &state.config().server_name)?;
    create_account(
        &state,
        &user,
        Some(password.to_owned()),
        admin,
        displayname,
        Registrant::SharedSecret,
    )
    .await?;
    let session = if body.get("inhibit_login").and_then(Value::as_bool) == Some(true) {
        None
    } else {
        Some(log_in_device(&state, &user, None, None).await?)
    };
    Ok(Json(session_body(&state, &user, session)))
}

#[derive(Deserialize)]
pub(crate) struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    auth: Option<AuthBody>,
}

#[derive(Deserialize)]
struct AuthBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    session: Option<String>,
}

/// The 401 answer that starts (or continues) user-interactive auth.
fn auth_flows(session: &str) -> Response {
    let body = json!({
        "flows": [{"stages": [DUMMY_AUTH]}],
        "params": {},
        "session": session,
    });
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

/// `POST /register`: open registration, when enabled, behind the `m.login.dummy` stage.
async fn register(
    State(state): State<App>,
    ClientIp(client): ClientIp,
    RawQuery(query): RawQuery,
    MatrixJson(body): MatrixJson<RegisterBody>,
) -> Result<Response, ApiError> {
    // Checked on every step of the flow, counted when the account is created.
    state.limits().registration_may_start(client)?;
    let query = query.unwrap_or_default();
    match form_urlencoded_get(&query, "kind").as_deref() {
        None | Some("user") => {}
        Some("guest") => return Err(ApiError::forbidden("Guest access is disabled")),
        Some(_) => return Err(ApiError::invalid_param("kind must be user or guest")),
    }
    if !state.config().registration.enable_registration {
        return Err(ApiError::forbidden("Registration has been disabled"));
    }
    if body
        .password
        .as_ref()
        .is_some_and(|p| p.len() > MAX_SECRET_INPUT_LEN || p.contains('\0'))
    {
        return Err(ApiError::unknown("Invalid password"));
    }
    let server = state.config().server_name.clone();
    let user = match &body.username {
        Some(name) => {
            let user = validate_new_localpart(&name.to_lowercase(), &server)?;
            if state.store()?.user_exists(&user).await? {
                return Err(ApiError::user_in_use("User ID already taken."));
            }
            Some(user)
        }
        None => None,
    };
    let device = device_param(body.device_id)?;
    let now = Instant::now();
    let Some(auth) = body.auth else {
        let session = state.pending_auth().open_session(now)?;
        return Ok(auth_flows(&session));
    };
    if auth.kind.as_deref() != Some(DUMMY_AUTH) {
        return Err(ApiError::unknown("Unrecognised login type"));
    }
    if let Some(session) = &auth.session
        && !state.pending_auth().session_is_open(session, now)
    {
        return Err(ApiError::unknown(format!("Unknown session ID: {session}")));
    }
    let Some(password) = body.password else {
        return Err(ApiError::bad_json("Missing params: password"));
    };
    let user = match user {
        Some(u) => u,
        None => UserId::from_parts(&new_localpart()?, &server).map_err(ApiError::internal)?,
    };
    create_account(
        &state,
        &user,
        Some(password),
        false,
        None,
        Registrant::Client(client),
    )
    .await?;
    if let Some(session) = &auth.session {
        state.pending_auth().close_session(session, now);
    }
    let session = if body.inhibit_login {
        None
    } else {
        Some(log_in_device(&state, &user, device, body.initial_device_display_name).await?)
    };
    Ok(Json(session_body(&state, &user, session)).into_response())
}

/// `GET /register/available?username=`.
async fn check_username_available(
    State(state): State<App>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    if !state.config().registration.enable_registration {
        return Err(ApiError::forbidden("Registration has been disabled"));
    }
    let username = form_urlencoded_get(query.as_deref().unwrap_or(""), "username")
        .ok_or_else(|| ApiError::invalid_param("Missing parameter: username"))?;
    let user = validate_new_localpart(&username, &state.config().server_name)?;
    if state.store()?.user_exists(&user).await? {
        return Err(ApiError::user_in_use("User ID already taken."));
    }
    Ok(Json(json!({"available": true})))
}

/// `GET /login`: the login types on offer.
async fn get_login_flows(State(state): State<App>) -> Json<Value> {
    let flows: Vec<Value> = if state.config().password_config.enabled {
        vec![json!({"type": PASSWORD_LOGIN})]
    } else {
        Vec::new()
    };
    Json(json!({"flows": flows}))
}

#[derive(Deserialize)]
pub(crate) struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Identifier>,
    /// The deprecated form of `identifier`.
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
}

#[derive(Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
}

/// `POST /login` with a password, limited by `rc_login` (see [`crate::app::limits`]).
async fn login(
    State(state): State<App>,
    ClientIp(client): ClientIp,
    MatrixJson(body): MatrixJson<LoginBody>,
) -> Result<Json<Value>, ApiError> {
    state.limits().login_attempt(client)?;
    if body.kind != PASSWORD_LOGIN || !state.config().password_config.enabled {
        return Err(ApiError::unknown("Unknown login type"));
    }
    let name = match body.identifier {
        Some(Identifier { kind, user }) if kind == USER_IDENTIFIER => user,
        Some(_) => return Err(ApiError::unknown("Unknown login identifier type")),
        None => body.user,
    }
    .ok_or_else(|| ApiError::bad_json("Missing parameter: user"))?;
    let password = body
        .password
        .ok_or_else(|| ApiError::bad_json("Missing parameter: password"))?;
    let device = device_param(body.device_id)?;
    let server = &state.config().server_name;
    // The reference keys the failed-attempt limit by the qualified ID as named.
    let named = if name.starts_with('@') {
        name.clone()
    } else {
        format!("@{name}:{}", server.as_str())
    };
    state.limits().login_may_try(&named)?;
    let user = login_user(&name, server);
    let hash = match &user {
        Some(user) => state
            .store()?
            .get_user(user)
            .await?
            .and_then(|u| u.password_hash),
        None => None,
    };
    // A user who does not exist (or has no password) costs the same hash check as one who
    // does, so neither the answer nor its timing tells them apart.
    let verified = state.passwords().verify(hash, password).await?;
    let user = match user {
        Some(user) if verified => user,
        _ => {
            state.limits().login_failed(&named);
            return Err(ApiError::forbidden(BAD_LOGIN));
        }
    };
    state.limits().login_succeeded(&user)?;
    let session = log_in_device(&state, &user, device, body.initial_device_display_name).await?;
    tracing::info!(user = %user, device = %session.0, "Logged in.");
    Ok(Json(session_body(&state, &user, Some(session))))
}

/// Removes a device: its tokens stop working, and presence stops counting it.
async fn remove_device(state: &App, user: &UserId, device: &DeviceId) -> Result<(), ApiError> {
    state.store()?.delete_device(user, device).await?;
    state.tokens().remove_device(user, device);
    state.presence().device_removed(user, device.clone()).await;
    Ok(())
}

/// `POST /logout`: ends this device's session.
async fn logout(State(state): State<App>, auth: Requester) -> Result<Json<Value>, ApiError> {
    state.tokens().remove(&auth.token);
    remove_device(&state, &auth.user_id, &auth.device_id).await?;
    Ok(Json(json!({})))
}

/// `POST /logout/all`: ends every session of the user.
async fn logout_all(State(state): State<App>, auth: Requester) -> Result<Json<Value>, ApiError> {
    state.tokens().remove(&auth.token);
    for device in state.store()?.list_devices(&auth.user_id).await? {
        remove_device(&state, &auth.user_id, &device.device_id).await?;
    }
    Ok(Json(json!({})))
}

/// `GET /account/whoami`.
async fn whoami(auth: Requester) -> Json<Value> {
    Json(json!({
        "user_id": auth.user_id.as_str(),
        "device_id": auth.device_id.as_str(),
        "is_guest": false,
    }))
}
