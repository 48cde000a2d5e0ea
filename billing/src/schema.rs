// The table created by migrations/2026-11-27-000001_create_transactions. client_id and amount are NOT NULL there,
// but a table adopted from the course's Flask app may hold NULLs in old rows (adopt.rs), so they read as Nullable.

diesel::table! {
    transactions (id) {
        id -> Int8,
        #[max_length = 100]
        client_id -> Nullable<Varchar>,
        amount -> Nullable<Int8>,
        created_at -> Timestamptz,
    }
}
