//! Adopting the course's Flask database: a `transactions` table that Flask/SQLAlchemy created, rows and all, with no
//! diesel migration history. billing must keep and serve every row, bring the table to its own schema once (however
//! many replicas start together), and name the rows its rules refuse instead of dropping or rewriting them.

mod common;

use billing_testkit::{ServiceProcess, shared, unique_name};
use common::{BIN, READY_TIMEOUT, TestResult, client};
use reqwest::StatusCode;
use serde_json::Value;

/// What `db.create_all()` issues for the course's model (`id = Column(Integer, primary_key=True)`,
/// `client_id = Column(String(100))`, `amount = Column(Integer)`).
const FLASK_TABLE: &str = "CREATE TABLE transactions (id SERIAL PRIMARY KEY, client_id VARCHAR(100), amount INTEGER)";

/// Rows as the Flask app, which validated nothing, could have stored; the last one with an id of its own, ahead of
/// the sequence.
const FLASK_ROWS: &str = r"INSERT INTO transactions (client_id, amount) VALUES
    ('1', 1000), ('acme', 0), ('neg', -5), (NULL, 10), (E'line\nbreak', 7), ('no amount', NULL),
    (E'rtl\u202Eevil', 3), ('', 4);
    INSERT INTO transactions (id, client_id, amount) VALUES (100, 'explicit id', 2147483647)";

/// The rows of [`FLASK_ROWS`]: id, client_id, amount.
fn flask_rows() -> Vec<(i64, Option<&'static str>, Option<i64>)> {
    vec![
        (1, Some("1"), Some(1000)),
        (2, Some("acme"), Some(0)),
        (3, Some("neg"), Some(-5)),
        (4, None, Some(10)),
        (5, Some("line\nbreak"), Some(7)),
        (6, Some("no amount"), None),
        (7, Some("rtl\u{202E}evil"), Some(3)),
        (8, Some(""), Some(4)),
        (100, Some("explicit id"), Some(2_147_483_647)),
    ]
}

/// A database holding the Flask table after `setup` (more SQL: rows, extra columns).
fn flask_database(setup: &[&str]) -> Result<(String, String), String> {
    let db = unique_name("flask");
    let url = shared().create_database(&db)?;
    shared().psql(&db, FLASK_TABLE)?;
    for sql in setup {
        shared().psql(&db, sql)?;
    }
    Ok((db, url))
}

fn start(url: &str) -> Result<ServiceProcess, String> {
    let mut service = ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", url)])?;
    service.wait_ready(READY_TIMEOUT)?;
    Ok(service)
}

/// The log line that reports constraint `name`.
fn report_line(log: &str, name: &str) -> Option<String> {
    log.lines().find(|l| l.contains(&format!(" constraint {name} "))).map(str::to_string)
}

fn row_of(value: &Value) -> (i64, Option<String>, Option<i64>) {
    (value["id"].as_i64().unwrap_or(-1), value["client_id"].as_str().map(str::to_string), value["amount"].as_i64())
}

fn owned(rows: &[(i64, Option<&str>, Option<i64>)]) -> Vec<(i64, Option<String>, Option<i64>)> {
    rows.iter().map(|(id, c, a)| (*id, c.map(str::to_string), *a)).collect()
}

#[tokio::test]
async fn every_flask_row_is_kept_and_served_and_new_ids_follow_them() -> TestResult {
    let (db, url) = flask_database(&[FLASK_ROWS])?;
    let service = start(&url)?;
    let http = client()?;
    let log = service.log();
    assert!(log.contains("adopted the course's Flask table \"transactions\": 9 rows kept (ids up to 100)"), "{log}");

    let all: Vec<Value> = http.get(service.url("/getall")).send().await?.json().await?;
    assert_eq!(all.iter().map(row_of).collect::<Vec<_>>(), owned(&flask_rows()));
    // Flask never recorded a time: every old row has the one moment of adoption.
    let times: Vec<&str> = all.iter().filter_map(|v| v["created_at"].as_str()).collect();
    assert_eq!(times.len(), all.len());
    assert!(times.iter().all(|t| *t == times[0]), "{times:?}");
    assert_eq!(shared().psql(&db, "SELECT count(DISTINCT created_at) FROM transactions")?, "1");
    for (id, client_id, amount) in flask_rows() {
        let one: Value = http.get(service.url(&format!("/get/{id}"))).send().await?.json().await?;
        assert_eq!(row_of(&one), owned(&[(id, client_id, amount)])[0]);
    }

    let added =
        http.post(service.url("/add?client_id=after&amount=5")).header("Accept", "application/json").send().await?;
    assert_eq!(added.status(), StatusCode::CREATED);
    let added: Value = added.json().await?;
    assert_eq!(added["id"], 101, "ids continue past the largest old one, not the sequence's old position");
    // Idempotency keys work on an adopted table: the key's migration ran after the adoption.
    for replayed in [None, Some("true")] {
        let keyed =
            http.post(service.url("/add?client_id=keyed&amount=6")).header("Idempotency-Key", "k").send().await?;
        assert_eq!(keyed.status(), StatusCode::CREATED);
        assert_eq!(keyed.headers().get("idempotent-replayed").and_then(|v| v.to_str().ok()), replayed);
    }
    assert_eq!(shared().psql(&db, "SELECT id FROM transactions WHERE idempotency_key = 'k'")?, "102");

    // Each broken rule names its rows; the rows stay as they were.
    for (name, ids) in [
        ("transactions_amount_positive", "ids 2, 3;"),
        ("transactions_client_id_not_null", "id 4;"),
        ("transactions_client_id_no_control_chars", "id 5;"),
        ("transactions_amount_not_null", "id 6;"),
        ("transactions_client_id_no_line_or_bidi_controls", "id 7;"),
        ("transactions_client_id_not_empty", "id 8;"),
    ] {
        let line = report_line(&log, name).ok_or_else(|| format!("{name} not reported:\n{log}"))?;
        assert!(line.contains(" WARN ") && line.contains(ids) && line.contains("NOT VALID"), "{line}");
    }
    // ...while new writes are held to them, whoever the writer is.
    for (values, rule) in [
        ("('x', 0)", "transactions_amount_positive"),
        ("(NULL, 5)", "transactions_client_id_not_null"),
        ("('x', NULL)", "transactions_amount_not_null"),
        (r"(E'a\nb', 5)", "transactions_client_id_no_control_chars"),
    ] {
        let refused = shared().psql(&db, &format!("INSERT INTO transactions (client_id, amount) VALUES {values}"));
        assert!(refused.as_ref().is_err_and(|e| e.contains(rule)), "{values}: {refused:?}");
    }
    let types = shared().psql(
        &db,
        "SELECT string_agg(format_type(atttypid, atttypmod), ',' ORDER BY attnum) FROM pg_attribute \
         WHERE attrelid = 'transactions'::regclass AND attnum > 0 AND NOT attisdropped",
    )?;
    assert_eq!(types, "bigint,character varying(100),bigint,timestamp with time zone,character varying(255)");
    let sequence = shared().psql(
        &db,
        "SELECT seqtypid::regtype::text || ' ' || seqmax FROM pg_sequence \
         WHERE seqrelid = pg_get_serial_sequence('transactions', 'id')::regclass",
    )?;
    assert_eq!(sequence, format!("bigint {}", i64::MAX));

    // A restart finds billing's history: nothing is adopted twice, the report repeats until the rows are fixed.
    drop(service);
    let again = start(&url)?;
    let log = again.log();
    assert!(log.contains("schema is up to date") && !log.contains("adopted"), "{log}");
    assert!(report_line(&log, "transactions_amount_positive").is_some_and(|l| l.contains("ids 2, 3;")), "{log}");
    Ok(())
}

/// The same shape as a database billing created itself, so later migrations and the service see one schema.
#[tokio::test]
async fn an_adopted_table_has_the_schema_of_a_fresh_one() -> TestResult {
    let shape = "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) \
                 || CASE WHEN attnotnull THEN ' NOT NULL' ELSE '' END \
                 || coalesce(' DEFAULT ' || pg_get_expr(adbin, adrelid), ''), '; ' ORDER BY attnum) \
                 FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum \
                 WHERE attrelid = 'transactions'::regclass AND attnum > 0 AND NOT attisdropped \
                 UNION ALL SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY conname) \
                 FROM pg_constraint WHERE conrelid = 'transactions'::regclass \
                 UNION ALL SELECT seqtypid::regtype::text || ' ' || seqmax FROM pg_sequence \
                 WHERE seqrelid = pg_get_serial_sequence('transactions', 'id')::regclass \
                 UNION ALL SELECT string_agg(version, ', ' ORDER BY version) FROM __diesel_schema_migrations";
    let fresh = common::TestApp::start()?;
    let (db, url) = flask_database(&["INSERT INTO transactions (client_id, amount) VALUES ('1', 1000), ('2', 5)"])?;
    let _adopted = start(&url)?;
    assert_eq!(shared().psql(&db, shape)?, fresh.sql(shape)?);
    Ok(())
}

/// Columns of the Flask model's own stay with their values; one that billing cannot fill is named at start.
#[tokio::test]
async fn extra_columns_are_kept_and_a_required_one_is_reported() -> TestResult {
    let (db, url) = flask_database(&[
        "ALTER TABLE transactions ADD COLUMN note TEXT, ADD COLUMN source VARCHAR(20) NOT NULL",
        "INSERT INTO transactions (client_id, amount, note, source) VALUES ('1', 10, 'kept', 'web'), ('2', 20, NULL, 'cli')",
    ])?;
    let service = start(&url)?;
    let http = client()?;
    let log = service.log();
    let line = log
        .lines()
        .find(|l| l.contains("column source is NOT NULL without a default"))
        .ok_or_else(|| format!("the required column was not reported:\n{log}"))?;
    assert!(line.contains(" ERROR ") && line.contains("POST /add"), "{line}");
    assert!(!log.contains("column note "), "a nullable column needs no report:\n{log}");

    let all: Vec<Value> = http.get(service.url("/getall")).send().await?.json().await?;
    assert_eq!(
        all.iter().map(row_of).collect::<Vec<_>>(),
        owned(&[(1, Some("1"), Some(10)), (2, Some("2"), Some(20))])
    );
    let refused = http.post(service.url("/add?client_id=3&amount=30")).send().await?;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await?.contains("source"));

    shared().psql(&db, "ALTER TABLE transactions ALTER COLUMN source SET DEFAULT 'billing'")?;
    let added = http.post(service.url("/add?client_id=3&amount=30")).send().await?;
    assert_eq!(added.status(), StatusCode::CREATED);
    assert_eq!(
        shared()
            .psql(&db, "SELECT string_agg(coalesce(note, '-') || ' ' || source, ', ' ORDER BY id) FROM transactions")?,
        "kept web, - cli, - billing"
    );
    Ok(())
}

/// A Flask model that had `created_at = Column(DateTime, default=datetime.utcnow)`: its times are read as UTC and
/// kept; only a row without one gets the adoption time.
#[tokio::test]
async fn a_flask_created_at_column_is_kept_as_utc() -> TestResult {
    let (db, url) = flask_database(&[
        "ALTER TABLE transactions ADD COLUMN created_at TIMESTAMP",
        "INSERT INTO transactions (client_id, amount, created_at) VALUES ('1', 10, '2025-03-01 12:34:56.789'), \
         ('2', 20, NULL)",
    ])?;
    let service = start(&url)?;
    assert!(service.log().contains("1 row without created_at got the adoption time"), "{}", service.log());
    let all: Vec<Value> = client()?.get(service.url("/getall")).send().await?.json().await?;
    assert_eq!(all[0]["created_at"], "2025-03-01T12:34:56.789000Z");
    assert!(all[1]["created_at"].as_str().is_some_and(|t| t > "2026"), "{}", all[1]);
    assert_eq!(shared().psql(&db, "SELECT count(*) FROM transactions WHERE created_at IS NULL")?, "0");
    Ok(())
}

#[tokio::test]
async fn an_empty_flask_table_is_adopted_and_numbering_starts_at_one() -> TestResult {
    let (_db, url) = flask_database(&[])?;
    let service = start(&url)?;
    assert!(service.log().contains("\"transactions\": 0 rows kept,"), "{}", service.log());
    let added: Value = client()?
        .post(service.url("/add?client_id=1&amount=1"))
        .header("Accept", "application/json")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(added["id"], 1);
    Ok(())
}

#[tokio::test]
async fn three_replicas_starting_at_once_adopt_the_table_once() -> TestResult {
    let (db, url) = flask_database(&[FLASK_ROWS])?;
    let mut replicas = (0..3)
        .map(|_| ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", url.as_str())]))
        .collect::<Result<Vec<_>, _>>()?;
    for replica in &mut replicas {
        replica.wait_ready(READY_TIMEOUT)?;
    }
    let adopted = replicas.iter().filter(|r| r.log().contains("adopted the course's Flask table")).count();
    assert_eq!(adopted, 1, "{}", replicas.iter().map(ServiceProcess::log).collect::<Vec<_>>().join("\n---\n"));
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))?.count();
    assert_eq!(shared().psql(&db, "SELECT count(*) FROM __diesel_schema_migrations")?, migrations.to_string());
    let http = client()?;
    for replica in &replicas {
        let all: Vec<Value> = http.get(replica.url("/getall")).send().await?.json().await?;
        assert_eq!(all.iter().map(row_of).collect::<Vec<_>>(), owned(&flask_rows()));
        assert!(report_line(&replica.log(), "transactions_amount_positive").is_some(), "{}", replica.log());
    }
    Ok(())
}

#[tokio::test]
async fn many_breaking_rows_are_counted_past_the_first_twenty() -> TestResult {
    let (_db, url) = flask_database(&[
        "INSERT INTO transactions (client_id, amount) SELECT 'c' || n, CASE WHEN n <= 25 THEN 0 ELSE n END \
         FROM generate_series(1, 30) AS n",
    ])?;
    let service = start(&url)?;
    let log = service.log();
    let line = report_line(&log, "transactions_amount_positive").ok_or_else(|| format!("not reported:\n{log}"))?;
    let first_twenty = (1..=20).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    assert!(line.contains("25 existing rows break"), "{line}");
    assert!(line.contains(&format!("ids {first_twenty} and 5 more;")), "{line}");
    Ok(())
}

#[tokio::test]
async fn a_transactions_table_unlike_flasks_is_refused_and_left_untouched() -> TestResult {
    let db = unique_name("other");
    let url = shared().create_database(&db)?;
    shared().psql(&db, "CREATE TABLE transactions (id SERIAL PRIMARY KEY, client_id TEXT, amount NUMERIC)")?;
    let mut service = ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", url.as_str())])?;
    let status = service.wait_exit(std::time::Duration::from_secs(30))?;
    assert_eq!(status.code(), Some(1));
    let log = service.log();
    assert!(log.contains("not the course's Flask table") && log.contains("amount is numeric"), "{log}");
    assert_eq!(shared().psql(&db, "SELECT to_regclass('__diesel_schema_migrations') IS NULL")?, "t");
    Ok(())
}
