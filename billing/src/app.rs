//! State shared by every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::db::{self, DbConn, DbPool, PgConn};
use crate::error::ApiError;
use crate::getall::Listings;
use crate::ledger::WriteError;
use crate::metrics::{self, DbErrorKind};
use crate::models::{NewTransaction, Transaction};
use crate::pipeline::{Pipelines, Shared};
use crate::tls::Tls;
use crate::txlog::TxLog;

/// How long a timed-out write waits for its cancel request to be sent, and then for the statement's answer.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// How long a write whose client was told "outcome unknown" is still awaited, so that if it commits after all its
/// transaction-log line is written. PostgreSQL's own `statement_timeout` ends it well before this.
const LATE_WRITE_WAIT: Duration = Duration::from_secs(60);

/// PostgreSQL's answer to a cancelled statement: SQLSTATE 57014, an ERROR, so the statement did not commit.
fn is_cancelled(err: &WriteError) -> bool {
    !err.maybe_committed
        && err.error.as_ref().and_then(tokio_postgres::Error::code)
            == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
}

#[derive(Clone)]
pub struct App {
    pub pool: DbPool,
    /// Shared, pipelined connections for point reads; `None` when `DATABASE_READ_CONNECTIONS` is 0.
    pub reads: Option<Arc<Pipelines>>,
    pub txlog: Option<TxLog>,
    /// Bound on any single query, so a database that stops answering yields a 503 instead of a hung request.
    pub query_timeout: Duration,
    /// Bound on receiving a request body (`BODY_READ_TIMEOUT_SECS`), so a client that stops sending mid-body is
    /// answered 408 instead of holding its request open.
    pub body_timeout: Duration,
    /// The connections' TLS settings, which cancel requests must use too: a server that accepts only TLS
    /// connections refuses a plain cancel request.
    tls: Tls,
    /// What `/getall` may take from the pool.
    pub listings: Listings,
    /// Set once the database answered and the migrations ran; until then data endpoints answer 503.
    started: Arc<AtomicBool>,
    /// Set at SIGTERM: `/readyz` answers 503 so that endpoints drop the pod, while requests are still served.
    stopping: Arc<AtomicBool>,
}

impl App {
    pub fn new(
        pool: DbPool,
        reads: Option<Pipelines>,
        txlog: Option<TxLog>,
        query_timeout: Duration,
        body_timeout: Duration,
        tls: Tls,
        listings: Listings,
    ) -> Self {
        let started = Arc::new(AtomicBool::new(false));
        let stopping = Arc::new(AtomicBool::new(false));
        App { pool, reads: reads.map(Arc::new), txlog, query_timeout, body_timeout, tls, listings, started, stopping }
    }

    pub fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// PostgreSQL's own bound on each statement (see [`db::Session`]): past the service's timeout and both cancel
    /// graces, so it only ends what the service's own cancel could not.
    pub fn statement_timeout(query_timeout: Duration) -> Duration {
        query_timeout + 2 * CANCEL_GRACE
    }

    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// A pooled connection for a request, or the 503 that explains why there is none.
    pub async fn connection(&self) -> Result<DbConn, ApiError> {
        self.ensure_started()?;
        db::checkout(&self.pool).await
    }

    /// A connection for one single-statement read: a shared, pipelined one, or a pooled one when sharing is off.
    pub async fn reader(&self) -> Result<Reader, ApiError> {
        self.ensure_started()?;
        match &self.reads {
            Some(reads) => reads.get().await.map(Reader::Shared),
            None => db::checkout(&self.pool).await.map(|conn| Reader::Pooled(Box::new(conn))),
        }
    }

    fn ensure_started(&self) -> Result<(), ApiError> {
        if self.started.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ApiError::unavailable("billing is starting: it is waiting for the database and applying migrations"))
        }
    }

    /// Records one payment under [`App::query_timeout`], on a pooled connection nothing else uses meanwhile, and
    /// writes its transaction-log line.
    ///
    /// Past the timeout the statement is not abandoned but cancelled: an abandoned INSERT stuck behind a lock would
    /// still commit when the lock goes, after the client was told it failed, and a retry would record the payment
    /// twice. The statement's own answer then says what happened, so the client is told either that nothing was
    /// recorded or (if it committed just before the cancel) that it was. If not even the cancel gets an answer, the
    /// client is told the outcome is unknown, and the statement is still awaited in the background: if it commits
    /// after all, its log line is written then.
    pub async fn record_payment(&self, new: NewTransaction) -> Result<Transaction, ApiError> {
        const ACTION: &str = "adding a transaction";
        let conn = self.connection().await?;
        let cancel = conn.cancel_token();
        let mut write = Box::pin(async move {
            let result = conn.insert(&new).await;
            drop(conn);
            result
        });
        let created = match tokio::time::timeout(self.query_timeout, &mut write).await {
            Ok(result) => result.map_err(|e| ApiError::from_write(ACTION, &e))?,
            Err(_) => self.cancel_write(ACTION, cancel, write).await?,
        };
        if let Some(txlog) = &self.txlog {
            txlog.append(&created).await;
        }
        Ok(created)
    }

    async fn cancel_write(
        &self,
        action: &str,
        cancel: tokio_postgres::CancelToken,
        mut write: std::pin::Pin<Box<impl Future<Output = Result<Transaction, WriteError>> + Send + 'static>>,
    ) -> Result<Transaction, ApiError> {
        let waited = self.query_timeout.as_secs();
        log::warn!("{action}: no answer from the database within {waited}s; cancelling the statement");
        match tokio::time::timeout(CANCEL_GRACE, cancel.cancel_query(self.tls.connector())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("{action}: could not send the cancel request: {}", db::describe(&e)),
            Err(_) => log::warn!("{action}: could not send the cancel request within {}s", CANCEL_GRACE.as_secs()),
        }
        match tokio::time::timeout(CANCEL_GRACE, &mut write).await {
            Ok(Ok(created)) => Ok(created),
            Ok(Err(e)) if is_cancelled(&e) => {
                metrics::database_error(DbErrorKind::Cancelled);
                Err(ApiError::unavailable(format!(
                    "the database did not answer within {waited}s while {action}; the statement was cancelled, so \
                     nothing was recorded: it is safe to retry"
                )))
            }
            Ok(Err(e)) => Err(ApiError::from_write(action, &e)),
            Err(_) => {
                metrics::database_error(DbErrorKind::OutcomeUnknown);
                let txlog = self.txlog.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(LATE_WRITE_WAIT, write).await {
                        Ok(Ok(created)) => {
                            log::warn!(
                                "transaction {} committed after its client was told the outcome was unknown",
                                created.id
                            );
                            if let Some(txlog) = txlog {
                                txlog.append(&created).await;
                            }
                        }
                        Ok(Err(e)) => log::info!(
                            "a write whose client was told the outcome was unknown did not commit: {}",
                            e.error.as_ref().map_or_else(|| "no row".to_string(), db::describe)
                        ),
                        Err(_) => log::warn!(
                            "a write whose client was told the outcome was unknown got no answer in {}s; its outcome \
                             stays unknown (GET /getall shows whether it was recorded)",
                            LATE_WRITE_WAIT.as_secs()
                        ),
                    }
                });
                Err(ApiError::unavailable(format!(
                    "the database did not answer within {waited}s while {action}, nor to a cancel request; the \
                     payment may or may not be recorded: check before retrying"
                )))
            }
        }
    }

    /// Runs one database call under [`App::query_timeout`].
    pub async fn bounded<T>(
        &self,
        action: &str,
        query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.query_timeout, query).await {
            Ok(result) => result.map_err(|e| ApiError::from_query(action, &e)),
            Err(_) => {
                metrics::database_error(DbErrorKind::Timeout);
                log::warn!("{action}: no answer from the database within {:?}", self.query_timeout);
                Err(ApiError::unavailable(format!(
                    "the database did not answer within {}s while {action}",
                    self.query_timeout.as_secs()
                )))
            }
        }
    }
}

/// Where a point read runs; see [`App::reader`].
pub enum Reader {
    Shared(Shared),
    /// Boxed: a pooled connection is hundreds of bytes, and this is only the fallback.
    Pooled(Box<DbConn>),
}

impl Reader {
    /// The connection to query; a shared one pipelines the queries of concurrent requests.
    pub fn conn(&self) -> &PgConn {
        match self {
            Reader::Shared(shared) => shared.conn(),
            Reader::Pooled(conn) => conn,
        }
    }
}
