//! `Idempotency-Key` on `POST /add`: one key, one payment, whichever process, batch or retry carries it. Against real
//! billing processes sharing a real PostgreSQL database.

mod common;

use std::time::{Duration, Instant};

use billing_testkit::{ServiceProcess, shared};
use common::{BIN, READY_TIMEOUT, TestApp, TestResult, sample};
use reqwest::StatusCode;
use serde_json::Value;

const KEY: &str = "Idempotency-Key";

/// What one `POST /add` was answered.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    location: Option<String>,
    replayed: Option<String>,
    body: String,
}

async fn add(client: &reqwest::Client, url: String, key: Option<&[u8]>, json: bool) -> Result<Answer, String> {
    let mut request = client.post(url);
    if let Some(key) = key {
        let value = reqwest::header::HeaderValue::from_bytes(key).map_err(|e| e.to_string())?;
        request = request.header(KEY, value);
    }
    if json {
        request = request.header("accept", "application/json");
    }
    let r = request.send().await.map_err(|e| e.to_string())?;
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (status, location, replayed) = (r.status(), header("location"), header("idempotent-replayed"));
    Ok(Answer { status, location, replayed, body: r.text().await.map_err(|e| e.to_string())? })
}

fn error_of(answer: &Answer) -> Result<(String, String), Box<dyn std::error::Error>> {
    let body: Value = serde_json::from_str(&answer.body)?;
    Ok((body["error"].as_str().unwrap_or_default().into(), body["field"].as_str().unwrap_or_default().into()))
}

/// Another billing process on `app`'s database.
fn second_process(app: &TestApp) -> Result<ServiceProcess, String> {
    let mut service = ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", app.database_url.as_str())])?;
    service.wait_ready(READY_TIMEOUT)?;
    Ok(service)
}

#[tokio::test]
async fn a_retry_with_the_same_key_is_answered_as_the_first_and_writes_nothing() -> TestResult {
    let dir = std::env::temp_dir().join(billing_testkit::unique_name("idempotency"));
    let log_file = dir.join("app.log");
    let app = TestApp::start_with(&[("LOG_FILE", log_file.to_str().ok_or("path")?)])?;
    let url = app.url("/add?client_id=acme&amount=250");
    let first = add(&app.client, url.clone(), Some(b"order-17"), false).await?;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(first.replayed, None);
    assert_eq!(first.body, "Transaction added. transaction id=1");

    let again = add(&app.client, url.clone(), Some(b"order-17"), false).await?;
    assert_eq!(again.status, StatusCode::CREATED, "{again:?}");
    assert_eq!((again.location.as_deref(), again.replayed.as_deref()), (Some("/get/1"), Some("true")));
    assert_eq!(again.body, first.body);
    // The representation is the one this request asks for; the values are the first request's.
    let as_json = add(&app.client, url, Some(b"order-17"), true).await?;
    assert_eq!((as_json.status, as_json.replayed.as_deref()), (StatusCode::CREATED, Some("true")));
    let stored: Value = app.client.get(app.url("/get/1")).send().await?.json().await?;
    assert_eq!(serde_json::from_str::<Value>(&as_json.body)?, stored);

    assert_eq!(app.sql("SELECT id, client_id, amount, idempotency_key FROM transactions")?, "1|acme|250|order-17");
    let lines = std::fs::read_to_string(&log_file)?;
    assert_eq!(lines.lines().count(), 1, "one transaction-log line per payment, none per replay: {lines}");
    std::fs::remove_dir_all(&dir)?;
    let metrics = app.client.get(app.url("/metrics")).send().await?.text().await?;
    assert_eq!(sample(&metrics, "billing_payments_created_total"), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "billing_payments_replayed_total"), Some(2.0), "{metrics}");
    Ok(())
}

#[tokio::test]
async fn the_quoted_and_the_bare_form_name_the_same_key() -> TestResult {
    let app = TestApp::start()?;
    let url = app.url("/add?client_id=c&amount=5");
    let bare = add(&app.client, url.clone(), Some(br#"a"b\c"#), false).await?;
    assert_eq!(bare.status, StatusCode::CREATED, "{bare:?}");
    let quoted = add(&app.client, url.clone(), Some(br#""a\"b\\c""#), false).await?;
    assert_eq!((quoted.status, quoted.replayed.as_deref()), (StatusCode::CREATED, Some("true")), "{quoted:?}");
    // Surrounding spaces are not part of the value, as in every HTTP field; spaces inside are.
    let spaced = add(&app.client, url, Some(b"  a key with spaces "), false).await?;
    assert_eq!(spaced.status, StatusCode::CREATED, "{spaced:?}");
    assert_eq!(app.sql("SELECT idempotency_key FROM transactions ORDER BY id")?, "a\"b\\c\na key with spaces");
    Ok(())
}

#[tokio::test]
async fn the_same_key_for_another_payment_is_refused_and_writes_nothing() -> TestResult {
    let app = TestApp::start()?;
    let first = add(&app.client, app.url("/add?client_id=acme&amount=250"), Some(b"k1"), false).await?;
    assert_eq!(first.status, StatusCode::CREATED);
    for other in ["/add?client_id=acme&amount=251", "/add?client_id=other&amount=250"] {
        let answer = add(&app.client, app.url(other), Some(b"k1"), false).await?;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{answer:?}");
        assert_eq!(error_of(&answer)?, ("idempotency_key_reused".into(), KEY.into()));
        assert!(!answer.body.contains("\"1\"") && answer.location.is_none(), "names no payment: {answer:?}");
    }
    assert_eq!(app.row_count()?, 1);
    let metrics = app.client.get(app.url("/metrics")).send().await?.text().await?;
    assert!(metrics.contains("billing_payments_refused_total{reason=\"idempotency_key_reused\"} 2"), "{metrics}");
    Ok(())
}

#[tokio::test]
async fn a_key_that_is_not_one_is_refused_naming_the_header() -> TestResult {
    let app = TestApp::start()?;
    let url = app.url("/add?client_id=c&amount=5");
    let too_long = "k".repeat(256);
    let cases: [(&[u8], &str); 8] = [
        (b"", "empty"),
        (b"\"\"", "empty"),
        (too_long.as_bytes(), "256 characters"),
        ("clé".as_bytes(), "not printable ASCII"),
        (b"tab\there", "not printable ASCII"),
        (b"\"open", "closing quote is missing"),
        (b"\"a\"b", "more after the closing quote"),
        (b"\"a\\nb\"", "backslash escapes"),
    ];
    for (key, says) in cases {
        let answer = add(&app.client, url.clone(), Some(key), false).await?;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{key:?}: {answer:?}");
        assert_eq!(error_of(&answer)?, ("idempotency_key_invalid".into(), KEY.into()), "{key:?}");
        assert!(answer.body.contains(says), "{key:?}: {}", answer.body);
    }
    // Sent twice: which one would be the key?
    let r = app.client.post(url.clone()).header(KEY, "a").header(KEY, "b").send().await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await?.contains("more than once"));
    assert_eq!(app.row_count()?, 0);
    // The ledger holds any other writer (psql, a job) to the same rule.
    for key in ["''", "'clé'", "E'tab\\there'", &format!("'{}'", "k".repeat(256))] {
        let refused =
            app.sql(&format!("INSERT INTO transactions (client_id, amount, idempotency_key) VALUES ('c', 1, {key})"));
        let error = refused.err().ok_or_else(|| format!("the ledger took the key {key}"))?;
        assert!(
            error.contains("transactions_idempotency_key_printable") || error.contains("too long"),
            "{key}: {error}"
        );
    }
    // 255 characters, the longest key, is one.
    let longest = "~".repeat(255);
    assert_eq!(add(&app.client, url, Some(longest.as_bytes()), false).await?.status, StatusCode::CREATED);
    Ok(())
}

#[tokio::test]
async fn a_refused_request_leaves_its_key_free() -> TestResult {
    let app = TestApp::start()?;
    let refused = add(&app.client, app.url("/add?client_id=c&amount=-5"), Some(b"k"), false).await?;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let fixed = add(&app.client, app.url("/add?client_id=c&amount=5"), Some(b"k"), false).await?;
    assert_eq!((fixed.status, fixed.replayed.as_deref()), (StatusCode::CREATED, None), "{fixed:?}");
    assert_eq!(app.row_count()?, 1);
    Ok(())
}

#[tokio::test]
async fn a_server_that_requires_keys_refuses_a_payment_without_one() -> TestResult {
    let app = TestApp::start_with(&[("IDEMPOTENCY_KEY_REQUIRED", "true")])?;
    let answer = add(&app.client, app.url("/add?client_id=c&amount=5"), None, false).await?;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    assert_eq!(error_of(&answer)?, ("idempotency_key_missing".into(), KEY.into()));
    assert_eq!(app.row_count()?, 0);
    let keyed = add(&app.client, app.url("/add?client_id=c&amount=5"), Some(b"k"), false).await?;
    assert_eq!(keyed.status, StatusCode::CREATED);
    // Off (the default), a payment without a key is recorded as always.
    let lenient = TestApp::start()?;
    assert_eq!(
        add(&lenient.client, lenient.url("/add?client_id=c&amount=5"), None, false).await?.status,
        StatusCode::CREATED
    );
    Ok(())
}

/// 20 copies of one request at once, half on each of two processes, with 40 other payments around them so that
/// batches mix keyed rows, unkeyed rows and repeats: one row for the key, every copy answered 201 with its id, and
/// none of the neighbours failed.
#[tokio::test]
async fn concurrent_copies_of_one_request_make_one_row_on_any_process() -> TestResult {
    let app = TestApp::start()?;
    let other = second_process(&app)?;
    let urls = [app.url("/add?client_id=same&amount=7"), other.url("/add?client_id=same&amount=7")];
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (client, url) = (app.client.clone(), urls[i % 2].clone());
        tasks.push(tokio::spawn(async move { add(&client, url, Some(b"one-key"), false).await }));
        let (client, neighbour) = (app.client.clone(), app.url(&format!("/add?client_id=n{i}&amount=1")));
        let key = if i % 2 == 0 { Some(format!("n{i}")) } else { None };
        tasks
            .push(tokio::spawn(async move { add(&client, neighbour, key.as_deref().map(str::as_bytes), false).await }));
    }
    let mut copies = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let answer = task.await??;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        if i % 2 == 0 {
            copies.push(answer);
        }
    }
    assert_eq!(app.sql("SELECT count(*) FROM transactions WHERE idempotency_key = 'one-key'")?, "1");
    assert_eq!(app.row_count()?, 21);
    let location = app.sql("SELECT '/get/' || id FROM transactions WHERE idempotency_key = 'one-key'")?;
    assert!(copies.iter().all(|c| c.location.as_deref() == Some(location.as_str())), "{copies:?}");
    assert_eq!(copies.iter().filter(|c| c.replayed.is_none()).count(), 1, "one copy wrote it: {copies:?}");
    Ok(())
}

/// A retry that reaches another process than the first request is replayed there.
#[tokio::test]
async fn a_replay_is_served_by_another_process() -> TestResult {
    let app = TestApp::start()?;
    let first = add(&app.client, app.url("/add?client_id=c&amount=9"), Some(b"k"), true).await?;
    assert_eq!(first.status, StatusCode::CREATED);
    let other = second_process(&app)?;
    let again = add(&app.client, other.url("/add?client_id=c&amount=9"), Some(b"k"), true).await?;
    assert_eq!((again.status, again.replayed.as_deref()), (StatusCode::CREATED, Some("true")), "{again:?}");
    assert_eq!(again.body, first.body);
    assert_eq!(again.location, first.location);
    Ok(())
}

/// Two copies of one payment held inside PostgreSQL at once, on two processes (the table locked, so both batches
/// wait; PostgreSQL takes the INSERT's table lock before the batch lock, so which copy goes first once the table is
/// free is not fixed): the second to commit waits for the first instead of writing a second row or failing, and is
/// then replayed.
#[tokio::test]
async fn a_copy_of_a_payment_still_being_written_waits_for_it() -> TestResult {
    let app = TestApp::start_with(&[("DATABASE_TIMEOUT_SECS", "30")])?;
    let mut other = ServiceProcess::spawn(
        BIN.as_ref(),
        &[("DATABASE_URL", app.database_url.as_str()), ("DATABASE_TIMEOUT_SECS", "30")],
    )?;
    other.wait_ready(READY_TIMEOUT)?;
    let locker = common::lock_transactions(&app, 60).await?;
    let (client, url) = (app.client.clone(), app.url("/add?client_id=c&amount=3"));
    let first = tokio::spawn(async move { add(&client, url, Some(b"held"), false).await });
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                   AND application_name = 'billing' AND wait_event_type = 'Lock'";
    wait_for(&app, waiting, "1").await?;
    let (client, url) = (app.client.clone(), other.url("/add?client_id=c&amount=3"));
    let copy = tokio::spawn(async move { add(&client, url, Some(b"held"), false).await });
    wait_for(&app, waiting, "2").await?;
    common::release_lock(shared(), &app.db, locker)?;
    let (first, copy) = (first.await??, copy.await??);
    assert_eq!((first.status, copy.status), (StatusCode::CREATED, StatusCode::CREATED), "{first:?} {copy:?}");
    let replayed = [&first, &copy].iter().filter(|a| a.replayed.as_deref() == Some("true")).count();
    assert_eq!(replayed, 1, "one copy wrote the payment, the other was replayed: {first:?} {copy:?}");
    assert_eq!(copy.location, first.location);
    assert_eq!(copy.body, first.body);
    assert_eq!(app.row_count()?, 1);
    Ok(())
}

/// Polls `query` on the app's database until it returns `want` (30 s: a loaded 2-core machine can be slow to start
/// a backend, but this is a wait for a state, never a timing bound).
async fn wait_for(app: &TestApp, query: &str, want: &str) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = app.sql(query)?;
        if got == want {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "{query} gave {got}, never {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An upgrade: three replicas of the new billing start at once on a ledger of the previous version, with payments
/// in it. Exactly one adds the key (the migration lock), the others wait for it, the old rows keep their ids and get
/// no key, and keyed payments work on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_upgrading_a_ledger_at_once_add_the_key_once() -> TestResult {
    let migrations = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let mut earlier: Vec<String> = std::fs::read_dir(migrations)?
        .filter_map(|d| d.ok().map(|d| d.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.as_str() < "2026-12-06-000001_idempotency_key")
        .collect();
    earlier.sort();
    assert_eq!(earlier.len(), 2, "the migrations before the key's: {earlier:?}");
    let db = billing_testkit::unique_name("t");
    let url = shared().create_database(&db)?;
    shared().psql(
        &db,
        "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
         run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )?;
    for name in &earlier {
        shared().psql(&db, &std::fs::read_to_string(format!("{migrations}/{name}/up.sql"))?)?;
        let version: String = name.split('_').next().unwrap_or_default().replace('-', "");
        shared().psql(&db, &format!("INSERT INTO __diesel_schema_migrations (version) VALUES ('{version}')"))?;
    }
    shared().psql(
        &db,
        "INSERT INTO transactions (client_id, amount) SELECT 'old' || g, g FROM generate_series(1, 1000) g",
    )?;

    let mut replicas = (0..3)
        .map(|_| ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", url.as_str())]))
        .collect::<Result<Vec<_>, _>>()?;
    for replica in &mut replicas {
        replica.wait_ready(READY_TIMEOUT)?;
    }
    let applied: Vec<String> = replicas.iter().map(|r| r.log()).filter(|l| l.contains("applied migrations")).collect();
    assert_eq!(applied.len(), 1, "exactly one replica migrates: {applied:?}");
    assert!(applied[0].contains("applied migrations: 20261206000001\n"), "only the key's migration: {}", applied[0]);
    assert_eq!(
        shared().psql(&db, "SELECT count(*), count(idempotency_key), max(id) FROM transactions")?,
        "1000|0|1000"
    );
    let client = common::client()?;
    for (n, replica) in replicas.iter().enumerate() {
        let first = add(&client, replica.url("/add?client_id=new&amount=1"), Some(b"upgrade"), false).await?;
        assert_eq!(first.status, StatusCode::CREATED, "replica {n}: {first:?}");
        assert_eq!((first.location.as_deref(), first.replayed.is_some()), (Some("/get/1001"), n > 0), "replica {n}");
    }
    Ok(())
}
