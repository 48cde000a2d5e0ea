//! SIGTERM (Kubernetes) and SIGINT (Ctrl-C) both mean: stop accepting, drain, exit 0.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGTERM or SIGINT. If the handlers cannot be installed the process could never stop
/// gracefully, so that is reported and treated as an immediate stop request.
pub async fn signalled() {
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("cannot install signal handlers: {e}");
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    log::info!("{name} received: no longer accepting connections, finishing requests in flight");
}
