//! Connections, the pool and start-up waiting.

use std::time::{Duration, Instant};

use diesel::result::{ConnectionError, DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection, RunError};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError, PoolableConnection, RecyclingMethod,
};
use futures_util::FutureExt;

use crate::config::{Config, describe_database};
use crate::error::ApiError;
use crate::metrics::{self, DbErrorKind};
use crate::tls::{ConnectFailure, Tls};

pub type DbPool = Pool<AsyncPgConnection>;
pub type DbConn = PooledConnection<'static, AsyncPgConnection>;

/// Opens one connection with the configured TLS settings, bounded by the configured connect timeout.
pub async fn connect(database: &tokio_postgres::Config, tls: &Tls) -> Result<AsyncPgConnection, ConnectionError> {
    open(database, tls).await.map_err(|e| ConnectionError::BadConnection(e.message))
}

async fn open(database: &tokio_postgres::Config, tls: &Tls) -> Result<AsyncPgConnection, ConnectFailure> {
    let (client, connection) = tls.connect(database).await?;
    AsyncPgConnection::try_from_client_and_connection(client, connection)
        .await
        .map_err(|e| ConnectFailure { message: e.to_string(), permanent: false })
}

/// Start-up: retries with exponential backoff (0.25 s doubling to 8 s) until the database answers or
/// `config.database_wait` has passed, so a pod that starts before PostgreSQL waits instead of crash-looping. A
/// refusal by the TLS settings (a certificate they reject, a server without TLS under `require`) ends the wait at
/// once: it is the same on every attempt, and the operator should read it now rather than in two minutes.
pub async fn wait_for_database(config: &Config) -> Result<AsyncPgConnection, String> {
    let started = Instant::now();
    let target = describe_database(&config.database);
    let mut delay = Duration::from_millis(250);
    for attempt in 1.. {
        match open(&config.database, &config.tls).await {
            Ok(conn) => {
                log::info!("connected to PostgreSQL at {target} (attempt {attempt}; {})", config.tls.describe());
                return Ok(conn);
            }
            Err(e) if e.permanent => {
                return Err(format!(
                    "cannot connect to PostgreSQL at {target}: {e} (not retried: waiting will not change it)"
                ));
            }
            Err(e) => {
                let waited = started.elapsed();
                if waited + delay > config.database_wait {
                    return Err(format!(
                        "gave up connecting to PostgreSQL at {target} after {attempt} attempts in {:.1}s: {e}",
                        waited.as_secs_f64()
                    ));
                }
                log::warn!(
                    "PostgreSQL at {target} is not reachable yet (attempt {attempt}): {e}; retrying in {:.2}s",
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
        }
    }
    unreachable!("the attempt counter is unbounded")
}

pub async fn build_pool(config: &Config) -> Result<DbPool, String> {
    let database = config.database.clone();
    let tls = config.tls.clone();
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    manager_config.custom_setup = Box::new(move |_url| {
        let (database, tls) = (database.clone(), tls.clone());
        async move { connect(&database, &tls).await }.boxed()
    });
    // A connection whose socket closed (PostgreSQL restarted, an idle timeout) is dropped at check-out and replaced,
    // at no round-trip cost; one that breaks mid-query fails that request with a 503 and is discarded.
    manager_config.recycling_method = RecyclingMethod::CustomFunction(Box::new(|conn| {
        let broken = PoolableConnection::is_broken(conn);
        async move {
            if broken {
                Err(DieselError::DatabaseError(
                    DatabaseErrorKind::ClosedConnection,
                    Box::new("pooled connection was closed".to_string()),
                ))
            } else {
                Ok(())
            }
        }
        .boxed()
    }));
    let manager = AsyncDieselConnectionManager::new_with_config(describe_database(&config.database), manager_config);
    Pool::builder()
        .max_size(config.pool_size)
        .connection_timeout(config.database_timeout)
        .build(manager)
        .await
        .map_err(|e| format!("could not create the connection pool: {e}"))
}

/// A connection for one request, or the 503 that says why there is none.
pub async fn checkout(pool: &DbPool) -> Result<DbConn, ApiError> {
    let waiting = metrics::Waiting::start();
    let conn = pool.get_owned().await;
    drop(waiting);
    conn.map_err(|e| match e {
        RunError::TimedOut => {
            metrics::database_error(DbErrorKind::Timeout);
            ApiError::unavailable(
                "no database connection became available in time; PostgreSQL may be down or overloaded",
            )
        }
        RunError::User(PoolError::ConnectionError(e)) => {
            metrics::database_error(DbErrorKind::Unavailable);
            ApiError::unavailable(format!("cannot connect to the database: {e}"))
        }
        RunError::User(PoolError::QueryError(e)) => {
            metrics::database_error(DbErrorKind::Unavailable);
            ApiError::unavailable(format!("the database connection failed its check: {e}"))
        }
    })
}
