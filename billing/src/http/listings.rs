//! `GET /getall`: the whole ledger (or one keyset page of it) as a JSON array, streamed.
//!
//! A task owns the pooled connection and the row stream, encodes rows into ~32 KiB chunks and hands them to the
//! response through a channel of a few chunks. When the client reads slowly the channel fills, the task stops
//! pulling rows and PostgreSQL waits on its socket: memory stays flat whatever the table holds.
//!
//! A listing holds a pooled connection for as long as its client takes to read it, so listings are bounded three
//! ways, or clients that request `/getall` and never read would hold the whole pool and every payment would wait:
//! - at most [`ListingLimits::max_concurrent`] run at once (`GETALL_MAX_CONCURRENT`, a quarter of the pool by default);
//!   the rest of the pool is the payments', which listings cannot take;
//! - a client that reads nothing for [`ListingLimits::stall_timeout`] is cut off (`GETALL_STALL_TIMEOUT_SECS`);
//! - a listing runs at most [`ListingLimits::timeout`] (`GETALL_TIMEOUT_SECS`), enforced by PostgreSQL's
//!   `statement_timeout` for the statement, so it ends there even if billing is stuck.
//!
//! A cut-off listing's statement is cancelled and its answer awaited before the connection goes back to the pool;
//! a connection whose statement does not end is discarded, never reused.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::RowStream;
use tokio_postgres::error::SqlState;
use warp::http::header;
use warp::reply::{Reply, Response};

use crate::app::App;
use crate::config::ListingLimits;
use crate::db::connect::describe;
use crate::db::{self, DbConn};
use crate::error::ApiError;
use crate::http::validation::{self, Page};
use crate::models::Transaction;

const CHUNK_BYTES: usize = 32 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

type Chunk = Result<Bytes, std::io::Error>;

pub async fn getall(app: App, query: String) -> Response {
    match start(app, &query).await {
        Ok(chunks) => {
            let reply = warp::reply::stream(chunks);
            warp::reply::with_header(reply, header::CONTENT_TYPE, "application/json").into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Returns once the query is running, so that a missing table or a dead database is still a proper error status
/// rather than a 200 with a broken body.
async fn start(app: App, query: &str) -> Result<ChunkStream, ApiError> {
    let page = validation::parse_page(query)?;
    let listings = app.listings.clone();
    let permit = tokio::time::timeout(app.query_timeout, Arc::clone(&listings.permits).acquire_owned())
        .await
        .map_err(|_| {
            ApiError::busy(format!(
                "{} listings are already running (GETALL_MAX_CONCURRENT); the rest of the database connections are \
                 kept for payments: try again shortly, or page with ?after_id=&limit=",
                listings.limits.max_concurrent
            ))
        })?
        .map_err(|_| ApiError::internal("the listing permits were closed"))?;
    let conn = app.connection().await?;
    let (chunks_tx, chunks_rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (started_tx, started_rx) = oneshot::channel();
    let finished = Arc::new(AtomicBool::new(false));
    let task = Producer { app, limits: listings.limits, chunks: chunks_tx, finished: Arc::clone(&finished) };
    tokio::spawn(async move {
        task.run(conn, page, started_tx).await;
        drop(permit);
    });
    started_rx.await.map_err(|_| ApiError::internal("the listing task ended before it started"))??;
    Ok(ChunkStream { chunks: chunks_rx, finished })
}

struct Producer {
    app: App,
    limits: ListingLimits,
    chunks: mpsc::Sender<Chunk>,
    /// Set just before the last chunk is handed over: a body that ends without it was cut off.
    finished: Arc<AtomicBool>,
}

impl Producer {
    async fn run(self, conn: DbConn, page: Page, started: oneshot::Sender<Result<(), ApiError>>) {
        // The listing's own statement_timeout replaces the session's short one, for this transaction only.
        let begin = format!("BEGIN READ ONLY; SET LOCAL statement_timeout = {}", self.limits.timeout.as_millis());
        let opened = self
            .app
            .bounded("listing transactions", async {
                conn.client().batch_execute(&begin).await?;
                conn.page(page.after_id, page.limit).await
            })
            .await;
        let rows = match opened {
            Ok(rows) => rows,
            Err(e) => {
                let _ = started.send(Err(e));
                self.abandon(&conn).await;
                return;
            }
        };
        if started.send(Ok(())).is_err() {
            drop(rows);
            self.abandon(&conn).await;
            return;
        }
        // Boxed so it can be dropped here: the pending rows are then discarded, not read into memory.
        let mut rows = Box::pin(rows);
        let streamed = self.stream(rows.as_mut()).await;
        drop(rows);
        match streamed {
            Ok(()) => {
                if let Err(e) = conn.client().batch_execute("COMMIT").await {
                    log::debug!("GET /getall: COMMIT failed: {}", describe(&e));
                    conn.poison();
                }
            }
            Err(Ended) => self.abandon(&conn).await,
        }
    }

    /// Ends a listing that did not run to its end. Its statement may still be running (the client stopped reading,
    /// or the database did not answer in time): it is cancelled, and the connection is discarded rather than handed
    /// out again (PostgreSQL rolls its transaction back as it closes). A cancel request travels on a connection of
    /// its own and acts when it arrives: one that arrives after the statement has finished hits whatever the
    /// connection runs next, and on a reused connection that was the next client's listing, cut off with SQLSTATE
    /// 57014 (tests/listings.rs, `a_cancelled_listing_never_cuts_off_the_next_one`). The cost is one new connection
    /// per abandoned listing.
    async fn abandon(&self, conn: &DbConn) {
        conn.poison();
        if let Err(why) = db::send_cancel(&conn.cancel_token(), self.app.tls()).await {
            log::debug!("GET /getall: could not cancel a cut-off listing (its connection is discarded): {why}");
        }
    }

    async fn stream(&self, mut rows: Pin<&mut RowStream>) -> Result<(), Ended> {
        let mut buf = Vec::with_capacity(CHUNK_BYTES + 256);
        buf.push(b'[');
        let mut count = 0u64;
        while let Some(row) = rows.next().await {
            // Its own statement_timeout (GETALL_TIMEOUT_SECS) ends a listing with 57014: a limit at work, not a fault.
            let timed_out = row.as_ref().is_err_and(|e| e.code() == Some(&SqlState::QUERY_CANCELED));
            let encoded = row
                .map_err(|e| format!("reading row {} failed: {}", count + 1, describe(&e)))
                .and_then(|row| Transaction::from_row(&row).map_err(|e| describe(&e)))
                .and_then(|t| {
                    if count > 0 {
                        buf.push(b',');
                    }
                    t.write_json(&mut buf).map_err(|e| format!("encoding transaction {} failed: {e}", t.id))
                });
            if let Err(message) = encoded {
                // The status line is long gone: the only honest signal left is to abort the body, so the client
                // sees a truncated response instead of a JSON array that silently lacks rows.
                if timed_out {
                    log::warn!("GET /getall aborted after {count} rows (GETALL_TIMEOUT_SECS): {message}");
                } else {
                    log::error!("GET /getall aborted after {count} rows: {message}");
                }
                let _ = self.chunks.try_send(Err(std::io::Error::other(message)));
                return Err(Ended);
            }
            count += 1;
            if buf.len() >= CHUNK_BYTES {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_BYTES + 256));
                self.send(full, count).await?;
            }
        }
        buf.push(b']');
        self.send(buf, count).await?;
        // Before the sender is dropped, so the body sees this before its end.
        self.finished.store(true, Ordering::Release);
        Ok(())
    }

    /// Hands one chunk to the response, or gives up on a client that has read nothing for the stall timeout.
    async fn send(&self, chunk: Vec<u8>, rows: u64) -> Result<(), Ended> {
        match tokio::time::timeout(self.limits.stall_timeout, self.chunks.send(Ok(Bytes::from(chunk)))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => {
                log::debug!("GET /getall: client went away after {rows} rows");
                Err(Ended)
            }
            Err(_) => {
                log::info!(
                    "GET /getall: the client read nothing for {}s (GETALL_STALL_TIMEOUT_SECS); cut off after {rows} rows",
                    self.limits.stall_timeout.as_secs()
                );
                Err(Ended)
            }
        }
    }
}

/// A listing that did not run to its end: a row failed, or the client went away or stopped reading.
struct Ended;

/// The response body. It is `Sync`, as warp's streaming body requires, and it ends in an error, not a clean end,
/// when the listing was cut off, so hyper aborts the body instead of sending a complete-looking response.
struct ChunkStream {
    chunks: mpsc::Receiver<Chunk>,
    finished: Arc<AtomicBool>,
}

impl Stream for ChunkStream {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(None) if !self.finished.swap(true, Ordering::AcqRel) => {
                Poll::Ready(Some(Err(std::io::Error::other("the listing was cut off"))))
            }
            other => other,
        }
    }
}
