//! Shared by the integration tests: each test gets its own database on the binary's shared PostgreSQL server and
//! its own `billing` process, so tests run in parallel without seeing each other's rows.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use billing_testkit::{PgServer, ServiceProcess, shared, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_billing");
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub struct TestApp {
    pub db: String,
    pub database_url: String,
    pub service: ServiceProcess,
    pub client: reqwest::Client,
}

impl TestApp {
    pub fn start() -> Result<Self, String> {
        Self::start_with(&[])
    }

    /// A fresh database and a ready service configured with `env` on top of the defaults.
    pub fn start_with(env: &[(&str, &str)]) -> Result<Self, String> {
        let db = unique_name("t");
        let database_url = shared().create_database(&db)?;
        let mut all_env = vec![("DATABASE_URL", database_url.as_str())];
        all_env.extend_from_slice(env);
        let mut service = ServiceProcess::spawn(BIN.as_ref(), &all_env)?;
        service.wait_ready(READY_TIMEOUT)?;
        Ok(TestApp { db, database_url, service, client: client()? })
    }

    pub fn url(&self, path: &str) -> String {
        self.service.url(path)
    }

    pub fn sql(&self, query: &str) -> Result<String, String> {
        shared().psql(&self.db, query)
    }

    pub fn row_count(&self) -> Result<i64, String> {
        self.sql("SELECT count(*) FROM transactions")?.parse().map_err(|e| format!("count is not a number: {e}"))
    }
}

/// The value of the sample `series` (a metric name with no labels, such as `billing_write_batch_size_count`, or with
/// them as billing writes them, such as `billing_database_errors_total{kind="timeout"}`) in a `/metrics` text, if it
/// is there.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
}

pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| e.to_string())
}

/// Lifts the soft open-files limit to the hard one, so a test can hold thousands of sockets at once.
pub fn raise_fd_limit() {
    let mut limit = libc_rlimit();
    limit.0 = limit.1;
    set_rlimit(limit);
}

fn libc_rlimit() -> (u64, u64) {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (r.rlim_cur, r.rlim_max)
}

fn set_rlimit((cur, max): (u64, u64)) {
    let r = libc::rlimit { rlim_cur: cur, rlim_max: max };
    // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard one is always allowed.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
}

/// The parts of one transaction-log line, or why it is not one.
#[derive(Debug, PartialEq, Eq, Clone, PartialOrd, Ord)]
pub struct LogLine {
    pub time: String,
    pub host: String,
    pub client: String,
    pub amount: i64,
}

/// Parses `YYYY-MM-DD HH:MM:SS: host <h>, client <c>, amount <n>` strictly.
pub fn parse_log_line(line: &str) -> Result<LogLine, String> {
    let bad = || format!("not a transaction-log line: {line:?}");
    let (time, rest) = line.split_at_checked(19).ok_or_else(bad)?;
    let shape_ok = time.chars().enumerate().all(|(i, c)| match i {
        4 | 7 => c == '-',
        10 => c == ' ',
        13 | 16 => c == ':',
        _ => c.is_ascii_digit(),
    });
    if !shape_ok {
        return Err(bad());
    }
    let rest = rest.strip_prefix(": host ").ok_or_else(bad)?;
    let (host, rest) = rest.split_once(", client ").ok_or_else(bad)?;
    let (client, amount) = rest.rsplit_once(", amount ").ok_or_else(bad)?;
    let amount = amount.parse().map_err(|_| bad())?;
    Ok(LogLine { time: time.into(), host: host.into(), client: client.into(), amount })
}

/// Holds an exclusive lock on the app's `transactions` table for `seconds` from a psql session, so that writes wait
/// inside the database; returns once the lock is granted. Wait on the returned child to know it was released.
pub async fn lock_transactions(app: &TestApp, seconds: u32) -> Result<std::process::Child, Box<dyn std::error::Error>> {
    lock_transactions_in(shared(), &app.db, seconds).await
}

/// [`lock_transactions`] for the `transactions` table of `db` on another server than the shared one.
pub async fn lock_transactions_in(
    server: &PgServer,
    db: &str,
    seconds: u32,
) -> Result<std::process::Child, Box<dyn std::error::Error>> {
    let locker = server.psql_background(
        db,
        &format!("BEGIN; LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({seconds}); COMMIT;"),
    )?;
    let lock_held = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                     WHERE c.relname = 'transactions' AND l.mode = 'AccessExclusiveLock' AND l.granted \
                     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.psql(db, lock_held)? != "1" {
        assert!(Instant::now() < deadline, "the lock was never taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(locker)
}
/// Ends the transaction [`lock_transactions_in`] began, now rather than when its `pg_sleep` would: killing `psql`
/// would not do, its backend sleeps on with the lock. A test that waited for the sleep would leave its kept-alive
/// HTTP connection idle for about as long, and one that outlived `HEADER_READ_TIMEOUT_SECS` would race the server
/// closing it (a reset, seen in CI).
pub fn release_lock(server: &PgServer, db: &str, mut locker: std::process::Child) -> Result<(), String> {
    let holder = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                  WHERE datname = current_database() AND application_name = 'psql' AND query LIKE '%pg_sleep%' \
                  AND pid <> pg_backend_pid()";
    server.psql(db, holder)?;
    locker.wait().map_err(|e| format!("waiting for the locking psql: {e}"))?;
    Ok(())
}

#[derive(Default)]
pub struct Faults {
    /// Data from PostgreSQL to billing waits while this is set.
    pub hold_answers: AtomicBool,
    /// New connections are accepted and then get nothing, in either direction.
    pub blackhole_new: AtomicBool,
}

/// A relay (real sockets on loopback) from a port of its own to PostgreSQL's at `upstream`, for a network that goes
/// bad the way a partition does: [`Faults`], switched on and off by the test, hold PostgreSQL's answers on the open
/// connections and leave new connections (a cancel request) unanswered.
pub async fn relay(upstream: u16, faults: Arc<Faults>) -> Result<u16, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let faults = Arc::clone(&faults);
            tokio::spawn(async move {
                if faults.blackhole_new.load(Ordering::Acquire) {
                    // Held open, never answered, until the test ends.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    drop(client);
                    return;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    while faults.hold_answers.load(Ordering::Acquire) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(port)
}
