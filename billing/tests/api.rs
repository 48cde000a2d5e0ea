//! The wire format of every endpoint, against a real service process and a real PostgreSQL.

mod common;

use std::time::Duration;

use common::{TestApp, TestResult};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn content_type(r: &reqwest::Response) -> String {
    r.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

#[tokio::test]
async fn ping_answers_pong_as_text() -> TestResult {
    let app = TestApp::start()?;
    let r = app.client.get(app.url("/ping")).send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(content_type(&r), "text/plain; charset=utf-8");
    assert_eq!(r.text().await?, "pong");
    Ok(())
}

#[tokio::test]
async fn add_by_query_string_answers_like_the_original_app() -> TestResult {
    let app = TestApp::start()?;
    let r = app.client.post(app.url("/add?client_id=1&amount=1000")).send().await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(content_type(&r), "text/plain; charset=utf-8");
    assert_eq!(r.headers().get("location").map(|v| v.as_bytes()), Some(&b"/get/1"[..]));
    assert_eq!(r.text().await?, "Transaction added. transaction id=1");
    let r = app.client.post(app.url("/add?client_id=2&amount=5")).send().await?;
    assert_eq!(r.text().await?, "Transaction added. transaction id=2");
    assert_eq!(app.sql("SELECT id, client_id, amount FROM transactions ORDER BY id")?, "1|1|1000\n2|2|5");
    Ok(())
}

#[tokio::test]
async fn add_answers_json_when_asked() -> TestResult {
    let app = TestApp::start()?;
    let r = app
        .client
        .post(app.url("/add?client_id=acme-7&amount=250"))
        .header("accept", "application/json")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(content_type(&r), "application/json");
    let body: Value = r.json().await?;
    assert_eq!(body["id"], 1);
    assert_eq!(body["client_id"], "acme-7");
    assert_eq!(body["amount"], 250);
    let created_at = body["created_at"].as_str().ok_or("created_at is not a string")?;
    assert!(created_at.ends_with('Z') && created_at.len() == 27, "{created_at}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(4));
    Ok(())
}

#[tokio::test]
async fn add_accepts_json_and_form_bodies() -> TestResult {
    let app = TestApp::start()?;
    let r = app.client.post(app.url("/add")).json(&json!({"client_id": "7", "amount": 70})).send().await?;
    assert_eq!((r.status(), r.text().await?), (StatusCode::CREATED, "Transaction added. transaction id=1".into()));
    let r = app.client.post(app.url("/add")).form(&[("client_id", "8"), ("amount", "80")]).send().await?;
    assert_eq!((r.status(), r.text().await?), (StatusCode::CREATED, "Transaction added. transaction id=2".into()));
    let r = app.client.post(app.url("/add")).json(&json!({"client_id": 9, "amount": 90})).send().await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.sql("SELECT client_id || ':' || amount FROM transactions ORDER BY id")?, "7:70\n8:80\n9:90");
    Ok(())
}

#[tokio::test]
async fn getall_lists_every_transaction_in_id_order() -> TestResult {
    let app = TestApp::start()?;
    let r = app.client.get(app.url("/getall")).send().await?;
    assert_eq!((r.status(), content_type(&r)), (StatusCode::OK, "application/json".into()));
    assert_eq!(r.text().await?, "[]");
    for (client, amount) in [("1", 1000), ("2", 20), ("1", 3)] {
        app.client.post(app.url(&format!("/add?client_id={client}&amount={amount}"))).send().await?;
    }
    let body: Value = app.client.get(app.url("/getall")).send().await?.json().await?;
    let rows = body.as_array().ok_or("not an array")?;
    let summary: Vec<(i64, &str, i64)> = rows
        .iter()
        .map(|r| {
            (r["id"].as_i64().unwrap_or(-1), r["client_id"].as_str().unwrap_or("?"), r["amount"].as_i64().unwrap_or(-1))
        })
        .collect();
    assert_eq!(summary, vec![(1, "1", 1000), (2, "2", 20), (3, "1", 3)]);
    assert!(rows.iter().all(|r| r["created_at"].as_str().is_some_and(|t| t.ends_with('Z'))));
    Ok(())
}

#[tokio::test]
async fn getall_pages_by_key() -> TestResult {
    let app = TestApp::start()?;
    app.sql("INSERT INTO transactions (client_id, amount) SELECT 'c' || g, g FROM generate_series(1, 25) g")?;
    let ids = |v: Value| -> Vec<i64> { v.as_array().into_iter().flatten().filter_map(|r| r["id"].as_i64()).collect() };
    let page1 = ids(app.client.get(app.url("/getall?limit=10")).send().await?.json().await?);
    assert_eq!(page1, (1..=10).collect::<Vec<_>>());
    let page3 = ids(app.client.get(app.url("/getall?limit=10&after_id=20")).send().await?.json().await?);
    assert_eq!(page3, (21..=25).collect::<Vec<_>>());
    let rest = ids(app.client.get(app.url("/getall?after_id=23")).send().await?.json().await?);
    assert_eq!(rest, vec![24, 25]);
    for bad in ["/getall?limit=0", "/getall?limit=abc", "/getall?after_id=-1", "/getall?limit=100001"] {
        let r = app.client.get(app.url(bad)).send().await?;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = r.json().await?;
        assert!(body["field"] == "limit" || body["field"] == "after_id", "{bad}: {body}");
    }
    Ok(())
}

#[tokio::test]
async fn getall_streams_a_large_table_intact() -> TestResult {
    let app = TestApp::start()?;
    app.sql("INSERT INTO transactions (client_id, amount) SELECT 'client-' || g, g FROM generate_series(1, 50000) g")?;
    let r = app.client.get(app.url("/getall")).send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.content_length().is_none(), "a streamed body has no Content-Length");
    let body: Vec<Value> = r.json().await?;
    assert_eq!(body.len(), 50000);
    assert!(body.iter().enumerate().all(|(i, r)| r["id"].as_i64() == i64::try_from(i + 1).ok()));
    assert_eq!(body[49999]["client_id"], "client-50000");
    Ok(())
}

#[tokio::test]
async fn get_by_id_and_its_errors() -> TestResult {
    let app = TestApp::start()?;
    app.client.post(app.url("/add?client_id=1&amount=1000")).send().await?;
    let r = app.client.get(app.url("/get/1")).send().await?;
    assert_eq!((r.status(), content_type(&r)), (StatusCode::OK, "application/json".into()));
    let body: Value = r.json().await?;
    assert_eq!(
        (body["id"].clone(), body["client_id"].clone(), body["amount"].clone()),
        (json!(1), json!("1"), json!(1000))
    );

    // The error body names the request's id, the client's own when it sent one.
    let r = app.client.get(app.url("/get/2")).header("X-Request-Id", "get-2.test").send().await?;
    assert_eq!((r.status(), content_type(&r)), (StatusCode::NOT_FOUND, "application/json".into()));
    assert_eq!(
        r.json::<Value>().await?,
        json!({"error": "not_found", "message": "transaction 2 does not exist", "request_id": "get-2.test"})
    );

    for bad in ["abc", "1.5", "99999999999999999999"] {
        let r = app.client.get(app.url(&format!("/get/{bad}"))).send().await?;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = r.json().await?;
        assert_eq!(body["field"], "id");
        assert_eq!(body["error"], "invalid_field");
    }
    Ok(())
}

/// Hundreds of reads in flight at once, batched on one shared (pipelined) connection and, with sharing off, on the
/// pool: every answer is the row that was asked for (also for an id asked for by many requests of one batch), and the
/// unknown ids in between are 404s. With sharing on they were read in batches: fewer statements than reads, and every
/// read in exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_each_get_their_own_row() -> TestResult {
    for read_connections in ["1", "0"] {
        let app = TestApp::start_with(&[("DATABASE_READ_CONNECTIONS", read_connections)])?;
        app.sql(
            "INSERT INTO transactions (client_id, amount) \
             SELECT 'client-' || g, g * 10 FROM generate_series(1, 300) AS g",
        )?;
        let metrics_before = app.client.get(app.url("/metrics")).send().await?.text().await?;
        let mut reads = tokio::task::JoinSet::new();
        // Ids 1-400 once each, and id 7 sixty times more.
        for id in (1..=400_i64).chain(std::iter::repeat_n(7, 60)) {
            let (client, url) = (app.client.clone(), app.url(&format!("/get/{id}")));
            reads.spawn(async move {
                let r = client.get(url).send().await.map_err(|e| format!("GET /get/{id}: {e}"))?;
                let status = r.status();
                let body: Value = r.json().await.map_err(|e| format!("GET /get/{id}: {e}"))?;
                Ok::<_, String>((id, status, body))
            });
        }
        let mut answered = 0;
        while let Some(joined) = reads.join_next().await {
            let (id, status, body) = joined??;
            if id <= 300 {
                assert_eq!(status, StatusCode::OK, "reads {read_connections}, id {id}: {body}");
                assert_eq!(
                    (body["id"].as_i64(), body["client_id"].as_str(), body["amount"].as_i64()),
                    (Some(id), Some(format!("client-{id}").as_str()), Some(id * 10)),
                    "reads {read_connections}: /get/{id} answered another row"
                );
            } else {
                assert_eq!(status, StatusCode::NOT_FOUND, "reads {read_connections}, id {id}: {body}");
                assert_eq!(body["message"], format!("transaction {id} does not exist"));
            }
            answered += 1;
        }
        assert_eq!(answered, 460);
        let metrics = app.client.get(app.url("/metrics")).send().await?.text().await?;
        // A series not there yet (no batch so far) counts 0.
        let batched = |text: &str, series: &str| common::sample(text, series).unwrap_or(0.0);
        let reads_in_batches =
            batched(&metrics, "billing_read_batch_size_sum") - batched(&metrics_before, "billing_read_batch_size_sum");
        let batches = batched(&metrics, "billing_read_batch_size_count")
            - batched(&metrics_before, "billing_read_batch_size_count");
        if read_connections == "1" {
            assert_eq!(reads_in_batches, 460.0, "every read is in exactly one batch");
            assert!(batches < 460.0, "{batches} statements for 460 concurrent reads: nothing was batched");
        } else {
            assert_eq!((reads_in_batches, batches), (0.0, 0.0), "with sharing off, reads go through the pool");
        }
    }
    Ok(())
}

type BadCase = (String, Option<(&'static str, &'static str)>, u16, Option<&'static str>);

/// Each bad request gets the named status and field, and the ledger stays empty.
#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_written() -> TestResult {
    let app = TestApp::start()?;
    let long = "x".repeat(101);
    // (path, optional (content type, body), expected status, expected field)
    let cases: Vec<BadCase> = vec![
        ("/add".into(), None, 400, Some("client_id")),
        ("/add?amount=5".into(), None, 400, Some("client_id")),
        ("/add?client_id=1".into(), None, 400, Some("amount")),
        ("/add?client_id=&amount=5".into(), None, 400, Some("client_id")),
        (format!("/add?client_id={long}&amount=5"), None, 400, Some("client_id")),
        ("/add?client_id=a%0Aforged&amount=5".into(), None, 400, Some("client_id")),
        ("/add?client_id=1&amount=0".into(), None, 400, Some("amount")),
        ("/add?client_id=1&amount=-10".into(), None, 400, Some("amount")),
        ("/add?client_id=1&amount=12.5".into(), None, 400, Some("amount")),
        ("/add?client_id=1&amount=ten".into(), None, 400, Some("amount")),
        ("/add?client_id=1&amount=9223372036854775808".into(), None, 400, Some("amount")),
        ("/add?client_id=1&client_id=2&amount=5".into(), None, 400, Some("client_id")),
        ("/add".into(), Some(("application/json", r#"{"client_id":"1","amount":"5"}"#)), 400, Some("amount")),
        ("/add".into(), Some(("application/json", r#"{"client_id":"1""#)), 400, None),
        ("/add".into(), Some(("text/plain", "client_id=1&amount=5")), 415, None),
        (
            "/add?client_id=1".into(),
            Some(("application/json", r#"{"client_id":"1","amount":5}"#)),
            400,
            Some("client_id"),
        ),
    ];
    for (path, body, status, field) in cases {
        let mut request = app.client.post(app.url(&path));
        if let Some((content_type, text)) = body {
            request = request.header("content-type", content_type).body(text);
        }
        let r = request.send().await?;
        assert_eq!(r.status().as_u16(), status, "{path} {body:?}");
        assert_eq!(content_type(&r), "application/json", "{path}");
        let json: Value = r.json().await?;
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {json}");
        assert_eq!(json["field"].as_str(), field, "{path}: {json}");
    }
    let r = app
        .client
        .post(app.url("/add"))
        .header("content-type", "application/json")
        .body(vec![b' '; 20_000])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.row_count()?, 0, "a refused request wrote a row");
    Ok(())
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() -> TestResult {
    let app = TestApp::start()?;
    let r = app.client.get(app.url("/nope")).send().await?;
    assert_eq!((r.status(), content_type(&r)), (StatusCode::NOT_FOUND, "application/json".into()));
    assert_eq!(r.json::<Value>().await?["error"], "not_found");

    for (method, path, allow) in [
        (reqwest::Method::GET, "/add", "POST"),
        (reqwest::Method::HEAD, "/add", "POST"),
        (reqwest::Method::POST, "/getall", "GET, HEAD"),
        (reqwest::Method::DELETE, "/get/1", "GET, HEAD"),
        (reqwest::Method::PUT, "/ping", "GET, HEAD"),
    ] {
        let r = app.client.request(method.clone(), app.url(path)).send().await?;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(r.headers().get("allow").and_then(|v| v.to_str().ok()), Some(allow));
        if method != reqwest::Method::HEAD {
            assert_eq!(r.json::<Value>().await?["error"], "method_not_allowed");
        }
    }
    assert_eq!(app.row_count()?, 0);
    Ok(())
}

#[tokio::test]
async fn health_endpoints() -> TestResult {
    let app = TestApp::start()?;
    let r = app.client.get(app.url("/healthz")).send().await?;
    assert_eq!((r.status(), r.text().await?), (StatusCode::OK, "ok".into()));
    let r = app.client.get(app.url("/readyz")).send().await?;
    assert_eq!((r.status(), r.text().await?), (StatusCode::OK, "ready".into()));
    Ok(())
}

#[tokio::test]
async fn access_log_has_a_line_per_request() -> TestResult {
    let app = TestApp::start()?;
    app.client.get(app.url("/get/abc")).send().await?;
    let access_line = |log: &str| {
        log.lines().find(|l| l.contains("billing::access") && l.contains("GET /get/abc 400")).map(str::to_owned)
    };
    // Access lines are written every 50 ms, and nothing else is logged meanwhile to carry this one out sooner.
    let log = app.service.wait_for_log(|log| access_line(log).is_some(), Duration::from_secs(5))?;
    assert!(access_line(&log).is_some_and(|l| l.ends_with("ms")), "no access-log line in:\n{log}");
    Ok(())
}

#[tokio::test]
async fn head_answers_wherever_get_does() -> TestResult {
    let app = TestApp::start()?;
    app.client.post(app.url("/add?client_id=1&amount=5")).send().await?;
    for (path, status) in [
        ("/ping", StatusCode::OK),
        ("/healthz", StatusCode::OK),
        ("/readyz", StatusCode::OK),
        ("/metrics", StatusCode::OK),
        ("/getall", StatusCode::OK),
        ("/get/1", StatusCode::OK),
        ("/get/2", StatusCode::NOT_FOUND),
        ("/get/x", StatusCode::BAD_REQUEST),
    ] {
        let get = app.client.get(app.url(path)).send().await?;
        let head = app.client.head(app.url(path)).send().await?;
        assert_eq!((head.status(), get.status()), (status, status), "{path}");
        assert_eq!(head.headers().get("content-type"), get.headers().get("content-type"), "{path}");
        assert!(head.bytes().await?.is_empty(), "HEAD {path} sent a body");
    }
    assert_eq!(app.row_count()?, 1, "HEAD changes nothing");
    Ok(())
}

#[test]
fn an_oversized_body_is_refused_before_100_continue() -> TestResult {
    use std::io::{Read, Write};
    let app = TestApp::start()?;
    let mut stream = std::net::TcpStream::connect(app.service.addr())?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    stream.write_all(
        b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\
          Expect: 100-continue\r\n\r\n",
    )?;
    // The whole answer, up to the server closing the connection: its body was never sent, so the connection cannot
    // carry another request, and the answer says `Connection: close`.
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "the server answered {answer:?} instead of refusing at once");
    assert!(answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{answer:?}");
    assert!(answer.contains("\"error\":\"payload_too_large\""), "{answer:?}");
    assert_eq!(app.row_count()?, 0);
    Ok(())
}

/// A body of a type other than JSON or a form, or with no `Content-Type` at all, is 415 `unsupported_media_type`,
/// and nothing is written.
#[tokio::test]
async fn a_body_of_another_type_or_of_none_is_415() -> TestResult {
    let app = TestApp::start()?;
    for content_type in [Some("text/plain"), Some("multipart/form-data; boundary=x"), Some("application/xml"), None] {
        let mut request = app.client.post(app.url("/add")).body("client_id=1&amount=5");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let r = request.send().await?;
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type:?}");
        let body: Value = r.json().await?;
        assert_eq!(body["error"], "unsupported_media_type", "{content_type:?}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        match content_type {
            None => assert!(message.contains("no Content-Type"), "{message}"),
            // Named without its parameters.
            Some(content_type) => {
                let media = content_type.split(';').next().unwrap_or_default();
                assert!(message.contains(&format!("Content-Type {media} is not supported")), "{message}");
            }
        }
    }
    assert_eq!(app.row_count()?, 0);
    Ok(())
}

#[tokio::test]
async fn input_outside_the_grammar_is_a_400_and_stores_nothing() -> TestResult {
    let app = TestApp::start()?;
    for query in [
        "client_id=%E0%A4&amount=5",
        "client_id=%zz&amount=5",
        "client_id=a%E2%80%AEb&amount=5",
        "client_id=1&amount=%2B5",
        "client_id=1&amount=005",
    ] {
        let r = app.client.post(app.url(&format!("/add?{query}"))).send().await?;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    let r = app
        .client
        .post(app.url("/add"))
        .header("content-type", "application/json")
        .body(r#"{"client_id":"1","amount":5,"amount":500}"#)
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    for path in ["/get/+1", "/get/01", "/get/%31"] {
        assert_eq!(app.client.get(app.url(path)).send().await?.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(app.row_count()?, 0);
    Ok(())
}

/// `GET /openapi.json` serves the repository's document, byte for byte, as JSON; HEAD too, without the body.
#[tokio::test]
async fn the_openapi_document_is_served() -> TestResult {
    let app = TestApp::start()?;
    let r = app.client.get(app.url("/openapi.json")).send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(content_type(&r), "application/json");
    assert!(r.headers().contains_key("x-request-id"));
    let served = r.text().await?;
    assert_eq!(served, include_str!("../openapi.json"));
    let doc: Value = serde_json::from_str(&served)?;
    assert!(doc["paths"]["/openapi.json"]["get"].is_object());
    let r = app.client.head(app.url("/openapi.json")).send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(content_type(&r), "application/json");
    let r = app.client.post(app.url("/openapi.json")).send().await?;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers().get("allow").map(|v| v.as_bytes()), Some(&b"GET, HEAD"[..]));
    Ok(())
}
