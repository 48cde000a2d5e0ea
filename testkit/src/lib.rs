//! Real, throwaway PostgreSQL servers and billing processes for the tests, the demo and the benchmarks.
//!
//! [`PgServer`] runs `initdb` and `postgres` from the machine's PostgreSQL installation on a free 127.0.0.1 port in a
//! temporary directory, and removes both when dropped. Nothing is mocked: tests speak to a real server over TCP.

mod locale;
mod pg;
mod port;
mod process;
mod tls;

pub use pg::{PgOptions, PgServer, ServerTls, StopMode, shared, unique_name};
pub use port::free_port;
pub use process::{HttpResponse, ServiceProcess, http_request};
pub use tls::{ServerCert, TestCa};
