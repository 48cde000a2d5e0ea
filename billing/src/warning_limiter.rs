//! A warning that a flood would repeat (every shed connection, every payment behind a hung log volume) is logged at
//! most once a second, so the log says what is happening without becoming the next problem.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct WarningLimiter {
    started: Instant,
    /// When a line was last logged, in ms since `started`; 0 for never.
    last: AtomicU64,
    every: Duration,
}

impl Default for WarningLimiter {
    fn default() -> Self {
        WarningLimiter { started: Instant::now(), last: AtomicU64::new(0), every: Duration::from_secs(1) }
    }
}

impl WarningLimiter {
    /// Logs `message()` at warning level unless a line was logged less than a second ago; `message` is built only
    /// when it is logged.
    pub fn warn(&self, message: impl FnOnce() -> String) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || u128::from(now.saturating_sub(last)) >= self.every.as_millis();
        if due && self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            log::warn!("{}", message());
        }
    }
}
