-- The payment ledger. The CHECK constraints repeat the service's own validation so that no other writer
-- (psql, a future job) can store what the API would refuse.
CREATE TABLE transactions (
    id          BIGSERIAL    PRIMARY KEY,
    client_id   VARCHAR(100) NOT NULL,
    amount      BIGINT       NOT NULL,
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT transactions_client_id_not_empty CHECK (char_length(client_id) >= 1),
    -- C0 and C1 control characters: a newline in client_id would forge a line of the transaction log.
    CONSTRAINT transactions_client_id_no_control_chars CHECK (client_id !~ '[\u0001-\u001f\u007f-\u009f]'),
    CONSTRAINT transactions_amount_positive CHECK (amount > 0)
);
