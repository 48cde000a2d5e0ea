//! Starts a throwaway PostgreSQL exactly as the tests do, creates database `billing`, prints
//! `DATABASE_URL=postgres://…` on stdout, and keeps the server until SIGINT/SIGTERM, then deletes it.
//! Used by `scripts/demo.sh` and the benchmarks. `--durable` keeps fsync on (production durability).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use billing_testkit::{PgOptions, PgServer};

const USAGE: &str = "usage: billing-tempdb [--durable]\n\n\
    Starts a throwaway PostgreSQL on a free loopback port, prints DATABASE_URL=... on stdout, and removes it on \
    SIGINT/SIGTERM.\n  --durable  keep fsync and full_page_writes on (PostgreSQL's defaults) instead of off";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> std::process::ExitCode {
    let mut durable = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--durable" => durable = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return std::process::ExitCode::SUCCESS;
            }
            other => {
                eprintln!("billing-tempdb: unknown argument {other:?}\n{USAGE}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let server = match PgServer::start(PgOptions { durable, lc_messages: None }) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("billing-tempdb: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let url = match server.create_database("billing") {
        Ok(url) => url,
        Err(e) => {
            eprintln!("billing-tempdb: cannot create database billing: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("DATABASE_URL={url}");
    eprintln!(
        "billing-tempdb: PostgreSQL on 127.0.0.1:{} (durable: {durable}); stop with SIGINT/SIGTERM",
        server.port()
    );
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    eprintln!("billing-tempdb: stopped and removed");
    std::process::ExitCode::SUCCESS
}
