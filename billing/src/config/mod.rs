//! Settings read from the environment. Names follow the original Flask app (`DATABASE_URL`, `LOG_FILE`) so that
//! existing manifests keep working; everything else has a safe default. The settings are plain data: the limits
//! the HTTP layer enforces are defined here ([`ServerLimits`], [`ListingLimits`]) and consumed there.

pub mod database;
pub mod error;
pub mod tls;

pub use error::ConfigError;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::config::database::{describe_database, parse_database_url};
use crate::config::tls::Tls;

/// Everything the service needs to start. Built once by [`Config::from_env`].
#[derive(Clone)]
pub struct Config {
    pub database: tokio_postgres::Config,
    /// `sslmode`/`sslrootcert` and the TLS connector every connection and cancel request uses.
    pub tls: Tls,
    pub listen_addr: SocketAddr,
    pub pool_size: u32,
    /// Connections shared by all point reads, which tokio-postgres pipelines (see `db/read_connections.rs`); 0 sends
    /// point reads through the pool like everything else.
    pub read_connections: usize,
    /// Upper bound on waiting for a pooled connection or a query, so a dead database yields a 503, not a hang.
    pub database_timeout: Duration,
    /// How long start-up keeps retrying an unreachable database before giving up.
    pub database_wait: Duration,
    /// How long SIGTERM waits for in-flight requests before the process exits anyway.
    pub shutdown_timeout: Duration,
    pub log_file: Option<PathBuf>,
    /// How long a payment waits for its transaction-log line before answering anyway (`LOG_WRITE_TIMEOUT_SECS`).
    pub log_write_timeout: Duration,
    /// Record metrics and serve them at `GET /metrics` (`METRICS_ENABLED`, default true).
    pub metrics_enabled: bool,
    /// Refuse `POST /add` without an `Idempotency-Key` header (`IDEMPOTENCY_KEY_REQUIRED`, default false).
    pub idempotency_key_required: bool,
    /// What one client may take from the server.
    pub limits: ServerLimits,
    /// What `/getall` may take from the pool.
    pub listings: ListingLimits,
    /// Name written into each transaction-log line: the pod name in a StatefulSet.
    pub host_name: String,
}

impl fmt::Debug for Config {
    // Hand-written so that a debug print can never leak the database password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database", &describe_database(&self.database))
            .field("tls", &self.tls)
            .field("listen_addr", &self.listen_addr)
            .field("pool_size", &self.pool_size)
            .field("read_connections", &self.read_connections)
            .field("database_timeout", &self.database_timeout)
            .field("database_wait", &self.database_wait)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("log_file", &self.log_file)
            .field("log_write_timeout", &self.log_write_timeout)
            .field("metrics_enabled", &self.metrics_enabled)
            .field("idempotency_key_required", &self.idempotency_key_required)
            .field("limits", &self.limits)
            .field("listings", &self.listings)
            .field("host_name", &self.host_name)
            .finish()
    }
}

/// What one client may take from the server (http/server.rs enforces it); each is a setting (README,
/// "Configuration").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// `HEADER_READ_TIMEOUT_SECS`: to send a request's headers, and to start the next request on a kept-alive
    /// connection.
    pub header_read_timeout: Duration,
    /// `BODY_READ_TIMEOUT_SECS`: to send a request's body (408 past it).
    pub body_read_timeout: Duration,
    /// `MAX_HEADER_BYTES`: the request line and headers together (431 past it).
    pub max_header_bytes: usize,
    /// `MAX_CONNECTIONS`: connections open at once, before the open-files limit lowers it.
    pub max_connections: usize,
}

/// What `GET /getall` listings may take from the pool (http/listings.rs says how each is enforced).
#[derive(Debug, Clone)]
pub struct ListingLimits {
    /// `GETALL_MAX_CONCURRENT`: listings running at once.
    pub max_concurrent: usize,
    /// `GETALL_TIMEOUT_SECS`: how long one listing may run.
    pub timeout: Duration,
    /// `GETALL_STALL_TIMEOUT_SECS`: how long a client may read nothing before it is cut off.
    pub stall_timeout: Duration,
}

pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:8080";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` so tests can supply an environment without touching the process's own.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let url = get("DATABASE_URL").ok_or_else(|| {
            ConfigError(
                "DATABASE_URL is not set: give it as postgres://USER@HOST:PORT/DATABASE \
                 (the password may come from DATABASE_PASSWORD)"
                    .into(),
            )
        })?;
        let (mut database, tls) = parse_database_url(&url, &lookup)?;
        if let Some(password) = lookup("DATABASE_PASSWORD").filter(|p| !p.is_empty()) {
            // Taken verbatim: a password from a Kubernetes Secret needs no URL-encoding.
            database.password(password);
        }

        let database_timeout = Duration::from_secs(parse_number(&get, "DATABASE_TIMEOUT_SECS", 5, 1, 300)?);
        database.connect_timeout(database_timeout);
        database.application_name("billing");
        // A dead peer (its node gone, a network partition) sends no reset, and with the kernel's defaults a connection
        // to it looks open for 10-15 minutes; the shared read connection would time out every read meanwhile. Idle, it
        // is found by keepalive probes within about a minute; with a query unanswered, by TCP_USER_TIMEOUT in 30 s
        // (PostgreSQL's kernel acknowledges a query at once, however long the query runs).
        database.keepalives_idle(Duration::from_secs(30));
        database.keepalives_interval(Duration::from_secs(10));
        database.keepalives_retries(3);
        database.tcp_user_timeout(Duration::from_secs(30));

        let listen_addr = match get("LISTEN_ADDR") {
            None => SocketAddr::from_str(DEFAULT_LISTEN_ADDR).map_err(|e| ConfigError(e.to_string()))?,
            Some(v) => SocketAddr::from_str(v.trim()).map_err(|_| {
                ConfigError(format!(
                    "LISTEN_ADDR must be an IP address and port such as {DEFAULT_LISTEN_ADDR}, got {v:?}"
                ))
            })?,
        };

        let host_name = match get("BILLING_HOSTNAME") {
            Some(name) => {
                crate::text::validate_host_name(&name)
                    .map_err(|e| ConfigError(format!("BILLING_HOSTNAME {e} (it is written into LOG_FILE lines)")))?;
                name
            }
            None => {
                let name = gethostname::gethostname().to_string_lossy().into_owned();
                crate::text::validate_host_name(&name).map_err(|e| {
                    ConfigError(format!(
                        "the host name {name:?} {e} (it is written into LOG_FILE lines); set BILLING_HOSTNAME"
                    ))
                })?;
                name
            }
        };

        let pool_size = u32::try_from(parse_number(&get, "DATABASE_POOL_SIZE", 20, 1, 1000)?)
            .map_err(|e| ConfigError(e.to_string()))?;
        // A quarter of the pool by default: listings are rare and long, payments many and short.
        let listings_default = u64::from((pool_size / 4).max(1));
        let listings = ListingLimits {
            max_concurrent: usize::try_from(parse_number(
                &get,
                "GETALL_MAX_CONCURRENT",
                listings_default,
                1,
                u64::from(pool_size),
            )?)
            .map_err(|e| ConfigError(e.to_string()))?,
            timeout: Duration::from_secs(parse_number(&get, "GETALL_TIMEOUT_SECS", 300, 1, 86_400)?),
            stall_timeout: Duration::from_secs(parse_number(&get, "GETALL_STALL_TIMEOUT_SECS", 10, 1, 3_600)?),
        };

        Ok(Config {
            database,
            tls,
            listen_addr,
            pool_size,
            listings,
            read_connections: usize::try_from(parse_number(&get, "DATABASE_READ_CONNECTIONS", 1, 0, 64)?)
                .map_err(|e| ConfigError(e.to_string()))?,
            database_timeout,
            database_wait: Duration::from_secs(parse_number(&get, "DATABASE_WAIT_SECS", 120, 0, 86_400)?),
            shutdown_timeout: Duration::from_secs(parse_number(&get, "SHUTDOWN_TIMEOUT_SECS", 20, 0, 3_600)?),
            log_file: get("LOG_FILE").map(PathBuf::from),
            log_write_timeout: Duration::from_secs(parse_number(&get, "LOG_WRITE_TIMEOUT_SECS", 2, 1, 60)?),
            metrics_enabled: parse_bool(&get, "METRICS_ENABLED", true)?,
            idempotency_key_required: parse_bool(&get, "IDEMPOTENCY_KEY_REQUIRED", false)?,
            limits: ServerLimits {
                header_read_timeout: Duration::from_secs(parse_number(&get, "HEADER_READ_TIMEOUT_SECS", 10, 1, 300)?),
                body_read_timeout: Duration::from_secs(parse_number(&get, "BODY_READ_TIMEOUT_SECS", 10, 1, 300)?),
                max_header_bytes: usize::try_from(parse_number(&get, "MAX_HEADER_BYTES", 16_384, 8_192, 1_048_576)?)
                    .map_err(|e| ConfigError(e.to_string()))?,
                max_connections: usize::try_from(parse_number(&get, "MAX_CONNECTIONS", 10_000, 16, 1_000_000)?)
                    .map_err(|e| ConfigError(e.to_string()))?,
            },
            host_name,
        })
    }
}

fn parse_number(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = get(name) else {
        return Ok(default);
    };
    match raw.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(ConfigError(format!("{name} must be a whole number from {min} to {max}, got {raw:?}"))),
    }
}

fn parse_bool(get: &impl Fn(&str) -> Option<String>, name: &str, default: bool) -> Result<bool, ConfigError> {
    match get(name).as_deref().map(str::trim) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(ConfigError(format!("{name} must be true or false, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    fn error(vars: &[(&str, &str)]) -> String {
        match config(vars) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn defaults() -> Result<(), ConfigError> {
        let c = config(&[("DATABASE_URL", "postgres://billing@db:5432/billing")])?;
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.pool_size, 20);
        assert_eq!(c.read_connections, 1);
        assert_eq!(c.database.get_tcp_user_timeout(), Some(&Duration::from_secs(30)));
        assert_eq!(c.database.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(c.database_timeout, Duration::from_secs(5));
        assert_eq!(c.log_file, None);
        assert_eq!(c.log_write_timeout, Duration::from_secs(2));
        assert!(c.metrics_enabled);
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.body_read_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.max_header_bytes, 16_384);
        assert_eq!(c.limits.max_connections, 10_000);
        assert_eq!(describe_database(&c.database), "billing@db:5432/billing");
        assert!(!c.host_name.is_empty());
        Ok(())
    }

    #[test]
    fn password_from_separate_variable_is_taken_verbatim() -> Result<(), ConfigError> {
        let password = "p@ss:w/o?r#d%20 'x\"";
        let c = config(&[("DATABASE_URL", "postgres://billing:old@db/billing"), ("DATABASE_PASSWORD", password)])?;
        assert_eq!(c.database.get_password(), Some(password.as_bytes()));
        Ok(())
    }

    #[test]
    fn percent_encoded_password_in_url_is_decoded() -> Result<(), ConfigError> {
        let c = config(&[("DATABASE_URL", "postgres://billing:a%40b@db/billing")])?;
        assert_eq!(c.database.get_password(), Some("a@b".as_bytes()));
        Ok(())
    }

    #[test]
    fn metrics_switch_takes_true_or_false_only() -> Result<(), ConfigError> {
        let url = ("DATABASE_URL", "postgres://billing@db/billing");
        assert!(!config(&[url, ("METRICS_ENABLED", "false")])?.metrics_enabled);
        assert!(config(&[url, ("METRICS_ENABLED", "true")])?.metrics_enabled);
        assert_eq!(error(&[url, ("METRICS_ENABLED", "off")]), "METRICS_ENABLED must be true or false, got \"off\"");
        Ok(())
    }

    #[test]
    fn missing_url_is_explained() {
        assert!(error(&[]).starts_with("DATABASE_URL is not set"));
        assert!(error(&[("DATABASE_URL", "  ")]).starts_with("DATABASE_URL is not set"));
    }

    #[test]
    fn malformed_url_never_echoes_the_password() {
        for url in
            ["postgres://billing:s3cretpw@db:notaport/billing", "s3cretpw", "postgres://billing:s3cretpw@db:5432"]
        {
            let message = error(&[("DATABASE_URL", url)]);
            assert!(message.contains("DATABASE_URL"), "{message}");
            assert!(!message.contains("s3cretpw"), "password leaked: {message}");
            assert!(!message.contains('\n'), "one line expected: {message}");
        }
        assert!(!format!("{:?}", config(&[("DATABASE_URL", "postgres://u:s3cretpw@h/d")])).contains("s3cretpw"));
    }

    #[test]
    fn bad_numbers_and_addresses_are_named() {
        let url = ("DATABASE_URL", "postgres://u@h/d");
        assert_eq!(
            error(&[url, ("DATABASE_POOL_SIZE", "0")]),
            "DATABASE_POOL_SIZE must be a whole number from 1 to 1000, got \"0\""
        );
        assert!(error(&[url, ("DATABASE_TIMEOUT_SECS", "soon")]).starts_with("DATABASE_TIMEOUT_SECS must be"));
        assert!(error(&[url, ("LISTEN_ADDR", "8080")]).starts_with("LISTEN_ADDR must be an IP address and port"));
    }

    #[test]
    fn every_libpq_sslmode_is_accepted() -> Result<(), ConfigError> {
        for mode in ["disable", "allow", "prefer", "require"] {
            let c = config(&[("DATABASE_URL", &format!("postgres://u@h/d?sslmode={mode}"))])?;
            assert_eq!(c.tls.mode().as_str(), mode);
        }
        let message = error(&[("DATABASE_URL", "postgres://u:s3cretpw@h/d?sslmode=verify-ca")]);
        assert!(message.starts_with("DATABASE_URL sslmode=verify-ca needs the CA certificate"), "{message}");
        assert!(!message.contains("s3cretpw"), "{message}");
        let message = error(&[("DATABASE_URL", "postgres://u:s3cretpw@h/d?sslmode=on")]);
        assert!(message.starts_with("DATABASE_URL sslmode=\"on\" is not an sslmode"), "{message}");
        assert!(!message.contains("s3cretpw"), "{message}");
        Ok(())
    }

    #[test]
    fn host_name_override() -> Result<(), ConfigError> {
        let c = config(&[("DATABASE_URL", "postgres://u@h/d"), ("BILLING_HOSTNAME", "billing-stateful-1")])?;
        assert_eq!(c.host_name, "billing-stateful-1");
        let message = error(&[("DATABASE_URL", "postgres://u@h/d"), ("BILLING_HOSTNAME", "a, client b")]);
        assert!(message.starts_with("BILLING_HOSTNAME must not contain a comma"), "{message}");
        Ok(())
    }
}
