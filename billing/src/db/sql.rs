//! The SQL of every statement billing runs on a pooled or shared connection, in one place.

/// Every statement billing runs on a pooled or shared connection; each is prepared once per connection.
#[derive(Debug, Clone, Copy)]
pub enum Query {
    InsertBatch,
    Find,
    FindMany,
    Page,
    Ready,
}

impl Query {
    pub const COUNT: usize = 5;

    pub fn sql(self) -> &'static str {
        match self {
            // The advisory lock (key 0x62696c6c696e6757, "billingW" in ASCII; bench/pgbench/add_batch.sql uses the
            // same) is taken before the first row reaches the INSERT, where the ids are drawn: every row of the
            // join needs the lock's one row. It is held until the commit is durable (ledger/writer.rs says why).
            Query::InsertBatch => {
                "WITH ordered AS MATERIALIZED (SELECT 1 FROM pg_advisory_xact_lock(7091318301152667479)) \
                 INSERT INTO transactions (client_id, amount) \
                 SELECT t.client_id, t.amount \
                 FROM ordered, unnest($1::varchar[], $2::bigint[]) WITH ORDINALITY AS t(client_id, amount, n) \
                 ORDER BY t.n \
                 RETURNING id, client_id, amount, created_at"
            }
            Query::Find => "SELECT id, client_id, amount, created_at FROM transactions WHERE id = $1",
            // The point reads of a batch (ledger/point_reads.rs), each id at most once in the answer, in no
            // particular order.
            Query::FindMany => {
                "SELECT id, client_id, amount, created_at FROM transactions WHERE id = ANY($1::bigint[])"
            }
            // `LIMIT NULL` is `LIMIT ALL`: one statement serves the whole listing and its pages.
            Query::Page => {
                "SELECT id, client_id, amount, created_at FROM transactions WHERE id > $1 ORDER BY id LIMIT $2"
            }
            Query::Ready => "SELECT 1 FROM transactions LIMIT 0",
        }
    }
}
