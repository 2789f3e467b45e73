//! TLS to PostgreSQL, with libpq's `sslmode` meanings, so that the `database.args` an
//! operator gave Synapse's psycopg2 mean the same to Presenced:
//!
//! - `require`: encrypted; the certificate is checked against `sslrootcert` when one is
//!   given (libpq then behaves as `verify-ca`), else not checked at all.
//! - `verify-ca`: the chain must lead to `sslrootcert` (libpq's default file
//!   `~/.postgresql/root.crt` when the key is absent); any host name.
//! - `verify-full`: as `verify-ca`, and the certificate must name the host.
//!
//! `disable`, `allow` and `prefer` connect in clear text (see docs/differences.md).
//! Redis's TLS is the redis crate's own (`redis::Client::build_with_tls`).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{Error, pg::SslMode};

/// The connector for `mode`, or `None` when the connection stays in clear text.
pub(crate) fn postgres_connector(
    mode: SslMode,
    root_cert: Option<&Path>,
) -> Result<Option<MakeRustlsConnect>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => return Ok(None),
        SslMode::Require => match root_cert {
            Some(path) => Arc::new(AnyName(webpki(&provider, path)?)),
            None => Arc::new(Unchecked(provider.signature_verification_algorithms)),
        },
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let default = default_root_cert();
            let path = root_cert
                .or(default.as_deref())
                .ok_or_else(|| Error::Config {
                    key: "database.args.sslrootcert".to_owned(),
                    reason: "is required with sslmode verify-ca or verify-full (no \
                         ~/.postgresql/root.crt either): name the CA certificate file"
                        .to_owned(),
                })?;
            let verifier = webpki(&provider, path)?;
            if mode == SslMode::VerifyCa {
                Arc::new(AnyName(verifier))
            } else {
                verifier
            }
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// libpq's default CA file, if it exists.
fn default_root_cert() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("HOME")?).join(".postgresql/root.crt");
    path.is_file().then_some(path)
}

/// The certificates of a PEM file, as a root store.
pub(crate) fn root_store(key: &str, path: &Path) -> Result<RootCertStore, Error> {
    let bad = |reason: String| Error::Config {
        key: key.to_owned(),
        reason: format!("{}: {reason}", path.display()),
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".to_owned()));
    }
    Ok(roots)
}

fn webpki(provider: &Arc<CryptoProvider>, path: &Path) -> Result<Arc<WebPkiServerVerifier>, Error> {
    let roots = root_store("database.args.sslrootcert", path)?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Tls(e.to_string()))
}

fn tls_error(e: rustls::Error) -> Error {
    Error::Tls(e.to_string())
}

/// `verify-ca`: the chain is checked, the name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` without a CA: encrypted, the certificate taken as it is (libpq does the same).
/// The handshake's signatures are still checked, so the session key belongs to whoever holds
/// the certificate's key.
#[derive(Debug)]
struct Unchecked(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
