use std::process::ExitCode;

use billing::config::Config;
use billing::{healthcheck, logging};

/// mimalloc instead of glibc's malloc: see docs/benchmarks.md ("The allocator") for what it saves per request, and
/// .cargo/config.toml for why it is built with transparent huge pages off.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: billing                 serve the API (configured by environment variables, see README)
       billing healthcheck [URL]  exit 0 if URL (default http://127.0.0.1:8080/healthz) answers 200
       billing --version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => serve(),
        Some("healthcheck") => match healthcheck::check(args.get(1).map_or(healthcheck::DEFAULT_URL, String::as_str)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("billing healthcheck: {e}");
                ExitCode::FAILURE
            }
        },
        Some("--version" | "version") => {
            println!("billing {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("billing: unknown argument {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn serve() -> ExitCode {
    match logging::Format::from_env_value(std::env::var("LOG_FORMAT").ok().as_deref()) {
        Ok(format) => logging::init(format),
        Err(e) => {
            eprintln!("billing: configuration error: {e}");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            // One line on stderr, without the logger's decoration: this is the whole story for the operator.
            eprintln!("billing: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("billing: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(billing::run(config));
    // A transaction-log write stuck on a hung volume holds a blocking thread; do not wait for it forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("billing: {e}");
            ExitCode::FAILURE
        }
    }
}
