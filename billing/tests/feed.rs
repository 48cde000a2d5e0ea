//! The change feed: a reader following `GET /getall?after_id=<last id seen>` while three billing processes write
//! at 32 connections each sees every committed payment exactly once, in id order (group commit takes one lock per
//! batch before drawing ids, so batches commit in id order across processes). And the failure semantics of a
//! batch: a row the database refuses fails alone.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use billing_testkit::{ServiceProcess, shared, unique_name};
use common::{BIN, READY_TIMEOUT, TestApp, TestResult, client, lock_transactions};
use reqwest::StatusCode;
use serde_json::Value;

const PROCESSES: usize = 3;
const WRITERS_EACH: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pager_following_after_id_sees_every_row_once_in_order() -> TestResult {
    let db = unique_name("feed");
    let url = shared().create_database(&db)?;
    let mut services = Vec::new();
    for _ in 0..PROCESSES {
        let mut service = ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", &url), ("RUST_LOG", "warn")])?;
        service.wait_ready(READY_TIMEOUT)?;
        services.push(service);
    }
    let client = client()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (p, service) in services.iter().enumerate() {
        for w in 0..WRITERS_EACH {
            let (client, stop, base) = (client.clone(), Arc::clone(&stop), service.url(""));
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                // Bounded: at most 2,000 payments per writer, and the test stops them after 4 s.
                for i in 0..2000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = client.post(format!("{base}/add?client_id=p{p}w{w}i{i}&amount=1")).send().await?;
                    if r.status() == StatusCode::CREATED {
                        let text = r.text().await?;
                        if let Some(id) = text.strip_prefix("Transaction added. transaction id=") {
                            acknowledged.push(id.parse::<i64>().unwrap_or(-1));
                        }
                    }
                }
                Ok::<_, reqwest::Error>(acknowledged)
            }));
        }
    }

    // The pager reads from the first process while everything writes.
    let pager_base = services[0].url("");
    let pager_client = client.clone();
    // The pager stops only once every writer has returned, so it also reads the batches that were committing
    // when the writers were told to stop (it used to share the writers' flag and could stop before them).
    let writers_done = Arc::new(AtomicBool::new(false));
    let pager_stop = Arc::clone(&writers_done);
    let pager = tokio::spawn(async move {
        let (mut seen, mut last, mut quiet_pages) = (Vec::<i64>::new(), 0i64, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let page: Vec<Value> = pager_client
                .get(format!("{pager_base}/getall?after_id={last}&limit=1000"))
                .send()
                .await?
                .json()
                .await?;
            for row in &page {
                let id = row["id"].as_i64().unwrap_or(-1);
                seen.push(id);
                last = id;
            }
            // Done once the writers stopped and two pages in a row came back empty.
            if page.is_empty() && pager_stop.load(Ordering::Relaxed) {
                quiet_pages += 1;
                if quiet_pages == 2 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok::<_, reqwest::Error>(seen)
    });

    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await??);
    }
    writers_done.store(true, Ordering::Relaxed);
    let seen = pager.await??;

    let in_table: Vec<i64> = shared()
        .psql(&db, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM transactions")?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(-1))
        .collect();
    println!("{} payments acknowledged, {} rows, {} seen by the pager", acknowledged.len(), in_table.len(), seen.len());
    assert!(acknowledged.len() > 500, "too few payments to prove anything: {}", acknowledged.len());
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "the pager saw ids out of order or twice");
    let missed: Vec<i64> = {
        let seen: BTreeSet<i64> = seen.iter().copied().collect();
        in_table.iter().copied().filter(|id| !seen.contains(id)).collect()
    };
    assert!(
        missed.is_empty(),
        "the pager skipped {} of {} rows, e.g. {:?}",
        missed.len(),
        in_table.len(),
        &missed[..missed.len().min(10)]
    );
    assert_eq!(seen, in_table);
    let table: BTreeSet<i64> = in_table.into_iter().collect();
    assert!(acknowledged.iter().all(|id| table.contains(id)), "an acknowledged payment is missing");
    Ok(())
}

/// Payments that queue behind a lock are written together; one the database refuses (a constraint billing itself
/// does not check) fails alone with a 400, and every other one of its batch is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_fails_alone() -> TestResult {
    let app = TestApp::start()?;
    app.sql("ALTER TABLE transactions ADD CONSTRAINT no_refused CHECK (client_id <> 'refused')")?;
    let mut locker = lock_transactions(&app, 1).await?;
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let client_id = if i == 10 { "refused".to_string() } else { format!("ok{i}") };
            let request = app.client.post(app.url(&format!("/add?client_id={client_id}&amount=1"))).send();
            tokio::spawn(async move {
                let r = request.await?;
                Ok::<_, reqwest::Error>((client_id, r.status(), r.text().await?))
            })
        })
        .collect();
    let _ = locker.wait();
    for request in requests {
        let (client_id, status, body) = request.await??;
        if client_id == "refused" {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(body.contains("no_refused") || body.contains("refused the values"), "{body}");
        } else {
            assert_eq!(status, StatusCode::CREATED, "{client_id}: {body}");
        }
    }
    assert_eq!(app.row_count()?, 19);
    assert_eq!(app.sql("SELECT count(*) FROM transactions WHERE client_id = 'refused'")?, "0");
    // They were written in batches: fewer batches than payments.
    let metrics = app.client.get(app.url("/metrics")).send().await?.text().await?;
    let batches = common::sample(&metrics, "billing_write_batch_size_count")
        .ok_or("no billing_write_batch_size_count in /metrics")?;
    assert!(batches < 20.0, "{batches} batches for 20 payments: nothing was batched");
    Ok(())
}
