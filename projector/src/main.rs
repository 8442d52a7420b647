use aispm_projector::{Config, rebuild, run};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// jemalloc, for every allocation in the process: the engine's small values (decoded events,
/// aggregates, keys; glibc's malloc spent a third of the apply path's time on them) and,
/// through the unprefixed `malloc`, RocksDB's block cache and memtables and librdkafka's
/// buffers. One allocator whose background threads give freed pages back on a timer: with
/// mimalloc for Rust beside glibc for the C++ side, glibc's free chunks grew with the block
/// cache's churn and the soak's RSS kept climbing over a flat live heap; with jemalloc it levels
/// off (`docs/reliability.md`, "Which allocator keeps it flat"). Its statistics are exported as
/// `aispm_projector_jemalloc_bytes`.
#[global_allocator]
static GLOBAL: aispm_jemalloc::Jemalloc = aispm_jemalloc::Jemalloc;

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
