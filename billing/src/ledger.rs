//! The ledger's statements, and what a failed write means for the payment.

use futures_util::{StreamExt, TryStreamExt};
use tokio_postgres::error::Severity;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, RowStream};

use crate::db::PgConn;
use crate::models::{NewTransaction, Transaction};

/// Every statement billing runs on a pooled or shared connection; each is prepared once per connection.
#[derive(Debug, Clone, Copy)]
pub enum Query {
    Insert,
    Find,
    Page,
    Ready,
}

impl Query {
    pub const COUNT: usize = 4;

    pub fn sql(self) -> &'static str {
        match self {
            Query::Insert => {
                "INSERT INTO transactions (client_id, amount) VALUES ($1, $2) RETURNING id, client_id, amount, created_at"
            }
            Query::Find => "SELECT id, client_id, amount, created_at FROM transactions WHERE id = $1",
            // `LIMIT NULL` is `LIMIT ALL`: one statement serves the whole listing and its pages.
            Query::Page => {
                "SELECT id, client_id, amount, created_at FROM transactions WHERE id > $1 ORDER BY id LIMIT $2"
            }
            Query::Ready => "SELECT 1 FROM transactions LIMIT 0",
        }
    }
}

/// A write that failed, and whether PostgreSQL may have committed it all the same.
#[derive(Debug)]
pub struct WriteError {
    /// `None`: PostgreSQL committed but returned no row, which RETURNING never does.
    pub error: Option<tokio_postgres::Error>,
    /// False when PostgreSQL's own answer proves the statement did not commit; true when the connection failed
    /// with the statement sent and no such answer came.
    pub maybe_committed: bool,
}

impl WriteError {
    fn not_committed(error: tokio_postgres::Error) -> Self {
        WriteError { error: Some(error), maybe_committed: false }
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
    /// Inserts one payment and returns it once its commit is durable: the row stream is read to PostgreSQL's
    /// ReadyForQuery, which comes only after the implicit transaction committed.
    pub async fn insert(&self, new: &NewTransaction) -> Result<Transaction, WriteError> {
        let statement = self.statement(Query::Insert).await.map_err(WriteError::not_committed)?;
        let params: [&(dyn ToSql + Sync); 2] = [&new.client_id, &new.amount];
        let rows = self.client().query_raw(statement, params).await.map_err(|e| WriteError::after_sending(e, false))?;
        let mut rows = std::pin::pin!(rows);
        let mut created = None;
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| WriteError::after_sending(e, created.is_some()))?;
            created = Some(row);
        }
        // The commit is durable by now: a missing or undecodable row is a bug to report, not a failed payment.
        let row = created.ok_or(WriteError { error: None, maybe_committed: true })?;
        Transaction::from_row(&row).map_err(|e| WriteError { error: Some(e), maybe_committed: true })
    }

    pub async fn find(&self, id: i64) -> Result<Option<Transaction>, tokio_postgres::Error> {
        let statement = self.statement(Query::Find).await?;
        let row = self.client().query_opt(statement, &[&id]).await?;
        row.as_ref().map(Transaction::from_row).transpose()
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
