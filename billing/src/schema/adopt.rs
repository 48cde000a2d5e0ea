//! Adopting the course's Flask database: a `transactions` table made by the original Flask/SQLAlchemy app
//! (`id SERIAL PRIMARY KEY, client_id VARCHAR(100), amount INTEGER`, all nullable but the id, perhaps with columns of
//! its own) and no diesel migration history. Migration 1 would fail on it with "relation already exists", so before
//! the pending migrations run, this brings the table to migration 1's shape in one transaction, keeping every row
//! as it is, and records migration 1 as applied. It runs under the migration lock, so of several replicas starting
//! together exactly one adopts and the others find the history it wrote.
//!
//! A rule that existing rows break is added `NOT VALID`: new writes are checked, old rows stay as they are, and
//! [`crate::schema::report`] names them by id at every start until an operator fixes them and validates the rule.

use diesel::migration::{MigrationConnection, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};

use crate::schema::{Conn, MIGRATIONS};

/// Migration 1's CHECK constraints, as its up.sql spells them (tests/adopt.rs compares an adopted table with a
/// fresh one, so the two cannot drift apart unnoticed).
const MIGRATION_1_CHECKS: [(&str, &str); 3] = [
    ("transactions_client_id_not_empty", "char_length(client_id) >= 1"),
    ("transactions_client_id_no_control_chars", r"client_id !~ '[\u0001-\u001f\u007f-\u009f]'"),
    ("transactions_amount_positive", "amount > 0"),
];

#[derive(QueryableByName)]
struct Presence {
    #[diesel(sql_type = Bool)]
    ledger: bool,
    #[diesel(sql_type = Bool)]
    history: bool,
}

#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    type_name: String,
    #[diesel(sql_type = Bool)]
    not_null: bool,
}

#[derive(QueryableByName)]
struct Rows {
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    max_id: Option<i64>,
    #[diesel(sql_type = Text)]
    now: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct Sequence {
    #[diesel(sql_type = Nullable<Text>)]
    name: Option<String>,
    #[diesel(sql_type = Bool)]
    id_has_default: bool,
}

/// Adopts the table if it is there without migration history; returns whether it did.
pub fn adopt_flask_table(conn: &mut Conn) -> Result<bool, String> {
    let presence: Presence = diesel::sql_query(
        "SELECT to_regclass('transactions') IS NOT NULL AS ledger, \
         to_regclass('__diesel_schema_migrations') IS NOT NULL AS history",
    )
    .get_result(conn)
    .map_err(|e| format!("could not look for an existing transactions table: {e}"))?;
    if !presence.ledger || presence.history {
        return Ok(false);
    }
    conn.transaction(adopt)
        .map_err(|e| format!("adopting the existing transactions table failed, nothing was changed: {e}"))?;
    Ok(true)
}

fn adopt(conn: &mut Conn) -> Result<(), AdoptError> {
    // The original app may still be running against the table; nothing may write while it changes shape.
    sql(conn, "LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE")?;
    let columns: Vec<Column> = diesel::sql_query(
        "SELECT attname::text AS name, format_type(atttypid, atttypmod) AS type_name, attnotnull AS not_null \
         FROM pg_attribute WHERE attrelid = 'transactions'::regclass AND attnum > 0 AND NOT attisdropped \
         ORDER BY attnum",
    )
    .load(conn)?;
    let column = |name: &str| columns.iter().find(|c| c.name == name);
    let rows: Rows =
        diesel::sql_query("SELECT count(*) AS count, max(id)::bigint AS max_id, now()::text AS now FROM transactions")
            .get_result(conn)?;

    let mut changes = Vec::new();
    let integer = ["smallint", "integer", "bigint"];
    for name in ["id", "amount"] {
        match column(name) {
            Some(c) if c.type_name == "bigint" => {}
            Some(c) if integer.contains(&c.type_name.as_str()) => {
                changes.push(format!("ALTER COLUMN {name} TYPE bigint"))
            }
            Some(c) => return Err(unlike_flask(&format!("{name} is {}, not an integer", c.type_name))),
            None => return Err(unlike_flask(&format!("it has no {name} column"))),
        }
    }
    match column("client_id").map(|c| c.type_name.as_str()) {
        Some("character varying(100)") => {}
        Some(t) if varchar_up_to_100(t) => changes.push("ALTER COLUMN client_id TYPE varchar(100)".into()),
        Some(t) => return Err(unlike_flask(&format!("client_id is {t}, not character varying(100) or shorter"))),
        None => return Err(unlike_flask("it has no client_id column")),
    }
    // Flask never recorded when a payment was made. billing's rows need a time, so every old row gets the moment of
    // adoption (one value for all of them: `now()` is the transaction's start); docs/operations.md says so.
    let mut fill_created_at = false;
    match column("created_at") {
        None => changes.push("ADD COLUMN created_at timestamptz NOT NULL DEFAULT now()".into()),
        Some(c) => {
            match c.type_name.as_str() {
                "timestamp with time zone" => {}
                // SQLAlchemy's DateTime without a zone, filled with datetime.utcnow() as the course did.
                "timestamp without time zone" => {
                    changes.push("ALTER COLUMN created_at TYPE timestamptz USING created_at AT TIME ZONE 'UTC'".into())
                }
                t => return Err(unlike_flask(&format!("created_at is {t}, not a timestamp"))),
            }
            changes.push("ALTER COLUMN created_at SET DEFAULT now()".into());
            fill_created_at = !c.not_null;
        }
    }
    if !changes.is_empty() {
        // One statement: the table is rewritten once, however many columns change type.
        sql(conn, &format!("ALTER TABLE transactions {}", changes.join(", ")))?;
    }
    let mut filled = 0;
    if fill_created_at {
        filled =
            diesel::sql_query("UPDATE transactions SET created_at = now() WHERE created_at IS NULL").execute(conn)?;
        sql(conn, "ALTER TABLE transactions ALTER COLUMN created_at SET NOT NULL")?;
    }
    ensure_primary_key(conn)?;
    ensure_sequence(conn)?;
    for name in ["client_id", "amount"] {
        if column(name).is_some_and(|c| !c.not_null) {
            require_not_null(conn, name)?;
        }
    }
    for (name, rule) in MIGRATION_1_CHECKS {
        add_check(conn, name, rule)?;
    }

    // diesel's own table, then migration 1 as applied: the table now has its shape.
    conn.setup()?;
    let first = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|e| AdoptError::Other(format!("cannot read the embedded migrations: {e}")))?
        .iter()
        .map(|m| m.name().version().to_string())
        .min()
        .ok_or_else(|| AdoptError::Other("there are no embedded migrations".into()))?;
    diesel::sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES ($1)")
        .bind::<Text, _>(&first)
        .execute(conn)?;

    let ids = rows.max_id.map_or_else(String::new, |max| format!(" (ids up to {max})"));
    let created_at = match (column("created_at").is_none(), filled) {
        (true, _) => format!("; created_at of those rows is the adoption time, {}", rows.now),
        (false, 0) => String::new(),
        (false, n) => format!("; {} without created_at got the adoption time, {}", plural(n as i64, "row"), rows.now),
    };
    log::info!(
        "adopted the course's Flask table \"transactions\": {} kept{ids}, id and amount are bigint now{created_at}; \
         migration {first} recorded as applied",
        plural(rows.count, "row")
    );
    Ok(())
}

fn plural(n: i64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

fn varchar_up_to_100(type_name: &str) -> bool {
    type_name
        .strip_prefix("character varying(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n <= 100)
}

fn ensure_primary_key(conn: &mut Conn) -> Result<(), AdoptError> {
    let keys: Count = diesel::sql_query(
        "SELECT count(*) AS count FROM pg_constraint WHERE conrelid = 'transactions'::regclass AND contype = 'p'",
    )
    .get_result(conn)?;
    if keys.count == 0 {
        sql(conn, "ALTER TABLE transactions ADD PRIMARY KEY (id)")?;
    }
    Ok(())
}

/// A bigint sequence that owns `id` and hands out ids past every existing one (rows inserted with explicit ids may
/// be ahead of the sequence).
fn ensure_sequence(conn: &mut Conn) -> Result<(), AdoptError> {
    let sequence: Sequence = diesel::sql_query(
        "SELECT pg_get_serial_sequence('transactions', 'id') AS name, \
         EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'transactions'::regclass AND attname = 'id' \
                 AND (atthasdef OR attidentity <> '')) AS id_has_default",
    )
    .get_result(conn)?;
    let name = match sequence.name {
        Some(name) => {
            let is_bigint: Count = diesel::sql_query(
                "SELECT count(*) AS count FROM pg_sequence WHERE seqrelid = $1::regclass AND seqtypid = 'bigint'::regtype",
            )
            .bind::<Text, _>(&name)
            .get_result(conn)?;
            if is_bigint.count == 0 {
                // The maximum follows the type, since SERIAL left it at integer's own maximum.
                sql(conn, &format!("ALTER SEQUENCE {name} AS bigint"))?;
            }
            name
        }
        None if !sequence.id_has_default => {
            sql(conn, "CREATE SEQUENCE transactions_id_seq AS bigint OWNED BY transactions.id")?;
            sql(conn, "ALTER TABLE transactions ALTER COLUMN id SET DEFAULT nextval('transactions_id_seq')")?;
            "transactions_id_seq".to_string()
        }
        None => {
            log::warn!(
                "adopting transactions: its id has a default that is not a sequence it owns; left as it is, so new \
                 ids come from that default"
            );
            return Ok(());
        }
    };
    diesel::sql_query(
        "SELECT setval($1::regclass, GREATEST(m, COALESCE(pg_sequence_last_value($1::regclass), m))) \
         FROM (SELECT max(id) AS m FROM transactions) AS t WHERE m IS NOT NULL",
    )
    .bind::<Text, _>(&name)
    .execute(conn)?;
    Ok(())
}

/// NOT NULL when no row is NULL; otherwise a `NOT VALID` CHECK of the same rule (NOT NULL itself cannot be added
/// without checking every row), so the NULL rows stay and are reported while new writes are refused.
fn require_not_null(conn: &mut Conn, column: &str) -> Result<(), AdoptError> {
    let nulls: Count = diesel::sql_query(format!("SELECT count(*) AS count FROM transactions WHERE {column} IS NULL"))
        .get_result(conn)?;
    if nulls.count == 0 {
        sql(conn, &format!("ALTER TABLE transactions ALTER COLUMN {column} SET NOT NULL"))
    } else {
        add_check(conn, &format!("transactions_{column}_not_null"), &format!("{column} IS NOT NULL"))
    }
}

/// Adds CHECK `rule` as `name` unless the table has a constraint of that name: validated when every row passes,
/// `NOT VALID` when some row breaks it.
fn add_check(conn: &mut Conn, name: &str, rule: &str) -> Result<(), AdoptError> {
    let existing: Count = diesel::sql_query(
        "SELECT count(*) AS count FROM pg_constraint WHERE conrelid = 'transactions'::regclass AND conname = $1",
    )
    .bind::<Text, _>(name)
    .get_result(conn)?;
    if existing.count > 0 {
        return Ok(());
    }
    // A CHECK refuses a row only when its rule is false; NULL passes.
    let breaking: Count =
        diesel::sql_query(format!("SELECT count(*) AS count FROM transactions WHERE ({rule}) IS FALSE"))
            .get_result(conn)?;
    let not_valid = if breaking.count > 0 { " NOT VALID" } else { "" };
    sql(conn, &format!("ALTER TABLE transactions ADD CONSTRAINT {name} CHECK ({rule}){not_valid}"))
}

fn sql(conn: &mut Conn, statement: &str) -> Result<(), AdoptError> {
    diesel::sql_query(statement).execute(conn).map(drop).map_err(|e| AdoptError::Other(format!("{statement}: {e}")))
}

fn unlike_flask(why: &str) -> AdoptError {
    AdoptError::Other(format!(
        "a transactions table exists without billing's migration history, but it is not the course's Flask table: \
         {why}; see \"Adopting the course's Flask database\" in docs/operations.md"
    ))
}

/// `Connection::transaction` needs an error type that a diesel error converts into.
#[derive(Debug)]
enum AdoptError {
    Database(diesel::result::Error),
    Other(String),
}

impl From<diesel::result::Error> for AdoptError {
    fn from(e: diesel::result::Error) -> Self {
        AdoptError::Database(e)
    }
}

impl std::fmt::Display for AdoptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdoptError::Database(e) => write!(f, "{e}"),
            AdoptError::Other(message) => f.write_str(message),
        }
    }
}
