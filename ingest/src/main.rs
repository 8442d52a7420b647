//! `aispm-ingest`: serves `POST /v1/events`, or with `emit` sends the demo scenario or load.

use aispm_ingest::{Config, SERVICE};
use aispm_tools::emit::{self, EmitArgs};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// HTTP intake for aispm events: validation, tenant auth, backpressure, an idempotent producer.
#[derive(Debug, Parser)]
#[command(
    name = "aispm-ingest",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send the demo scenario or random load for N tenants, over HTTP or straight to Kafka.
    Emit(Box<EmitArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => {
            let config = cli.serve;
            let common = config.common.clone();
            aispm_runtime::service::main(SERVICE, &common, |shutdown| {
                aispm_ingest::run(config, shutdown)
            })
        }
        Some(Command::Emit(args)) => {
            let common = args.common.clone();
            // The summary goes to stdout, unless the events themselves do.
            let summary_to_stderr = args.to == emit::Target::Stdout;
            aispm_runtime::service::main("ingest-emit", &common, |shutdown| async move {
                let summary = emit::run(*args, shutdown).await?;
                let line = serde_json::to_string(&summary)?;
                if summary_to_stderr {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
                anyhow::Ok(())
            })
        }
    }
}
