//! billing: a payment-history REST service on PostgreSQL.

// Where to look: the layers, top to bottom. Each module imports only from its own folder or the layers below it
// (scripts/check-layers.py fails the tests otherwise); docs/architecture.md draws the map and follows a request
// from the socket to PostgreSQL and back. `run` below wires the layers together.
//
// 1. HTTP: the server loop, the route table, the router and the handlers.
pub mod http;
// 2. The state shared by every request.
pub mod app;
// 3. The ledger's paths to the database: group-commit writer, batched point reads, transaction log.
pub mod ledger;
// 4. The table's shape at start-up: migrations, adopting the Flask table, the schema report.
pub mod schema;
// 5. PostgreSQL: connections, the pool, the SQL, what each SQLSTATE means, the shared read connections.
pub mod db;
// 6. Settings from the environment, as plain data.
pub mod config;
// 7. Leaves: used by any layer, knowing none of them.
pub mod error;
pub mod healthcheck;
pub mod logging;
pub mod metrics;
pub mod models;
pub mod request_id;
pub mod shutdown;
pub mod text;
pub mod warning_limiter;

use tokio::sync::watch;

use crate::app::App;
use crate::config::Config;
use crate::config::database::describe_database;
use crate::db::read_connections::ReadConnections;
use crate::http::router::Router;
use crate::http::server;
use crate::ledger::txlog::TxLog;
use crate::schema::migrate;

/// Group-commit writer tasks (ledger/writer.rs). Batches from every process take turns on one lock until their
/// commit is durable, so two writers in one process cannot share a WAL flush: the second only splits what the first
/// would have taken, and two measured slower than one (docs/benchmarks.md, "Group commit").
const WRITERS: usize = 1;

/// Serves until SIGTERM/SIGINT (then drains and returns `Ok`) or until start-up fails (then returns why).
///
/// The listener opens first, so `/healthz` answers while the database is awaited and Kubernetes does not restart a
/// pod that is only waiting; data endpoints and `/readyz` answer 503 until the migrations have run.
pub async fn run(config: Config) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen_addr))?;
    if config.metrics_enabled {
        metrics::install(config.pool_size, config.log_file.is_some())?;
    }
    let session = db::Session::for_query_timeout(config.database_timeout);
    let pool = db::build_pool(&config, session.clone()).await?;
    let txlog =
        config.log_file.clone().map(|path| TxLog::new(path, config.host_name.clone(), config.log_write_timeout));
    let reads = (config.read_connections > 0).then(|| {
        ReadConnections::new(
            config.read_connections,
            config.database.clone(),
            config.tls.clone(),
            session,
            config.database_timeout,
        )
    });
    let app = App::new(pool, reads, txlog, &config, WRITERS);

    // Either a signal or a failed start-up ends the server; `stop` carries the latter to the graceful future.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (draining_tx, mut draining_rx) = watch::channel(false);
    let stopping = app.clone();
    let graceful = async move {
        tokio::select! {
            () = shutdown::signalled() => {}
            _ = stop_rx.changed() => {}
        }
        stopping.mark_stopping();
        let _ = draining_tx.send(true);
    };
    // The bound address, not the configured one: with port 0 this is how a caller learns the port.
    let bound = listener.local_addr().map_err(|e| format!("cannot read the listening address: {e}"))?;
    log::info!("billing {} listening on {bound}", env!("CARGO_PKG_VERSION"));
    let reserved = u64::from(config.pool_size) + config.read_connections as u64;
    let server = tokio::spawn(server::serve(listener, Router::new(app.clone()), config.limits, reserved, graceful));

    let startup = tokio::select! {
        result = start(&config, &app) => match result {
            Ok(()) => None,
            Err(e) => {
                log::error!("start-up failed: {e}");
                let _ = stop_tx.send(true);
                Some(e)
            }
        },
        // A signal during start-up is an ordinary stop, not a failure.
        _ = draining_rx.changed() => None,
    };

    // The drain is bounded: past `shutdown_timeout` after the signal, whatever is still in flight is cut off.
    let deadline = async {
        while !*draining_rx.borrow_and_update() {
            if draining_rx.changed().await.is_err() {
                break;
            }
        }
        tokio::time::sleep(config.shutdown_timeout).await;
    };
    tokio::select! {
        joined = server => joined.map_err(|e| format!("the server task failed: {e}"))?,
        () = deadline => log::warn!(
            "requests still in flight after {}s; exiting anyway",
            config.shutdown_timeout.as_secs()
        ),
    }
    if let Some(waiting) = app.txlog.as_ref().map(TxLog::queued).filter(|n| *n > 0) {
        log::warn!("transaction log: {waiting} lines of committed transactions were never written (the volume hung)");
    }
    drop(app);
    log::info!("stopped");
    startup.map_or(Ok(()), Err)
}

async fn start(config: &Config, app: &App) -> Result<(), String> {
    let conn = db::wait_for_database(config).await?;
    let applied = migrate::run_migrations(conn).await?;
    if applied.is_empty() {
        log::info!("schema is up to date");
    } else {
        log::info!("applied migrations: {}", applied.join(", "));
    }
    app.mark_started();
    log::info!("ready: serving transactions from {}", describe_database(&config.database));
    Ok(())
}
