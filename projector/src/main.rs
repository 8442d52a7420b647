use aispm_projector::{Config, rebuild, run};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc: the engine allocates and frees small values at a high rate (decoded events,
/// aggregates, keys); glibc's malloc spent a third of the apply path's time on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// aispm-projector: input topics → RocksDB views (exactly once) → views topic and HTTP API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Wipe the views and replay them from the input topics up to their current end, then exit.
    Rebuild,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = cli.config.common.clone();
    match cli.command {
        None => {
            aispm_runtime::service::main("projector", &common, |shutdown| run(cli.config, shutdown))
        }
        Some(Command::Rebuild) => {
            aispm_runtime::service::main("projector", &common, |shutdown| async move {
                let report = rebuild(cli.config, shutdown).await?;
                let secs = report.elapsed.as_secs_f64();
                println!(
                    "rebuilt: {} events applied from {} records in {:.2} s ({:.0} events/s)",
                    report.totals.applied,
                    report.totals.records,
                    secs,
                    report.totals.applied as f64 / secs.max(1e-9)
                );
                Ok::<(), aispm_projector::Error>(())
            })
        }
    }
}
