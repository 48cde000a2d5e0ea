-- The service's select for GET /get/<id> (diesel: find(id).first() = WHERE id = $1 LIMIT $2); ids from -D id_min/id_max.
\set id random(:id_min, :id_max)
SELECT transactions.id, transactions.client_id, transactions.amount, transactions.created_at FROM transactions WHERE transactions.id = :id LIMIT 1;
