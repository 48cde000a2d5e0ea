//! Billing's embedded migrations, applied at start-up under an advisory lock.

use diesel::connection::SimpleConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::MigrationHarness;

use crate::schema::{MIGRATIONS, adopt, report};

/// Session-level advisory lock held while migrating: replicas starting together on an empty database take turns
/// instead of racing to create the same table. The value spells "billing" in ASCII.
const MIGRATION_LOCK_KEY: i64 = 0x0062_696c_6c69_6e67;

/// Applies pending embedded migrations under [`MIGRATION_LOCK_KEY`], first adopting a table left by the course's
/// Flask app ([`adopt`]), then reports rows that break the table's rules ([`report`]). Diesel's migration
/// harness is synchronous, so it runs on a blocking thread through [`AsyncConnectionWrapper`]. Returns the versions
/// it applied.
pub async fn run_migrations(conn: AsyncPgConnection) -> Result<Vec<String>, String> {
    tokio::task::spawn_blocking(move || {
        let mut conn: AsyncConnectionWrapper<AsyncPgConnection> = AsyncConnectionWrapper::from(conn);
        conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .map_err(|e| format!("could not take the migration lock: {e}"))?;
        let applied = adopt::adopt_flask_table(&mut conn).and_then(|_| {
            conn.run_pending_migrations(MIGRATIONS)
                .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>())
                .map_err(|e| format!("migration failed: {e}"))
        });
        if applied.is_ok() {
            report::report(&mut conn);
        }
        // Closing the connection releases the lock too; unlocking explicitly just makes it prompt.
        let unlocked = conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"));
        let applied = applied?;
        unlocked.map_err(|e| format!("could not release the migration lock: {e}"))?;
        Ok(applied)
    })
    .await
    .map_err(|e| format!("the migration task failed: {e}"))?
}
