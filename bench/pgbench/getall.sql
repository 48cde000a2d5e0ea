-- The service's scan for GET /getall (diesel: WHERE id > $1 ORDER BY id ASC LIMIT $2 with after_id 0, no limit):
-- every row, in id order, read to the end by the client.
SELECT transactions.id, transactions.client_id, transactions.amount, transactions.created_at FROM transactions WHERE transactions.id > 0 ORDER BY transactions.id ASC LIMIT 9223372036854775807;
