//! The floor of billing's HTTP stack, for the benchmark (issue 24): a bare hyper server that answers `GET /ping`
//! with the same bytes billing sends, on the same runtime, allocator and hyper options, and does nothing else. No
//! request id is made (a fixed one of the same length is sent), no metrics, no access log, no connection cap, no
//! routing: the distance from billing's `/ping` to this is what billing's per-request work costs
//! (`bash bench/run.sh --cases ping`, docs/benchmarks.md).
//!
//! Usage: `billing-ping-reference 127.0.0.1:PORT`. Prints `LISTENING <addr>` once bound; runs until killed.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// billing's allocator (billing/src/main.rs), so that the allocator is not part of the distance measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// billing's defaults: `HEADER_READ_TIMEOUT_SECS` and `MAX_HEADER_BYTES` (billing/src/config/mod.rs).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEADER_BYTES: usize = 16_384;

async fn answer(request: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = if request.uri().path() == "/ping" {
        (StatusCode::OK, Bytes::from_static(b"pong"))
    } else {
        (StatusCode::NOT_FOUND, Bytes::from_static(b"not found"))
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert("x-request-id", header::HeaderValue::from_static("00000000-0000-4000-8000-000000000000"));
    headers.insert("keep-alive", header::HeaderValue::from_static("timeout=10"));
    Ok(response)
}

fn main() -> std::process::ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: billing-ping-reference 127.0.0.1:PORT");
        return std::process::ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("billing-ping-reference: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(&addr)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("billing-ping-reference: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(addr: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("LISTENING {}", listener.local_addr()?);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_HEADER_BYTES);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("billing-ping-reference: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // As billing does (billing/src/http/server.rs).
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), service_fn(answer));
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}
