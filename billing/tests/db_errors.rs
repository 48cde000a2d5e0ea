//! README's database failures on a real PostgreSQL, each with the answer README promises for a payment: a read-only
//! server (`25006`) and a server out of connections (`53300`) are 503 "nothing was recorded: it is safe to retry",
//! and so is a payment that waited `DATABASE_TIMEOUT_SECS` in the writer's queue without being sent. Every SQLSTATE
//! class README lists is unit-tested in src/db/sqlstate.rs.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use billing_testkit::{ServiceProcess, shared, unique_name};
use common::{BIN, Faults, READY_TIMEOUT, TestApp, TestResult, client, relay, sample};
use reqwest::StatusCode;
use serde_json::Value;

const NOTHING: &str = "nothing was recorded: it is safe to retry";

async fn answer(r: reqwest::Response) -> Result<(StatusCode, Value), reqwest::Error> {
    let status = r.status();
    Ok((status, r.json().await?))
}

async fn metrics(client: &reqwest::Client, service: &ServiceProcess) -> Result<String, reqwest::Error> {
    client.get(service.url("/metrics")).send().await?.text().await
}

/// The premise of the tests below: billing opens pooled connections only when a payment or a listing needs one
/// (`/readyz` and point reads use their own shared connection), so a setting changed now reaches the payment's
/// connection, which is opened after it.
async fn assert_no_pooled_connection(client: &reqwest::Client, service: &ServiceProcess) -> TestResult {
    let text = metrics(client, service).await?;
    assert_eq!(sample(&text, "billing_db_pool_connections"), Some(0.0), "the pool already holds a connection:\n{text}");
    Ok(())
}

/// A read-only server (a standby, or a primary demoted by a failover) refuses the INSERT with SQLSTATE 25006: the
/// payment is answered 503 `database_unavailable`, nothing was recorded, and reads go on.
#[tokio::test]
async fn a_read_only_database_is_503_and_nothing_is_recorded() -> TestResult {
    let app = TestApp::start()?;
    app.sql("INSERT INTO transactions (client_id, amount) VALUES ('before', 1)")?;
    assert_no_pooled_connection(&app.client, &app.service).await?;
    // Every session opened from now on is read-only, as on a hot standby.
    app.sql(&format!("ALTER DATABASE \"{}\" SET default_transaction_read_only = on", app.db))?;

    let (status, body) = answer(app.client.post(app.url("/add?client_id=refused&amount=5")).send().await?).await?;
    assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("database_unavailable")));
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("read-only") && message.contains("(SQLSTATE 25006)"), "{message}");
    assert!(message.ends_with(NOTHING), "{message}");
    assert_eq!(app.sql("SELECT string_agg(client_id, ',') FROM transactions")?, "before", "a row was written");

    let (status, body) = answer(app.client.get(app.url("/get/1")).send().await?).await?;
    assert_eq!((status, body["client_id"].as_str()), (StatusCode::OK, Some("before")), "reads are served: {body}");
    let text = metrics(&app.client, &app.service).await?;
    assert_eq!(sample(&text, r#"billing_database_errors_total{kind="unavailable"}"#), Some(1.0), "{text}");
    Ok(())
}

/// PostgreSQL out of connections (SQLSTATE 53300, here the role's CONNECTION LIMIT; `max_connections` reached gives
/// the same code): a payment that needs a new connection gets a 503 naming the cause, nothing was recorded, and
/// once connections are allowed again the same process records payments without a restart.
#[tokio::test]
async fn out_of_connections_is_503_naming_53300_and_nothing_is_recorded() -> TestResult {
    let role = unique_name("payer");
    let db = unique_name("t");
    // Not a superuser: PostgreSQL's connection limits do not apply to superusers.
    shared().psql("postgres", &format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'limited-secret'"))?;
    shared().psql("postgres", &format!("CREATE DATABASE \"{db}\" OWNER \"{role}\""))?;
    let url = format!("postgres://{role}@127.0.0.1:{}/{db}", shared().port());
    let mut service = ServiceProcess::spawn(
        BIN.as_ref(),
        &[("DATABASE_URL", &url), ("DATABASE_PASSWORD", "limited-secret"), ("DATABASE_TIMEOUT_SECS", "2")],
    )?;
    service.wait_ready(READY_TIMEOUT)?;
    let client = client()?;
    assert_no_pooled_connection(&client, &service).await?;
    shared().psql("postgres", &format!("ALTER ROLE \"{role}\" CONNECTION LIMIT 0"))?;

    let (status, body) = answer(client.post(service.url("/add?client_id=refused&amount=5")).send().await?).await?;
    assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("database_unavailable")));
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("too many connections") && message.contains("(SQLSTATE 53300)"), "{message}");
    assert!(message.ends_with(NOTHING), "{message}");
    assert_eq!(shared().psql(&db, "SELECT count(*) FROM transactions")?, "0", "a row was written");

    shared().psql("postgres", &format!("ALTER ROLE \"{role}\" CONNECTION LIMIT -1"))?;
    let r = client.post(service.url("/add?client_id=after&amount=5")).send().await?;
    assert_eq!(r.status(), StatusCode::CREATED, "no recovery once connections were allowed again");
    assert_eq!(shared().psql(&db, "SELECT string_agg(client_id, ',') FROM transactions")?, "after");
    Ok(())
}

/// A payment that waits `DATABASE_TIMEOUT_SECS` in the group-commit writer's queue, behind a batch PostgreSQL does
/// not answer, is told 503 "never sent ... nothing was recorded", and is indeed never written, even once the writer
/// is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_waited_in_the_writers_queue_is_never_sent() -> TestResult {
    let db = unique_name("queue");
    shared().create_database(&db)?;
    let faults = Arc::new(Faults::default());
    let port = relay(shared().port(), Arc::clone(&faults)).await?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/{db}?sslmode=disable");
    let mut service = ServiceProcess::spawn(
        BIN.as_ref(),
        &[
            ("DATABASE_URL", &url),
            ("DATABASE_TIMEOUT_SECS", "1"),
            ("DATABASE_POOL_SIZE", "1"),
            ("DATABASE_READ_CONNECTIONS", "0"),
        ],
    )?;
    service.wait_ready(READY_TIMEOUT)?;
    let client = client()?;
    // The pool's one connection is open and has the statement prepared before the network goes bad.
    assert_eq!(client.post(service.url("/add?client_id=before&amount=1")).send().await?.status(), StatusCode::CREATED);

    // The writer's next batch gets no answer, nor does its cancel: the writer is busy with it for the timeout (1 s)
    // and both cancel graces (2 s each), 5 s in all.
    faults.hold_answers.store(true, Ordering::Release);
    faults.blackhole_new.store(true, Ordering::Release);
    let stuck = tokio::spawn(client.post(service.url("/add?client_id=stuck&amount=1")).send());
    // PostgreSQL has the batch (it committed; only its answer is held), so the writer is busy with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared().psql(&db, "SELECT count(*) FROM transactions WHERE client_id = 'stuck'")? != "1" {
        assert!(Instant::now() < deadline, "the stuck payment never reached PostgreSQL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let (status, body) = answer(client.post(service.url("/add?client_id=queued&amount=2")).send().await?).await?;
    let waited = started.elapsed();
    assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("database_unavailable")));
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("waited 1s for the database and was never sent to it"), "{message}");
    assert!(message.ends_with(NOTHING), "{message}");
    assert!(waited >= Duration::from_secs(1), "answered after {waited:?}, before its wait in the queue ended");

    let (status, body) = answer(stuck.await??).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("may or may not be recorded")), "{body}");

    // The network heals; the next payment goes through the same writer after anything still queued.
    faults.hold_answers.store(false, Ordering::Release);
    faults.blackhole_new.store(false, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client.post(service.url("/add?client_id=after&amount=3")).send().await?;
        if r.status() == StatusCode::CREATED {
            break;
        }
        // The pool may first have to replace the connection the stuck batch was on.
        assert!(Instant::now() < deadline, "no payment recorded 20 s after the network healed: {}", r.text().await?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        shared().psql(&db, "SELECT count(*) FROM transactions WHERE client_id = 'queued'")?,
        "0",
        "the payment its client was told was never sent was written"
    );
    let text = metrics(&client, &service).await?;
    assert_eq!(sample(&text, r#"billing_database_errors_total{kind="timeout"}"#), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"billing_database_errors_total{kind="outcome_unknown"}"#), Some(1.0), "{text}");
    Ok(())
}
