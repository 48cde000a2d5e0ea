//! State shared by every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::db::{self, DbConn, DbPool};
use crate::error::ApiError;
use crate::metrics::{self, DbErrorKind};
use crate::pipeline::{Pipelines, Shared};
use crate::tls::Tls;
use crate::txlog::TxLog;

/// How long a timed-out write waits for its cancel request to be sent, and then for the statement's answer.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// PostgreSQL's answer to a cancelled statement (SQLSTATE 57014, which diesel reports without its code).
fn is_cancelled(err: &diesel::result::Error) -> bool {
    matches!(err, diesel::result::Error::DatabaseError(_, info)
        if info.message().starts_with("canceling statement due to user request"))
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
    /// Set once the database answered and the migrations ran; until then data endpoints answer 503.
    started: Arc<AtomicBool>,
}

impl App {
    pub fn new(
        pool: DbPool,
        reads: Option<Pipelines>,
        txlog: Option<TxLog>,
        query_timeout: Duration,
        body_timeout: Duration,
        tls: Tls,
    ) -> Self {
        let started = Arc::new(AtomicBool::new(false));
        App { pool, reads: reads.map(Arc::new), txlog, query_timeout, body_timeout, tls, started }
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

    /// Runs one write under [`App::query_timeout`], on a connection nothing else uses meanwhile (a pooled one, whose
    /// `cancel` token this is). Past the timeout the statement is not abandoned but cancelled: an abandoned INSERT
    /// stuck behind a lock would still commit when the lock goes, after the client was told it failed, and a retry
    /// would record the payment twice. The statement's own answer then says what happened, so the client is told
    /// either that nothing was recorded or (if it committed just before the cancel) that it was.
    pub async fn bounded_write<T>(
        &self,
        action: &str,
        cancel: tokio_postgres::CancelToken,
        query: impl Future<Output = Result<T, diesel::result::Error>>,
    ) -> Result<T, ApiError> {
        let mut query = std::pin::pin!(query);
        if let Ok(result) = tokio::time::timeout(self.query_timeout, &mut query).await {
            return result.map_err(|e| ApiError::from_write(action, &e));
        }
        let waited = self.query_timeout.as_secs();
        log::warn!("{action}: no answer from the database within {waited}s; cancelling the statement");
        match tokio::time::timeout(CANCEL_GRACE, cancel.cancel_query(self.tls.connector())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("{action}: could not send the cancel request: {e}"),
            Err(_) => log::warn!("{action}: could not send the cancel request within {}s", CANCEL_GRACE.as_secs()),
        }
        match tokio::time::timeout(CANCEL_GRACE, &mut query).await {
            Ok(Ok(value)) => Ok(value),
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
                Err(ApiError::unavailable(format!(
                    "the database did not answer within {waited}s while {action}, nor to a cancel request; the \
                     write may or may not be recorded: check before retrying"
                )))
            }
        }
    }

    /// Runs one database call under [`App::query_timeout`].
    pub async fn bounded<T>(
        &self,
        action: &str,
        query: impl Future<Output = Result<T, diesel::result::Error>>,
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
    /// The connection to query, as diesel-async's pipelining needs it: a shared reference.
    pub fn conn(&self) -> &diesel_async::AsyncPgConnection {
        match self {
            Reader::Shared(shared) => shared.conn(),
            Reader::Pooled(conn) => conn,
        }
    }
}
