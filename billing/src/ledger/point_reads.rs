//! Point reads that arrive together are read together: one `WHERE id = ANY($1)` for every `GET /get/<id>` queued.
//!
//! A request queues its id and waits. A reader task takes whatever is queued (never waiting for more: at one
//! request at a time a batch is that one id) and reads it with one statement ([`Query::FindMany`]) on a shared
//! connection (db/read_connections.rs), then hands each request its row. Two readers share each connection, so a
//! second batch can queue behind the one being read. Under load the next batch forms while one is being read, so a
//! busy process sends PostgreSQL one statement per batch instead of one per request, which cuts PostgreSQL's CPU
//! per read and billing's own sends to it (docs/benchmarks.md, "Point reads that arrive together are read
//! together").
//!
//! A read has no side effect, so a request that stops waiting (its timeout, its client gone) simply drops its
//! answer. A batch that fails answers each of its requests with the same error; one that gets no answer within
//! `DATABASE_TIMEOUT_SECS` answers 503 and retires its connection, so the reads after it do not queue behind a
//! statement that may still be running there (PostgreSQL's `statement_timeout` ends it).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::db::read_connections::ReadConnections;
use crate::db::sqlstate;
use crate::error::ApiError;
use crate::metrics::{self, DbErrorKind};
use crate::models::Transaction;

/// Most ids in one statement: far more than a process has requests in flight, and an 8 KiB parameter at most.
pub const MAX_BATCH: usize = 1024;

/// Two batches in flight on each shared connection: the next batch is already in PostgreSQL's socket when the one
/// before it finishes, so its backend does not sit idle for a round trip through billing between batches. Two
/// measured faster than one and no slower than four (docs/benchmarks.md, "Two batches in flight on each shared
/// connection").
const READERS_PER_CONNECTION: usize = 2;

/// The action named in a failed read's message.
const ACTION: &str = "reading transactions";

type Answer = Result<Option<Transaction>, ApiError>;

struct Lookup {
    id: i64,
    reply: oneshot::Sender<Answer>,
}

/// The queue of point reads; cloning shares it.
#[derive(Clone)]
pub struct PointReads {
    queue: mpsc::UnboundedSender<Lookup>,
    query_timeout: Duration,
}

impl PointReads {
    /// [`READERS_PER_CONNECTION`] reader tasks per shared connection, each with at most one batch in flight.
    pub fn start(connections: Arc<ReadConnections>, query_timeout: Duration) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..connections.count() * READERS_PER_CONNECTION {
            let (receiver, connections) = (Arc::clone(&receiver), Arc::clone(&connections));
            tokio::spawn(async move { run(&connections, &receiver, query_timeout).await });
        }
        PointReads { queue, query_timeout }
    }

    /// The transaction with `id`, `None` if there is none. Waits at most `DATABASE_TIMEOUT_SECS` in all.
    pub async fn find(&self, id: i64) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Lookup { id, reply }).map_err(|_| ApiError::unavailable("billing is stopping"))?;
        match tokio::time::timeout(self.query_timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ApiError::internal("the point reader ended without an answer")),
            Err(_) => {
                metrics::database_error(DbErrorKind::Timeout);
                Err(ApiError::no_answer(&format!("reading transaction {id}"), self.query_timeout))
            }
        }
    }
}

/// Takes batches off the queue and reads them. The writer (ledger/writer.rs) gathers its batches the same way
/// ("whatever is queued, never waiting for more") but not with the same loop, so there is no shared primitive: a
/// lookup whose request gave up may be gathered and dropped afterwards (reading it harms nothing), while a payment
/// must be claimed as it leaves the queue; and this loop yields once so that requests being parsed on this worker
/// join the batch, which was measured for reads only (docs/benchmarks.md). Each keeps its own `MAX_BATCH`, sized by
/// its own statement's parameters.
async fn run(
    connections: &ReadConnections,
    receiver: &Mutex<mpsc::UnboundedReceiver<Lookup>>,
    query_timeout: Duration,
) {
    let mut batch = Vec::with_capacity(64);
    loop {
        {
            let mut receiver = receiver.lock().await;
            // Waits for one id, and takes whatever else is queued with it.
            if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
            // Requests already being parsed on this worker queue their ids next; with nothing else to run this
            // returns at once, so a lone read does not wait.
            tokio::task::yield_now().await;
            // What they queued, and no more: a batch never waits to fill (with nothing queued, `recv_many` would).
            if !receiver.is_empty() {
                let room = MAX_BATCH - batch.len();
                receiver.recv_many(&mut batch, room).await;
            }
        }
        // Requests that gave up while queued need no read.
        batch.retain(|lookup| !lookup.reply.is_closed());
        if !batch.is_empty() {
            read(connections, &mut batch, query_timeout).await;
        }
        batch.clear();
    }
}

async fn read(connections: &ReadConnections, batch: &mut Vec<Lookup>, query_timeout: Duration) {
    metrics::read_batch(batch.len());
    let shared = match connections.get().await {
        Ok(shared) => shared,
        Err(e) => return answer_all(batch, &e),
    };
    let ids: Vec<i64> = batch.iter().map(|lookup| lookup.id).collect();
    let mut rows = match tokio::time::timeout(query_timeout, shared.conn().find_many(&ids)).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return answer_all(batch, &sqlstate::query_error(ACTION, &e)),
        Err(_) => {
            // The statement may still run on this connection, and every read pipelined behind it would wait.
            shared.conn().poison();
            metrics::database_error(DbErrorKind::Timeout);
            log::warn!("{ACTION}: no answer from the database within {query_timeout:?}; opening a new connection");
            return answer_all(batch, &ApiError::no_answer(ACTION, query_timeout));
        }
    };
    rows.sort_unstable_by_key(|t| t.id);
    for lookup in batch.drain(..) {
        let found = rows.binary_search_by_key(&lookup.id, |t| t.id).ok().map(|i| rows[i].clone());
        let _ = lookup.reply.send(Ok(found));
    }
}

fn answer_all(batch: &mut Vec<Lookup>, error: &ApiError) {
    for lookup in batch.drain(..) {
        let _ = lookup.reply.send(Err(error.clone()));
    }
}
