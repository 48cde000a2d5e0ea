//! `DATABASE_URL`: parsed into tokio-postgres's settings and billing's TLS settings, and the database named for logs
//! without its password.

use std::str::FromStr;

use crate::config::error::ConfigError;
use crate::config::tls::{Tls, take_tls_params};

/// The URL without its TLS keys, parsed by tokio-postgres, and the TLS settings from those keys and the environment.
pub fn parse_database_url(
    url: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(tokio_postgres::Config, Tls), ConfigError> {
    let url = url.trim();
    // tokio-postgres also accepts "key=value" strings; the course and the chart use URLs, and requiring one turns
    // a stray value (a bare host name, a password pasted into the wrong variable) into a clear error.
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError(
            "DATABASE_URL must start with postgres:// or postgresql:// (for example \
             postgres://billing@postgres:5432/billing)"
                .into(),
        ));
    }
    // tokio-postgres knows neither sslrootcert nor verify-ca/verify-full: billing handles the TLS keys itself.
    let (rest, tls_params) = take_tls_params(url)?;
    // The parser's own message can quote the offending text, which may contain the password: never show it.
    let config = tokio_postgres::Config::from_str(&rest).map_err(|_| {
        ConfigError(
            "DATABASE_URL is not a valid PostgreSQL URL: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE \
             with special characters in the password percent-encoded (or the password in DATABASE_PASSWORD)"
                .into(),
        )
    })?;
    if config.get_hosts().is_empty() {
        return Err(ConfigError("DATABASE_URL names no host".into()));
    }
    if config.get_dbname().is_none() {
        return Err(ConfigError("DATABASE_URL names no database: add /DATABASE after the host".into()));
    }
    let tls = Tls::from_settings(tls_params, lookup)?;
    Ok((config, tls))
}

/// `user@host:port/db`, for logs: everything an operator needs to recognise the target, and no password.
pub fn describe_database(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{}@{}:{}/{}", config.get_user().unwrap_or("(default user)"), host, port, config.get_dbname().unwrap_or(""))
}
