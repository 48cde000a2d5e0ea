//! One function per endpoint. Each returns a finished response: errors are rendered by [`ApiError`], so the router
//! never has to guess a status code.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use warp::http::{HeaderMap, StatusCode, header};
use warp::reply::{Reply, Response};

use crate::app::App;
use crate::error::{ApiError, IDEMPOTENCY_KEY};
use crate::http::validation::{self, Body};
use crate::metrics;
use crate::models::NewTransaction;

/// `/add` takes two short fields; anything much larger is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(Reply::into_response)
}

fn text(status: StatusCode, body: String) -> Response {
    warp::reply::with_status(body, status).into_response()
}

pub fn ping() -> Response {
    warp::reply::with_status("pong", StatusCode::OK).into_response()
}

/// Liveness: the process is up and serving; says nothing about the database, so a database outage never gets
/// healthy pods restarted.
pub fn healthz() -> Response {
    warp::reply::with_status("ok", StatusCode::OK).into_response()
}

/// Readiness: the database answers and the ledger table is there. Asked on a point-read connection, not a pooled
/// one, so that a pool held by slow listings does not turn every pod unready.
pub async fn readyz(app: App) -> Response {
    respond(
        async {
            if app.is_stopping() {
                return Err(ApiError::unavailable("billing is stopping (SIGTERM): it finishes the requests it has"));
            }
            let reader = app.reader().await?;
            app.bounded("checking readiness", reader.conn().ready()).await?;
            Ok(text(StatusCode::OK, "ready".into()))
        }
        .await,
    )
}

/// `GET /metrics`: the Prometheus text exposition, or 404 when `METRICS_ENABLED=false`.
pub async fn metrics(app: App) -> Response {
    app.pool.record_state();
    match metrics::render() {
        Some(text) => warp::reply::with_header(
            warp::reply::with_status(text, StatusCode::OK),
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .into_response(),
        None => ApiError::not_found("metrics are off in this process (METRICS_ENABLED=false)").into_response(),
    }
}

/// The response header that marks a replay (the answer of an earlier request with the same `Idempotency-Key`).
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// `POST /add`: fields from the query string (as the original app) or a JSON or form body, and an optional
/// `Idempotency-Key` (ledger/writer.rs says how a key is kept and replayed).
pub async fn add(app: App, query: String, headers: HeaderMap, body: Incoming) -> Response {
    let text_of = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let result: Result<(Response, bool), ApiError> = async {
        // Refused before the body is read, so a client that sent `Expect: 100-continue` is not invited to send it.
        let content_length = text_of(header::CONTENT_LENGTH).and_then(|n| n.parse::<u64>().ok());
        if content_length.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
        }
        let key = validation::parse_idempotency_key(headers.get_all(IDEMPOTENCY_KEY).iter().map(|v| v.as_bytes()))?;
        if key.is_none() && app.idempotency_key_required {
            return Err(ApiError::idempotency_key_missing());
        }
        let body = tokio::time::timeout(app.body_timeout, read_body(body))
            .await
            .map_err(|_| ApiError::request_timeout(app.body_timeout))??;
        let body = Body { content_type: text_of(header::CONTENT_TYPE), bytes: &body };
        let new = NewTransaction { idempotency_key: key, ..validation::parse_add(&query, body)? };
        let recorded = app.record_payment(new).await?;
        let created = &recorded.transaction;
        // A replay is answered as the first request was: the same status, body and Location.
        let reply = if wants_json(text_of(header::ACCEPT)) {
            warp::reply::with_status(warp::reply::json(created), StatusCode::CREATED).into_response()
        } else {
            text(StatusCode::CREATED, format!("Transaction added. transaction id={}", created.id))
        };
        let mut reply =
            warp::reply::with_header(reply, header::LOCATION, format!("/get/{}", created.id)).into_response();
        if recorded.replayed {
            reply.headers_mut().insert(IDEMPOTENT_REPLAYED, header::HeaderValue::from_static("true"));
        }
        Ok((reply, recorded.replayed))
    }
    .await;
    match &result {
        Ok((_, false)) => metrics::payment_created(),
        Ok((_, true)) => metrics::payment_replayed(),
        Err(e) if e.status.is_client_error() => metrics::payment_refused(e.code.as_str()),
        Err(_) => {}
    }
    respond(result.map(|(reply, _)| reply))
}

async fn read_body(mut body: Incoming) -> Result<Bytes, ApiError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        // Trailers say nothing /add reads.
        let Ok(chunk) = frame.into_data() else { continue };
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}

/// True when the client lists `application/json` (with any parameters) among the types it accepts.
fn wants_json(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            media.eq_ignore_ascii_case("application/json") && !refused
        })
    })
}

pub async fn get(raw_id: String, app: App) -> Response {
    respond(
        async {
            let id = validation::parse_id(&raw_id)?;
            match app.find(id).await? {
                Some(t) => Ok(warp::reply::json(&t).into_response()),
                None => Err(ApiError::not_found(format!("transaction {id} does not exist"))),
            }
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::wants_json;

    #[test]
    fn accept_header_negotiation() {
        assert!(wants_json(Some("application/json")));
        assert!(wants_json(Some("text/html, Application/JSON;q=0.9")));
        assert!(!wants_json(Some("application/json;q=0")));
        assert!(!wants_json(Some("*/*")));
        assert!(!wants_json(None));
    }
}
