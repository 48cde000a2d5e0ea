//! The ledger's statements run on one connection ([`PgConn::insert_batch`], [`PgConn::find`], ...), and what a
//! failed write means for the payment ([`WriteError`]). Their SQL is sql.rs's.

use futures_util::{StreamExt, TryStreamExt};
use tokio_postgres::error::{Severity, SqlState};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, RowStream};

use crate::db::PgConn;
use crate::db::sql::Query;
use crate::db::sqlstate;
use crate::error::ApiError;
use crate::metrics::{self, DbErrorKind};
use crate::models::{NewTransaction, Transaction};

/// A write that failed, and whether PostgreSQL may have committed it all the same.
#[derive(Debug)]
pub struct WriteError {
    /// `None`: PostgreSQL committed but returned rows that do not match those sent, which RETURNING never does.
    pub error: Option<tokio_postgres::Error>,
    /// False when PostgreSQL's own answer proves the statement did not commit; true when the connection failed
    /// with the statement sent and no such answer came.
    pub maybe_committed: bool,
}

impl WriteError {
    fn not_committed(error: tokio_postgres::Error) -> Self {
        WriteError { error: Some(error), maybe_committed: false }
    }

    /// The SQLSTATE of PostgreSQL's answer when that answer proves nothing was committed (57014: cancelled; class
    /// 23: a constraint refused a row), `None` when the outcome is open or PostgreSQL did not answer.
    pub fn answered_code(&self) -> Option<&SqlState> {
        self.error.as_ref().filter(|_| !self.maybe_committed)?.code()
    }

    /// PostgreSQL refused the statement, and so wrote nothing of it, because an `Idempotency-Key` of the batch is
    /// already stored (the unique index `transactions_idempotency_key`).
    fn is_stored_key(&self) -> bool {
        let refused_by = self.error.as_ref().filter(|_| !self.maybe_committed).and_then(|e| e.as_db_error());
        refused_by.is_some_and(|db| {
            db.code() == &SqlState::UNIQUE_VIOLATION && db.constraint() == Some("transactions_idempotency_key")
        })
    }

    /// The client's answer for this failed write, counted ([`sqlstate::write_error`] for PostgreSQL's errors).
    pub fn to_api_error(&self, action: &str) -> ApiError {
        match &self.error {
            Some(e) => sqlstate::write_error(action, e, self.maybe_committed),
            None => {
                log::error!("{action}: PostgreSQL committed the row but returned none");
                metrics::database_error(DbErrorKind::Other);
                ApiError::internal(format!("the database returned no row while {action}"))
            }
        }
    }

    /// The statement was sent and then `error` came, after a returned row or not.
    ///
    /// The INSERT runs in an implicit transaction that commits at the protocol's Sync, after the RETURNING row is
    /// produced. An ERROR from PostgreSQL, before or after that row, means it rolled the transaction back. A FATAL
    /// or PANIC before the row means the statement never finished; after the row, the server may have been
    /// terminated after its commit (the row and CommandComplete sit in its send buffer until then). Without any
    /// answer (a lost connection) the commit may or may not have happened.
    fn after_sending(error: tokio_postgres::Error, row_seen: bool) -> Self {
        let maybe_committed = match error.as_db_error() {
            Some(db) => row_seen && !matches!(db.parsed_severity(), Some(Severity::Error)),
            None => true,
        };
        WriteError { error: Some(error), maybe_committed }
    }
}

impl PgConn {
    /// Inserts `rows` in one statement and returns them as stored, in the order given, once the commit is durable:
    /// the row stream is read to PostgreSQL's ReadyForQuery, which comes only after the implicit transaction
    /// committed. A row whose `Idempotency-Key` was already stored is not inserted, and is `None` in the answer.
    pub async fn insert_batch(&self, rows: &[NewTransaction]) -> Result<Vec<Option<Transaction>>, WriteError> {
        if !rows.iter().any(|r| r.idempotency_key.is_some()) {
            return self.insert_rows(Query::InsertBatch, rows).await;
        }
        // Keyed: first as if no key were stored yet, the common case; a stored key fails that statement and
        // nothing of it, and the batch is written again skipping the stored keys (db/sql.rs says why).
        match self.insert_rows(Query::InsertKeyedBatch, rows).await {
            Err(e) if e.is_stored_key() => self.insert_rows(Query::InsertKeyedBatchSkippingKnown, rows).await,
            other => other,
        }
    }

    /// [`PgConn::insert_batch`] with one of the batch statements.
    async fn insert_rows(&self, query: Query, rows: &[NewTransaction]) -> Result<Vec<Option<Transaction>>, WriteError> {
        let keyed = !matches!(query, Query::InsertBatch);
        let statement = self.statement(query).await.map_err(WriteError::not_committed)?;
        let client_ids: Vec<&str> = rows.iter().map(|r| r.client_id.as_str()).collect();
        let amounts: Vec<i64> = rows.iter().map(|r| r.amount).collect();
        let keys: Vec<Option<&str>> = rows.iter().map(|r| r.idempotency_key.as_deref()).collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            if keyed { vec![&client_ids, &amounts, &keys] } else { vec![&client_ids, &amounts] };
        let stream =
            self.client().query_raw(statement, params).await.map_err(|e| WriteError::after_sending(e, false))?;
        let mut stream = std::pin::pin!(stream);
        let mut created = Vec::with_capacity(rows.len());
        while let Some(row) = stream.next().await {
            let seen = !created.is_empty();
            created.push(row.map_err(|e| WriteError::after_sending(e, seen))?);
        }
        // The commit is durable by now: rows that do not match what was sent are a bug to report, not a failure.
        in_given_order(rows, &created, keyed).ok_or(WriteError { error: None, maybe_committed: true })
    }

    /// The payments stored under `keys`, with their keys.
    pub async fn find_by_keys(&self, keys: &[&str]) -> Result<Vec<(String, Transaction)>, tokio_postgres::Error> {
        let statement = self.statement(Query::FindByKeys).await?;
        let rows = self.client().query(statement, &[&keys]).await?;
        rows.iter().map(|row| Ok((row.try_get(4)?, Transaction::from_row(row)?))).collect()
    }

    pub async fn find(&self, id: i64) -> Result<Option<Transaction>, tokio_postgres::Error> {
        let statement = self.statement(Query::Find).await?;
        let row = self.client().query_opt(statement, &[&id]).await?;
        row.as_ref().map(Transaction::from_row).transpose()
    }

    /// The transactions among `ids` that exist, in no particular order.
    pub async fn find_many(&self, ids: &[i64]) -> Result<Vec<Transaction>, tokio_postgres::Error> {
        let statement = self.statement(Query::FindMany).await?;
        let rows = self.client().query(statement, &[&ids]).await?;
        rows.iter().map(Transaction::from_row).collect()
    }

    /// Rows with an id above `after_id`, in id order, at most `limit` (all of them for `None`), as a stream.
    pub async fn page(&self, after_id: i64, limit: Option<i64>) -> Result<RowStream, tokio_postgres::Error> {
        let statement = self.statement(Query::Page).await?;
        let params: [&(dyn ToSql + Sync); 2] = [&after_id, &limit];
        self.client().query_raw(statement, params).await
    }

    /// The ledger table is there and the connection answers.
    pub async fn ready(&self) -> Result<(), tokio_postgres::Error> {
        let statement = self.statement(Query::Ready).await?;
        self.client().query_raw(statement, std::iter::empty::<i64>()).await?.try_collect::<Vec<Row>>().await?;
        Ok(())
    }
}

/// The stored rows in the order of `rows`, `None` for a keyed row that was skipped because its key was already
/// stored. Ids are drawn in the INSERT's ORDER BY, for skipped rows too, so sorted by id the stored rows are those
/// given, in that order, less the skipped ones; each row's values (and key, for a keyed batch) confirm it. `None` if
/// they do not match.
fn in_given_order(rows: &[NewTransaction], created: &[Row], keyed: bool) -> Option<Vec<Option<Transaction>>> {
    let mut stored = created
        .iter()
        .map(|row| {
            let key: Option<String> = if keyed { row.try_get(4)? } else { None };
            Ok((Transaction::from_row(row)?, key))
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .ok()?;
    stored.sort_by_key(|(t, _)| t.id);
    let mut stored = stored.into_iter().peekable();
    let mut answer = Vec::with_capacity(rows.len());
    for row in rows {
        let next =
            stored.next_if(|(t, key)| row.same_payment_as(t) && key.as_deref() == row.idempotency_key.as_deref());
        match next {
            Some((t, _)) => answer.push(Some(t)),
            // Only a row with a key can be skipped.
            None if row.idempotency_key.is_some() => answer.push(None),
            None => return None,
        }
    }
    stored.next().is_none().then_some(answer)
}
