//! The table's CHECK on client_id follows the service's validation: no Unicode line or paragraph separators and no
//! bidirectional controls (migration 2026-12-02-000001). A ledger that already holds such rows keeps them, named by
//! id at start-up, and PostgreSQL refuses new ones from any writer.

mod common;

use billing_testkit::{ServiceProcess, shared, unique_name};
use common::{BIN, READY_TIMEOUT, TestApp, TestResult, client};
use serde_json::Value;

const RULE: &str = "transactions_client_id_no_line_or_bidi_controls";

/// A ledger as billing left it before the new rule: migration 1 applied and recorded.
fn ledger_before_the_rule() -> Result<(String, String), String> {
    let db = unique_name("ledger");
    let url = shared().create_database(&db)?;
    shared().psql(&db, include_str!("../migrations/2026-11-27-000001_create_transactions/up.sql"))?;
    shared().psql(
        &db,
        "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
         run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); \
         INSERT INTO __diesel_schema_migrations (version) VALUES ('20261127000001')",
    )?;
    Ok((db, url))
}

fn validated(db: &str) -> Result<String, String> {
    shared().psql(db, &format!("SELECT convalidated FROM pg_constraint WHERE conname = '{RULE}'"))
}

#[tokio::test]
async fn rows_stored_before_the_rule_are_kept_and_named_and_new_ones_refused() -> TestResult {
    let (db, url) = ledger_before_the_rule()?;
    shared().psql(
        &db,
        r"INSERT INTO transactions (client_id, amount) VALUES ('ok', 1), (E'a\u2028b', 2), (E'x\u202Ey', 3), ('ok2', 4)",
    )?;
    let mut service = ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", url.as_str())])?;
    service.wait_ready(READY_TIMEOUT)?;
    let log = service.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!(" constraint {RULE} ")))
        .ok_or_else(|| format!("the rows were not reported:\n{log}"))?;
    assert!(line.contains(" WARN ") && line.contains("2 existing rows break") && line.contains("ids 2, 3;"), "{line}");
    assert_eq!(validated(&db)?, "f");

    let http = client()?;
    let kept: Value = http.get(service.url("/get/2")).send().await?.json().await?;
    assert_eq!(kept["client_id"], "a\u{2028}b", "the row is served unchanged");
    for c in ["\\u2029", "\\u202E", "\\u2066", "\\u061C", "\\u200F"] {
        let refused =
            shared().psql(&db, &format!("INSERT INTO transactions (client_id, amount) VALUES (E'new{c}', 5)"));
        assert!(refused.as_ref().is_err_and(|e| e.contains(RULE)), "{c}: {refused:?}");
    }

    // The operator's fix, as docs/operations.md gives it; the next start has nothing to report.
    shared().psql(&db, "UPDATE transactions SET client_id = 'fixed' || id WHERE id IN (2, 3)")?;
    shared().psql(&db, &format!("ALTER TABLE transactions VALIDATE CONSTRAINT {RULE}"))?;
    drop(service);
    let mut again = ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", url.as_str())])?;
    again.wait_ready(READY_TIMEOUT)?;
    assert!(!again.log().contains(RULE), "{}", again.log());
    assert_eq!(validated(&db)?, "t");
    Ok(())
}

#[tokio::test]
async fn a_new_ledger_gets_the_rule_validated() -> TestResult {
    let app = TestApp::start()?;
    assert_eq!(validated(&app.db)?, "t");
    let refused = app.sql(r"INSERT INTO transactions (client_id, amount) VALUES (E'a\u2028b', 5)");
    assert!(refused.as_ref().is_err_and(|e| e.contains(RULE)), "{refused:?}");
    assert!(app.sql("INSERT INTO transactions (client_id, amount) VALUES ('ordinary ünïcode ✓', 5)").is_ok());
    Ok(())
}
