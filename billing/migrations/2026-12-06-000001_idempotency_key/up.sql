-- Idempotency keys (POST /add's Idempotency-Key header): a key is stored with its payment, in the same row and so
-- the same transaction, for as long as the payment exists; the unique index makes "one key, one payment" hold
-- across every billing process, restart and failover (ledger/writer.rs says how a retry is answered).
-- Rows without a key (every payment sent without the header, and every row written before this migration) hold
-- NULL: the new column costs them nothing on disk (a NULL is a bit in the row's null bitmap), and the index is
-- partial, so it holds only keyed rows. Adding a nullable column without a default rewrites nothing; checking the
-- rule and building the index read the table under a lock that blocks reads and writes (docs/operations.md,
-- "Idempotency keys", gives the time measured on a 1,000,000-row ledger).
-- COLLATE "C": a key is compared byte for byte (its characters are ASCII), so the unique index compares with memcmp
-- rather than the database's locale (strcoll), whatever locale the database was created with.
ALTER TABLE transactions ADD COLUMN idempotency_key VARCHAR(255) COLLATE "C";
-- 1-255 printable ASCII characters, as the service validates them (http/validation.rs): none outside space to ~,
-- not empty, and VARCHAR(255) bounds the length. Written without a bounded repetition: '^[ -~]{1,255}$' made
-- PostgreSQL's regex engine build a 255-state automaton per row, and cut keyed writes to a third (docs/benchmarks.md,
-- "Idempotency keys"). Checking the existing rows (all NULL) is one more read of the table, in the same lock.
ALTER TABLE transactions ADD CONSTRAINT transactions_idempotency_key_printable
    CHECK (idempotency_key !~ '[^ -~]' AND idempotency_key <> '');
CREATE UNIQUE INDEX transactions_idempotency_key ON transactions (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
