//! TLS to PostgreSQL, with libpq's meaning of `sslmode` and `sslrootcert`.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` (and the last two without any certificate check), and
//! rejects `sslrootcert` and `verify-*` outright. So [`take_tls_params`] takes these keys out of `DATABASE_URL`
//! before tokio-postgres parses the rest, [`Tls::from_settings`] builds one rustls connector at start-up that checks
//! what the mode asks for, and `Tls::connect` (db/connect.rs) makes the attempts libpq would make (plain first for
//! `allow`, TLS then plain for `prefer`). The pool, the shared read connections and the cancel requests all go
//! through it.
//!
//! | `sslmode`     | TLS                  | certificate checked                                      |
//! |---------------|----------------------|----------------------------------------------------------|
//! | `disable`     | never                | -                                                        |
//! | `allow`       | only if plain fails  | against the root certificate, if there is one            |
//! | `prefer`      | tried first          | against the root certificate, if there is one            |
//! | `require`     | always               | against the root certificate, if there is one            |
//! | `verify-ca`   | always               | signed by the root certificate (required)                |
//! | `verify-full` | always               | signed by the root certificate, and issued for the host  |

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Socket;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::error::ConfigError;
use crate::text::percent_decode_strict;

/// The stream type of every connection billing opens (plain ones too: tokio-postgres wraps either kind).
pub type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 6] =
        [SslMode::Disable, SslMode::Allow, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull];

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.as_str() == value)
    }

    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Where a setting came from, so that a message names it the way the operator wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Url,
    Env,
    Default,
}

impl Source {
    pub(crate) fn name(self, key: &str) -> String {
        match self {
            Source::Url => format!("DATABASE_URL {key}"),
            Source::Env => format!("PG{}", key.to_ascii_uppercase()),
            Source::Default => format!("the default {key}"),
        }
    }
}

/// `sslmode` and `sslrootcert` as found in the URL's query, still unchecked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UrlTlsParams {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
}

/// libpq's TLS keys that billing does not implement: named in a clear error rather than left to tokio-postgres,
/// whose "unknown option" would be reported as a malformed URL.
const UNSUPPORTED_KEYS: [(&str, &str); 6] = [
    ("sslcert", "client certificates are not supported: authenticate with a password"),
    ("sslkey", "client certificates are not supported: authenticate with a password"),
    ("sslpassword", "client certificates are not supported: authenticate with a password"),
    ("sslcertmode", "client certificates are not supported: authenticate with a password"),
    ("sslcrl", "certificate revocation lists are not supported"),
    ("sslcrldir", "certificate revocation lists are not supported"),
];

/// Splits `sslmode` and `sslrootcert` off a `postgres://` URL's query and returns the URL without them, for
/// tokio-postgres to parse. The query starts at the first `?` after the user info, as tokio-postgres reads it.
pub fn take_tls_params(url: &str) -> Result<(String, UrlTlsParams), ConfigError> {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let after_user = url[authority_start..].find('@').map_or(authority_start, |i| authority_start + i + 1);
    let Some(query_start) = url[after_user..].find('?').map(|i| after_user + i) else {
        return Ok((url.to_string(), UrlTlsParams::default()));
    };
    let mut params = UrlTlsParams::default();
    let mut kept = Vec::new();
    for pair in url[query_start + 1..].split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode_strict(raw_key.as_bytes()).unwrap_or_default();
        if let Some((_, why)) = UNSUPPORTED_KEYS.iter().find(|(name, _)| *name == key) {
            return Err(ConfigError(format!("DATABASE_URL {key}: {why}")));
        }
        let slot = match key.as_str() {
            "sslmode" => &mut params.sslmode,
            "sslrootcert" => &mut params.sslrootcert,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        let value = percent_decode_strict(raw_value.as_bytes())
            .ok_or_else(|| ConfigError(format!("DATABASE_URL {key} is not valid percent-encoded UTF-8")))?;
        if slot.replace(value).is_some() {
            return Err(ConfigError(format!("DATABASE_URL gives {key} twice")));
        }
    }
    let mut rest = url[..query_start].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, params))
}

/// Where the trusted CA certificates come from.
#[derive(Debug, Clone)]
pub(crate) enum Roots {
    /// No root certificate: the chain is not checked (`allow`, `prefer`, `require` only).
    None,
    File {
        path: PathBuf,
        source: Source,
    },
    /// `sslrootcert=system` (PostgreSQL 16+): the operating system's trusted CAs.
    System {
        source: Source,
    },
}

impl Roots {
    pub(crate) fn describe(&self) -> String {
        match self {
            Roots::None => "no root certificate".into(),
            Roots::File { path, source } => format!("the CA in {}={}", source.name("sslrootcert"), path.display()),
            Roots::System { source } => {
                format!("any CA the system trusts ({}=system)", source.name("sslrootcert"))
            }
        }
    }
}

/// The TLS side of the database settings: the mode, where it was set, and the one connector built at start-up.
#[derive(Clone)]
pub struct Tls {
    pub(crate) mode: SslMode,
    pub(crate) mode_source: Source,
    pub(crate) roots: Roots,
    pub(crate) connector: MakeRustlsConnect,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("mode", &self.mode).field("roots", &self.roots.describe()).finish()
    }
}

impl Tls {
    /// Resolves `sslmode` and `sslrootcert` as libpq does (the URL first, then `PGSSLMODE`/`PGSSLROOTCERT`, then
    /// the defaults `prefer` and `~/.postgresql/root.crt`), reads the root certificates and builds the connector.
    pub fn from_settings(url: UrlTlsParams, lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let root_setting = match (url.sslrootcert, env("PGSSLROOTCERT")) {
            (Some(value), _) => Some((value, Source::Url)),
            (None, Some(value)) => Some((value, Source::Env)),
            (None, None) => None,
        };
        let system = root_setting.as_ref().is_some_and(|(value, _)| value == "system");
        let (mode, mode_source) = match (url.sslmode, env("PGSSLMODE")) {
            (Some(value), _) => (parse_mode(&value, Source::Url)?, Source::Url),
            (None, Some(value)) => (parse_mode(&value, Source::Env)?, Source::Env),
            // As in PostgreSQL 16+: trusting the system's CAs only makes sense with the host name checked.
            (None, None) if system => (SslMode::VerifyFull, Source::Default),
            (None, None) => (SslMode::Prefer, Source::Default),
        };
        let mode_name = format!("{}={}", mode_source.name("sslmode"), mode.as_str());

        let roots = match root_setting {
            _ if mode == SslMode::Disable => Roots::None,
            Some((_, source)) if system => {
                if mode != SslMode::VerifyFull {
                    return Err(ConfigError(format!(
                        "{mode_name} may not be used with {}=system: the system's CAs sign certificates for any \
                         host, so only sslmode=verify-full checks anything",
                        source.name("sslrootcert")
                    )));
                }
                Roots::System { source }
            }
            Some((path, source)) => Roots::File { path: PathBuf::from(path), source },
            None => match lookup("HOME").filter(|h| !h.is_empty()) {
                Some(home) if Path::new(&home).join(".postgresql/root.crt").is_file() => {
                    Roots::File { path: Path::new(&home).join(".postgresql/root.crt"), source: Source::Default }
                }
                _ if mode.verifies() => {
                    return Err(ConfigError(format!(
                        "{mode_name} needs the CA certificate that signed the server's: set sslrootcert=/path/to/\
                         ca.pem in DATABASE_URL (or PGSSLROOTCERT), or sslrootcert=system for a public CA; the \
                         default ~/.postgresql/root.crt does not exist"
                    )));
                }
                _ => Roots::None,
            },
        };

        let store = match &roots {
            Roots::None => None,
            Roots::File { path, source } => Some(read_root_file(path, *source)?),
            Roots::System { source } => Some(system_roots(*source)?),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Verifier {
            roots: store.map(Arc::new),
            check_name: mode == SslMode::VerifyFull,
            algorithms: provider.signature_verification_algorithms,
        };
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError(format!("cannot set up TLS for {mode_name}: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Tls { mode, mode_source, roots, connector: MakeRustlsConnect::new(client) })
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// What a cancel request needs to reach the server the way its connection did (the token knows whether that
    /// connection used TLS).
    pub fn connector(&self) -> MakeRustlsConnect {
        self.connector.clone()
    }

    /// `sslmode=verify-full` and where the root certificate comes from, for the start-up log.
    pub fn describe(&self) -> String {
        format!("{}={}, {}", self.mode_source.name("sslmode"), self.mode.as_str(), self.roots.describe())
    }
}

fn parse_mode(value: &str, source: Source) -> Result<SslMode, ConfigError> {
    SslMode::parse(value.trim()).ok_or_else(|| {
        let known = SslMode::ALL.map(SslMode::as_str).join(", ");
        ConfigError(format!("{}={value:?} is not an sslmode billing knows: use one of {known}", source.name("sslmode")))
    })
}

fn read_root_file(path: &Path, source: Source) -> Result<RootCertStore, ConfigError> {
    let name = format!("{}={}", source.name("sslrootcert"), path.display());
    let bad = |what: String| ConfigError(format!("{name}: {what}"));
    let text = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("the file does not exist".into()),
        _ => bad(format!("cannot read the file: {e}")),
    })?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| bad(format!("the file is not valid PEM: {e}")))?;
        store.add(cert).map_err(|e| bad(format!("the file holds a certificate that cannot be a CA: {e}")))?;
    }
    if store.is_empty() {
        return Err(bad("the file holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(store)
}

fn system_roots(source: Source) -> Result<RootCertStore, ConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (_added, _unparsable) = store.add_parsable_certificates(found.certs);
    if store.is_empty() {
        let errors = found.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        return Err(ConfigError(format!(
            "{}=system: no trusted CA certificates were found on this system{}",
            source.name("sslrootcert"),
            if errors.is_empty() { String::new() } else { format!(" ({errors})") }
        )));
    }
    Ok(store)
}

/// Checks what the mode asks for: nothing without roots, the chain with them, and the host name for verify-full.
/// Handshake signatures are always checked, so the server proves it holds the key of the certificate it sent.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, self.algorithms.all)?;
        if self.check_name {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn split(url: &str) -> Result<(String, UrlTlsParams), ConfigError> {
        take_tls_params(url)
    }

    fn tls(url: &str, env: &[(&str, &str)]) -> Result<Tls, ConfigError> {
        let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (_, params) = take_tls_params(url)?;
        Tls::from_settings(params, &|k: &str| map.get(k).cloned())
    }

    #[test]
    fn tls_keys_are_taken_out_of_the_url() -> Result<(), ConfigError> {
        let (rest, params) =
            split("postgres://u:p%3F@h:5/d?application_name=x&sslmode=verify-ca&sslrootcert=%2Fa%20b")?;
        assert_eq!(rest, "postgres://u:p%3F@h:5/d?application_name=x");
        assert_eq!(params.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/a b"));
        let (rest, params) = split("postgres://u@h/d?sslmode=require")?;
        assert_eq!((rest.as_str(), params.sslmode.as_deref()), ("postgres://u@h/d", Some("require")));
        // A '?' in an unencoded password is not the query.
        let (rest, params) = split("postgres://u:a?b@h/d")?;
        assert_eq!((rest.as_str(), params), ("postgres://u:a?b@h/d", UrlTlsParams::default()));
        Ok(())
    }

    #[test]
    fn unsupported_or_repeated_keys_are_named() {
        let error = |url: &str| split(url).err().map(|e| e.0).unwrap_or_default();
        assert!(error("postgres://u@h/d?sslcert=/c").starts_with("DATABASE_URL sslcert: client certificates"));
        assert_eq!(error("postgres://u@h/d?sslmode=require&sslmode=disable"), "DATABASE_URL gives sslmode twice");
    }

    #[test]
    fn mode_comes_from_the_url_then_the_environment_then_prefer() -> Result<(), ConfigError> {
        assert_eq!(tls("postgres://u@h/d", &[])?.mode(), SslMode::Prefer);
        assert_eq!(tls("postgres://u@h/d", &[("PGSSLMODE", "require")])?.mode(), SslMode::Require);
        assert_eq!(tls("postgres://u@h/d?sslmode=disable", &[("PGSSLMODE", "require")])?.mode(), SslMode::Disable);
        assert_eq!(tls("postgres://u@h/d?sslmode=allow", &[])?.mode(), SslMode::Allow);
        Ok(())
    }

    #[test]
    fn unknown_mode_is_refused_with_the_known_ones() {
        let message = tls("postgres://u@h/d?sslmode=verify", &[]).err().map(|e| e.0).unwrap_or_default();
        assert_eq!(
            message,
            "DATABASE_URL sslmode=\"verify\" is not an sslmode billing knows: use one of disable, allow, prefer, \
             require, verify-ca, verify-full"
        );
        let message = tls("postgres://u@h/d", &[("PGSSLMODE", "on")]).err().map(|e| e.0).unwrap_or_default();
        assert!(message.starts_with("PGSSLMODE=\"on\" is not an sslmode"), "{message}");
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        let message = tls("postgres://u@h/d?sslmode=verify-full", &[("HOME", "/nonexistent")])
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(message.starts_with("DATABASE_URL sslmode=verify-full needs the CA certificate"), "{message}");
    }

    #[test]
    fn a_named_root_file_must_exist_and_hold_certificates() -> Result<(), Box<dyn std::error::Error>> {
        let message = tls("postgres://u@h/d?sslmode=require&sslrootcert=/nonexistent/ca.pem", &[])
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert_eq!(message, "DATABASE_URL sslrootcert=/nonexistent/ca.pem: the file does not exist");
        let dir = std::env::temp_dir().join(format!("billing-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n")?;
        let message = tls("postgres://u@h/d?sslmode=verify-ca", &[("PGSSLROOTCERT", &empty.display().to_string())])
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(message.starts_with(&format!("PGSSLROOTCERT={}: the file holds no PEM", empty.display())), "{message}");
        std::fs::remove_dir_all(&dir)?;
        // disable never reads it, as in libpq.
        tls("postgres://u@h/d?sslmode=disable&sslrootcert=/nonexistent/ca.pem", &[])?;
        Ok(())
    }

    #[test]
    fn system_roots_go_with_verify_full_only() -> Result<(), ConfigError> {
        let message = tls("postgres://u@h/d?sslmode=require&sslrootcert=system", &[]).err().map(|e| e.0);
        assert!(
            message.as_deref().unwrap_or_default().starts_with("DATABASE_URL sslmode=require may not be used with"),
            "{message:?}"
        );
        // Without a mode, system roots mean verify-full (PostgreSQL 16+). A machine without a CA store gets the
        // error that says so instead; either way the outcome is checked.
        match tls("postgres://u@h/d?sslrootcert=system", &[]) {
            Ok(tls) => assert_eq!(tls.mode(), SslMode::VerifyFull),
            Err(e) => assert!(e.0.contains("no trusted CA certificates were found on this system"), "{}", e.0),
        }
        Ok(())
    }
}
