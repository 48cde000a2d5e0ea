// The table created by migrations/2026-11-27-000001_create_transactions.

diesel::table! {
    transactions (id) {
        id -> Int8,
        #[max_length = 100]
        client_id -> Varchar,
        amount -> Int8,
        created_at -> Timestamptz,
    }
}
