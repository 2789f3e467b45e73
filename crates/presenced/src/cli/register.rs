//! `presenced register`: creates a user on a running server through the shared-secret
//! registration API, with the options of the reference homeserver's `register_new_matrix_user`.
//!
//! It asks `GET /_synapse/admin/v1/register` for a nonce, then sends `POST` with the HMAC-SHA1
//! of `nonce\0user\0password\0admin|notadmin` under the shared secret (the MAC the server's
//! own endpoint checks, [`RegistrationMac`]). The new user is not logged in: the command
//! leaves no access token behind. The client is one HTTP/1.1 request per connection over
//! plain TCP or rustls, which is all two requests need.
//! API: <https://element-hq.github.io/synapse/latest/admin_api/register_api.html>.

use std::{
    io::{BufRead, Read},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use clap::Args;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName as TlsServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::{
    app::accounts::RegistrationMac,
    config::{Config, ResourceName},
};

/// The server URL when neither the command line nor a configuration gives one (the
/// reference tool's default).
const DEFAULT_SERVER_URL: &str = "http://localhost:8008";
/// The shared-secret registration endpoint.
const REGISTER_PATH: &str = "/_synapse/admin/v1/register";
/// How long the whole exchange may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest response body read (the answers are a few hundred bytes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Options of `presenced register`.
#[derive(Debug, Clone, Args)]
pub(super) struct RegisterArgs {
    /// Localpart of the new user, e.g. `alice` for `@alice:SERVER_NAME`.
    #[arg(short = 'u', long)]
    user: String,
    /// The new user's password. Other local users can see it in the process list;
    /// `--password-file` cannot leak that way.
    #[arg(short = 'p', long, conflicts_with = "password_file")]
    password: Option<String>,
    /// Read the password from FILE (its first line), or from standard input with `-`.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Make the new user a server admin.
    #[arg(short = 'a', long, conflicts_with = "no_admin")]
    admin: bool,
    /// Make the new user a regular user (the default).
    #[arg(long)]
    no_admin: bool,
    /// The user type, e.g. `bot` or `support`.
    #[arg(short = 't', long, value_name = "TYPE")]
    user_type: Option<String>,
    /// The shared secret. Without it, `registration_shared_secret` (or
    /// `registration_shared_secret_path`) is read from the configuration given with `-c`.
    #[arg(short = 'k', long, value_name = "SECRET")]
    shared_secret: Option<String>,
    /// Succeed without changes if the user already exists.
    #[arg(long)]
    exists_ok: bool,
    /// The server's client API URL. Default: the first `client` listener of the
    /// configuration given with `-c` on localhost, else http://localhost:8008.
    server_url: Option<String>,
}

/// Why a registration did not happen; the text is what the operator reads.
#[derive(Debug, thiserror::Error)]
pub(super) enum RegisterError {
    /// The command line or configuration does not say enough.
    #[error("{0}")]
    Usage(String),
    /// The password could not be read.
    #[error("cannot read the password from {path}: {source}")]
    Password {
        path: String,
        source: std::io::Error,
    },
    /// No connection (refused, no route, name not found, TLS handshake failed).
    #[error("cannot reach the server at {url}: {source}")]
    Unreachable { url: String, source: std::io::Error },
    /// The connection broke during the exchange.
    #[error("the exchange with {url} failed: {detail}")]
    Exchange { url: String, detail: String },
    /// No answer in time.
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// The server answered with a Matrix error.
    #[error("the server refused (HTTP {status}, {errcode}): {message}{hint}")]
    Refused {
        status: StatusCode,
        errcode: String,
        message: String,
        hint: &'static str,
    },
    /// The answer is not what a Matrix server sends.
    #[error("unexpected answer from {url} (HTTP {status}): {body}")]
    Unexpected {
        url: String,
        status: StatusCode,
        body: String,
    },
}

impl RegisterError {
    /// Whether the server said the user exists (`M_USER_IN_USE`).
    fn is_user_in_use(&self) -> bool {
        matches!(self, Self::Refused { errcode, .. } if errcode == "M_USER_IN_USE")
    }
}

/// Runs `presenced register`: prints the new user ID, or returns why it failed.
pub(super) fn register(args: RegisterArgs, config_paths: &[PathBuf]) -> Result<(), RegisterError> {
    let config = if config_paths.is_empty() {
        None
    } else {
        let loaded = Config::load(config_paths).map_err(|e| RegisterError::Usage(e.to_string()))?;
        Some(loaded.config)
    };
    let secret = match (&args.shared_secret, &config) {
        (Some(secret), _) => secret.clone(),
        (None, Some(config)) => config
            .registration
            .registration_shared_secret
            .as_ref()
            .map(|s| s.expose().to_owned())
            .ok_or_else(|| {
                RegisterError::Usage(
                    "the configuration has no registration_shared_secret; add one or pass -k"
                        .to_owned(),
                )
            })?,
        (None, None) => {
            return Err(RegisterError::Usage(
                "no shared secret: pass -k SECRET, or -c with the server's configuration"
                    .to_owned(),
            ));
        }
    };
    let password = read_password(&args)?;
    let url = match (&args.server_url, &config) {
        (Some(url), _) => url.clone(),
        (None, Some(config)) => client_url(config).unwrap_or_else(|| DEFAULT_SERVER_URL.to_owned()),
        (None, None) => DEFAULT_SERVER_URL.to_owned(),
    };
    let target = Target::parse(&url)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RegisterError::Usage(format!("cannot start the async runtime: {e}")))?;
    let request = NewUser {
        user: &args.user,
        password: &password,
        admin: args.admin,
        user_type: args.user_type.as_deref(),
        secret: &secret,
    };
    let exchange = async { tokio::time::timeout(REQUEST_TIMEOUT, request.send(&target)).await };
    match runtime.block_on(exchange) {
        Ok(Ok(user_id)) => {
            println!("Registered {user_id}.");
            Ok(())
        }
        Ok(Err(e)) if args.exists_ok && e.is_user_in_use() => {
            println!("The user {} already exists.", args.user);
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(RegisterError::Timeout {
            url,
            timeout: REQUEST_TIMEOUT,
        }),
    }
}

/// The password from `-p` or `--password-file`.
fn read_password(args: &RegisterArgs) -> Result<String, RegisterError> {
    let password = match (&args.password, &args.password_file) {
        (Some(password), _) => password.clone(),
        (None, Some(path)) if path == Path::new("-") => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|source| RegisterError::Password {
                    path: "standard input".to_owned(),
                    source,
                })?;
            first_line(&line)
        }
        (None, Some(path)) => {
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_string(&mut text))
                .map_err(|source| RegisterError::Password {
                    path: path.display().to_string(),
                    source,
                })?;
            first_line(&text)
        }
        (None, None) => {
            return Err(RegisterError::Usage(
                "no password: pass -p PASSWORD or --password-file FILE (`-` for stdin)".to_owned(),
            ));
        }
    };
    if password.is_empty() {
        return Err(RegisterError::Usage("the password is empty".to_owned()));
    }
    Ok(password)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// The URL of the first listener serving the client API, on localhost (what the reference
/// tool derives from `homeserver.yaml`). `None` if there is none with a fixed port.
fn client_url(config: &Config) -> Option<String> {
    let listener = config
        .listeners
        .iter()
        .find(|l| l.port != 0 && l.serves(ResourceName::Client))?;
    let scheme = if listener.tls { "https" } else { "http" };
    Some(format!("{scheme}://localhost:{}", listener.port))
}

/// Where the requests go, from the server URL.
#[derive(Debug)]
struct Target {
    url: String,
    https: bool,
    /// The host without IPv6 brackets (for connecting and the TLS name).
    host: String,
    port: u16,
    /// `host[:port]` as written, for the `Host` header.
    authority: String,
    /// Any path prefix of the URL, without a trailing slash.
    base_path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, RegisterError> {
        let bad = |why: &str| RegisterError::Usage(format!("invalid server URL {url:?}: {why}"));
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("it must start with http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        Ok(Self {
            url: url.to_owned(),
            https,
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// One request to the registration endpoint with a JSON body (or none): the JSON of a
    /// successful answer, or the Matrix error.
    async fn send(&self, method: Method, body: Option<&Value>) -> Result<Value, RegisterError> {
        let unreachable = |source| RegisterError::Unreachable {
            url: self.url.clone(),
            source,
        };
        let exchange_failed = |detail: String| RegisterError::Exchange {
            url: self.url.clone(),
            detail,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{REGISTER_PATH}", self.base_path))
            .header(header::HOST, &self.authority);
        let bytes = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(bytes))
            .map_err(|e| exchange_failed(e.to_string()))?;

        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(unreachable)?;
        let (status, body) = if self.https {
            let config = presence_federation::tls::client_tls_config(true, &[])
                .map_err(|e| exchange_failed(e.to_string()))?;
            let name = TlsServerName::try_from(self.host.clone())
                .map_err(|e| exchange_failed(format!("not a TLS server name: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(unreachable)?;
            exchange(TokioIo::new(tls), request).await
        } else {
            exchange(TokioIo::new(tcp), request).await
        }
        .map_err(exchange_failed)?;

        let json: Option<Value> = serde_json::from_slice(&body).ok();
        match json {
            Some(json) if status.is_success() => Ok(json),
            Some(json) if json["errcode"].is_string() => {
                let errcode = json["errcode"].as_str().unwrap_or_default().to_owned();
                let hint = if errcode == "M_FORBIDDEN" {
                    " (is the secret the server's registration_shared_secret?)"
                } else {
                    ""
                };
                Err(RegisterError::Refused {
                    status,
                    message: json["error"].as_str().unwrap_or_default().to_owned(),
                    errcode,
                    hint,
                })
            }
            _ => Err(RegisterError::Unexpected {
                url: self.url.clone(),
                status,
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            }),
        }
    }
}

/// Sends `request` over a new HTTP/1.1 connection and reads the whole answer.
async fn exchange<T>(io: T, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    // The connection is driven until the answer is read; its own error shows up there.
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// One registration request.
struct NewUser<'a> {
    user: &'a str,
    password: &'a str,
    admin: bool,
    user_type: Option<&'a str>,
    secret: &'a str,
}

impl NewUser<'_> {
    /// Takes a nonce and registers the user; returns the new user ID.
    async fn send(&self, target: &Target) -> Result<String, RegisterError> {
        let answer = target.send(Method::GET, None).await?;
        let Some(nonce) = answer["nonce"].as_str() else {
            return Err(RegisterError::Unexpected {
                url: target.url.clone(),
                status: StatusCode::OK,
                body: "no nonce in the answer".to_owned(),
            });
        };
        let mac = RegistrationMac {
            nonce,
            username: self.user,
            password: self.password,
            admin: self.admin,
            user_type: self.user_type,
        }
        .hex(self.secret);
        let mut body = json!({
            "nonce": nonce,
            "username": self.user,
            "password": self.password,
            "admin": self.admin,
            "mac": mac,
            // The command only creates the user; a login would leave an unused token.
            "inhibit_login": true,
        });
        if let Some(user_type) = self.user_type {
            body["user_type"] = json!(user_type);
        }
        let answer = target.send(Method::POST, Some(&body)).await?;
        Ok(answer["user_id"].as_str().unwrap_or(self.user).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let t = Target::parse("http://localhost:8008").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port),
            (false, "localhost", 8008)
        );
        assert_eq!(
            (t.authority.as_str(), t.base_path.as_str()),
            ("localhost:8008", "")
        );
        let t = Target::parse("https://[::1]/matrix/").unwrap();
        assert_eq!((t.https, t.host.as_str(), t.port), (true, "::1", 443));
        assert_eq!(
            (t.authority.as_str(), t.base_path.as_str()),
            ("[::1]", "/matrix")
        );
        assert!(Target::parse("localhost:8008").is_err());
        assert!(Target::parse("ftp://localhost").is_err());
    }

    #[test]
    fn password_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        let args = |password: Option<&str>, file: Option<&Path>| RegisterArgs {
            user: "alice".to_owned(),
            password: password.map(str::to_owned),
            password_file: file.map(Path::to_owned),
            admin: false,
            no_admin: false,
            user_type: None,
            shared_secret: None,
            exists_ok: false,
            server_url: None,
        };
        assert_eq!(read_password(&args(Some("pw"), None)).unwrap(), "pw");
        assert_eq!(read_password(&args(None, Some(&file))).unwrap(), "s3cret");
        assert!(matches!(
            read_password(&args(None, None)),
            Err(RegisterError::Usage(_))
        ));
        assert!(matches!(
            read_password(&args(None, Some(&dir.path().join("missing")))),
            Err(RegisterError::Password { .. })
        ));
    }
}
