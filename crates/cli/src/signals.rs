//! Process signals shared by the long-running subcommands.

/// Completes on SIGTERM (how Kubernetes stops a pod) or SIGINT (Ctrl-C).
pub(crate) async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            // Without signal handlers, Ctrl-C is the only way to stop.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
