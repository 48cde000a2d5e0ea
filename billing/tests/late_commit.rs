//! A payment whose client was told "outcome unknown", and which then commits, still gets its transaction-log line.
//!
//! The network between billing and PostgreSQL goes bad the way a partition does: a TCP relay of the test's own
//! (real sockets on loopback) holds PostgreSQL's answers on the open connection, and new connections (the cancel
//! request) get no answer. billing gives up on the payment and says the outcome is unknown; when the relay lets the
//! answer through, the payment turns out committed, and its line is written then.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use billing_testkit::{ServiceProcess, shared, unique_name};
use common::{BIN, Faults, READY_TIMEOUT, TestResult, client, relay};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_commits_after_outcome_unknown_gets_its_log_line() -> TestResult {
    let db = unique_name("late");
    shared().create_database(&db)?;
    let faults = Arc::new(Faults::default());
    let port = relay(shared().port(), Arc::clone(&faults)).await?;
    let dir = std::env::temp_dir().join(unique_name("late-log"));
    std::fs::create_dir_all(&dir)?;
    let log_file = dir.join("app.log");
    let url = format!("postgres://postgres@127.0.0.1:{port}/{db}?sslmode=disable");
    let mut service = ServiceProcess::spawn(
        BIN.as_ref(),
        &[
            ("DATABASE_URL", &url),
            ("DATABASE_TIMEOUT_SECS", "1"),
            ("DATABASE_POOL_SIZE", "1"),
            ("DATABASE_READ_CONNECTIONS", "0"),
            ("LOG_FILE", log_file.to_str().ok_or("path")?),
        ],
    )?;
    service.wait_ready(READY_TIMEOUT)?;
    let client = client()?;
    // The pool's one connection is open and has the statement prepared before the network goes bad.
    assert_eq!(client.post(service.url("/add?client_id=before&amount=1")).send().await?.status(), StatusCode::CREATED);

    faults.hold_answers.store(true, Ordering::Release);
    faults.blackhole_new.store(true, Ordering::Release);
    let started = Instant::now();
    let r = client.post(service.url("/add?client_id=late&amount=7")).send().await?;
    let status = r.status();
    let body: Value = r.json().await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("may or may not be recorded"), "{message}");
    println!("outcome unknown after {:?}", started.elapsed());
    // PostgreSQL committed it long ago; only its answer was held.
    assert_eq!(shared().psql(&db, "SELECT count(*) FROM transactions WHERE client_id = 'late'")?, "1");

    faults.hold_answers.store(false, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = std::fs::read_to_string(&log_file).unwrap_or_default();
        if lines.lines().any(|l| l.ends_with("client late, amount 7")) {
            assert_eq!(lines.lines().count(), 2, "{lines}");
            break;
        }
        assert!(Instant::now() < deadline, "no log line for the late payment:\n{lines}\n{}", service.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = service.log();
    assert!(log.contains("committed after their clients were told the outcome was unknown"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
