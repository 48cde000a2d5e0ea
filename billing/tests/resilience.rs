//! What happens when things go wrong: the database stops, restarts, is wiped, is late; replicas race at start;
//! the pod is told to stop with requests in flight.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use billing_testkit::{PgOptions, PgServer, ServiceProcess, StopMode, shared, unique_name};
use common::{BIN, READY_TIMEOUT, TestApp, TestResult, client, lock_transactions, sample};
use reqwest::StatusCode;
use serde_json::Value;

#[derive(Default)]
struct Outcomes {
    acknowledged: HashMap<i64, String>,
    unavailable: usize,
    slowest: Duration,
    other: Vec<String>,
}

/// PostgreSQL stops (as in a crash) while requests flow, then comes back on the same data directory: the service
/// answers 503 quickly meanwhile, recovers by itself, and every transaction it acknowledged is in the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart_under_load() -> TestResult {
    let pg = PgServer::start(PgOptions { durable: true, lc_messages: None })?;
    let url = pg.create_database("billing")?;
    let mut service = ServiceProcess::spawn(
        BIN.as_ref(),
        &[("DATABASE_URL", &url), ("DATABASE_TIMEOUT_SECS", "2"), ("RUST_LOG", "warn")],
    )?;
    service.wait_ready(READY_TIMEOUT)?;
    let pid = service.pid();

    let stop = Arc::new(AtomicBool::new(false));
    let client = client()?;
    let mut workers = Vec::new();
    for w in 0..4 {
        let (stop, client, base) = (Arc::clone(&stop), client.clone(), service.url(""));
        workers.push(tokio::spawn(async move {
            let mut out = Outcomes::default();
            // Bounded: at most 3,000 requests per worker, and the test stops the loop after ~6 s anyway.
            for i in 0..3000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let client_id = format!("w{w}-{i}");
                let started = Instant::now();
                let result = client.post(format!("{base}/add?client_id={client_id}&amount=1")).send().await;
                out.slowest = out.slowest.max(started.elapsed());
                match result {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        let text = r.text().await.unwrap_or_default();
                        match text.strip_prefix("Transaction added. transaction id=").and_then(|id| id.parse().ok()) {
                            Some(id) => {
                                out.acknowledged.insert(id, client_id);
                            }
                            None => out.other.push(format!("201 with body {text:?}")),
                        }
                    }
                    Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                        let body: Value = r.json().await.unwrap_or_default();
                        if body["error"] == "database_unavailable" {
                            out.unavailable += 1;
                        } else {
                            out.other.push(format!("503 with body {body}"));
                        }
                    }
                    Ok(r) => out.other.push(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => out.other.push(format!("transport error: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            out
        }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.stop(StopMode::Immediate)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.restart()?;
    // Recovery: the same process serves again, without a restart, within a bounded time.
    let recovered_within = Duration::from_secs(20);
    let restarted = Instant::now();
    loop {
        let r = client.get(service.url("/readyz")).send().await?;
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(restarted.elapsed() < recovered_within, "not ready {recovered_within:?} after PostgreSQL returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut all = Outcomes::default();
    for w in workers {
        let out = w.await?;
        all.acknowledged.extend(out.acknowledged);
        all.unavailable += out.unavailable;
        all.slowest = all.slowest.max(out.slowest);
        all.other.extend(out.other);
    }
    assert!(
        all.other.is_empty(),
        "only 201 and 503 are acceptable answers: {:?}",
        &all.other[..all.other.len().min(5)]
    );
    assert!(all.unavailable > 0, "the outage was not observed as 503s");
    assert!(all.slowest < Duration::from_secs(8), "a request hung for {:?}", all.slowest);
    assert_eq!(service.pid(), pid);
    assert!(service.wait_exit(Duration::from_millis(1)).is_err(), "the service process exited");

    let stored: HashMap<i64, String> = pg
        .psql("billing", "SELECT id, client_id FROM transactions")?
        .lines()
        .filter_map(|l| l.split_once('|'))
        .filter_map(|(id, c)| Some((id.parse().ok()?, c.to_string())))
        .collect();
    let missing: Vec<_> = all.acknowledged.iter().filter(|(id, c)| stored.get(id) != Some(c)).collect();
    assert!(missing.is_empty(), "acknowledged but not stored: {missing:?}");
    let acknowledged_before_and_after = all.acknowledged.len();
    assert!(acknowledged_before_and_after > 10, "too little traffic to mean anything: {acknowledged_before_and_after}");
    eprintln!(
        "restart under load: {} acknowledged and all present, {} answered 503, slowest request {:?}",
        all.acknowledged.len(),
        all.unavailable,
        all.slowest
    );
    Ok(())
}

/// Point reads share one pipelined connection. When PostgreSQL goes away they answer 503 promptly (no hang, no
/// 500), and once it is back the same process reconnects by itself.
#[tokio::test]
async fn shared_read_connection_recovers_after_a_database_restart() -> TestResult {
    let pg = PgServer::start(PgOptions { durable: false, lc_messages: None })?;
    let url = pg.create_database("billing")?;
    let mut service = ServiceProcess::spawn(
        BIN.as_ref(),
        &[("DATABASE_URL", &url), ("DATABASE_TIMEOUT_SECS", "2"), ("DATABASE_READ_CONNECTIONS", "1")],
    )?;
    service.wait_ready(READY_TIMEOUT)?;
    let client = client()?;
    let r = client.post(service.url("/add?client_id=c1&amount=5")).send().await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(client.get(service.url("/get/1")).send().await?.status(), StatusCode::OK);

    pg.stop(StopMode::Immediate)?;
    for _ in 0..3 {
        let started = Instant::now();
        let r = client.get(service.url("/get/1")).send().await?;
        let (status, took) = (r.status(), started.elapsed());
        let body: Value = r.json().await?;
        assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("database_unavailable")));
        assert!(took < Duration::from_secs(5), "a read took {took:?} with the database down");
    }

    pg.restart()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client.get(service.url("/get/1")).send().await?;
        if r.status() == StatusCode::OK {
            let body: Value = r.json().await?;
            assert_eq!(body["client_id"], "c1");
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "reads did not recover within 20 s of PostgreSQL's return");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(service.wait_exit(Duration::from_millis(1)).is_err(), "the service process exited");
    Ok(())
}

/// Point reads stuck behind a lock past DATABASE_TIMEOUT_SECS: each batched read answers 503 within about that
/// long, saying so, and the reads after the lock goes are answered again (the connection whose statement may still
/// run was replaced, so nothing queues behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stuck_past_the_timeout_answer_503_and_reads_recover() -> TestResult {
    let app = TestApp::start_with(&[("DATABASE_TIMEOUT_SECS", "1"), ("DATABASE_READ_CONNECTIONS", "1")])?;
    let r = app.client.post(app.url("/add?client_id=c1&amount=5")).send().await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.client.get(app.url("/get/1")).send().await?.status(), StatusCode::OK);
    let locker = lock_transactions(&app, 30).await?;
    let started = Instant::now();
    let stuck: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/get/1"));
            tokio::spawn(async move {
                let r = client.get(url).send().await?;
                let status = r.status();
                Ok::<_, reqwest::Error>((status, r.json::<Value>().await?))
            })
        })
        .collect();
    for read in stuck {
        let (status, body) = read.await??;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("did not answer within 1s"), "{message}");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "the stuck reads were answered after {took:?}");
    common::release_lock(shared(), &app.db, locker)?;
    let r = app.client.get(app.url("/get/1")).send().await?;
    let (status, body) = (r.status(), r.json::<Value>().await?);
    assert_eq!((status, body["client_id"].as_str()), (StatusCode::OK, Some("c1")), "{body}");
    Ok(())
}

/// A payment stuck behind a lock past DATABASE_TIMEOUT_SECS: billing cancels the statement, tells the client that
/// nothing was recorded (so a retry cannot double it), and indeed nothing is, even once the lock goes away. The
/// connection is fine afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stuck_past_the_timeout_is_cancelled_and_not_recorded() -> TestResult {
    let app = TestApp::start_with(&[("DATABASE_TIMEOUT_SECS", "1"), ("DATABASE_POOL_SIZE", "1")])?;
    // One payment first, so the pool's only connection has the INSERT prepared and the stuck one is really sent.
    let r = app.client.post(app.url("/add?client_id=first&amount=1")).send().await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut locker = lock_transactions(&app, 4).await?;
    let started = Instant::now();
    let r = app.client.post(app.url("/add?client_id=stuck&amount=1")).send().await?;
    let took = started.elapsed();
    let status = r.status();
    let body: Value = r.json().await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("was cancelled") && message.contains("safe to retry"), "{message}");
    assert!(took < Duration::from_secs(3), "the answer took {took:?}");

    let _ = locker.wait();
    // The pool's only connection serves the next payment, which queues behind anything still running on it.
    let r = app.client.post(app.url("/add?client_id=next&amount=2")).send().await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        app.sql("SELECT string_agg(client_id, ',' ORDER BY id) FROM transactions")?,
        "first,next",
        "the payment the client was told failed was recorded"
    );
    Ok(())
}

/// The course's failure demo: the database is wiped under a running service. The error names PostgreSQL's own
/// message, readiness turns false, and the table is not silently re-created.
#[tokio::test]
async fn wiped_schema_is_reported_and_not_recreated() -> TestResult {
    let app = TestApp::start()?;
    let r = app.client.post(app.url("/add?client_id=1&amount=1000")).send().await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    app.client.get(app.url("/get/1")).send().await?;

    app.sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")?;

    for (method, path) in
        [("GET", "/getall"), ("GET", "/get/1"), ("POST", "/add?client_id=1&amount=5"), ("GET", "/readyz")]
    {
        let r = app.client.request(method.parse()?, app.url(path)).send().await?;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{method} {path}");
        let body: Value = r.json().await?;
        assert_eq!(body["error"], "schema_missing", "{method} {path}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(r#"relation "transactions" does not exist"#), "{method} {path}: {message}");
        assert!(
            message.contains("(SQLSTATE 42P01)"),
            "{method} {path}: PostgreSQL's SQLSTATE is not quoted: {message}"
        );
    }
    assert_eq!(app.client.get(app.url("/healthz")).send().await?.status(), StatusCode::OK, "liveness stays up");
    assert_eq!(app.sql("SELECT to_regclass('public.transactions') IS NULL")?, "t", "the table was re-created");
    Ok(())
}

/// Three replicas starting together on an empty database: all become ready, the migration ran exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_start_at_once_on_an_empty_database() -> TestResult {
    let db = unique_name("t");
    let url = shared().create_database(&db)?;
    let mut services = (0..3)
        .map(|_| ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", &url)]))
        .collect::<Result<Vec<_>, _>>()?;
    for s in &mut services {
        s.wait_ready(READY_TIMEOUT)?;
    }
    let applied = services.iter().filter(|s| s.log().contains("applied migrations: ")).count();
    let up_to_date = services.iter().filter(|s| s.log().contains("schema is up to date")).count();
    assert_eq!((applied, up_to_date), (1, 2), "exactly one instance migrates");
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))?.count();
    assert_eq!(shared().psql(&db, "SELECT count(*) FROM __diesel_schema_migrations")?, migrations.to_string());
    Ok(())
}

/// A pod that starts before PostgreSQL: liveness answers, readiness and data say 503 until the database is up,
/// then it becomes ready by itself.
#[tokio::test]
async fn waits_for_a_late_database() -> TestResult {
    let pg = PgServer::start(PgOptions::default())?;
    // The superuser is trusted on loopback, so a password in the URL is accepted and ignored: it is there only to
    // prove that no log line repeats it.
    let url = pg.create_database("billing")?.replacen("postgres@", "postgres:Pa55-in-the-url@", 1);
    assert!(url.contains(":Pa55-in-the-url@"), "the test URL carries no password: {url}");
    pg.stop(StopMode::Fast)?;
    let mut service = ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", &url), ("DATABASE_WAIT_SECS", "60")])?;
    let client = client()?;
    // Asked while billing waits for the database: after its first failed attempt, not after a fixed time.
    service.wait_for_log(|log| log.contains("is not reachable yet (attempt 1)"), Duration::from_secs(30))?;
    assert_eq!(client.get(service.url("/healthz")).send().await?.status(), StatusCode::OK);
    let r = client.get(service.url("/readyz")).send().await?;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await?.contains("billing is starting"));
    assert_eq!(client.get(service.url("/getall")).send().await?.status(), StatusCode::SERVICE_UNAVAILABLE);
    pg.restart()?;
    service.wait_ready(READY_TIMEOUT)?;
    let log = service.log();
    assert!(log.contains("is not reachable yet (attempt 1)"), "{log}");
    // The log names the database it waits for (user, host, port, name) ...
    assert!(log.contains(&format!("postgres@127.0.0.1:{}/billing", pg.port())), "{log}");
    // ... and never the password.
    assert!(!log.contains("Pa55-in-the-url"), "the password reached the log: {log}");
    Ok(())
}

#[tokio::test]
async fn gives_up_on_a_database_that_never_comes() -> TestResult {
    // A port nothing listens on: bind and release one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("postgres://billing:topsecret@127.0.0.1:{port}/billing");
    let mut service = ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", &url), ("DATABASE_WAIT_SECS", "2")])?;
    let status = service.wait_exit(Duration::from_secs(20))?;
    assert_eq!(status.code(), Some(1));
    let log = service.log();
    assert!(log.contains("gave up connecting to PostgreSQL at billing@127.0.0.1"), "{log}");
    assert!(!log.contains("topsecret"), "the password leaked into the log:\n{log}");
    Ok(())
}

/// SIGTERM with requests in flight: the listener closes, the requests complete, the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_exits_zero() -> TestResult {
    let mut app = TestApp::start_with(&[("DATABASE_TIMEOUT_SECS", "20")])?;
    // Hold the table so that the inserts below wait inside the database.
    let mut locker = lock_transactions(&app, 3).await?;
    let in_flight: Vec<_> = (0..5)
        .map(|i| {
            let request = app.client.post(app.url(&format!("/add?client_id=inflight-{i}&amount=1"))).send();
            tokio::spawn(async move {
                let r = request.await.map_err(|e| e.to_string())?;
                Ok::<_, String>((r.status(), r.text().await.map_err(|e| e.to_string())?))
            })
        })
        .collect();
    // Signal only once the payments are inside billing: their five connections are open (plus the scrape's own)
    // and the first batch waits for the lock in PostgreSQL.
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock' \
         AND query LIKE '%INSERT INTO transactions%'",
        app.db
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = app.client.get(app.url("/metrics")).send().await?.text().await?;
        let open = sample(&metrics, "billing_http_connections").unwrap_or(0.0);
        if open >= 6.0 && app.sql(&waiting)? != "0" {
            break;
        }
        assert!(Instant::now() < deadline, "the five payments never reached billing ({open} connections open)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.service.signal(libc::SIGTERM)?;
    wait_until_refused(app.service.addr(), Duration::from_secs(10))?;
    for request in in_flight {
        let (status, body) = request.await??;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let status = app.service.wait_exit(Duration::from_secs(15))?;
    assert_eq!(status.code(), Some(0), "{}", app.service.log());
    // The log ends with the drain: every request's access line, then the final line.
    let log = app.service.log();
    assert!(log.lines().last().is_some_and(|l| l.ends_with("stopped")), "last lines missing:\n{log}");
    assert_eq!(log.matches("POST /add 201").count(), 5, "{log}");
    assert_eq!(app.row_count()?, 5);
    let _ = locker.wait();
    Ok(())
}

/// `SHUTDOWN_TIMEOUT_SECS` bounds the stop: a request still in flight that long after SIGTERM (a listing waiting
/// behind a lock, which DATABASE_TIMEOUT_SECS would let wait a minute) is cut off, and the process exits 0, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_after_shutdown_timeout_with_a_request_still_in_flight() -> TestResult {
    let mut app = TestApp::start_with(&[("SHUTDOWN_TIMEOUT_SECS", "3"), ("DATABASE_TIMEOUT_SECS", "60")])?;
    let locker = lock_transactions(&app, 120).await?;
    let listing = tokio::spawn(app.client.get(app.url("/getall")).send());
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock' \
         AND query LIKE 'SELECT id, client_id%'",
        app.db
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.sql(&waiting)? != "1" {
        assert!(Instant::now() < deadline, "the listing never reached the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.service.signal(libc::SIGTERM)?;
    let signalled = Instant::now();
    // Generous for a loaded machine; the listing alone would hold the process for DATABASE_TIMEOUT_SECS (60 s).
    let status = app.service.wait_exit(Duration::from_secs(30))?;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", app.service.log());
    assert!(took >= Duration::from_secs(3), "exited {took:?} after SIGTERM, before SHUTDOWN_TIMEOUT_SECS");
    let log = app.service.log();
    assert!(log.contains("requests still in flight after 3s; exiting anyway"), "{log}");
    assert!(log.lines().last().is_some_and(|l| l.ends_with("stopped")), "{log}");
    assert!(listing.await?.is_err(), "the cut-off listing got an answer");
    common::release_lock(shared(), &app.db, locker)?;
    Ok(())
}

/// Requests that arrive while PostgreSQL is down wait for a connection; once it accepts again they are served
/// within a second, not after the pool's backoff (bb8 doubles its pause up to half the connection timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_payments_succeed_within_a_second_of_the_database_accepting() -> TestResult {
    let pg = PgServer::start(PgOptions { durable: false, lc_messages: None })?;
    let url = pg.create_database("billing")?;
    let mut service = ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", &url), ("DATABASE_TIMEOUT_SECS", "15")])?;
    service.wait_ready(READY_TIMEOUT)?;
    let client = client()?;
    assert_eq!(client.post(service.url("/add?client_id=before&amount=1")).send().await?.status(), StatusCode::CREATED);

    pg.stop(StopMode::Immediate)?;
    let mut waiting = Vec::new();
    for i in 0..4 {
        let (client, url) = (client.clone(), service.url(&format!("/add?client_id=waiting{i}&amount=1")));
        waiting.push(tokio::spawn(async move {
            let r = client.post(url).send().await?;
            Ok::<_, reqwest::Error>((r.status(), Instant::now()))
        }));
    }
    // Long enough for a doubling backoff to be past its third pause.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    pg.restart()?;
    // restart() returns once psql got an answer: PostgreSQL accepts connections from here on.
    let accepting = Instant::now();
    let mut first = None::<Duration>;
    for task in waiting {
        let (status, at) = task.await??;
        assert_eq!(status, StatusCode::CREATED, "a payment waiting through the outage");
        let after = at.saturating_duration_since(accepting);
        first = Some(first.map_or(after, |f| f.min(after)));
    }
    let first = first.unwrap_or_default();
    println!("first 201 came {first:?} after PostgreSQL accepted again");
    assert!(first < Duration::from_secs(1), "the first payment came {first:?} after PostgreSQL accepted");
    assert_eq!(pg.psql("billing", "SELECT count(*) FROM transactions")?, "5");
    Ok(())
}

/// When connections cannot be opened, the 503 and the log say why (here, PostgreSQL's "password authentication
/// failed"), never just "db error", and never print the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_reported_with_its_cause() -> TestResult {
    let role = unique_name("payer");
    let db = unique_name("cause");
    shared().psql("postgres", &format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'first-secret'"))?;
    shared().psql("postgres", &format!("CREATE DATABASE \"{db}\" OWNER \"{role}\""))?;
    let url = format!("postgres://{role}@127.0.0.1:{}/{db}", shared().port());
    let mut service = ServiceProcess::spawn(
        BIN.as_ref(),
        &[
            ("DATABASE_URL", &url),
            ("DATABASE_PASSWORD", "first-secret"),
            ("DATABASE_TIMEOUT_SECS", "2"),
            ("DATABASE_READ_CONNECTIONS", "0"),
        ],
    )?;
    service.wait_ready(READY_TIMEOUT)?;
    let client = client()?;
    // The password changes under the running service, and its open connections are closed.
    shared().psql("postgres", &format!("ALTER ROLE \"{role}\" PASSWORD 'second-secret'"))?;
    shared().psql(
        "postgres",
        &format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{role}'"),
    )?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = client.post(service.url("/add?client_id=c&amount=1")).send().await?;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await?;
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("password authentication failed") && message.contains("28P01"), "{message}");
    // Nothing reached the database, and the client is told it may retry.
    assert!(message.contains("nothing was recorded: it is safe to retry"), "{message}");
    let log = service.log();
    assert!(log.contains("password authentication failed"), "the log does not say why:\n{log}");
    assert!(!log.contains("first-secret") && !message.contains("first-secret"), "the password was printed");
    Ok(())
}

/// One request on a kept-alive raw connection: its status, its `Connection` header and whether the server then
/// closed the connection.
async fn keep_alive_request(stream: &mut tokio::net::TcpStream, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let method = if path.starts_with("/add") { "POST" } else { "GET" };
    let request = format!("{method} {path} HTTP/1.1\r\nHost: billing\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("connection closed with no complete answer: {:?}", String::from_utf8_lossy(&received)));
        }
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
                .unwrap_or_default()
                .to_string()
        };
        let length: usize = header("content-length").parse().map_err(|_| format!("no content-length: {head}"))?;
        if body.len() < length {
            continue;
        }
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(format!("bad status line: {head}"))?;
        return Ok((status, header("connection")));
    }
}

/// SIGTERM while clients hold kept-alive connections: a request they send just after it is still answered, with
/// `Connection: close`, and the server then closes the connection; `/readyz` turns 503 so endpoints drop the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_just_after_sigterm_on_kept_alive_connections_are_answered() -> TestResult {
    use tokio::io::AsyncReadExt;
    let mut app = TestApp::start()?;
    let mut connections = Vec::new();
    for i in 0..16 {
        let mut stream = tokio::net::TcpStream::connect(app.service.addr()).await?;
        let (status, connection) =
            keep_alive_request(&mut stream, &format!("/add?client_id=before{i}&amount=1")).await?;
        assert_eq!((status, connection.as_str()), (201, ""), "before SIGTERM");
        connections.push(stream);
    }
    // The readiness probe's connection is kept alive too, and answered once before the signal: a connection still
    // in the listener's backlog when the listener closes is reset, and that is not what this test is about.
    let mut probe = tokio::net::TcpStream::connect(app.service.addr()).await?;
    assert_eq!(keep_alive_request(&mut probe, "/readyz").await?, (200, String::new()), "readiness before SIGTERM");
    app.service.signal(libc::SIGTERM)?;
    // The signal has been handled once the listener refuses new connections.
    wait_until_refused(app.service.addr(), Duration::from_secs(10))?;
    // All at once, within the server's drain grace (2 s): one after another, 16 payments on a loaded machine
    // can outlast it, and the last connections are then closed unanswered (this failed so on a 2-core machine
    // with a load of 20).
    let payments = connections.into_iter().enumerate().map(|(i, mut stream)| {
        tokio::spawn(async move {
            let (status, connection) =
                keep_alive_request(&mut stream, &format!("/add?client_id=after{i}&amount=1")).await?;
            if (status, connection.as_str()) != (201, "close") {
                return Err(format!("a payment sent just after SIGTERM got {status} with Connection: {connection}"));
            }
            // The server closes the connection after that answer.
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
                .await
                .map_err(|_| "not closed".to_string())?
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        })
    });
    let readiness = tokio::spawn(async move { keep_alive_request(&mut probe, "/readyz").await });
    let mut answered = 0;
    for payment in futures_util::future::join_all(payments).await {
        payment??;
        answered += 1;
    }
    assert_eq!(readiness.await??.0, 503, "readiness while stopping");
    let status = app.service.wait_exit(Duration::from_secs(15))?;
    assert_eq!(status.code(), Some(0), "{}", app.service.log());
    assert_eq!((answered, app.row_count()?), (16, 32));
    Ok(())
}

/// SIGTERM while clients hold kept-alive connections and send nothing more: once the drain's grace (2 s) is over,
/// the server closes them itself and exits, rather than waiting for each to time out (`HEADER_READ_TIMEOUT_SECS`,
/// 60 s here) or for `SHUTDOWN_TIMEOUT_SECS` (60 s here) to cut the stop short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connections_are_closed_at_the_end_of_the_drain() -> TestResult {
    use tokio::io::AsyncReadExt;
    let mut app = TestApp::start_with(&[("HEADER_READ_TIMEOUT_SECS", "60"), ("SHUTDOWN_TIMEOUT_SECS", "60")])?;
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(app.service.addr()).await?;
        assert_eq!(keep_alive_request(&mut stream, "/ping").await?, (200, String::new()), "before SIGTERM");
        idle.push(stream);
    }
    app.service.signal(libc::SIGTERM)?;
    let signalled = Instant::now();
    wait_until_refused(app.service.addr(), Duration::from_secs(10))?;
    for mut stream in idle {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0))), "an idle connection was not closed by the server: {read:?} {rest:?}");
    }
    let status = app.service.wait_exit(Duration::from_secs(20))?;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", app.service.log());
    let log = app.service.log();
    assert!(!log.contains("exiting anyway"), "{log}");
    // The grace is 2 s; 10 s leaves a loaded machine room and is far below either 60 s bound.
    assert!(took < Duration::from_secs(10), "exited {took:?} after SIGTERM");
    Ok(())
}

/// Waits until nothing accepts connections at `addr` any more (billing closes its listener on SIGTERM).
fn wait_until_refused(addr: std::net::SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(addr).is_ok() {
        if Instant::now() >= deadline {
            return Err(format!("the listener still accepts connections {timeout:?} after SIGTERM"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
