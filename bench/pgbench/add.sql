-- PostgreSQL's own one-row-per-statement rate, the reference of issue 13: one INSERT per payment, same value ranges as
-- wrk/add.lua. Run with -M prepared (billing prepares its statements once per connection too).
\set client random(1, 1000)
\set amount random(1, 1000000)
INSERT INTO transactions (client_id, amount) VALUES (:client, :amount) RETURNING transactions.id, transactions.client_id, transactions.amount, transactions.created_at;
