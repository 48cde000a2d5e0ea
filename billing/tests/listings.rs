//! Clients that request `/getall` and never read: they cannot take the connections payments need, they are cut off
//! after GETALL_STALL_TIMEOUT_SECS, and their statements do not live on in connections the pool reuses.

mod common;

use std::time::{Duration, Instant};

use billing_testkit::{ServiceProcess, shared, unique_name};
use common::{BIN, READY_TIMEOUT, TestApp, TestResult, client, lock_transactions_in, release_lock};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Enough rows that the listing (about 25 MB of JSON) cannot sit in the sockets' buffers.
const ROWS: u32 = 300_000;
const STALLED: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_listings_cannot_starve_payments() -> TestResult {
    // A turn is waited for (DATABASE_TIMEOUT_SECS) for less time than the first listings take to be cut off
    // (GETALL_STALL_TIMEOUT_SECS after their clients' sockets fill, up to 2 s in on a slow machine): so no turn is
    // freed while a listing still waits, and which ones run and which are told to come back does not depend on timing.
    let app = TestApp::start_with(&[("GETALL_STALL_TIMEOUT_SECS", "4"), ("DATABASE_TIMEOUT_SECS", "2")])?;
    app.sql(&format!(
        "INSERT INTO transactions (client_id, amount) SELECT 'c' || g, g FROM generate_series(1, {ROWS}) g"
    ))?;
    let addr = app.service.addr();

    // Twenty clients ask for the whole ledger and never read a byte of it.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET /getall HTTP/1.1\r\nHost: billing\r\n\r\n").await?;
        stalled.push(s);
    }
    // Let them take what they can: five listings (a quarter of the pool of 20) run, the rest wait for a turn. Wait
    // until the five statements are open in PostgreSQL, rather than for a fixed time a slow machine may not keep. A
    // listing reads its rows in fetches inside a transaction, so between fetches (and while its client does not
    // read) its session may be `idle in transaction` rather than `active`: any state but `idle` counts. Only client
    // backends: PostgreSQL's parallel workers show the same statement.
    let active = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'billing' \
         AND backend_type = 'client backend' AND state <> 'idle' AND query LIKE 'SELECT id, client_id%'",
        app.db
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = app.sql(&active)?;
        if running == "5" {
            break;
        }
        if Instant::now() >= deadline {
            let seen = app.sql(&format!(
                "SELECT string_agg(concat_ws(' | ', application_name, state, wait_event, left(query, 50)), E'\\n') \
                 FROM pg_stat_activity WHERE datname = '{}'",
                app.db
            ))?;
            panic!("{running} of the 5 allowed listings run after 30 s (want 5); the database's sessions:\n{seen}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A listing beyond the limit queues behind the fifteen waiting ones, while the first five hold their turns.
    let beyond = tokio::spawn(app.client.get(app.url("/getall")).send());

    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let r = app.client.post(app.url(&format!("/add?client_id=p{i}&amount=1"))).send().await?;
        slowest = slowest.max(started.elapsed());
        assert_eq!(r.status(), StatusCode::CREATED, "payment {i} during the stalled listings: {}", r.text().await?);
        let r = app.client.get(app.url("/readyz")).send().await?;
        assert_eq!(r.status(), StatusCode::OK, "readiness during the stalled listings");
    }
    println!("slowest of 20 payments with {STALLED} stalled listings: {slowest:?}");
    // The pool wait is DATABASE_TIMEOUT_SECS=2: a payment that had to wait for a listing's connection would get 503.
    assert!(slowest < Duration::from_secs(2), "a payment waited {slowest:?}");

    // The listing beyond the limit is told to come back, after waiting up to DATABASE_TIMEOUT_SECS for a turn.
    let r = beyond.await??;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let body: Value = r.json().await?;
    assert_eq!(body["error"], "busy", "{body}");

    // Past the stall timeout (4 s) the listings are cut off: their statements and transactions are gone from
    // PostgreSQL, not held open. Generous on purpose: the bound only has to tell "cut off" from "running on for good".
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = app.sql(&active)?;
        if running == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "{running} listing statements still run after their clients were cut off");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Each stalled client reads now. The five whose listing ran find a body cut off without its closing bracket,
    // not a complete array; the rest were told to come back (503 busy) after waiting DATABASE_TIMEOUT_SECS for a
    // turn.
    let (mut cut_off, mut busy) = (0, 0);
    for mut stream in stalled {
        let mut received = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received)).await;
        assert!(read.is_ok(), "a stalled connection was not closed");
        let text = String::from_utf8_lossy(&received);
        if text.starts_with("HTTP/1.1 200") {
            assert!(!text.ends_with("]\r\n0\r\n\r\n"), "a cut-off listing ended like a complete one");
            cut_off += 1;
        } else {
            assert!(text.starts_with("HTTP/1.1 503") && text.contains("\"busy\""), "{}", &text[..text.len().min(300)]);
            busy += 1;
        }
    }
    assert!(cut_off == 5 && busy == STALLED - 5, "{cut_off} cut off, {busy} busy");

    // Every connection the listings used is clean: a full listing read normally returns every row.
    let rows: Vec<Value> = app.client.get(app.url("/getall")).send().await?.json().await?;
    assert_eq!(rows.len(), ROWS as usize + 20);
    Ok(())
}

/// A listing whose client goes away is cancelled in PostgreSQL. The cancel request travels on a connection of its
/// own and may arrive after the listing's statement has already finished; it must then not hit the next statement
/// run on that connection: the next client's listing, which would be cut off with "canceling statement due to user
/// request" (SQLSTATE 57014) and logged as an error (issue 24). One pooled connection, so every listing reuses the
/// abandoned one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_listing_never_cuts_off_the_next_one() -> TestResult {
    let app = TestApp::start_with(&[("DATABASE_POOL_SIZE", "1"), ("DATABASE_READ_CONNECTIONS", "0")])?;
    // Small enough that PostgreSQL has sent every row before the client goes away, so the cancel finds the statement
    // finished; large enough for several chunks, so the listing is still being handed over when it does.
    app.sql("INSERT INTO transactions (client_id, amount) SELECT 'c' || g, g FROM generate_series(1, 3000) g")?;
    let addr = app.service.addr();
    for round in 0..40 {
        let mut gone = TcpStream::connect(addr).await?;
        gone.write_all(b"GET /getall HTTP/1.1\r\nHost: billing\r\n\r\n").await?;
        let mut first = [0u8; 1];
        gone.read_exact(&mut first).await?;
        drop(gone);
        let body = match app.client.get(app.url("/getall")).send().await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        let body = body.map_err(|e| format!("round {round}: {e}; billing's log:\n{}", app.service.log()))?;
        let rows: Vec<Value> = serde_json::from_slice(&body)
            .map_err(|e| format!("round {round}: the listing after a cancelled one is not whole: {e}"))?;
        assert_eq!(rows.len(), 3000, "round {round}");
    }
    let log = app.service.log();
    assert!(!log.contains(" ERROR "), "a client going away is not an error:\n{log}");
    Ok(())
}

/// `GETALL_TIMEOUT_SECS` bounds a listing: past it PostgreSQL's `statement_timeout` ends the statement (SQLSTATE
/// 57014) and the body is aborted, never ended like a complete array; a listing that waits past it before its first
/// row (behind a lock) is a 503 that says so. The stall time-out is an hour, so it cannot be what ends either.
///
/// The table is slow to read, as on a disk far slower than memory: a row-level security policy makes PostgreSQL
/// sleep a millisecond per row, so the 5,000-row listing takes at least 5 s in PostgreSQL, whatever the sockets
/// buffer (a fast table fits in them whole, and its statement ends before any time-out). Policies bind billing only
/// as a role that is not a superuser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_past_getall_timeout_is_cut_off() -> TestResult {
    let role = unique_name("lister");
    let db = unique_name("t");
    shared().psql("postgres", &format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'lister-secret'"))?;
    shared().psql("postgres", &format!("CREATE DATABASE \"{db}\" OWNER \"{role}\""))?;
    // Rows in id order from the primary key's index, each filtered as it is read, so they flow from the first
    // millisecond: a small table is otherwise read whole and sorted, and no row would leave before the time-out.
    shared().psql("postgres", &format!("ALTER ROLE \"{role}\" SET enable_seqscan = off"))?;
    shared().psql("postgres", &format!("ALTER ROLE \"{role}\" SET enable_sort = off"))?;
    let url = format!("postgres://{role}@127.0.0.1:{}/{db}", shared().port());
    let mut service = ServiceProcess::spawn(
        BIN.as_ref(),
        &[
            ("DATABASE_URL", &url),
            ("DATABASE_PASSWORD", "lister-secret"),
            ("GETALL_TIMEOUT_SECS", "1"),
            ("GETALL_STALL_TIMEOUT_SECS", "3600"),
            ("DATABASE_TIMEOUT_SECS", "30"),
        ],
    )?;
    service.wait_ready(READY_TIMEOUT)?;
    shared().psql(
        &db,
        "INSERT INTO transactions (client_id, amount) SELECT 'c' || g, g FROM generate_series(1, 5000) g; \
         ALTER TABLE transactions ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY; \
         CREATE FUNCTION slow_read(bigint) RETURNS boolean VOLATILE LANGUAGE plpgsql \
             AS $$ BEGIN PERFORM pg_sleep(0.001); RETURN true; END $$; \
         CREATE POLICY slow_disk ON transactions USING (slow_read(id))",
    )?;
    let client = client()?;

    let started = Instant::now();
    let mut r = client.get(service.url("/getall")).send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    let mut received = Vec::new();
    let ended = loop {
        match r.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let took = started.elapsed();
    assert!(ended.is_err(), "the listing ended like a complete one after {took:?}");
    assert!(received.starts_with(b"[{\"id\":1,"), "no row arrived before the cut");
    assert!(!received.ends_with(b"]"), "a cut-off body ends like a complete array");
    let log = service.wait_for_log(|log| log.contains("GET /getall aborted after"), Duration::from_secs(10))?;
    assert!(log.contains("(SQLSTATE 57014)"), "not ended by statement_timeout:\n{log}");
    println!("listing cut off after {took:?}");

    // Behind a lock, the statement ends at the same bound, long before DATABASE_TIMEOUT_SECS (30 s).
    let locker = lock_transactions_in(shared(), &db, 60).await?;
    let r = client.get(service.url("/getall")).send().await?;
    let (status, body) = (r.status(), r.json::<Value>().await?);
    release_lock(shared(), &db, locker)?;
    assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("database_unavailable")));
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("did not finish in time while listing transactions"), "{message}");

    // The connections are clean: a short page reads normally.
    let rows: Vec<Value> = client.get(service.url("/getall?limit=10")).send().await?.json().await?;
    assert_eq!(rows.len(), 10);
    Ok(())
}
