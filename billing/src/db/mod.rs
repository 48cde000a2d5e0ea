//! The database layer: connections, the pool and start-up waiting (the migrations are schema/'s).
//!
//! Queries run on tokio-postgres clients ([`PgConn`]); diesel is used for the embedded migrations only, because
//! diesel-async turns every PostgreSQL error outside eight constraint kinds into a message without its SQLSTATE,
//! and the message is in the server's language (`lc_messages`). sqlstate.rs classifies by SQLSTATE instead.
//!
//! - connect.rs: one connection opened the way libpq would for the `sslmode`; errors on one line
//! - sql.rs: the SQL of every statement; statements.rs: running them on a [`PgConn`]
//! - read_connections.rs: the few connections shared by every point read
//! - sqlstate.rs: which SQLSTATE means which answer to the client

pub mod connect;
pub mod read_connections;
pub mod sql;
pub mod sqlstate;
pub mod statements;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use diesel_async::AsyncPgConnection;
use futures_util::StreamExt;
use tokio::sync::OnceCell;
use tokio_postgres::{Client, Statement};

use crate::config::Config;
use crate::config::database::describe_database;
use crate::config::tls::Tls;
use crate::db::connect::{ConnectFailure, describe, describe_notice};
use crate::db::sql::Query;
use crate::db::sqlstate::{class, class_of};
use crate::error::ApiError;
use crate::metrics::{self, DbErrorKind};
use crate::warning_limiter::WarningLimiter;

/// Pause between connection attempts while PostgreSQL refuses them. Short, so that requests waiting through an
/// outage get a connection within this long of PostgreSQL accepting again; bb8's own retry doubles its pause up to
/// half the connection timeout, which kept requests on 503 for seconds after the database was back.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

pub type DbConn = bb8::PooledConnection<'static, Manager>;

/// The pool, and the last reason a connection could not be opened: bb8 only ever reports a timed-out check-out,
/// and "no connection in time" alone hides a wrong password or an unknown database.
#[derive(Clone)]
pub struct DbPool {
    pool: bb8::Pool<Manager>,
    failures: Arc<Failures>,
    /// `DATABASE_TIMEOUT_SECS`: a failure older than a check-out's whole wait is not this check-out's reason.
    timeout: Duration,
}

impl DbPool {
    pub fn state(&self) -> bb8::State {
        self.pool.state()
    }

    /// Sets the pool's gauges from its own counts, read when asked (before a scrape) rather than tracked on every
    /// check-out.
    pub fn record_state(&self) {
        let state = self.pool.state();
        metrics::pool_state(state.connections, state.idle_connections);
    }
}

#[derive(Default)]
struct Failures {
    last: Mutex<Option<(Instant, String)>>,
    warnings: WarningLimiter,
}

impl Failures {
    fn record(&self, message: &str) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), message.to_string()));
        self.warnings.warn(|| format!("cannot open a database connection: {message}"));
    }

    fn clear(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The failure of an attempt made within `within`, if one failed.
    fn recent(&self, within: Duration) -> Option<String> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref().filter(|(at, _)| at.elapsed() <= within).map(|(_, message)| message.clone())
    }
}

/// One connection to PostgreSQL, with its statements prepared on first use.
pub struct PgConn {
    client: Client,
    statements: [OnceCell<Statement>; Query::COUNT],
    /// Set when a statement may still be running on the connection (a cut-off listing whose cancel got no answer):
    /// the pool then discards it instead of handing it to the next request.
    poisoned: AtomicBool,
    /// WARNINGs (SQLSTATE class 01) PostgreSQL has sent on this connection, counted by the task that drives it
    /// before it reads on: a statement's warnings are counted by the time its answer arrives.
    warnings: Arc<AtomicU64>,
}

impl PgConn {
    fn new(client: Client, warnings: Arc<AtomicU64>) -> Self {
        PgConn { client, statements: Default::default(), poisoned: AtomicBool::new(false), warnings }
    }

    /// The count of WARNINGs received on this connection so far (see [`PgConn::warnings`]), to compare before and
    /// after a statement.
    pub fn warnings(&self) -> u64 {
        self.warnings.load(Ordering::Acquire)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The statement for `query`, prepared on this connection the first time it is needed.
    pub async fn statement(&self, query: Query) -> Result<&Statement, tokio_postgres::Error> {
        self.statements[query as usize].get_or_try_init(|| self.client.prepare(query.sql())).await
    }

    pub fn cancel_token(&self) -> tokio_postgres::CancelToken {
        self.client.cancel_token()
    }

    pub fn is_usable(&self) -> bool {
        !self.client.is_closed() && !self.poisoned.load(Ordering::Acquire)
    }

    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }
}

/// How long a statement past its timeout waits for its cancel request to be sent, and then for its own answer.
pub const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Sends PostgreSQL a cancel request for the statement running on `token`'s connection, with the connections' TLS
/// settings (a server that accepts only TLS refuses a plain cancel request), within [`CANCEL_GRACE`]. The error
/// says why it was not sent.
pub async fn send_cancel(token: &tokio_postgres::CancelToken, tls: &Tls) -> Result<(), String> {
    match tokio::time::timeout(CANCEL_GRACE, token.cancel_query(tls.connector())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer within {}s", CANCEL_GRACE.as_secs())),
    }
}

/// What every new connection runs first.
#[derive(Clone)]
pub struct Session {
    /// PostgreSQL's own bound on a statement (`statement_timeout`): the service's timeout and cancel cover the
    /// usual case; this ends a statement even if the cancel request never reached the server, so a statement the
    /// client gave up on cannot live on and later commit, or hold a lock, in a connection the pool reuses.
    pub statement_timeout: Duration,
}

impl Session {
    /// For a service whose own bound on a query is `query_timeout` (`DATABASE_TIMEOUT_SECS`): PostgreSQL's bound
    /// lies past it and both cancel graces, so it only ends what the service's own cancel could not.
    pub fn for_query_timeout(query_timeout: Duration) -> Self {
        Session { statement_timeout: query_timeout + 2 * CANCEL_GRACE }
    }

    fn setup_sql(&self) -> String {
        format!("SET statement_timeout = {}", self.statement_timeout.as_millis())
    }
}

/// Opens one connection with the configured TLS settings and session settings. The connect timeout is the
/// configured one (`DATABASE_TIMEOUT_SECS`, set on `database`).
pub async fn open(database: &tokio_postgres::Config, tls: &Tls, session: &Session) -> Result<PgConn, ConnectFailure> {
    let (client, mut connection) = tls.connect(database).await?;
    let target = describe_database(database);
    let warnings = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&warnings);
    tokio::spawn(async move {
        // Driven message by message rather than as a plain future, which would only log the notices: a WARNING
        // can change what an answer means (the writer's "committed locally, not confirmed by the standbys").
        let mut messages = std::pin::pin!(futures_util::stream::poll_fn(|cx| connection.poll_message(cx)));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notice(notice)) => {
                    if class_of(notice.code()) == class::WARNING {
                        counted.fetch_add(1, Ordering::AcqRel);
                        log::warn!("PostgreSQL on {target}: {}", describe_notice(&notice));
                    } else {
                        log::debug!("PostgreSQL on {target}: {}", describe_notice(&notice));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    log::debug!("connection to {target} ended: {}", describe(&e));
                    return;
                }
            }
        }
    });
    client.batch_execute(&session.setup_sql()).await.map_err(|e| ConnectFailure {
        message: format!("setting up the session failed: {}", describe(&e)),
        permanent: false,
    })?;
    Ok(PgConn::new(client, warnings))
}

/// The pool's connection factory.
pub struct Manager {
    database: tokio_postgres::Config,
    tls: Tls,
    session: Session,
    /// How long one check-out may spend connecting (`DATABASE_TIMEOUT_SECS`).
    patience: Duration,
    failures: Arc<Failures>,
}

impl bb8::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnectFailure;

    /// Retries every [`RECONNECT_PAUSE`] for up to the connection timeout, so a request that arrived during an
    /// outage is served as soon as PostgreSQL accepts again.
    async fn connect(&self) -> Result<PgConn, ConnectFailure> {
        let started = Instant::now();
        loop {
            match open(&self.database, &self.tls, &self.session).await {
                Ok(conn) => {
                    self.failures.clear();
                    return Ok(conn);
                }
                Err(e) => {
                    self.failures.record(&e.message);
                    if e.permanent || started.elapsed() + RECONNECT_PAUSE >= self.patience {
                        return Err(e);
                    }
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
        }
    }

    /// No round trip: a connection whose socket closed (PostgreSQL restarted, an idle timeout) is known to be
    /// closed already, and one that breaks mid-query fails that request with a 503 and is discarded.
    async fn is_valid(&self, conn: &mut PgConn) -> Result<(), ConnectFailure> {
        if conn.is_usable() {
            Ok(())
        } else {
            Err(ConnectFailure { message: "pooled connection was closed".into(), permanent: false })
        }
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        !conn.is_usable()
    }
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
        match connect_for_migrations(&config.database, &config.tls).await {
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

async fn connect_for_migrations(
    database: &tokio_postgres::Config,
    tls: &Tls,
) -> Result<AsyncPgConnection, ConnectFailure> {
    let (client, connection) = tls.connect(database).await?;
    AsyncPgConnection::try_from_client_and_connection(client, connection)
        .await
        .map_err(|e| ConnectFailure { message: e.to_string(), permanent: false })
}

pub async fn build_pool(config: &Config, session: Session) -> Result<DbPool, String> {
    let failures = Arc::new(Failures::default());
    let manager = Manager {
        database: config.database.clone(),
        tls: config.tls.clone(),
        session,
        patience: config.database_timeout,
        failures: Arc::clone(&failures),
    };
    let pool = bb8::Pool::builder()
        .max_size(config.pool_size)
        .connection_timeout(config.database_timeout)
        // Manager::connect retries on its own, at a short fixed pause.
        .retry_connection(false)
        .build(manager)
        .await
        .map_err(|e| format!("could not create the connection pool: {e:?}"))?;
    Ok(DbPool { pool, failures, timeout: config.database_timeout })
}

/// Runs one database call for `action` under `timeout` (`DATABASE_TIMEOUT_SECS`): PostgreSQL's error becomes the
/// answer [`sqlstate::query_error`] chooses, and no answer in time a 503 that says so, counted as a time-out.
pub async fn bounded<T>(
    timeout: Duration,
    action: &str,
    query: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(timeout, query).await {
        Ok(result) => result.map_err(|e| sqlstate::query_error(action, &e)),
        Err(_) => {
            metrics::database_error(DbErrorKind::Timeout);
            log::warn!("{action}: no answer from the database within {timeout:?}");
            Err(ApiError::no_answer(action, timeout))
        }
    }
}

/// A connection for one request, or the 503 that says why there is none.
pub async fn checkout(pool: &DbPool) -> Result<DbConn, ApiError> {
    let waiting = metrics::Waiting::start();
    let conn = pool.pool.get_owned().await;
    drop(waiting);
    conn.map_err(|e| {
        let failed = match e {
            bb8::RunError::TimedOut => pool.failures.recent(pool.timeout),
            bb8::RunError::User(e) => Some(e.message),
        };
        match failed {
            Some(message) => {
                metrics::database_error(DbErrorKind::Unavailable);
                ApiError::unavailable(format!("cannot connect to the database: {message}"))
            }
            None => {
                metrics::database_error(DbErrorKind::Timeout);
                ApiError::unavailable(
                    "no database connection became available in time; PostgreSQL may be down or overloaded",
                )
            }
        }
    })
}
