//! A PostgreSQL whose messages are in Russian (`lc_messages = 'ru_RU.UTF-8'`), as on the course's own servers:
//! billing tells a cancel, a terminated backend and a missing table apart by SQLSTATE, so each still gets its
//! proper answer rather than a 500.

mod common;

use std::time::{Duration, Instant};

use billing_testkit::{PgOptions, PgServer, ServiceProcess};
use common::{BIN, READY_TIMEOUT, TestResult, client, lock_transactions_in, release_lock};
use reqwest::StatusCode;
use serde_json::Value;

const RUSSIAN: PgOptions = PgOptions { durable: false, lc_messages: Some("ru_RU.UTF-8") };

/// A Russian-speaking server with a `billing` database, and billing on it with `env`.
fn start(env: &[(&str, &str)]) -> Result<(PgServer, ServiceProcess), String> {
    let pg = PgServer::start(RUSSIAN)?;
    // The premise: without it every assertion below would pass on an English server too.
    match pg.psql("postgres", "SELECT * FROM no_such_table") {
        Err(e) if e.contains("не существует") => {}
        other => return Err(format!("the server's messages are not Russian: {other:?}")),
    }
    let url = pg.create_database("billing")?;
    let mut all = vec![("DATABASE_URL", url.as_str())];
    all.extend_from_slice(env);
    let mut service = ServiceProcess::spawn(BIN.as_ref(), &all)?;
    service.wait_ready(READY_TIMEOUT)?;
    Ok((pg, service))
}

async fn answer(r: reqwest::Response) -> Result<(StatusCode, Value), reqwest::Error> {
    let status = r.status();
    Ok((status, r.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_write_is_safe_to_retry_whatever_the_servers_language() -> TestResult {
    let (pg, service) = start(&[("DATABASE_TIMEOUT_SECS", "1"), ("DATABASE_POOL_SIZE", "1")])?;
    let client = client()?;
    assert_eq!(client.post(service.url("/add?client_id=first&amount=1")).send().await?.status(), StatusCode::CREATED);

    let mut locker = lock_transactions_in(&pg, "billing", 4).await?;
    let (status, body) = answer(client.post(service.url("/add?client_id=stuck&amount=1")).send().await?).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("database_unavailable")),
        "{body}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("was cancelled") && message.contains("safe to retry"), "{message}");
    let _ = locker.wait();
    assert_eq!(pg.psql("billing", "SELECT string_agg(client_id, ',') FROM transactions")?, "first");
    Ok(())
}

/// `pg_terminate_backend` (what a shutdown or an administrator does) ends billing's backend while its INSERT waits
/// on a lock: SQLSTATE 57P01 before any row came back, so nothing was recorded, and the answer says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_backend_is_a_503_that_says_nothing_was_recorded() -> TestResult {
    let (pg, service) = start(&[("DATABASE_TIMEOUT_SECS", "20")])?;
    let client = client()?;
    let locker = lock_transactions_in(&pg, "billing", 10).await?;
    let pending = tokio::spawn(client.post(service.url("/add?client_id=doomed&amount=1")).send());
    let waiting = "SELECT pid FROM pg_stat_activity WHERE datname = 'billing' AND application_name = 'billing' \
                   AND wait_event_type = 'Lock'";
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let pid = pg.psql("postgres", waiting)?;
        if !pid.is_empty() {
            break pid;
        }
        assert!(Instant::now() < deadline, "billing's INSERT never waited on the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pg.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"))?, "t");
    let (status, body) = answer(pending.await??).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("database_unavailable")),
        "{body}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("nothing was recorded") && message.contains("57P01"), "{message}");
    release_lock(&pg, "billing", locker)?;
    assert_eq!(pg.psql("billing", "SELECT count(*) FROM transactions")?, "0");
    // The pool replaced the terminated connection.
    assert_eq!(client.post(service.url("/add?client_id=after&amount=1")).send().await?.status(), StatusCode::CREATED);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_is_schema_missing_whatever_the_servers_language() -> TestResult {
    let (pg, service) = start(&[])?;
    let client = client()?;
    assert_eq!(client.post(service.url("/add?client_id=c&amount=1")).send().await?.status(), StatusCode::CREATED);
    pg.psql("billing", "DROP TABLE transactions")?;
    for (method, path) in
        [("GET", "/get/1"), ("POST", "/add?client_id=c&amount=1"), ("GET", "/getall"), ("GET", "/readyz")]
    {
        let request = if method == "GET" { client.get(service.url(path)) } else { client.post(service.url(path)) };
        let (status, body) = answer(request.send().await?).await?;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("schema_missing")),
            "{path}: {body}"
        );
        // PostgreSQL's own message, in Russian, and its SQLSTATE, which reads the same in any language.
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("не существует") && message.contains("(SQLSTATE 42P01)"), "{path}: {message}");
    }
    Ok(())
}
