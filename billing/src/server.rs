//! The HTTP server's lifecycle: accepting connections, serving each with hyper, and the graceful stop.
//!
//! warp's own `serve` does the same with hyper-util; billing runs that loop itself so that every request goes
//! through [`Observed`] first: it gives the request its id, and after the routes answered, records the metrics and
//! writes the access-log line. hyper-util's server options (timeouts, header limits) belong here too.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Instant;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower_service::Service;
use warp::http::{Request, header};
use warp::reply::Response;

use crate::metrics;
use crate::request_id::{self, RequestId};

/// Serves `routes` (the router as a service, from `warp::service`) on `listener` until `stop` resolves, then stops
/// accepting and waits for the connections it has to finish their requests (idle keep-alive connections are closed
/// at once).
pub async fn serve<S>(listener: TcpListener, routes: S, stop: impl Future<Output = ()>)
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let service = Observed { inner: routes };
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let service = service.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                // A client that hung up mid-request or sent garbage: its problem, not the server's, so not an error.
                log::debug!("connection ended with an error: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// `accept(2)` failures. Those about one connection (reset before it was accepted) are skipped; the others (out of
/// file descriptors) would fail again at once, so the loop pauses as hyper's old server did.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    log::error!("cannot accept connections: {e}; pausing 1s");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

/// Wraps the routes: a request id for every request, then metrics and the access-log line for every answer.
#[derive(Clone)]
struct Observed<S> {
    inner: S,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> hyper::service::Service<Request<Incoming>> for Observed<S>
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Answer {
        let started = Instant::now();
        let id = RequestId::from_headers(request.headers());
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        // warp's service is ready at once and cheap to clone (its filter holds only handles to shared state).
        let answer = self.inner.clone().call(request);
        Box::pin(id.clone().scope(async move {
            let Ok(mut response) = answer.await;
            let elapsed = started.elapsed();
            response.headers_mut().insert(header::HeaderName::from_static(request_id::HEADER), id.header_value());
            let status = response.status().as_u16();
            let route = metrics::route_of(&path);
            metrics::request(metrics::method_label(&method), route, status, elapsed);
            let millis = elapsed.as_secs_f64() * 1000.0;
            log::info!(
                target: "billing::access",
                method = method.as_str(), route, path = path.as_str(), status, duration_ms = millis;
                "{method} {path} {status} {millis:.3}ms"
            );
            Ok(response)
        }))
    }
}
