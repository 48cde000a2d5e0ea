-- The true ceiling for group commit: billing's own batch statement (billing/src/db/sql.rs, Query::InsertBatch) run by pgbench,
-- :batch rows per statement and commit, the advisory lock included. bench.py sets :batch to the mean batch size
-- billing reached in the add case; rows per second = tps x :batch.
\set client random(1, 1000)
\set amount random(1, 1000000)
WITH ordered AS MATERIALIZED (SELECT 1 FROM pg_advisory_xact_lock(7091318301152667479))
INSERT INTO transactions (client_id, amount)
SELECT (:client + g)::text, :amount FROM ordered, generate_series(1, :batch) AS g
RETURNING id, client_id, amount, created_at;
