//! The body of every binary's `main`: telemetry, the runtime, signals, the grace period and the
//! exit code. A service's `main.rs` parses its flags and calls [`main`].

use crate::config::CommonArgs;
use crate::shutdown::{Outcome, on_signal, run_with_grace};
use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Runs `run(shutdown)` on a multi-threaded runtime until it returns or a signal arrives and the
/// grace period ends. Errors are logged; the exit code says whether the service ended cleanly.
pub fn main<F, Fut, E>(service: &'static str, common: &CommonArgs, run: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let arenas = crate::malloc::limit_arenas();
    crate::telemetry::init(common.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the async runtime.");
            return ExitCode::FAILURE;
        }
    };
    let grace = common.shutdown_grace;
    let trim_every = common.malloc_trim_interval;
    let code = runtime.block_on(async move {
        let shutdown = on_signal();
        crate::malloc::spawn_trimmer(trim_every);
        tracing::info!(
            service,
            version = env!("CARGO_PKG_VERSION"),
            malloc_arenas = arenas,
            malloc_trim_interval = ?trim_every,
            "Starting."
        );
        match run_with_grace(run(shutdown.clone()), shutdown, grace).await {
            Outcome::Finished(Ok(())) => {
                tracing::info!(service, "Stopped.");
                ExitCode::SUCCESS
            }
            Outcome::Finished(Err(e)) => {
                tracing::error!(service, error = %e, "Stopped on a fatal error.");
                ExitCode::FAILURE
            }
            Outcome::GraceExpired => {
                tracing::error!(
                    service,
                    ?grace,
                    "In-flight work did not finish within the grace period."
                );
                ExitCode::FAILURE
            }
        }
    });
    // Dropping the runtime would wait for every blocking task, without end: a Kafka call on a
    // blocking thread can outlive the grace period by as long as the broker stays away (a
    // projector stopped during a broker outage stayed up until killed). Blocking tasks get the
    // grace period after a clean stop, a second after a failure or an expired grace period.
    let clean = code == ExitCode::SUCCESS;
    runtime.shutdown_timeout(if clean {
        grace
    } else {
        std::time::Duration::from_secs(1)
    });
    code
}
