//! The per-pod transaction log of the course's v2.0: one line per committed `/add`,
//! `YYYY-MM-DD HH:MM:SS: host <hostname>, client <client_id>, amount <amount>`.
//!
//! Lines go out whole in `write(2)` calls on a file opened with `O_APPEND`, under a lock, so lines from concurrent
//! requests never interleave, and nothing waits in a user-space buffer: each request awaits the write of its own
//! line before it answers. Lines that arrive while a write is in progress go out together in the next single
//! `write(2)`, so a busy pod makes one hand-off to a blocking thread per batch instead of one per payment. The
//! database is the ledger; this file is a record of what this pod handled, so a failed write is logged and the
//! request still succeeds.
//!
//! Bad days of the volume:
//! - **It hangs** (a stuck network disk): a request waits at most `LOG_WRITE_TIMEOUT_SECS` for its line, then
//!   answers 201 all the same — its payment is committed, and a client that timed out would retry and pay twice.
//!   The line stays queued and is written when the volume answers again. At most [`MAX_QUEUED_LINES`] wait; past
//!   that new lines are dropped and counted, so a volume that never comes back cannot exhaust memory.
//! - **It fills up** (a partial write, then `ENOSPC`): the file is cut back to its length before the failed write,
//!   so it holds only whole lines, and the next line is never appended to a fragment.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::metrics;
use crate::models::Transaction;
use crate::warning_limiter::WarningLimiter;

/// Lines that may wait for a stalled volume (about 100 bytes each, so about 10 MB).
pub const MAX_QUEUED_LINES: usize = 100_000;

#[derive(Clone)]
pub struct TxLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    host_name: String,
    /// `None` until the file could be opened, and again after a failed write, so the next line retries the open
    /// (the volume came back, the file was rotated away).
    file: Mutex<Option<File>>,
    queue: Mutex<Queue>,
    /// Lines queued or being written: what a stalled volume holds back.
    pending: AtomicUsize,
    /// How long a request waits for its line to be written (`LOG_WRITE_TIMEOUT_SECS`).
    wait: Duration,
    /// Under a stuck volume every payment would otherwise log a warning of its own.
    warnings: WarningLimiter,
}

/// Lines waiting for the writer, each with the channel that tells its request how the write went.
#[derive(Default)]
struct Queue {
    lines: Vec<(String, oneshot::Sender<Result<(), String>>)>,
    /// A blocking task is draining the queue: new lines join it instead of starting another.
    writing: bool,
}

/// The blocking task that drains the queue. If it ends without emptying the queue normally (the runtime dropped it
/// unrun at shutdown, or it panicked), its drop clears the flag and the queue, so the next line starts a new writer
/// and the requests waiting on the dropped lines get an error instead of waiting forever.
struct Writer {
    inner: Arc<Inner>,
    finished: bool,
}

impl Writer {
    fn run(mut self) {
        self.inner.drain();
        self.finished = true;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished {
            let mut queue = self.inner.queue.lock().unwrap_or_else(PoisonError::into_inner);
            metrics::txlog_dropped(queue.lines.len());
            self.inner.pending.fetch_sub(queue.lines.len(), Ordering::AcqRel);
            queue.lines.clear();
            metrics::txlog_queued(self.inner.pending.load(Ordering::Acquire));
            queue.writing = false;
        }
    }
}

pub fn format_line(host_name: &str, t: &Transaction) -> String {
    // A row just inserted always has both: they are NOT NULL, or on an adopted Flask table checked by a CHECK that
    // new writes pass (schema/adopt.rs). Only old adopted rows can lack them, and those are never logged.
    format!(
        "{}: host {}, client {}, amount {}\n",
        t.created_at.format("%Y-%m-%d %H:%M:%S"),
        host_name,
        t.client_id.as_deref().unwrap_or_default(),
        t.amount.unwrap_or_default()
    )
}

fn open(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

impl TxLog {
    /// Opens (or creates) the file now, so a misconfigured path shows up in the start-up log rather than at the
    /// first payment. A failure here is reported, not fatal: the open is retried with every line.
    pub fn new(path: PathBuf, host_name: String, wait: Duration) -> Self {
        let file = match open(&path) {
            Ok(f) => {
                log::info!("transaction log: appending to {} as host {host_name}", path.display());
                Some(f)
            }
            Err(e) => {
                log::error!("transaction log: cannot open {}: {e}; will retry on each transaction", path.display());
                None
            }
        };
        let inner = Inner {
            path,
            host_name,
            file: Mutex::new(file),
            queue: Mutex::default(),
            pending: AtomicUsize::new(0),
            wait,
            warnings: WarningLimiter::default(),
        };
        TxLog { inner: Arc::new(inner) }
    }

    /// Lines queued or being written.
    pub fn queued(&self) -> usize {
        self.inner.pending.load(Ordering::Acquire)
    }

    /// Appends the line for `t` and returns once it is written (or failed), or after the bounded wait with the line
    /// still queued. The writing runs on a blocking thread: the log may sit on slow network storage.
    pub async fn append(&self, t: &Transaction) {
        let line = format_line(&self.inner.host_name, t);
        let id = t.id;
        let (done_tx, done_rx) = oneshot::channel();
        let start_writer = {
            let mut queue = self.inner.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if self.inner.pending.load(Ordering::Acquire) >= MAX_QUEUED_LINES {
                drop(queue);
                metrics::txlog_dropped(1);
                self.inner.warnings.warn(|| {
                    format!(
                        "transaction log: {MAX_QUEUED_LINES} lines are waiting for {}; dropping the line of \
                         committed transaction {id} (and others like it, counted in \
                         billing_txlog_lines_dropped_total)",
                        self.inner.path.display()
                    )
                });
                return;
            }
            queue.lines.push((line, done_tx));
            metrics::txlog_queued(self.inner.pending.fetch_add(1, Ordering::AcqRel) + 1);
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            let writer = Writer { inner: Arc::clone(&self.inner), finished: false };
            // Not awaited: the result comes back through `done_rx`, for this line and any that join the batch.
            drop(tokio::task::spawn_blocking(move || writer.run()));
        }
        let failure = match tokio::time::timeout(self.inner.wait, done_rx).await {
            Ok(Ok(Ok(()))) => return,
            Ok(Ok(Err(e))) => e,
            Ok(Err(_)) => "the writer stopped before writing it".to_string(),
            Err(_) => {
                self.inner.warnings.warn(|| {
                    format!(
                        "transaction log: {} did not take a line within {}s; transaction {id} (and any others \
                         meanwhile) answered without waiting, its line stays queued until the volume answers",
                        self.inner.path.display(),
                        self.inner.wait.as_secs()
                    )
                });
                return;
            }
        };
        log::error!(
            "transaction log: transaction {id} is committed but its line could not be written to {}: {failure}",
            self.inner.path.display()
        );
    }
}

impl Inner {
    /// Writes what is queued, batch after batch, until the queue is empty.
    fn drain(&self) {
        loop {
            let batch = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.lines.is_empty() {
                    // Cleared under the same lock a new line is queued under, so no line is ever left unwritten.
                    queue.writing = false;
                    return;
                }
                std::mem::take(&mut queue.lines)
            };
            let mut bytes = Vec::with_capacity(batch.iter().map(|(line, _)| line.len()).sum());
            for (line, _) in &batch {
                bytes.extend_from_slice(line.as_bytes());
            }
            let result = self.write_line(&bytes).map_err(|e| e.to_string());
            if result.is_ok() {
                metrics::txlog_written(batch.len());
            } else {
                metrics::txlog_failed(batch.len());
            }
            metrics::txlog_queued(self.pending.fetch_sub(batch.len(), Ordering::AcqRel) - batch.len());
            for (_, done) in batch {
                // The request may have gone (its client disconnected); the line is written all the same.
                let _ = done.send(result.clone());
            }
        }
    }

    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        // A poisoned lock only means another writer panicked mid-call; the file handle itself is still sound.
        let mut slot = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let file = match slot.as_mut() {
            Some(f) => f,
            None => slot.insert(open(&self.path)?),
        };
        // With O_APPEND every write goes to the end, so the length before is where this batch starts.
        let before = file.metadata()?.len();
        let result = file.write_all(line).and_then(|()| file.flush());
        if let Err(e) = &result {
            // Part of the batch may be on disk (a full volume takes what fits): cut it off, so the file keeps only
            // whole lines and the next write does not continue a fragment.
            if let Err(cut) = file.set_len(before) {
                log::error!(
                    "transaction log: writing {} failed ({e}) and the partial line could not be removed ({cut})",
                    self.path.display()
                );
            }
            *slot = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn line_format_is_the_courses() -> Result<(), String> {
        let created_at = chrono::Utc.with_ymd_and_hms(2026, 11, 27, 7, 5, 9).single().ok_or("bad date")?;
        let t = Transaction { id: 3, client_id: Some("42".into()), amount: Some(1000), created_at };
        assert_eq!(
            format_line("billing-stateful-0", &t),
            "2026-11-27 07:05:09: host billing-stateful-0, client 42, amount 1000\n"
        );
        Ok(())
    }

    struct Background(Option<tokio::runtime::Runtime>);

    impl Drop for Background {
        fn drop(&mut self) {
            if let Some(runtime) = self.0.take() {
                runtime.shutdown_background();
            }
        }
    }

    /// A volume that hangs, for real: the log is a FIFO whose pipe is full and whose reader reads nothing, so the
    /// writer's `write(2)` blocks. Past [`MAX_QUEUED_LINES`] waiting, new lines are dropped and counted, and every
    /// line that was queued is written, whole and once, when the volume answers again.
    #[test]
    fn past_the_most_queued_lines_new_ones_are_dropped_and_counted() -> Result<(), Box<dyn std::error::Error>> {
        use std::io::{ErrorKind, Read};
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;

        const BEYOND: usize = 25;
        let dir = std::env::temp_dir().join(format!("billing-txlog-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("app.log");
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: mkfifo reads the NUL-terminated path we own.
        if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
            return Err(format!("mkfifo {}: {}", path.display(), std::io::Error::last_os_error()).into());
        }
        // The reader first (a FIFO's writer blocks in open until there is one); it reads only at the end.
        let mut reader = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path)?;
        // The pipe filled to the last byte, so the log's first write blocks.
        let mut filler = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&path)?;
        let mut filled = 0usize;
        for chunk in [&[b'#'; 4096][..], b"\n", b"#"] {
            loop {
                match filler.write(chunk) {
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        drop(filler);

        // No wait for a line: a request answers at once and its line stays queued, as past LOG_WRITE_TIMEOUT_SECS.
        let log = TxLog::new(path.clone(), "pod-0".into(), Duration::ZERO);
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Dropped without waiting for the blocking writer: if an assertion fails while it is stuck on the pipe, the
        // test fails instead of hanging.
        let runtime = Background(Some(tokio::runtime::Builder::new_current_thread().enable_all().build()?));
        let created_at = chrono::Utc.with_ymd_and_hms(2026, 11, 27, 7, 5, 9).single().ok_or("bad date")?;
        let payments: Vec<Transaction> = (1..=(MAX_QUEUED_LINES + BEYOND) as i64)
            .map(|id| Transaction { id, client_id: Some(format!("c{id}")), amount: Some(id), created_at })
            .collect();
        // The counters are recorded on this thread, by `append` itself, before it waits for anything. Appended
        // 5,000 at a time (each `append` waits a timer tick): the first 20 rounds are the 100,000 kept, whatever the
        // order within a round, and the last round is the lines beyond.
        ::metrics::with_local_recorder(&recorder, || {
            runtime.0.as_ref().map(|runtime| {
                runtime.block_on(async {
                    for round in payments.chunks(5_000) {
                        futures_util::future::join_all(round.iter().map(|t| log.append(t))).await;
                    }
                })
            })
        });
        assert_eq!(log.queued(), MAX_QUEUED_LINES);
        let exposition = handle.render();
        assert!(exposition.contains(&format!("billing_txlog_lines_dropped_total {BEYOND}\n")), "{exposition}");
        assert!(exposition.contains(&format!("billing_txlog_lines_queued {MAX_QUEUED_LINES}\n")), "{exposition}");

        // The volume answers again: the reader drains the pipe until the writer has nothing left.
        let mut received = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        // Generous for a loaded 2-core machine: about 6 MB through a pipe takes well under a second.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match reader.read(&mut buf) {
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if log.queued() == 0 {
                        // Written and counted: one more read finds anything written just before.
                        match reader.read(&mut buf) {
                            Ok(n) => received.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e.into()),
                        }
                        continue;
                    }
                    assert!(std::time::Instant::now() < deadline, "{} lines still queued", log.queued());
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let text = String::from_utf8(received.split_off(filled))?;
        assert!(received.iter().all(|b| matches!(b, b'#' | b'\n')), "the filler came back altered");
        let mut amounts = text
            .lines()
            .map(|l| l.rsplit_once(", amount ").and_then(|(_, n)| n.parse::<usize>().ok()).ok_or(l))
            .collect::<Result<Vec<_>, _>>()?;
        amounts.sort_unstable();
        assert_eq!(amounts.len(), MAX_QUEUED_LINES, "every queued line, and none of the dropped ones");
        assert!(amounts.iter().copied().eq(1..=MAX_QUEUED_LINES), "the first {MAX_QUEUED_LINES} kept, each once");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
