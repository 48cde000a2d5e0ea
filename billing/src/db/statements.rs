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
    /// committed.
    pub async fn insert_batch(&self, rows: &[NewTransaction]) -> Result<Vec<Transaction>, WriteError> {
        let statement = self.statement(Query::InsertBatch).await.map_err(WriteError::not_committed)?;
        let client_ids: Vec<&str> = rows.iter().map(|r| r.client_id.as_str()).collect();
        let amounts: Vec<i64> = rows.iter().map(|r| r.amount).collect();
        let params: [&(dyn ToSql + Sync); 2] = [&client_ids, &amounts];
        let stream =
            self.client().query_raw(statement, params).await.map_err(|e| WriteError::after_sending(e, false))?;
        let mut stream = std::pin::pin!(stream);
        let mut created = Vec::with_capacity(rows.len());
        while let Some(row) = stream.next().await {
            let seen = !created.is_empty();
            created.push(row.map_err(|e| WriteError::after_sending(e, seen))?);
        }
        // The commit is durable by now: rows that do not match what was sent are a bug to report, not a failure.
        in_given_order(rows, &created).ok_or(WriteError { error: None, maybe_committed: true })
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

/// The stored rows in the order of `rows`. Ids are drawn in the INSERT's ORDER BY, so sorted by id the rows are in
/// the order given; each row's values confirm it. `None` if they do not match.
fn in_given_order(rows: &[NewTransaction], created: &[Row]) -> Option<Vec<Transaction>> {
    let mut stored = created.iter().map(Transaction::from_row).collect::<Result<Vec<_>, _>>().ok()?;
    stored.sort_by_key(|t| t.id);
    let matches = stored.len() == rows.len()
        && stored
            .iter()
            .zip(rows)
            .all(|(t, r)| t.client_id.as_deref() == Some(r.client_id.as_str()) && t.amount == Some(r.amount));
    matches.then_some(stored)
}
