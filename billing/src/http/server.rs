//! The HTTP server's lifecycle: accepting connections, serving each with hyper, and the graceful stop.
//!
//! warp's own `serve` does the same with hyper; billing runs that loop itself so that every request goes through
//! [`Observed`] first (it gives the request its id, and after the routes answered, records the metrics and writes
//! the access-log line), and so that no client can take more than [`Limits`] allows:
//! - hyper's own options bound the time to send a request's headers (which is also how long an idle keep-alive
//!   connection stays open) and their size (431 past it, with the read buffer capped at that size, so a client
//!   sending an endless header costs that much memory and no more);
//! - at most `max_connections` connections are open at once, fewer if the open-files limit is lower; a connection
//!   over the cap closes the one that has been idle longest (no request in flight: a keep-alive connection between
//!   requests, or one still sending its headers), so idle or half-sent connections can never lock out real clients.
//!
//! HTTP/1.1 only: every client of billing (curl, probes, Prometheus) speaks it, and a second protocol would be a
//! second set of limits to get right.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use hyper::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use warp::http::Response;
use warp::http::{Request, header};

use crate::config::ServerLimits as Limits;
use crate::http::router::Router;
use crate::http::routes;
use crate::metrics;
use crate::request_id::{self, RequestId};
use crate::warning_limiter::WarningLimiter;

/// After the stop signal, how long kept-alive connections are still read: a request a client sent just before it
/// could learn of the stop is answered (with `Connection: close`) rather than lost with the connection. Past this,
/// connections with no request in flight are closed and the others finish theirs.
pub const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(2);

/// File descriptors kept free of client connections: the database connections, the transaction log, and headroom.
const RESERVED_FILES: u64 = 64;

/// Serves `router` on `listener` until `stop` resolves, then stops accepting; for [`DRAIN_IDLE_GRACE`] the open
/// connections are still served, each answer saying `Connection: close`, and then the server waits for the requests
/// still in flight. `reserved` is how many file descriptors the rest of the process needs (its database
/// connections).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    reserved: u64,
    stop: impl Future<Output = ()>,
) {
    let cap = connection_cap(limits.max_connections, reserved);
    log::info!(
        "accepting up to {cap} connections; headers within {}s and at most {} bytes",
        limits.header_read_timeout.as_secs(),
        limits.max_header_bytes
    );
    let connections = Arc::new(Connections::new(cap));
    let keep_alive = keep_alive_value(limits.header_read_timeout);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        // hyper's minimum read buffer is 8 KiB; the header limit is at least that (config/mod.rs).
        .max_buf_size(limits.max_header_bytes);
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Nagle's algorithm held a streamed answer's last short write (the end of a `/getall` page's
                    // chunked body) until the client ACKed the previous one, and clients delay that ACK by 40 ms:
                    // every page took 40 ms, whatever its size (docs/benchmarks.md, "A page waited 40 ms for an
                    // ACK"; tests/limits.rs). hyper gathers each answer into as few writes as it can by itself.
                    if let Err(e) = stream.set_nodelay(true) {
                        log::debug!("cannot set TCP_NODELAY on a connection: {e}");
                    }
                    stream
                }
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(conn) = connections.admit() else {
            // Every open connection has a request in flight: this one waits for none of them.
            drop(stream);
            continue;
        };
        let service = Observed {
            router: router.clone(),
            conn: Arc::clone(&conn),
            draining: Arc::clone(&connections.draining),
            keep_alive: keep_alive.clone(),
        };
        let served = builder.serve_connection(TokioIo::new(stream), service);
        let connections = Arc::clone(&connections);
        tokio::spawn(async move {
            let mut served = std::pin::pin!(served);
            let mut closing = false;
            loop {
                tokio::select! {
                    // The connection first: it is what wakes this task almost every time.
                    biased;
                    result = served.as_mut() => {
                        if let Err(e) = result {
                            // A client that hung up mid-request, sent garbage or was too slow: its problem, not the
                            // server's, so not an error.
                            log::debug!("connection ended with an error: {e}");
                        }
                        break;
                    }
                    stop = conn.stop.wait(), if !closing => match stop {
                        // Dropping the connection closes it; it had no request in flight.
                        Stop::Shed => {
                            log::debug!("closed an idle connection to make room for a new one");
                            break;
                        }
                        // hyper closes it now if idle, else after the answer in flight.
                        Stop::Drain => {
                            served.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    },
                }
            }
            connections.remove(conn.id);
        });
    }
    drop(listener);
    connections.draining.store(true, Ordering::Release);
    // Each connection closes after its next answer; the grace ends early once every one has.
    let deadline = Instant::now() + DRAIN_IDLE_GRACE;
    while connections.count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then the idle ones close, and the server waits for the requests still in flight.
    connections.stop_all(Stop::Drain);
    while connections.count() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `Keep-Alive: timeout=<HEADER_READ_TIMEOUT_SECS>`: how long billing keeps an idle connection open. Common clients
/// keep theirs for 90 s; one that reuses a connection just as billing closes it gets a reset and cannot tell whether
/// its request arrived. Clients that honour the header stop reusing the connection before billing closes it.
fn keep_alive_value(idle: Duration) -> header::HeaderValue {
    header::HeaderValue::from_str(&format!("timeout={}", idle.as_secs()))
        .unwrap_or_else(|_| header::HeaderValue::from_static("timeout=1"))
}

/// `max_connections`, lowered to what the open-files limit leaves once `reserved` and [`RESERVED_FILES`] are set
/// aside, so that accepting never fails for want of a file descriptor. The soft limit is raised to the hard one
/// first, as Go's runtime does: the soft default of 1024 is a relic of `select(2)`.
fn connection_cap(max_connections: usize, reserved: u64) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            log::warn!("cannot read the open-files limit ({e}); assuming 1024");
            1024
        }
    };
    let room = limit.saturating_sub(reserved + RESERVED_FILES).max(16);
    let cap = max_connections.min(usize::try_from(room).unwrap_or(usize::MAX));
    if cap < max_connections {
        log::warn!(
            "the open-files limit is {limit}: accepting {cap} connections, not MAX_CONNECTIONS={max_connections}"
        );
    }
    cap
}

/// The open connections, so that one over the cap can close the longest-idle one.
struct Connections {
    cap: usize,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    started: Instant,
    warnings: WarningLimiter,
    /// Set at the stop signal: every answer from then on closes its connection.
    draining: Arc<AtomicBool>,
}

struct Conn {
    id: u64,
    /// Requests being handled on it; 0 means idle (between requests, or still sending headers).
    in_flight: AtomicUsize,
    /// When it last finished a request or was opened, in ms since `epoch` (that of [`Connections`]).
    last_active: AtomicU64,
    epoch: Instant,
    stop: StopSignal,
}

impl Connections {
    fn new(cap: usize) -> Self {
        Connections {
            cap,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            started: Instant::now(),
            warnings: WarningLimiter::default(),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    fn count(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn now_ms(&self) -> u64 {
        ms_since(self.started)
    }

    /// Registers a new connection, closing the longest-idle one if the cap is reached; `None` if every open one is
    /// busy.
    fn admit(&self) -> Option<Arc<Conn>> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= self.cap {
            let idlest = open
                .values()
                .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
                .min_by_key(|c| c.last_active.load(Ordering::Relaxed))
                .map(|c| c.id);
            let Some(victim) = idlest.and_then(|id| open.remove(&id)) else {
                metrics::connection_refused();
                self.warnings.warn(|| format!("{} connections open, all busy: refused a new one", self.cap));
                return None;
            };
            // Kept if its task is not waiting yet, so the shed is never lost.
            victim.stop.raise(Stop::Shed);
            metrics::connection_shed();
            self.warnings
                .warn(|| format!("{} connections open: closing the longest-idle ones for new clients", self.cap));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now_ms()),
            epoch: self.started,
            stop: StopSignal::default(),
        });
        open.insert(id, Arc::clone(&conn));
        metrics::connections_open(open.len());
        Some(conn)
    }

    /// Tells every open connection to stop (the end of the drain).
    fn stop_all(&self, why: Stop) {
        for conn in self.open.lock().unwrap_or_else(PoisonError::into_inner).values() {
            conn.stop.raise(why);
        }
    }

    fn remove(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.remove(&id);
        metrics::connections_open(open.len());
    }
}

/// Why a connection's task is told to stop.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    /// Close it now, to make room for a new connection (it is idle).
    Shed,
    /// The server is stopping: close it once its answer in flight, if any, is sent.
    Drain,
}

/// The signal that stops a connection: set once, seen by the connection's task whenever it next waits. Not a
/// `tokio::sync::Notify`, nor hyper-util's `GracefulShutdown` (whose per-connection watch is one): the task polls
/// this beside its connection after every read and write, and `Notify`'s poll takes a mutex each time, about 2 % of a
/// `GET /ping`'s CPU in `perf` for the shed signal (docs/benchmarks.md, "The access line is formatted in place"; the
/// watch showed there too, as "hyper-util's graceful wrapper"); this one is two atomic loads and a waker kept unless
/// it changed.
#[derive(Default)]
struct StopSignal {
    /// 0, or a [`Stop`] as `1 + its index`.
    state: AtomicU8,
    waker: AtomicWaker,
}

impl StopSignal {
    fn raise(&self, why: Stop) {
        self.state.store(why as u8 + 1, Ordering::Release);
        self.waker.wake();
    }

    fn raised(&self) -> Option<Stop> {
        match self.state.load(Ordering::Acquire) {
            0 => None,
            1 => Some(Stop::Shed),
            _ => Some(Stop::Drain),
        }
    }

    fn wait(&self) -> impl Future<Output = Stop> + '_ {
        std::future::poll_fn(move |cx| {
            if let Some(why) = self.raised() {
                return Poll::Ready(why);
            }
            self.waker.register(cx.waker());
            // A signal between the load and the registration woke the old waker (or none): look again.
            match self.raised() {
                Some(why) => Poll::Ready(why),
                None => Poll::Pending,
            }
        })
    }
}

/// Marks its connection busy for as long as a request is being handled (also if the client goes away mid-request).
struct Busy(Arc<Conn>);

impl Busy {
    fn start(conn: &Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(conn))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let conn = &self.0;
        conn.last_active.store(ms_since(conn.epoch), Ordering::Relaxed);
        conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
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

/// Wraps the router: a request id for every request, then metrics and the access-log line for every answer.
struct Observed {
    router: Router,
    conn: Arc<Conn>,
    draining: Arc<AtomicBool>,
    /// The `Keep-Alive` header of every answer that leaves its connection open ([`keep_alive_value`]).
    keep_alive: header::HeaderValue,
}

/// The body of warp's replies, which warp does not name (`warp::reply::Response` is `http::Response<Body>`).
type ReplyBody = <warp::reply::Response as HasBody>::Body;

trait HasBody {
    type Body;
}

impl<B> HasBody for Response<B> {
    type Body = B;
}

type Observing = Pin<Box<dyn Future<Output = Result<Response<Guarded<ReplyBody>>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Observed {
    type Response = Response<Guarded<ReplyBody>>;
    type Error = Infallible;
    type Future = Observing;

    fn call(&self, request: Request<Incoming>) -> Observing {
        let started = Instant::now();
        let busy = Busy::start(&self.conn);
        let id = RequestId::from_headers(request.headers());
        let method = request.method().clone();
        // The request's URI is shared, not copied: its parts are reference-counted bytes.
        let uri = request.uri().clone();
        let client_closes = request.headers().get_all(header::CONNECTION).iter().any(says_close);
        // A handler that waits is boxed on its own (router.rs), so that the future below, which is moved as it is
        // built and boxed, stays small: copying every route's future along with it showed as `memmove` in `perf`
        // (docs/benchmarks.md, "The request's future is no longer copied whole").
        let (route, answer) = self.router.answer(request);
        let draining = Arc::clone(&self.draining);
        let keep_alive = self.keep_alive.clone();
        Box::pin(id.clone().scope(async move {
            let mut response = answer.await;
            let elapsed = started.elapsed();
            response.headers_mut().insert(header::HeaderName::from_static(request_id::HEADER), id.header_value());
            // The client learns from the answer itself that the server is stopping, and hyper closes the connection
            // after sending it, so the next request goes to another pod.
            if draining.load(Ordering::Acquire) {
                response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            }
            // Only on an answer after which the connection stays open: not on a 408 or a 413, not while stopping,
            // not to a client that said it closes the connection itself.
            if !client_closes && !response.headers().get_all(header::CONNECTION).iter().any(says_close) {
                response.headers_mut().insert(header::HeaderName::from_static("keep-alive"), keep_alive);
            }
            let status = response.status().as_u16();
            let route = routes::label(route);
            metrics::request(metrics::method_label(&method), route, status, elapsed);
            let millis = elapsed.as_secs_f64() * 1000.0;
            log::info!(
                target: crate::logging::ACCESS_TARGET,
                method = method.as_str(), route, path = uri.path(), status, duration_ms = millis;
                "{method} {} {status} {}ms", uri.path(), Millis(elapsed)
            );
            // The connection stays busy until the body is sent: a streaming `/getall` is never shed as idle.
            Ok(response.map(|body| Guarded { body, _busy: busy }))
        }))
    }
}

/// A duration as milliseconds with three decimals, `0.004`, as `{:.3}` prints the same time as an `f64`, from whole
/// microseconds: `{:.3}` on a float was about 2 % of a `GET /ping`'s CPU in `perf` (docs/benchmarks.md, "The access
/// line is formatted in place").
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // In u64, not the u128 of `as_nanos`: dividing and printing a u128 showed in `perf` (docs/benchmarks.md,
        // "Routing by the table"); u64 nanoseconds last 584 years.
        let nanos = u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX);
        let micros = nanos.saturating_add(500) / 1000;
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// True when a `Connection` header value lists the `close` option.
fn says_close(value: &header::HeaderValue) -> bool {
    value.as_bytes().split(|b| *b == b',').any(|option| option.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// A response body that keeps its connection marked busy until hyper has sent (or dropped) it.
struct Guarded<B> {
    body: B,
    _busy: Busy,
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same text as `{:.3}` of the float milliseconds, away from exact half-microsecond ties (where the float's
    /// own rounding error decides).
    #[test]
    fn millis_print_as_the_float_did() {
        let mut nanos: u64 = 0;
        let mut checked = 0;
        while nanos < 200_000_000_000 {
            if nanos % 1000 != 500 {
                let d = Duration::from_nanos(nanos);
                assert_eq!(Millis(d).to_string(), format!("{:.3}", d.as_secs_f64() * 1000.0), "{nanos} ns");
                checked += 1;
            }
            nanos = nanos * 3 / 2 + 7_919;
        }
        assert!(checked > 30, "{checked}");
        assert_eq!(Millis(Duration::from_micros(4)).to_string(), "0.004");
        assert_eq!(Millis(Duration::from_millis(1234)).to_string(), "1234.000");
    }

    #[test]
    fn close_is_found_among_connection_options() {
        assert!(says_close(&header::HeaderValue::from_static("keep-alive, Close")));
        assert!(!says_close(&header::HeaderValue::from_static("keep-alive, closed")));
    }
}
