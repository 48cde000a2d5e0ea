use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports below Linux's ephemeral range (32768–60999 by default), so that the thousands of client sockets a test
/// opens can never take a port between our probe and the server's bind.
const FIRST: u32 = 20_000;
const SPAN: u32 = 12_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback port that was free a moment ago, distinct from every other one this process has handed out.
pub fn free_port() -> Result<u16, String> {
    // Start each process at a different place, so consecutive test binaries do not retrace the same ports.
    let offset = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + offset.wrapping_add(n.wrapping_mul(97)) % SPAN).map_err(|e| e.to_string())?;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(format!("no free loopback port between {FIRST} and {}", FIRST + SPAN))
}
