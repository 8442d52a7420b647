//! `aispm-validate`: aispm's own validators. Each runs the check a validation claims, writes
//! the transcript of what it did, and posts the result to ingest signed by a validator key
//! (`aispm_schemas::signature::ValidationClaim`), so that the result counts for readiness.

use aispm_validate::connector::{self, ConnectorArgs};
use aispm_validate::isolation::{self, IsolationArgs};
use clap::{Parser, Subcommand};
use serde::Serialize;
use std::process::ExitCode;

/// aispm's validators: run a check, post its signed result with the transcript as evidence.
#[derive(Debug, Parser)]
#[command(name = "aispm-validate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tenant isolation: with each tenant's read token, try every read route of the running
    /// services for every other tenant; pass only on 403 everywhere and no planted canary
    /// anywhere but its own tenant's answers.
    Isolation(IsolationArgs),
    /// Live connector: one GET of the live system a connector reads, with the connector's
    /// credentials as headers; pass only on a 2xx answer with a body.
    Connector(ConnectorArgs),
}

/// Prints a validator's summary; exit 0 when it passed, 1 when it failed, 2 when it could not
/// run or post its results.
fn report<S: Serialize>(
    name: &str,
    outcome: anyhow::Result<S>,
    passed: impl Fn(&S) -> bool,
) -> ExitCode {
    match outcome {
        Ok(summary) => {
            println!(
                "{}",
                serde_json::to_string(&summary).unwrap_or_else(|e| e.to_string())
            );
            if passed(&summary) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("aispm-validate {name}: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("aispm-validate: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Isolation(args) => {
            report("isolation", runtime.block_on(isolation::run(&args)), |s| {
                s.passed
            })
        }
        Command::Connector(args) => {
            report("connector", runtime.block_on(connector::run(&args)), |s| {
                s.passed
            })
        }
    }
}
