//! `GET /metrics` and the JSON log, on the real binary after real requests. The exposition is parsed by the official
//! Prometheus Python client's parser (`prometheus_client.parser`, installed into `.tools/venv` by
//! scripts/install-tools.sh), so a format mistake fails here as it would fail a real scrape.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use billing_testkit::shared;
use common::{TestApp, TestResult, lock_transactions, release_lock};
use reqwest::StatusCode;
use serde_json::Value;

/// Reads a text exposition into samples; fails on anything the parser refuses.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

fn python() -> Result<PathBuf, String> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/python");
    if venv.is_file() {
        Ok(venv)
    } else {
        Err(format!(
            "{} is missing: the exposition parser (prometheus-client) comes from `bash scripts/install-tools.sh`",
            venv.display()
        ))
    }
}

#[derive(Debug)]
struct Sample {
    family: String,
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

struct Scrape(Vec<Sample>);

impl Scrape {
    async fn of(app: &TestApp) -> Result<Self, Box<dyn std::error::Error>> {
        let r = app.client.get(app.url("/metrics")).send().await?;
        assert_eq!(r.status(), StatusCode::OK);
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let text = r.text().await?;
        let mut child = Command::new(python()?)
            .args(["-c", PARSE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().ok_or("no stdin")?.write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!(
                "the Prometheus parser refused the exposition: {}\n{text}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let parsed: Vec<Value> = serde_json::from_slice(&out.stdout)?;
        let samples = parsed
            .into_iter()
            .map(|s| Sample {
                family: s["family"].as_str().unwrap_or_default().into(),
                kind: s["type"].as_str().unwrap_or_default().into(),
                name: s["name"].as_str().unwrap_or_default().into(),
                labels: serde_json::from_value(s["labels"].clone()).unwrap_or_default(),
                value: s["value"].as_f64().unwrap_or(f64::NAN),
            })
            .collect();
        Ok(Scrape(samples))
    }

    /// The value of the one sample `name{labels}` (labels given must match exactly, others are not allowed).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.0.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:#?}", self.0))
    }

    fn kind_of(&self, family: &str) -> Option<&str> {
        self.0.iter().find(|s| s.family == family).map(|s| s.kind.as_str())
    }
}

#[tokio::test]
async fn counts_equal_the_requests_sent() -> TestResult {
    let dir = std::env::temp_dir().join(billing_testkit::unique_name("metrics-log"));
    let log_file = dir.join("app.log");
    let app = TestApp::start_with(&[("LOG_FILE", log_file.to_str().ok_or("path")?)])?;
    let c = &app.client;

    for i in 0..7 {
        let r = c.post(app.url(&format!("/add?client_id=c{i}&amount=10"))).send().await?;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    for bad in ["/add?client_id=&amount=1", "/add?client_id=x&amount=-1", "/add?client_id=x"] {
        assert_eq!(c.post(app.url(bad)).send().await?.status(), StatusCode::BAD_REQUEST);
    }
    let r = c.post(app.url("/add")).header("content-type", "application/json").body("{").send().await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c.post(app.url("/add")).header("content-type", "application/json").body(vec![b' '; 20_000]).send().await?;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    for _ in 0..5 {
        assert_eq!(c.get(app.url("/get/1")).send().await?.status(), StatusCode::OK);
    }
    for id in ["998", "999"] {
        assert_eq!(c.get(app.url(&format!("/get/{id}"))).send().await?.status(), StatusCode::NOT_FOUND);
    }
    for _ in 0..4 {
        assert_eq!(c.get(app.url("/ping")).send().await?.status(), StatusCode::OK);
    }
    assert_eq!(c.get(app.url("/no/such/path?secret=1")).send().await?.status(), StatusCode::NOT_FOUND);
    assert_eq!(c.post(app.url("/ping")).send().await?.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(c.get(app.url("/getall")).send().await?.status(), StatusCode::OK);

    let m = Scrape::of(&app).await?;
    let requests = [
        (("POST", "/add", "201"), 7.0),
        (("POST", "/add", "400"), 4.0),
        (("POST", "/add", "413"), 1.0),
        (("GET", "/get/{id}", "200"), 5.0),
        (("GET", "/get/{id}", "404"), 2.0),
        (("GET", "/ping", "200"), 4.0),
        (("GET", "unmatched", "404"), 1.0),
        (("POST", "/ping", "405"), 1.0),
        (("GET", "/getall", "200"), 1.0),
    ];
    for ((method, route, status), n) in requests {
        let labels = [("method", method), ("route", route), ("status", status)];
        assert_eq!(m.get("http_requests_total", &labels), n, "{labels:?}");
        assert_eq!(m.get("http_request_duration_seconds_count", &labels), n, "{labels:?}");
        let le = |bound: &str| {
            let mut l = labels.to_vec();
            l.push(("le", bound));
            m.get("http_request_duration_seconds_bucket", &l)
        };
        // The buckets resolve sub-millisecond reads, and every request is in +Inf.
        assert!(le("0.0001") <= le("0.00025") && le("0.00025") <= le("0.001"), "{labels:?}");
        assert_eq!(le("+Inf"), n, "{labels:?}");
    }
    // The scrape itself is counted once answered, so the first scrape does not see itself. Besides the requests
    // above, only the start-up's readiness polls were sent: they ended with one 200 (and 503s while starting).
    let total: f64 =
        m.0.iter().filter(|s| s.name == "http_requests_total" && s.labels["route"] != "/readyz").map(|s| s.value).sum();
    assert_eq!(total, 26.0);
    assert_eq!(m.get("http_requests_total", &[("method", "GET"), ("route", "/readyz"), ("status", "200")]), 1.0);
    assert_eq!(m.kind_of("http_requests"), Some("counter"));
    assert_eq!(m.kind_of("http_request_duration_seconds"), Some("histogram"));
    // Labels come from fixed sets: no raw path, id or query ever becomes one.
    for s in &m.0 {
        for v in s.labels.values() {
            assert!(!v.contains("secret") && !v.contains("/get/1") && !v.contains("998"), "{s:?}");
        }
    }

    assert_eq!(m.get("billing_payments_created_total", &[]), 7.0);
    assert_eq!(m.get("billing_payments_refused_total", &[("reason", "invalid_field")]), 3.0);
    assert_eq!(m.get("billing_payments_refused_total", &[("reason", "bad_request")]), 1.0);
    assert_eq!(m.get("billing_payments_refused_total", &[("reason", "payload_too_large")]), 1.0);
    assert_eq!(m.get("billing_txlog_lines_written_total", &[]), 7.0);
    assert_eq!(m.get("billing_txlog_lines_failed_total", &[]), 0.0);
    assert_eq!(m.get("billing_txlog_lines_dropped_total", &[]), 0.0);
    assert_eq!(m.get("billing_txlog_lines_queued", &[]), 0.0);
    assert_eq!(m.get("billing_db_pool_max_connections", &[]), 20.0);
    assert_eq!(m.get("billing_db_pool_waiting_requests", &[]), 0.0);
    let open = m.get("billing_db_pool_connections", &[]);
    let idle = m.get("billing_db_pool_idle_connections", &[]);
    assert!((1.0..=20.0).contains(&open) && idle <= open, "open {open}, idle {idle}");
    assert_eq!(m.get("billing_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert!(m.value("billing_database_errors_total", &[("kind", "timeout")]).is_none(), "no database error happened");

    // A second scrape sees the first one.
    let m = Scrape::of(&app).await?;
    assert_eq!(m.get("http_requests_total", &[("method", "GET"), ("route", "/metrics"), ("status", "200")]), 1.0);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn database_errors_are_counted_by_kind() -> TestResult {
    let app = TestApp::start_with(&[("DATABASE_TIMEOUT_SECS", "1"), ("DATABASE_POOL_SIZE", "2")])?;
    // A write stuck behind a lock past the timeout is cancelled: nothing recorded, counted as `cancelled`.
    let mut locker = lock_transactions(&app, 3).await?;
    let r = app.client.post(app.url("/add?client_id=stuck&amount=1")).send().await?;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let _ = locker.wait();
    // A wiped table: `schema_missing`, once per request that met it.
    app.sql("DROP TABLE transactions")?;
    for _ in 0..2 {
        let r = app.client.post(app.url("/add?client_id=1&amount=1")).send().await?;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let m = Scrape::of(&app).await?;
    assert_eq!(m.get("billing_database_errors_total", &[("kind", "cancelled")]), 1.0);
    assert_eq!(m.get("billing_database_errors_total", &[("kind", "schema_missing")]), 2.0);
    assert_eq!(m.get("billing_payments_created_total", &[]), 0.0);
    assert!(m.value("billing_payments_refused_total", &[("reason", "bad_request")]).is_none());
    assert_eq!(m.get("http_requests_total", &[("method", "POST"), ("route", "/add"), ("status", "503")]), 3.0);
    Ok(())
}

#[tokio::test]
async fn waiting_for_a_pooled_connection_is_visible() -> TestResult {
    // One pooled connection, held by a write stuck behind a lock: a listing waits for the pool. The lock is released
    // by the test once it has seen the wait, well within DATABASE_TIMEOUT_SECS (generous, for a loaded machine).
    let app = TestApp::start_with(&[("DATABASE_TIMEOUT_SECS", "20"), ("DATABASE_POOL_SIZE", "1")])?;
    let locker = lock_transactions(&app, 60).await?;
    let first = tokio::spawn(app.client.post(app.url("/add?client_id=a&amount=1")).send());
    // Wait on conditions, not time: the payment's INSERT waits for the lock in PostgreSQL ...
    let stuck = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock' \
         AND query LIKE '%INSERT INTO transactions%'",
        app.db
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.sql(&stuck)? == "0" {
        assert!(Instant::now() < deadline, "the payment never reached the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = tokio::spawn(app.client.get(app.url("/getall")).send());
    // ... and the listing is seen waiting for the pool (or never, and the test fails).
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let m = Scrape::of(&app).await?;
        if m.get("billing_db_pool_waiting_requests", &[]) == 1.0 || Instant::now() >= deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(m.get("billing_db_pool_waiting_requests", &[]), 1.0);
    assert_eq!(m.get("billing_db_pool_idle_connections", &[]), 0.0);
    release_lock(shared(), &app.db, locker)?;
    assert_eq!(first.await??.status(), StatusCode::CREATED);
    assert_eq!(second.await??.status(), StatusCode::OK);
    let m = Scrape::of(&app).await?;
    assert_eq!(m.get("billing_db_pool_waiting_requests", &[]), 0.0);
    assert_eq!(m.get("billing_payments_created_total", &[]), 1.0);
    Ok(())
}

#[tokio::test]
async fn metrics_can_be_switched_off() -> TestResult {
    let app = TestApp::start_with(&[("METRICS_ENABLED", "false")])?;
    let r = app.client.get(app.url("/metrics")).send().await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await?;
    assert!(body["message"].as_str().is_some_and(|m| m.contains("METRICS_ENABLED=false")), "{body}");
    Ok(())
}

#[tokio::test]
async fn json_log_lines_carry_the_request_id() -> TestResult {
    let app = TestApp::start_with(&[("LOG_FORMAT", "json")])?;
    let r = app.client.get(app.url("/get/abc")).header("X-Request-Id", "client-id-7").send().await?;
    assert_eq!(r.headers().get("x-request-id").map(|v| v.as_bytes()), Some(&b"client-id-7"[..]));
    let body: Value = r.json().await?;
    assert_eq!(body["request_id"], "client-id-7");

    // An id that is too long (or holds characters unsafe in a log) is replaced by a generated one, never kept.
    let r = app.client.get(app.url("/ping")).header("X-Request-Id", "x".repeat(129)).send().await?;
    let generated = r.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(generated.len(), 36, "{generated}");

    // Access lines are written every 50 ms: wait for the last request's.
    let log = app.service.wait_for_log(|log| log.contains(&generated), Duration::from_secs(5))?;
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("not one JSON object per line ({e}): {l}")))
        .collect::<Result<_, _>>()?;
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line[key].is_string(), "{key} missing in {line}");
        }
    }
    let access = |id: &str| lines.iter().find(|l| l["target"] == "billing::access" && l["request_id"] == id).cloned();
    let line = access("client-id-7").ok_or_else(|| format!("no access line for client-id-7 in\n{log}"))?;
    assert_eq!(
        (&line["method"], &line["route"], &line["path"], &line["status"]),
        (&Value::from("GET"), &Value::from("/get/{id}"), &Value::from("/get/abc"), &Value::from(400))
    );
    assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{line}");
    assert!(access(&generated).is_some(), "no access line for the generated id {generated} in\n{log}");
    Ok(())
}

#[tokio::test]
async fn a_bad_log_format_is_refused_at_start() -> TestResult {
    let out = Command::new(common::BIN)
        .env("LOG_FORMAT", "yaml")
        .env("DATABASE_URL", "postgres://billing@127.0.0.1:1/billing")
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "billing: configuration error: LOG_FORMAT must be text or json, got \"yaml\"");
    Ok(())
}
