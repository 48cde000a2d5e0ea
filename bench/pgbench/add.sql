-- The service's insert for POST /add (diesel: INSERT ... VALUES ($1, $2) RETURNING ...), same value ranges as
-- wrk/add.lua. Run with -M prepared, as diesel-async caches the prepared statement per connection.
\set client random(1, 1000)
\set amount random(1, 1000000)
INSERT INTO transactions (client_id, amount) VALUES (:client, :amount) RETURNING transactions.id, transactions.client_id, transactions.amount, transactions.created_at;
