-- client_id as the service now validates it (validation.rs): besides control characters, no Unicode line or
-- paragraph separator (U+2028, U+2029: log viewers break lines there) and no bidirectional control (U+061C, U+200E,
-- U+200F, U+202A-U+202E, U+2066-U+2069: a line would display in another order than it reads).
-- A ledger that already holds such a row keeps it unchanged: the rule is then added NOT VALID, which still checks
-- every new write, and billing names the rows by id at each start (ledger_report.rs) until an operator has fixed
-- them and run ALTER TABLE transactions VALIDATE CONSTRAINT transactions_client_id_no_line_or_bidi_controls.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM transactions
        WHERE (client_id !~ '[\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]') IS FALSE
    ) THEN
        ALTER TABLE transactions ADD CONSTRAINT transactions_client_id_no_line_or_bidi_controls
            CHECK (client_id !~ '[\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]') NOT VALID;
    ELSE
        ALTER TABLE transactions ADD CONSTRAINT transactions_client_id_no_line_or_bidi_controls
            CHECK (client_id !~ '[\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]');
    END IF;
END
$$;
