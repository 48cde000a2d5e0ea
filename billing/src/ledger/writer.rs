//! Group commit: payments that arrive together are written together, and batches commit in id order across every
//! billing process writing to the database.
//!
//! A request queues its payment and waits. A writer task takes whatever is queued (never waiting for more: at one
//! request at a time a batch is that one request) and writes it with one statement ([`Query::InsertBatch`]): a
//! multi-row INSERT that first takes a transaction-scoped advisory lock. One statement is one round trip and one
//! WAL flush for the whole batch, which is what lets `/add` pass PostgreSQL's own one-row-per-statement rate. The
//! lock is taken before the INSERT draws its ids from the sequence and held until the commit is durable, so batches
//! from every process commit one after another, in id order: when a batch's rows become visible, every lower id is
//! committed already, and a reader following `GET /getall?after_id=<last id seen>` never skips a payment. (Ids drawn
//! outside such a lock, as concurrent single-row INSERTs draw them, commit out of order: id 10 can become visible
//! after id 11 was read and paged past.)
//!
//! What each request is told:
//! - the batch committed: 201 with its own row;
//! - PostgreSQL answered with an error (a cancel after `DATABASE_TIMEOUT_SECS`, a shutdown, a read-only server): it
//!   rolled the whole batch back, so each request is told nothing was recorded;
//! - the database's constraints refuse a row: the batch is written again one row at a time, so that row alone fails
//!   and its neighbours are recorded;
//! - the connection failed after the statement was sent and before PostgreSQL's answer, or neither the statement
//!   nor its cancel was answered: the outcome is unknown, and each request is told so;
//! - PostgreSQL committed but sent a WARNING: synchronous replication's wait for the standbys was cancelled, so the
//!   rows may be on the primary alone. The outcome is unknown (a failover could lose them), and each request is told
//!   so; the rows being committed, their log lines are written;
//! - a payment that waited in the queue for `DATABASE_TIMEOUT_SECS` without being taken into a batch: nothing was
//!   recorded, and it is then never written.
//!
//! Idempotency keys: a payment sent with an `Idempotency-Key` is stored with its key, in the same row, and the
//! ledger's unique index on the key makes a second row with it impossible, whichever process writes it. A keyed
//! batch that meets a stored key is written again skipping the rows whose key is stored
//! ([`Query::InsertKeyedBatchSkippingKnown`]), and the stored payments are read back: the same `client_id` and `amount` is a replay, answered with the stored row and nothing written;
//! another is refused (422). A key whose first payment is still being written is waited for, never refused or
//! written twice: the first payment's batch holds the batch lock until its commit, so the second batch's INSERT
//! meets the key only once it is committed, and replays it. Two requests with one key in one batch make one row:
//! the second rides on the first's answer. Requests told "nothing was recorded" or refused store no key, so their
//! retries run afresh.
//!
//! [`Query::InsertKeyedBatchSkippingKnown`]: crate::db::sql::Query::InsertKeyedBatchSkippingKnown

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::error::SqlState;

use crate::config::tls::Tls;
use crate::db::connect::describe;
use crate::db::sqlstate::{class, class_of};
use crate::db::statements::WriteError;
use crate::db::{self, DbPool};
use crate::error::{ApiError, UNKNOWN_OUTCOME_ADVICE};
use crate::ledger::txlog::TxLog;
use crate::metrics::{self, DbErrorKind};
use crate::models::{NewTransaction, Recorded, Transaction};

/// Most payments in one batch: more than a busy process has in flight, few enough that a batch's statement stays
/// around 100 KiB.
pub const MAX_BATCH: usize = 1024;

/// How long a batch whose requests were told "outcome unknown" is still awaited, so that if it commits after all
/// its transaction-log lines are written. PostgreSQL's own `statement_timeout` ends it well before this.
const LATE_WRITE_WAIT: Duration = Duration::from_secs(60);

const ACTION: &str = "adding a transaction";

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// One payment waiting for its batch.
struct Pending {
    new: NewTransaction,
    reply: oneshot::Sender<Result<Recorded, ApiError>>,
    /// QUEUED until a writer takes it into a batch (TAKEN) or its request stops waiting (ABANDONED). Exactly one of
    /// the two happens, so a payment whose client was told it was not recorded is never written.
    state: Arc<AtomicU8>,
}

/// The queue of payments; cloning shares it.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::UnboundedSender<Pending>,
    query_timeout: Duration,
}

/// What the writer tasks need; they hold no [`crate::app::App`], so nothing keeps the queue open but the requests.
pub struct Batches {
    pub pool: DbPool,
    pub tls: Tls,
    pub query_timeout: Duration,
    pub txlog: Option<TxLog>,
}

impl Writer {
    /// Starts `writers` tasks writing batches, each on one pooled connection at a time.
    pub fn start(batches: Batches, writers: usize) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let query_timeout = batches.query_timeout;
        let (receiver, batches) = (Arc::new(Mutex::new(receiver)), Arc::new(batches));
        for _ in 0..writers.max(1) {
            let (receiver, batches) = (Arc::clone(&receiver), Arc::clone(&batches));
            tokio::spawn(async move { batches.run(receiver).await });
        }
        Writer { queue, query_timeout }
    }

    /// Queues `new` and waits for its batch. The wait in the queue is bounded by `DATABASE_TIMEOUT_SECS`; once in a
    /// batch, the batch's own bounds apply (its timeout, its cancel and their grace), so an answer always comes.
    pub async fn record(&self, new: NewTransaction) -> Result<Recorded, ApiError> {
        let (reply, mut answer) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        self.queue
            .send(Pending { new, reply, state: Arc::clone(&state) })
            .map_err(|_| ApiError::unavailable("billing is stopping; nothing was recorded: it is safe to retry"))?;
        if let Ok(answered) = tokio::time::timeout(self.query_timeout, &mut answer).await {
            return answered.unwrap_or_else(|_| Err(lost_writer()));
        }
        if state.compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            metrics::database_error(DbErrorKind::Timeout);
            return Err(ApiError::unavailable(format!(
                "the payment waited {}s for the database and was never sent to it; nothing was recorded: it is safe \
                 to retry",
                self.query_timeout.as_secs()
            )));
        }
        // Taken into a batch just as the wait ended: its batch answers.
        answer.await.unwrap_or_else(|_| Err(lost_writer()))
    }
}

fn lost_writer() -> ApiError {
    ApiError::internal(format!(
        "the payment's writer ended without an answer; the payment may or may not be recorded: {UNKNOWN_OUTCOME_ADVICE}"
    ))
}

impl Batches {
    /// Takes batches off the queue and writes them. Not the point reader's loop (ledger/point_reads.rs says why):
    /// each payment is claimed (QUEUED -> TAKEN) as it leaves the queue, under the queue's lock, so that one whose
    /// request stopped waiting is never written.
    async fn run(&self, receiver: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>) {
        loop {
            let batch = {
                let mut receiver = receiver.lock().await;
                let Some(first) = receiver.recv().await else { return };
                let mut batch = Vec::with_capacity(8);
                take(&mut batch, first);
                // Whatever else is queued now, and no more: a batch never waits to fill.
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(next) => take(&mut batch, next),
                        Err(_) => break,
                    }
                }
                batch
            };
            if !batch.is_empty() {
                self.write(batch).await;
            }
        }
    }

    async fn write(&self, batch: Vec<Pending>) {
        metrics::write_batch(batch.len());
        // A request repeating the key of an earlier one in this batch is not written: it gets that one's answer.
        // For each request, the index among the written rows of the one whose key it repeats.
        let mut firsts: HashMap<&str, usize> = HashMap::new();
        let mut written = 0;
        let repeat_of: Vec<Option<usize>> = batch
            .iter()
            .map(|pending| {
                let first = pending.new.idempotency_key.as_deref().and_then(|key| match firsts.entry(key) {
                    Entry::Occupied(first) => Some(*first.get()),
                    Entry::Vacant(slot) => {
                        slot.insert(written);
                        None
                    }
                });
                written += usize::from(first.is_none());
                first
            })
            .collect();
        let (mut rows, mut replies) = (Vec::with_capacity(written), Vec::with_capacity(written));
        let mut repeats: Vec<(usize, Pending)> = Vec::new();
        for (pending, first) in batch.into_iter().zip(repeat_of) {
            match first {
                Some(first) => repeats.push((first, pending)),
                None => {
                    rows.push(pending.new);
                    replies.push(pending.reply);
                }
            }
        }
        let answers = self.answers(rows.into()).await;
        for (first, pending) in repeats {
            let answer = match &answers[first] {
                Ok(recorded) if pending.new.same_payment_as(&recorded.transaction) => {
                    Ok(Recorded { transaction: recorded.transaction.clone(), replayed: true })
                }
                Ok(_) => Err(ApiError::idempotency_key_reused()),
                Err(e) => Err(e.clone()),
            };
            let _ = pending.reply.send(answer);
        }
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }

    /// Writes `rows` (no two with one key) and gives each its answer, in order. The rows are shared with the
    /// statement's future, not copied: a keyed batch's answers need them after it.
    async fn answers(&self, rows: Arc<[NewTransaction]>) -> Vec<Result<Recorded, ApiError>> {
        let count = rows.len();
        match self.bounded(Arc::clone(&rows)).await {
            Ok(stored) => self.resolve(&rows, stored).await,
            Err(Failure { refused: true, .. }) if count > 1 => {
                // A row the database refuses must not fail its neighbours: each is written alone.
                let mut answers = Vec::with_capacity(count);
                for row in rows.iter() {
                    let answer = match self.bounded(Arc::from([row.clone()])).await {
                        Ok(stored) => self.resolve(std::slice::from_ref(row), stored).await.pop(),
                        Err(failure) => Some(Err(failure.error)),
                    };
                    answers.push(answer.unwrap_or_else(|| Err(no_row())));
                }
                answers
            }
            Err(failure) => vec![Err(failure.error); count],
        }
    }

    /// The answers of a committed batch: its new rows, and for each row skipped because its key was already
    /// stored, a replay of the stored payment or a refusal if that payment is another.
    async fn resolve(
        &self,
        rows: &[NewTransaction],
        stored: Vec<Option<Transaction>>,
    ) -> Vec<Result<Recorded, ApiError>> {
        let skipped: Vec<&str> = rows
            .iter()
            .zip(&stored)
            .filter(|(_, s)| s.is_none())
            .filter_map(|(r, _)| r.idempotency_key.as_deref())
            .collect();
        let found = if skipped.is_empty() { Ok(Vec::new()) } else { self.find_by_keys(&skipped).await };
        rows.iter()
            .zip(stored)
            .map(|(row, stored)| match (stored, &found) {
                (Some(transaction), _) => Ok(Recorded { transaction, replayed: false }),
                (None, Err(e)) => Err(e.clone()),
                (None, Ok(found)) => {
                    match found.iter().find(|(key, _)| Some(key.as_str()) == row.idempotency_key.as_deref()) {
                        Some((_, t)) if row.same_payment_as(t) => {
                            Ok(Recorded { transaction: t.clone(), replayed: true })
                        }
                        Some(_) => Err(ApiError::idempotency_key_reused()),
                        None => Err(ApiError::unavailable(
                            "the payment stored under this Idempotency-Key could not be found when read back (was it \
                             deleted meanwhile?); nothing was recorded: it is safe to retry",
                        )),
                    }
                }
            })
            .collect()
    }

    /// The stored payments of `keys`, read after the batch that met them committed: on a pooled connection, under
    /// `DATABASE_TIMEOUT_SECS`. Its failure leaves those requests with nothing recorded (their rows were skipped).
    async fn find_by_keys(&self, keys: &[&str]) -> Result<Vec<(String, Transaction)>, ApiError> {
        const READ_BACK: &str = "reading back the payment of an Idempotency-Key";
        let conn = db::checkout(&self.pool).await.map_err(nothing_recorded)?;
        db::bounded(self.query_timeout, READ_BACK, conn.find_by_keys(keys)).await.map_err(nothing_recorded)
    }

    /// Writes one batch under `DATABASE_TIMEOUT_SECS`, on a pooled connection nothing else uses meanwhile.
    ///
    /// Past the timeout the statement is not abandoned but cancelled: an abandoned INSERT stuck behind a lock would
    /// still commit when the lock goes, after its clients were told it failed, and their retries would record the
    /// payments twice. The statement's own answer then says what happened. If not even the cancel is answered, the
    /// clients are told the outcome is unknown, and the statement is still awaited in the background: if it commits
    /// after all, its transaction-log lines are written then.
    async fn bounded(&self, rows: Arc<[NewTransaction]>) -> Result<Vec<Option<Transaction>>, Failure> {
        // No connection, so nothing was sent: a client must know it may retry (a failover's refused connections
        // once read as an outcome to check).
        let conn = db::checkout(&self.pool).await.map_err(|e| Failure::other(nothing_recorded(e)))?;
        let cancel = conn.cancel_token();
        // Set once a cancel request was sent: the statement may have finished before it arrived, and it would then
        // hit the next statement on this connection (another batch, failed for nothing), so the connection is then
        // discarded, not reused (http/listings.rs met this with listings).
        let cancel_sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cancelled = Arc::clone(&cancel_sent);
        let mut write = Box::pin(async move {
            let before = conn.warnings();
            let result = conn.insert_batch(&rows).await;
            let warned = conn.warnings() > before;
            if cancelled.load(Ordering::Acquire) {
                conn.poison();
            }
            drop(conn);
            result.map(|rows| Written { rows, unconfirmed: warned })
        });
        let waited = self.query_timeout.as_secs();
        let result = match tokio::time::timeout(self.query_timeout, &mut write).await {
            Ok(result) => result,
            Err(_) => {
                log::warn!("{ACTION}: no answer from the database within {waited}s; cancelling the statement");
                cancel_sent.store(true, Ordering::Release);
                if let Err(why) = db::send_cancel(&cancel, &self.tls).await {
                    log::warn!("{ACTION}: could not send the cancel request: {why}");
                }
                match tokio::time::timeout(db::CANCEL_GRACE, &mut write).await {
                    Ok(Err(e)) if e.answered_code() == Some(&SqlState::QUERY_CANCELED) => {
                        metrics::database_error(DbErrorKind::Cancelled);
                        return Err(Failure::other(ApiError::unavailable(format!(
                            "the database did not answer within {waited}s while {ACTION}; the statement was \
                             cancelled, so nothing was recorded: it is safe to retry"
                        ))));
                    }
                    Ok(result) => result,
                    Err(_) => {
                        metrics::database_error(DbErrorKind::OutcomeUnknown);
                        self.await_late(write);
                        return Err(Failure::other(ApiError::unavailable(format!(
                            "the database did not answer within {waited}s while {ACTION}, nor to a cancel request; \
                             the payment may or may not be recorded: {UNKNOWN_OUTCOME_ADVICE}"
                        ))));
                    }
                }
            }
        };
        match result {
            Ok(Written { rows, unconfirmed: false }) => Ok(rows),
            Ok(Written { rows, unconfirmed: true }) => {
                let new: Vec<Transaction> = rows.into_iter().flatten().collect();
                Err(Failure::other(self.unconfirmed(&new).await))
            }
            // SQLSTATE class 23: a row the database's constraints refuse.
            Err(e) => Err(Failure {
                refused: e.answered_code().is_some_and(|code| class_of(code) == class::INTEGRITY_CONSTRAINT_VIOLATION),
                error: e.to_api_error(ACTION),
            }),
        }
    }

    /// A batch PostgreSQL committed with a WARNING. The one a successful INSERT can carry is synchronous
    /// replication's: the wait for the standbys' confirmation was cancelled (by our cancel past
    /// `DATABASE_TIMEOUT_SECS`, or by `statement_timeout`), so the rows are committed on the primary but may be on no
    /// other server, and a failover now would lose them. A 201 promises more than that: the clients are told the
    /// outcome is unknown, and, the rows being committed, their log lines are written.
    async fn unconfirmed(&self, rows: &[Transaction]) -> ApiError {
        metrics::database_error(DbErrorKind::OutcomeUnknown);
        log::warn!(
            "transactions {} committed with a warning (logged above), e.g. on the primary only, without the standbys' \
             confirmation; their clients are told the outcome is unknown",
            ids(rows)
        );
        append_all(self.txlog.as_ref(), rows).await;
        ApiError::unavailable(format!(
            "the database committed the payment but warned while {ACTION} (for example, the standbys did not confirm \
             it in time, so it may be lost if the primary fails now); the payment may or may not be recorded: \
             {UNKNOWN_OUTCOME_ADVICE}"
        ))
    }

    /// Keeps waiting for a batch whose clients were told the outcome is unknown, and writes its log lines if it
    /// commits.
    fn await_late(
        &self,
        write: std::pin::Pin<Box<impl Future<Output = Result<Written, WriteError>> + Send + 'static>>,
    ) {
        let txlog = self.txlog.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(LATE_WRITE_WAIT, write).await {
                Ok(Ok(Written { rows: created, .. })) => {
                    let created: Vec<Transaction> = created.into_iter().flatten().collect();
                    log::warn!(
                        "transactions {} committed after their clients were told the outcome was unknown",
                        ids(&created)
                    );
                    append_all(txlog.as_ref(), &created).await;
                }
                Ok(Err(e)) => log::info!(
                    "a write whose clients were told the outcome was unknown did not commit: {}",
                    e.error.as_ref().map_or_else(|| "no row".to_string(), describe)
                ),
                Err(_) => log::warn!(
                    "a write whose clients were told the outcome was unknown got no answer in {}s; its outcome stays \
                     unknown (GET /getall shows whether it was recorded)",
                    LATE_WRITE_WAIT.as_secs()
                ),
            }
        });
    }
}

/// Adds `pending` to the batch unless its request stopped waiting.
fn take(batch: &mut Vec<Pending>, pending: Pending) {
    if pending.state.compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        batch.push(pending);
    }
}

/// The ids of `rows`, for a log line about the whole batch.
fn ids(rows: &[Transaction]) -> String {
    rows.iter().map(|t| t.id.to_string()).collect::<Vec<_>>().join(", ")
}

/// The transaction-log lines of committed rows whose clients were not told 201 (they are committed all the same).
async fn append_all(txlog: Option<&TxLog>, rows: &[Transaction]) {
    if let Some(txlog) = txlog {
        for t in rows {
            txlog.append(t).await;
        }
    }
}

/// `e`, for a payment of which nothing was sent or written: says the client may retry.
fn nothing_recorded(mut e: ApiError) -> ApiError {
    e.message.push_str("; nothing was recorded: it is safe to retry");
    e
}

fn no_row() -> ApiError {
    ApiError::internal("the database returned no row for the inserted transaction")
}

/// A batch PostgreSQL committed (`None` for a row skipped because its key was already stored), and whether it sent a
/// WARNING on the way ([`Batches::unconfirmed`]).
struct Written {
    rows: Vec<Option<Transaction>>,
    unconfirmed: bool,
}

/// Why a batch failed, and whether the database's constraints refused one of its rows (SQLSTATE class 23).
struct Failure {
    error: ApiError,
    refused: bool,
}

impl Failure {
    fn other(error: ApiError) -> Self {
        Failure { error, refused: false }
    }
}
