//! Opening one connection with the TLS settings (config/tls.rs) the way libpq would for the `sslmode`, explaining
//! a refusal in the operator's terms, and PostgreSQL's errors and notices on one line for logs and messages.

use std::fmt;

use rustls::CertificateError;
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres::{Client, Connection, Socket};

use crate::config::tls::{Roots, SslMode, Tls, TlsStream};

/// Why a connection attempt failed, worded for the operator, and whether waiting could change it.
#[derive(Debug)]
pub struct ConnectFailure {
    pub message: String,
    /// A certificate the settings refuse, or a server without TLS under `require`: the same on every attempt.
    pub permanent: bool,
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Tls {
    /// Opens one connection the way libpq would for the mode: `allow` tries plain TCP first and TLS if the server
    /// refuses it; `prefer` tries TLS first and plain TCP if the server has no TLS, the handshake fails or the
    /// server refuses the encrypted session.
    pub async fn connect(
        &self,
        database: &tokio_postgres::Config,
    ) -> Result<(Client, Connection<Socket, TlsStream>), ConnectFailure> {
        match self.mode {
            SslMode::Disable => self.attempt(database, WireMode::Disable).await.map_err(|e| self.explain(&e)),
            SslMode::Allow => match self.attempt(database, WireMode::Disable).await {
                Err(plain) if plain.as_db_error().is_some() => {
                    self.attempt(database, WireMode::Require).await.map_err(|tls| {
                        let failure = self.explain(&tls);
                        ConnectFailure {
                            message: format!("{} (after plain TCP was refused: {plain})", failure.message),
                            permanent: failure.permanent,
                        }
                    })
                }
                other => other.map_err(|e| self.explain(&e)),
            },
            SslMode::Prefer => match self.attempt(database, WireMode::Prefer).await {
                Err(tls) if tls.as_db_error().is_some() || rustls_error(&tls).is_some() => {
                    let why = self.explain(&tls).message;
                    match self.attempt(database, WireMode::Disable).await {
                        Ok(connected) => {
                            log::warn!("{why}; connected without TLS, as sslmode=prefer allows");
                            Ok(connected)
                        }
                        Err(plain) => Err(ConnectFailure {
                            message: format!("{} (after TLS failed: {why})", self.explain(&plain).message),
                            permanent: false,
                        }),
                    }
                }
                other => other.map_err(|e| self.explain(&e)),
            },
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                self.attempt(database, WireMode::Require).await.map_err(|e| self.explain(&e))
            }
        }
    }

    async fn attempt(
        &self,
        database: &tokio_postgres::Config,
        wire: WireMode,
    ) -> Result<(Client, Connection<Socket, TlsStream>), tokio_postgres::Error> {
        let mut database = database.clone();
        database.ssl_mode(wire);
        database.connect(self.connector.clone()).await
    }

    /// One line naming the setting that refused the connection; tokio-postgres's own words for anything else.
    fn explain(&self, e: &tokio_postgres::Error) -> ConnectFailure {
        let mode = format!("{}={}", self.mode_source.name("sslmode"), self.mode.as_str());
        // A root certificate turns allow/prefer/require into a chain check, as in libpq: say so, or the refusal
        // would look like a bug of a mode that "checks nothing".
        let implied = match (&self.roots, self.mode) {
            (Roots::None, _) | (_, SslMode::VerifyCa | SslMode::VerifyFull) => String::new(),
            _ => format!(
                " (a root certificate is given, so sslmode={} checks the chain as verify-ca does)",
                self.mode.as_str()
            ),
        };
        if let Some(tls) = rustls_error(e) {
            let message = match tls {
                rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { expected, presented }) => {
                    let names = if presented.is_empty() {
                        "no host name".to_string()
                    } else {
                        presented.iter().map(|name| bare_name(name)).collect::<Vec<_>>().join(", ")
                    };
                    format!("{mode}: the server certificate is for {names}, not {}", expected.to_str())
                }
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => {
                    format!("{mode}: the server certificate is not for the host in DATABASE_URL")
                }
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    format!("{mode}: the server certificate is not signed by {}{implied}", self.roots.describe())
                }
                // webpki's CaUsedAsEndEntity, which rustls passes on only as text: `openssl req -x509` makes such
                // certificates by default, and OpenSSL (so libpq) accepts one as its own root.
                rustls::Error::InvalidCertificate(CertificateError::Other(other))
                    if other.to_string().contains("CaUsedAsEndEntity") =>
                {
                    format!(
                        "{mode}: the server certificate is a CA certificate (basicConstraints CA:TRUE), which rustls \
                         does not accept as a server's own: sign it with a CA, or make it with CA:FALSE"
                    )
                }
                rustls::Error::InvalidCertificate(other) => {
                    format!("{mode}: the server certificate is refused ({other}){implied}")
                }
                other => format!("{mode}: the TLS handshake with the server failed: {other}"),
            };
            return ConnectFailure { message, permanent: true };
        }
        if std::error::Error::source(e).is_some_and(|s| s.to_string() == "server does not support TLS") {
            return ConnectFailure {
                message: format!("{mode}: the server does not support TLS (its ssl setting is off)"),
                permanent: true,
            };
        }
        ConnectFailure { message: describe(e), permanent: false }
    }
}

/// rustls lists a certificate's names as `DnsName("db.example.com")`: the name alone reads better.
fn bare_name(presented: &str) -> &str {
    match (presented.find('"'), presented.rfind('"')) {
        (Some(start), Some(end)) if end > start => &presented[start + 1..end],
        _ => presented,
    }
}

/// The rustls error behind a failed handshake, if that is what failed. tokio-rustls hands it over inside an
/// `io::Error`, whose `source()` skips it, hence the `get_ref`.
fn rustls_error(e: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()?.downcast_ref()) {
            return Some(tls);
        }
        current = err.source();
    }
    None
}

/// PostgreSQL's message (an error's or a notice's) with its SQLSTATE and detail, on one line.
pub fn describe_notice(notice: &tokio_postgres::error::DbError) -> String {
    let mut text = format!("{} (SQLSTATE {})", notice.message(), notice.code().code());
    if let Some(detail) = notice.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    text.replace('\n', " ")
}

/// tokio-postgres's error with what it wraps, on one line: its own text is only the kind ("db error", "error
/// connecting to server"); PostgreSQL's message and SQLSTATE, or the operating system's, are in the source.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return describe_notice(db);
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string().replace('\n', " "));
        cause = err.source();
    }
    text
}
