//! A few connections shared by every point read (`GET /get/<id>`), instead of one pooled connection per request.
//!
//! tokio-postgres pipelines the queries that concurrent requests issue on one connection: it writes whatever is
//! queued in one go and hands the answers back in order. A read then costs no pool check-out, and the socket reads
//! and writes on both sides are shared by all the queries in flight, which on a small machine is most of what a
//! point read costs. Only single-statement reads outside any transaction belong here: queries on one connection run
//! one after the other, so a long one (`/getall`) would hold up every read queued behind it, and a write's commit
//! would make them wait for its WAL flush. Those keep exclusive connections from the pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::database::describe_database;
use crate::config::tls::Tls;
use crate::db::{self, PgConn, Session};
use crate::error::ApiError;
use crate::metrics::{self, DbErrorKind};

/// One shared connection. Cloning is cheap; the connection closes when the last clone is dropped.
#[derive(Clone)]
pub struct Shared {
    conn: Arc<PgConn>,
}

impl Shared {
    pub fn conn(&self) -> &PgConn {
        &self.conn
    }

    fn is_open(&self) -> bool {
        self.conn.is_usable()
    }
}

struct Slot {
    current: Mutex<Option<Shared>>,
    /// Held while (re)connecting, so that requests arriving meanwhile wait for that attempt instead of each opening
    /// a connection of their own.
    reconnecting: tokio::sync::Mutex<Option<Failure>>,
}

#[derive(Clone)]
struct Failure {
    at: Instant,
    message: String,
}

impl Slot {
    fn live(&self) -> Option<Shared> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().filter(|shared| shared.is_open()).cloned()
    }

    fn set(&self, shared: Option<Shared>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = shared;
    }
}

pub struct ReadConnections {
    slots: Box<[Slot]>,
    next: AtomicUsize,
    database: tokio_postgres::Config,
    tls: Tls,
    session: Session,
    connect_timeout: Duration,
}

impl ReadConnections {
    /// `count` shared connections, opened on first use and re-opened when they close.
    pub fn new(
        count: usize,
        database: tokio_postgres::Config,
        tls: Tls,
        session: Session,
        connect_timeout: Duration,
    ) -> Self {
        let slots = (0..count.max(1))
            .map(|_| Slot { current: Mutex::new(None), reconnecting: tokio::sync::Mutex::new(None) })
            .collect();
        ReadConnections { slots, next: AtomicUsize::new(0), database, tls, session, connect_timeout }
    }

    /// How many shared connections there are (at least one).
    pub fn count(&self) -> usize {
        self.slots.len()
    }

    /// The next shared connection in turn, or the 503 that says why there is none.
    pub async fn get(&self) -> Result<Shared, ApiError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        if let Some(shared) = slot.live() {
            return Ok(shared);
        }
        let asked = Instant::now();
        let mut last_failure = slot.reconnecting.lock().await;
        if let Some(shared) = slot.live() {
            return Ok(shared);
        }
        // An attempt that failed while this request waited is its answer too: with the database down, requests
        // queued on a slot fail together instead of each spending a connect timeout in turn.
        if let Some(failure) = last_failure.as_ref().filter(|f| f.at >= asked) {
            metrics::database_error(DbErrorKind::Unavailable);
            return Err(ApiError::unavailable(failure.message.clone()));
        }
        match tokio::time::timeout(self.connect_timeout, db::open(&self.database, &self.tls, &self.session)).await {
            Ok(Ok(conn)) => {
                let shared = Shared { conn: Arc::new(conn) };
                slot.set(Some(shared.clone()));
                *last_failure = None;
                Ok(shared)
            }
            outcome => {
                let message = match outcome {
                    Ok(Err(e)) => format!("cannot connect to the database: {e}"),
                    _ => format!(
                        "cannot connect to the database: no answer from {} within {}s",
                        describe_database(&self.database),
                        self.connect_timeout.as_secs()
                    ),
                };
                slot.set(None);
                metrics::database_error(DbErrorKind::Unavailable);
                *last_failure = Some(Failure { at: Instant::now(), message: message.clone() });
                Err(ApiError::unavailable(message))
            }
        }
    }
}
