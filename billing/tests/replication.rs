//! A 201 means the payment is as durable as the database promises: with synchronous replication (CloudNativePG's
//! `synchronous` setting, or `synchronous_standby_names` on any server), on the standbys too.
//!
//! When a commit's wait for the standbys is cancelled (billing's cancel past `DATABASE_TIMEOUT_SECS`, or
//! `statement_timeout`), PostgreSQL does not roll back: it keeps the commit on the primary and answers success with a
//! WARNING ("The transaction has already committed locally, but might not have been replicated to the standby"). A
//! failover then would lose a payment the client was told was recorded. billing must not answer 201 then.
//!
//! A real PostgreSQL waiting for a standby that never comes (`synchronous_standby_names = 'nobody'`) makes every
//! commit wait until it is cancelled.

mod common;

use std::time::{Duration, Instant};

use billing_testkit::{PgOptions, PgServer, ServiceProcess, unique_name};
use common::{BIN, READY_TIMEOUT, TestResult, client};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_standbys_never_confirmed_is_not_a_201() -> TestResult {
    let pg = PgServer::start(PgOptions::default())?;
    let url = pg.create_database("billing")?;
    let dir = std::env::temp_dir().join(unique_name("unconfirmed-log"));
    std::fs::create_dir_all(&dir)?;
    let log_file = dir.join("app.log");
    let mut service = ServiceProcess::spawn(
        BIN.as_ref(),
        &[
            ("DATABASE_URL", url.as_str()),
            ("DATABASE_TIMEOUT_SECS", "1"),
            ("LOG_FILE", log_file.to_str().ok_or("path")?),
        ],
    )?;
    service.wait_ready(READY_TIMEOUT)?;
    let client = client()?;
    assert_eq!(client.post(service.url("/add?client_id=before&amount=1")).send().await?.status(), StatusCode::CREATED);

    pg.psql("postgres", "ALTER SYSTEM SET synchronous_standby_names = 'nobody'")?;
    pg.psql("postgres", "SELECT pg_reload_conf()")?;
    assert_eq!(pg.psql("postgres", "SHOW synchronous_standby_names")?, "nobody");

    let started = Instant::now();
    let r = client.post(service.url("/add?client_id=unconfirmed&amount=7")).send().await?;
    let status = r.status();
    let text = r.text().await?;
    let took = started.elapsed();
    println!("answered {status} after {took:?}: {text}");
    // The premise: the commit waited for the standby until billing's cancel (DATABASE_TIMEOUT_SECS = 1).
    assert!(took >= Duration::from_secs(1), "the commit did not wait for the missing standby ({took:?})");
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a commit the standbys never confirmed was acknowledged: {text}"
    );
    let body: Value = serde_json::from_str(&text)?;
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("may or may not be recorded") && message.contains("standbys"), "{message}");
    // Committed on this server all the same: the client, told to check, finds it, and its log line is written.
    assert_eq!(pg.psql("billing", "SELECT count(*) FROM transactions WHERE client_id = 'unconfirmed'")?, "1");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = std::fs::read_to_string(&log_file).unwrap_or_default();
        if lines.lines().any(|l| l.ends_with("client unconfirmed, amount 7")) {
            break;
        }
        assert!(Instant::now() < deadline, "no log line for the committed payment:\n{lines}\n{}", service.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = service.log();
    assert!(log.contains("committed with a warning"), "{log}");

    // Once the standby requirement is gone, payments are acknowledged again on the same connections.
    pg.psql("postgres", "ALTER SYSTEM RESET synchronous_standby_names")?;
    pg.psql("postgres", "SELECT pg_reload_conf()")?;
    assert_eq!(client.post(service.url("/add?client_id=after&amount=1")).send().await?.status(), StatusCode::CREATED);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
