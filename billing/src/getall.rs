//! `GET /getall`: the whole ledger (or one keyset page of it) as a JSON array, streamed.
//!
//! A task owns the pooled connection and the row stream, encodes rows into ~32 KiB chunks and hands them to the
//! response through a channel of a few chunks. When the client reads slowly the channel fills, the task stops
//! pulling rows and PostgreSQL waits on its socket: memory stays flat whatever the table holds.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use warp::http::header;
use warp::reply::{Reply, Response};

use crate::app::App;
use crate::db::DbConn;
use crate::error::ApiError;
use crate::models::Transaction;
use crate::schema::transactions;
use crate::validation::{self, Page};

const CHUNK_BYTES: usize = 32 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

type Chunk = Result<Bytes, std::io::Error>;

pub async fn getall(app: App, query: String) -> Response {
    match start(app, &query).await {
        Ok(chunks) => {
            let reply = warp::reply::stream(ChunkStream(chunks));
            warp::reply::with_header(reply, header::CONTENT_TYPE, "application/json").into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Returns once the query is running, so that a missing table or a dead database is still a proper error status
/// rather than a 200 with a broken body.
async fn start(app: App, query: &str) -> Result<mpsc::Receiver<Chunk>, ApiError> {
    let page = validation::parse_page(query)?;
    let conn = app.connection().await?;
    let (chunks_tx, chunks_rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (started_tx, started_rx) = oneshot::channel();
    tokio::spawn(produce(app, conn, page, started_tx, chunks_tx));
    started_rx.await.map_err(|_| ApiError::internal("the listing task ended before it started"))??;
    Ok(chunks_rx)
}

async fn produce(
    app: App,
    mut conn: DbConn,
    page: Page,
    started: oneshot::Sender<Result<(), ApiError>>,
    chunks: mpsc::Sender<Chunk>,
) {
    let query = transactions::table
        .filter(transactions::id.gt(page.after_id))
        .order(transactions::id.asc())
        .limit(page.limit.unwrap_or(i64::MAX))
        .select(Transaction::as_select());
    let rows = match app.bounded("listing transactions", query.load_stream::<Transaction>(&mut conn)).await {
        Ok(rows) => rows,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    if started.send(Ok(())).is_err() {
        return;
    }
    let mut rows = std::pin::pin!(rows);
    let mut buf = Vec::with_capacity(CHUNK_BYTES + 256);
    buf.push(b'[');
    let mut count = 0u64;
    while let Some(row) = rows.next().await {
        let encoded = row.map_err(|e| format!("reading row {} failed: {e}", count + 1)).and_then(|t| {
            if count > 0 {
                buf.push(b',');
            }
            t.write_json(&mut buf).map_err(|e| format!("encoding transaction {} failed: {e}", t.id))
        });
        if let Err(message) = encoded {
            // The status line is long gone: the only honest signal left is to abort the body, so the client sees
            // a truncated response instead of a JSON array that silently lacks rows.
            log::error!("GET /getall aborted after {count} rows: {message}");
            let _ = chunks.send(Err(std::io::Error::other(message))).await;
            return;
        }
        count += 1;
        if buf.len() >= CHUNK_BYTES {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_BYTES + 256));
            if chunks.send(Ok(Bytes::from(full))).await.is_err() {
                log::debug!("GET /getall: client went away after {count} rows");
                return;
            }
        }
    }
    buf.push(b']');
    let _ = chunks.send(Ok(Bytes::from(buf))).await;
}

/// The receiving end as a `Stream` that is `Sync`, as warp's streaming body requires.
struct ChunkStream(mpsc::Receiver<Chunk>);

impl Stream for ChunkStream {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        self.0.poll_recv(cx)
    }
}
