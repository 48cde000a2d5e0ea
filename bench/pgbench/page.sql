-- The service's statement for GET /getall?after_id=<x>&limit=1000 (billing/src/db/sql.rs, Query::Page): one keyset
-- page of 1,000 rows from a random after_id in [0, after_max], as wrk/random_path.lua asks for (bench.py).
\set after random(0, :after_max)
SELECT id, client_id, amount, created_at FROM transactions WHERE id > :after ORDER BY id LIMIT 1000;
