//! The per-pod transaction log (`LOG_FILE`): format, host names, concurrency, and failure handling.

mod common;

use std::collections::{BTreeMap, HashSet};

use billing_testkit::{ServiceProcess, shared, unique_name};
use common::{BIN, READY_TIMEOUT, TestApp, TestResult, client, parse_log_line, raise_fd_limit};
use reqwest::StatusCode;

fn temp_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(unique_name(name))
}

#[tokio::test]
async fn each_add_appends_one_line_in_the_courses_format() -> TestResult {
    let dir = temp_dir("txlog");
    let log_file = dir.join("nested/var/log/app.log");
    let app = TestApp::start_with(&[
        ("LOG_FILE", log_file.to_str().ok_or("path")?),
        ("BILLING_HOSTNAME", "billing-stateful-0"),
    ])?;
    assert!(log_file.exists(), "the log's parent directories are created at start");
    for (client, amount) in [("1", 1000), ("client 2", 5)] {
        let r = app
            .client
            .post(app.url("/add"))
            .query(&[("client_id", client), ("amount", &amount.to_string())])
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let bad = app.client.post(app.url("/add?client_id=1&amount=0")).send().await?;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let text = std::fs::read_to_string(&log_file)?;
    let lines: Vec<_> = text.lines().map(parse_log_line).collect::<Result<_, _>>()?;
    assert!(text.ends_with('\n'));
    assert_eq!(lines.len(), 2, "one line per committed transaction, none for refused ones:\n{text}");
    assert_eq!((lines[0].host.as_str(), lines[0].client.as_str(), lines[0].amount), ("billing-stateful-0", "1", 1000));
    assert_eq!((lines[1].client.as_str(), lines[1].amount), ("client 2", 5));
    // The line carries the transaction's own time, as stored (UTC).
    let stored = app
        .sql("SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM transactions WHERE id = 1")?;
    assert_eq!(lines[0].time, stored);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn without_log_file_nothing_is_written() -> TestResult {
    let app = TestApp::start()?;
    let r = app.client.post(app.url("/add?client_id=1&amount=1")).send().await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(!app.service.log().contains("transaction log"), "{}", app.service.log());
    Ok(())
}

#[tokio::test]
async fn an_unwritable_log_never_loses_the_transaction() -> TestResult {
    let dir = temp_dir("txlog-bad");
    std::fs::create_dir_all(&dir)?;
    // A regular file where the log's directory should be: every open fails.
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, "")?;
    let log_file = blocker.join("app.log");
    let app = TestApp::start_with(&[("LOG_FILE", log_file.to_str().ok_or("path")?)])?;
    let r = app.client.post(app.url("/add?client_id=1&amount=1000")).send().await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.text().await?, "Transaction added. transaction id=1");
    assert_eq!(app.row_count()?, 1);
    let log = app.service.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("transaction 1 is committed but its line could not be written")),
        "{log}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// 2,000 concurrent `/add` over three instances sharing one database, each with its own host name and log:
/// exactly 2,000 rows with unique ids, and each log holds exactly its own instance's lines, none torn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_concurrent_adds_over_three_instances() -> TestResult {
    raise_fd_limit();
    const TOTAL: usize = 2000;
    let db = unique_name("t");
    let url = shared().create_database(&db)?;
    let dir = temp_dir("txlog-conc");
    let mut instances = Vec::new();
    for i in 0..3 {
        let host = format!("billing-stateful-{i}");
        let log = dir.join(&host).join("app.log");
        let log_str = log.to_str().ok_or("path")?.to_string();
        let service = ServiceProcess::spawn(
            BIN.as_ref(),
            // This test is about correctness under concurrency, not latency: on a loaded 2-core machine 2,000
            // requests queued on the 3 processes' writers may wait longer than the default 5 s for their batch.
            &[
                ("DATABASE_URL", &url),
                ("LOG_FILE", &log_str),
                ("BILLING_HOSTNAME", &host),
                ("RUST_LOG", "warn"),
                ("DATABASE_TIMEOUT_SECS", "60"),
            ],
        )?;
        instances.push((host, log, service));
    }
    for (_, _, service) in &mut instances {
        service.wait_ready(READY_TIMEOUT)?;
    }

    let client = client()?;
    let requests = (0..TOTAL).map(|i| {
        let url = instances[i % 3].2.url(&format!("/add?client_id=c{i}&amount={}", i + 1));
        let client = client.clone();
        async move {
            let r = client.post(url).send().await.map_err(|e| e.to_string())?;
            let status = r.status();
            let text = r.text().await.map_err(|e| e.to_string())?;
            if status != StatusCode::CREATED {
                return Err(format!("request {i}: {status} {text}"));
            }
            text.strip_prefix("Transaction added. transaction id=")
                .and_then(|id| id.parse::<i64>().ok())
                .ok_or_else(|| format!("request {i}: unexpected body {text:?}"))
        }
    });
    let ids: Vec<i64> = futures_util::future::join_all(requests).await.into_iter().collect::<Result<_, _>>()?;

    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), TOTAL, "ids are unique");
    assert_eq!(
        shared().psql(&db, "SELECT count(*), count(DISTINCT id) FROM transactions")?,
        format!("{TOTAL}|{TOTAL}")
    );

    for (n, (host, log, _)) in instances.iter().enumerate() {
        let text = std::fs::read_to_string(log)?;
        let mut seen = BTreeMap::new();
        for line in text.lines() {
            let parsed = parse_log_line(line)?;
            assert_eq!(&parsed.host, host, "a line of another instance in {host}'s log: {line}");
            seen.insert(parsed.client.clone(), parsed.amount);
        }
        let expected: BTreeMap<String, i64> = (0..TOTAL)
            .filter(|i| i % 3 == n)
            .map(|i| (format!("c{i}"), i64::try_from(i + 1).unwrap_or(i64::MAX)))
            .collect();
        assert_eq!(text.lines().count(), expected.len(), "{host}: one line per transaction it handled");
        assert_eq!(seen, expected, "{host}: its log holds exactly its own transactions");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
