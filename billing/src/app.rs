//! State shared by every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::tls::Tls;
use crate::config::{Config, ListingLimits};
use crate::db::read_connections::{ReadConnections, Shared};
use crate::db::{self, DbConn, DbPool, PgConn};
use crate::error::ApiError;
use crate::ledger::point_reads::PointReads;
use crate::ledger::txlog::TxLog;
use crate::ledger::writer::{Batches, Writer};
use crate::models::{NewTransaction, Recorded, Transaction};

/// A handle on the shared state: cloning it is one reference count. The router clones it for every request, and
/// each handle's count is a cache line the cores pass back and forth, so the state is one count rather than a dozen
/// handles cloned one by one (docs/benchmarks.md, "`App` is one `Arc`").
#[derive(Clone)]
pub struct App(Arc<State>);

impl std::ops::Deref for App {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}

pub struct State {
    pub pool: DbPool,
    /// Shared, pipelined connections for point reads; `None` when `DATABASE_READ_CONNECTIONS` is 0.
    pub reads: Option<Arc<ReadConnections>>,
    /// Batches `GET /get/<id>` reads on those connections (ledger/point_reads.rs); `None` with them.
    point_reads: Option<PointReads>,
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
    /// `IDEMPOTENCY_KEY_REQUIRED`: `POST /add` without an `Idempotency-Key` is refused.
    pub idempotency_key_required: bool,
    /// The queue of payments for the group-commit writer.
    writer: Writer,
    /// Set once the database answered and the migrations ran; until then data endpoints answer 503.
    started: AtomicBool,
    /// Set at SIGTERM: `/readyz` answers 503 so that endpoints drop the pod, while requests are still served.
    stopping: AtomicBool,
}

impl App {
    pub fn new(
        pool: DbPool,
        reads: Option<ReadConnections>,
        txlog: Option<TxLog>,
        config: &Config,
        writers: usize,
    ) -> Self {
        let (query_timeout, body_timeout) = (config.database_timeout, config.limits.body_read_timeout);
        let (tls, listings) = (config.tls.clone(), Listings::new(config.listings.clone()));
        let (started, stopping) = (AtomicBool::new(false), AtomicBool::new(false));
        let idempotency_key_required = config.idempotency_key_required;
        let batches = Batches { pool: pool.clone(), tls: tls.clone(), query_timeout, txlog: txlog.clone() };
        let writer = Writer::start(batches, writers);
        let reads = reads.map(Arc::new);
        let point_reads = reads.as_ref().map(|reads| PointReads::start(Arc::clone(reads), query_timeout));
        App(Arc::new(State {
            pool,
            reads,
            point_reads,
            txlog,
            query_timeout,
            body_timeout,
            tls,
            listings,
            idempotency_key_required,
            writer,
            started,
            stopping,
        }))
    }

    pub fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
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

    /// The transaction with `id`, `None` if there is none: batched with the point reads that arrive with it, or on
    /// a pooled connection when sharing is off (`DATABASE_READ_CONNECTIONS=0`).
    pub async fn find(&self, id: i64) -> Result<Option<Transaction>, ApiError> {
        self.ensure_started()?;
        match &self.point_reads {
            Some(reads) => reads.find(id).await,
            None => {
                let conn = db::checkout(&self.pool).await?;
                self.bounded(&format!("reading transaction {id}"), conn.find(id)).await
            }
        }
    }

    fn ensure_started(&self) -> Result<(), ApiError> {
        if self.started.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ApiError::unavailable("billing is starting: it is waiting for the database and applying migrations"))
        }
    }

    /// Records one payment through the group-commit writer (ledger/writer.rs), then writes its transaction-log line;
    /// a replay of a payment an earlier request with the same `Idempotency-Key` recorded writes nothing.
    pub async fn record_payment(&self, new: NewTransaction) -> Result<Recorded, ApiError> {
        self.ensure_started()?;
        let recorded = self.writer.record(new).await?;
        if let Some(txlog) = self.txlog.as_ref().filter(|_| !recorded.replayed) {
            txlog.append(&recorded.transaction).await;
        }
        Ok(recorded)
    }

    /// Runs one database call under [`App::query_timeout`].
    pub async fn bounded<T>(
        &self,
        action: &str,
        query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, ApiError> {
        db::bounded(self.query_timeout, action, query).await
    }
}

/// The permits for [`ListingLimits::max_concurrent`], shared by every request.
#[derive(Clone)]
pub struct Listings {
    pub permits: Arc<Semaphore>,
    pub limits: ListingLimits,
}

impl Listings {
    pub fn new(limits: ListingLimits) -> Self {
        Listings { permits: Arc::new(Semaphore::new(limits.max_concurrent)), limits }
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
