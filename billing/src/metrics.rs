//! What billing counts, under the names operators query in Prometheus (docs/observability.md lists them all).
//!
//! Recording goes through the `metrics` facade; the Prometheus recorder of `metrics-exporter-prometheus` holds the
//! values and renders the text exposition for `GET /metrics`. With `METRICS_ENABLED=false` no recorder is installed
//! and every call here is the facade's no-op. Label values are always from a fixed set (route templates, method
//! names, status codes, error kinds), never from client data, so a client cannot grow the number of series.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
pub const PAYMENTS_CREATED: &str = "billing_payments_created_total";
pub const PAYMENTS_REFUSED: &str = "billing_payments_refused_total";
pub const PAYMENTS_REPLAYED: &str = "billing_payments_replayed_total";
pub const DATABASE_ERRORS: &str = "billing_database_errors_total";
pub const POOL_MAX: &str = "billing_db_pool_max_connections";
pub const POOL_OPEN: &str = "billing_db_pool_connections";
pub const POOL_IDLE: &str = "billing_db_pool_idle_connections";
pub const POOL_WAITING: &str = "billing_db_pool_waiting_requests";
pub const TXLOG_WRITTEN: &str = "billing_txlog_lines_written_total";
pub const TXLOG_FAILED: &str = "billing_txlog_lines_failed_total";
pub const TXLOG_DROPPED: &str = "billing_txlog_lines_dropped_total";
pub const TXLOG_QUEUED: &str = "billing_txlog_lines_queued";
pub const BUILD_INFO: &str = "billing_build_info";
pub const CONNECTIONS_OPEN: &str = "billing_http_connections";
pub const CONNECTIONS_SHED: &str = "billing_http_connections_shed_total";
pub const CONNECTIONS_REFUSED: &str = "billing_http_connections_refused_total";
pub const WRITE_BATCH_SIZE: &str = "billing_write_batch_size";
pub const READ_BATCH_SIZE: &str = "billing_read_batch_size";

/// Payments per group-commit batch (ledger/writer.rs), and ids per batch of point reads (ledger/point_reads.rs), up
/// to their most, 1024.
pub const BATCH_BUCKETS: [f64; 11] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Request-duration buckets, in seconds: a point read takes well under a millisecond on a healthy database, so the
/// low end resolves 100 µs steps; the top end reaches past the default `DATABASE_TIMEOUT_SECS` of 5 s.
pub const DURATION_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often histogram samples are folded into their buckets when nobody scrapes, so memory stays bounded: raw
/// samples pile up between upkeeps, and at every 5 s they showed in the peak RSS under load (docs/benchmarks.md,
/// "Metrics, request ids and billing's own server loop").
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Why a database call failed, as the `kind` label of [`DATABASE_ERRORS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbErrorKind {
    /// PostgreSQL could not be reached, is restarting or shutting down, or a read's connection was lost.
    Unavailable,
    /// No answer (or no free connection) within `DATABASE_TIMEOUT_SECS`.
    Timeout,
    /// A write past the timeout was cancelled by PostgreSQL: nothing was recorded.
    Cancelled,
    /// A write's fate is unknown: its connection was lost, or the cancel request got no answer.
    OutcomeUnknown,
    /// The `transactions` table is gone.
    SchemaMissing,
    /// Anything else PostgreSQL refused (answered with a 500).
    Other,
}

impl DbErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            DbErrorKind::Unavailable => "unavailable",
            DbErrorKind::Timeout => "timeout",
            DbErrorKind::Cancelled => "cancelled",
            DbErrorKind::OutcomeUnknown => "outcome_unknown",
            DbErrorKind::SchemaMissing => "schema_missing",
            DbErrorKind::Other => "other",
        }
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process), describes every metric and publishes the series that exist
/// from the start, so a first scrape already shows them at 0. Must run inside the tokio runtime: it spawns the
/// upkeep task.
pub fn install(pool_size: u32, txlog: bool) -> Result<(), String> {
    // No `idle_timeout`: the request series' handles are kept per thread (`REQUEST_SERIES`) and must stay live.
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_string()), &DURATION_BUCKETS)
        .map_err(|e| format!("cannot configure the metrics histogram: {e}"))?
        .set_buckets_for_metric(Matcher::Full(WRITE_BATCH_SIZE.to_string()), &BATCH_BUCKETS)
        .map_err(|e| format!("cannot configure the batch-size histogram: {e}"))?
        .set_buckets_for_metric(Matcher::Full(READ_BATCH_SIZE.to_string()), &BATCH_BUCKETS)
        .map_err(|e| format!("cannot configure the read batch-size histogram: {e}"))?;
    let handle = builder.install_recorder().map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    // Only the first install wins the cell; the recorder itself refuses a second install above.
    let _ = HANDLE.set(handle);

    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by method, route template and status");
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from receiving a request to sending its response head, by method, route template and status"
    );
    describe_histogram!(
        WRITE_BATCH_SIZE,
        Unit::Count,
        "Payments written together in one statement and one commit by the group-commit writer"
    );
    describe_histogram!(
        READ_BATCH_SIZE,
        Unit::Count,
        "Point reads (GET /get/<id>) answered together by one statement on a shared connection"
    );
    describe_counter!(PAYMENTS_CREATED, "Payments committed by this process (POST /add answered 201, replays aside)");
    describe_counter!(
        PAYMENTS_REPLAYED,
        "POST /add answered with the payment an earlier request with the same Idempotency-Key recorded (201, \
         Idempotent-Replayed: true, nothing written)"
    );
    describe_counter!(PAYMENTS_REFUSED, "POST /add requests refused for bad input, by reason (the error code)");
    describe_counter!(DATABASE_ERRORS, "Failed database calls, by kind");
    describe_gauge!(POOL_MAX, "Connections the pool may open (DATABASE_POOL_SIZE)");
    describe_gauge!(POOL_OPEN, "Pooled database connections open now");
    describe_gauge!(POOL_IDLE, "Pooled database connections open and idle now");
    describe_gauge!(POOL_WAITING, "Requests waiting now for a pooled database connection");
    describe_counter!(TXLOG_WRITTEN, "Transaction-log lines written to LOG_FILE");
    describe_counter!(TXLOG_FAILED, "Transaction-log lines whose write failed (the payment is committed)");
    describe_counter!(TXLOG_DROPPED, "Transaction-log lines dropped without a write attempt");
    describe_gauge!(TXLOG_QUEUED, "Transaction-log lines waiting to be written");
    describe_gauge!(CONNECTIONS_OPEN, "Client connections open now");
    describe_counter!(CONNECTIONS_SHED, "Idle client connections closed to make room under MAX_CONNECTIONS");
    describe_counter!(CONNECTIONS_REFUSED, "Client connections refused: MAX_CONNECTIONS open and all busy");
    describe_gauge!(BUILD_INFO, "Always 1; the version label says which billing is running");

    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    gauge!(POOL_MAX).set(f64::from(pool_size));
    gauge!(POOL_OPEN).set(0.0);
    gauge!(POOL_IDLE).set(0.0);
    gauge!(POOL_WAITING).set(0.0);
    counter!(PAYMENTS_CREATED).absolute(0);
    counter!(PAYMENTS_REPLAYED).absolute(0);
    counter!(CONNECTIONS_SHED).absolute(0);
    counter!(CONNECTIONS_REFUSED).absolute(0);
    if txlog {
        counter!(TXLOG_WRITTEN).absolute(0);
        counter!(TXLOG_FAILED).absolute(0);
        counter!(TXLOG_DROPPED).absolute(0);
        gauge!(TXLOG_QUEUED).set(0.0);
    }
    Ok(())
}

/// The text exposition of everything recorded, or `None` when metrics are off.
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}

/// The pool's connections open and idle now; the pool's owner reports them before a scrape (db/mod.rs).
pub fn pool_state(open: u32, idle: u32) {
    gauge!(POOL_OPEN).set(f64::from(open));
    gauge!(POOL_IDLE).set(f64::from(idle));
}

/// One answered request. `route` is a route template (http/routes.rs) and `status` a status code, both from fixed sets.
pub fn request(method: &'static str, route: &'static str, status: u16, elapsed: Duration) {
    if HANDLE.get().is_none() {
        return;
    }
    let status = status_label(status);
    REQUEST_SERIES.with_borrow_mut(|series| {
        let found = series.iter().position(|s| s.method == method && s.route == route && s.status == status);
        let index = found.unwrap_or_else(|| {
            series.push(RequestSeries {
                method,
                route,
                status,
                requests: counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status),
                duration: histogram!(HTTP_DURATION, "method" => method, "route" => route, "status" => status),
            });
            series.len() - 1
        });
        series[index].requests.increment(1);
        series[index].duration.record(elapsed.as_secs_f64());
    });
}

/// One request series' handles, kept by each thread that records requests.
struct RequestSeries {
    method: &'static str,
    route: &'static str,
    status: &'static str,
    requests: Counter,
    duration: Histogram,
}

thread_local! {
    /// `counter!` and `histogram!` build their key (an `Arc` of the labels) and look it up in the recorder's
    /// registry on every call, twice per request; these handles skip that (docs/benchmarks.md, "The request
    /// series' metric handles kept per thread"). A handle stays valid for the process's life because the
    /// recorder is installed once and `install` sets no `idle_timeout` (with one, the recorder would drop an idle
    /// series and a kept handle would count into nothing). The labels come from fixed sets, so each thread keeps a
    /// few dozen handles at most.
    static REQUEST_SERIES: RefCell<Vec<RequestSeries>> = const { RefCell::new(Vec::new()) };
}

pub fn write_batch(size: usize) {
    histogram!(WRITE_BATCH_SIZE).record(size as f64);
}

pub fn read_batch(size: usize) {
    histogram!(READ_BATCH_SIZE).record(size as f64);
}

pub fn payment_created() {
    counter!(PAYMENTS_CREATED).increment(1);
}

/// A `POST /add` answered with the payment an earlier request with the same `Idempotency-Key` recorded.
pub fn payment_replayed() {
    counter!(PAYMENTS_REPLAYED).increment(1);
}

/// `reason` is an [`crate::error::ErrorCode`]'s name, a fixed set.
pub fn payment_refused(reason: &'static str) {
    counter!(PAYMENTS_REFUSED, "reason" => reason).increment(1);
}

pub fn database_error(kind: DbErrorKind) {
    counter!(DATABASE_ERRORS, "kind" => kind.label()).increment(1);
}

/// Tracks one request waiting for a pooled connection, for as long as the guard lives (a request whose client went
/// away mid-wait drops it too).
pub struct Waiting(());

impl Waiting {
    pub fn start() -> Self {
        gauge!(POOL_WAITING).increment(1.0);
        Waiting(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        gauge!(POOL_WAITING).decrement(1.0);
    }
}

pub fn connections_open(open: usize) {
    gauge!(CONNECTIONS_OPEN).set(open as f64);
}

pub fn connection_shed() {
    counter!(CONNECTIONS_SHED).increment(1);
}

pub fn connection_refused() {
    counter!(CONNECTIONS_REFUSED).increment(1);
}

pub fn txlog_written(lines: usize) {
    counter!(TXLOG_WRITTEN).increment(lines as u64);
}

pub fn txlog_failed(lines: usize) {
    counter!(TXLOG_FAILED).increment(lines as u64);
}

pub fn txlog_dropped(lines: usize) {
    counter!(TXLOG_DROPPED).increment(lines as u64);
}

pub fn txlog_queued(lines: usize) {
    gauge!(TXLOG_QUEUED).set(lines as f64);
}

/// The status code as a label without formatting it on every request: the codes billing answers are listed; any
/// other (hyper's own, say) is rare enough to be grouped by class.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        400 => "400",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        415 => "415",
        431 => "431",
        500 => "500",
        503 => "503",
        _ => match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        },
    }
}

/// The method as a label: the standard ones by name, anything else (a client can send any token) as `other`.
pub fn method_label(method: &warp::http::Method) -> &'static str {
    use warp::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_and_statuses_are_grouped() -> Result<(), String> {
        let method = warp::http::Method::from_bytes(b"BREW").map_err(|e| e.to_string())?;
        assert_eq!(method_label(&method), "other");
        assert_eq!(status_label(201), "201");
        assert_eq!(status_label(408), "408");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(502), "5xx");
        Ok(())
    }
}
