DROP INDEX transactions_idempotency_key;
ALTER TABLE transactions DROP CONSTRAINT transactions_idempotency_key_printable;
ALTER TABLE transactions DROP COLUMN idempotency_key;
