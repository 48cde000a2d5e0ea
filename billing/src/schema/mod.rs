//! The `transactions` table's shape: billing's embedded migrations (migrate.rs), run at start-up after adopting a
//! table left by the course's Flask app (adopt.rs), then a report of rows that break the table's rules (report.rs).
//! Diesel is used here only; every query of the running service goes through tokio-postgres (db/).

use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub mod adopt;
pub mod migrate;
pub mod report;

/// The migrations in billing/migrations, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The synchronous connection diesel's migration harness needs, over the async one.
pub type Conn = AsyncConnectionWrapper<AsyncPgConnection>;
