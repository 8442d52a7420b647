//! Shutdown: one root cancellation token, fired by SIGINT or SIGTERM.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Received a shutdown signal; finishing in-flight work.");
        fire.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How a service run ended under [`run_with_grace`].
#[derive(Debug)]
pub enum Outcome<T> {
    /// The service returned (by itself, or within the grace period after shutdown).
    Finished(T),
    /// Shutdown fired and the service did not finish within the grace period.
    GraceExpired,
}

/// Runs a service until it ends; once `shutdown` fires, gives it `grace` to finish.
pub async fn run_with_grace<F, T>(
    service: F,
    shutdown: CancellationToken,
    grace: Duration,
) -> Outcome<T>
where
    F: Future<Output = T>,
{
    tokio::pin!(service);
    tokio::select! {
        out = &mut service => return Outcome::Finished(out),
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, service).await {
        Ok(out) => Outcome::Finished(out),
        Err(_) => Outcome::GraceExpired,
    }
}
