//! The SQL of every statement billing runs on a pooled or shared connection, in one place.

/// The keyed batch INSERT, with `$on_conflict` (empty, or an ON CONFLICT clause ending in a space) before RETURNING:
/// [`Query::InsertBatch`] under the same lock, plus each row's key.
macro_rules! keyed_insert {
    ($on_conflict:literal) => {
        concat!(
            "WITH ordered AS MATERIALIZED (SELECT 1 FROM pg_advisory_xact_lock(7091318301152667479)) ",
            "INSERT INTO transactions (client_id, amount, idempotency_key) ",
            "SELECT t.client_id, t.amount, t.idempotency_key ",
            "FROM ordered, unnest($1::varchar[], $2::bigint[], $3::varchar[]) WITH ORDINALITY ",
            "AS t(client_id, amount, idempotency_key, n) ",
            "ORDER BY t.n ",
            $on_conflict,
            "RETURNING id, client_id, amount, created_at, idempotency_key"
        )
    };
}

/// Every statement billing runs on a pooled or shared connection; each is prepared once per connection.
#[derive(Debug, Clone, Copy)]
pub enum Query {
    InsertBatch,
    InsertKeyedBatch,
    InsertKeyedBatchSkippingKnown,
    FindByKeys,
    Find,
    FindMany,
    Page,
    Ready,
}

impl Query {
    pub const COUNT: usize = 8;

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
            // A batch with at least one Idempotency-Key (`keyed_insert!`). A key already stored fails the whole
            // statement on the unique index (SQLSTATE 23505, nothing written), and the batch is then written again with [`Query::InsertKeyedBatchSkippingKnown`]. Most keyed batches meet
            // no stored key (a key is stored again only by a retry), and this way they do not pay for ON CONFLICT's
            // speculative insertion, which cost about a fifth of the batch's time under the lock
            // (docs/benchmarks.md, "Idempotency keys").
            Query::InsertKeyedBatch => keyed_insert!(""),
            // A keyed batch that met a stored key: a row whose key is already stored is skipped (ON CONFLICT
            // against the partial unique index; a key a batch not yet committed holds cannot be met, as that batch
            // holds the lock) and returns no row; the writer then reads the stored one ([`Query::FindByKeys`]).
            Query::InsertKeyedBatchSkippingKnown => {
                keyed_insert!("ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING ")
            }
            // The payments stored under some keys, for the rows of a keyed batch that were skipped.
            Query::FindByKeys => {
                "SELECT id, client_id, amount, created_at, idempotency_key FROM transactions \
                 WHERE idempotency_key = ANY($1::varchar[])"
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

#[cfg(test)]
mod tests {
    use super::Query;

    /// The two keyed statements are one text with and without the ON CONFLICT clause, in its place.
    #[test]
    fn the_keyed_statements_differ_only_by_on_conflict() {
        let plain = Query::InsertKeyedBatch.sql();
        let skipping = Query::InsertKeyedBatchSkippingKnown.sql();
        assert!(plain.contains("ORDER BY t.n RETURNING id, client_id, amount, created_at, idempotency_key"), "{plain}");
        let clause = "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING ";
        assert_eq!(skipping.replace(clause, ""), plain);
        assert!(skipping.contains("ORDER BY t.n ON CONFLICT"), "{skipping}");
        assert!(plain.contains("AS t(client_id, amount, idempotency_key, n) ORDER BY"), "{plain}");
    }
}
