//! The per-pod transaction log of the course's v2.0: one line per committed `/add`,
//! `YYYY-MM-DD HH:MM:SS: host <hostname>, client <client_id>, amount <amount>`.
//!
//! Each line goes out in a single `write(2)` on a file opened with `O_APPEND`, under a lock, so lines from concurrent
//! requests never interleave or tear, and nothing waits in a user-space buffer. The database is the ledger; this
//! file is a record of what this pod handled, so a failed write is logged and the request still succeeds.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::models::Transaction;

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
}

pub fn format_line(host_name: &str, t: &Transaction) -> String {
    format!(
        "{}: host {}, client {}, amount {}\n",
        t.created_at.format("%Y-%m-%d %H:%M:%S"),
        host_name,
        t.client_id,
        t.amount
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
    pub fn new(path: PathBuf, host_name: String) -> Self {
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
        TxLog { inner: Arc::new(Inner { path, host_name, file: Mutex::new(file) }) }
    }

    /// Appends the line for `t`. Runs on a blocking thread: the log may sit on slow network storage.
    pub async fn append(&self, t: &Transaction) {
        let inner = Arc::clone(&self.inner);
        let line = format_line(&inner.host_name, t);
        let id = t.id;
        let written = tokio::task::spawn_blocking(move || inner.write_line(line.as_bytes())).await;
        let failure = match written {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        log::error!(
            "transaction log: transaction {id} is committed but its line could not be written to {}: {failure}",
            self.inner.path.display()
        );
    }
}

impl Inner {
    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        // A poisoned lock only means another writer panicked mid-call; the file handle itself is still sound.
        let mut slot = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let file = match slot.as_mut() {
            Some(f) => f,
            None => slot.insert(open(&self.path)?),
        };
        let result = file.write_all(line).and_then(|()| file.flush());
        if result.is_err() {
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
        let t = Transaction { id: 3, client_id: "42".into(), amount: 1000, created_at };
        assert_eq!(
            format_line("billing-stateful-0", &t),
            "2026-11-27 07:05:09: host billing-stateful-0, client 42, amount 1000\n"
        );
        Ok(())
    }
}
