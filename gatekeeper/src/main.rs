//! `aispm-gatekeeper`: parse the flags, then run the service until a signal.

use aispm_gatekeeper::Config;
use clap::Parser;
use std::process::ExitCode;

/// jemalloc, for every allocation in the process (`aispm_jemalloc`): the view changes the
/// gatekeeper decodes and the tenant state it keeps are many small values, and glibc's `malloc`,
/// `free` and consolidation took 40 % of its time at 10,000 events/s; with jemalloc its CPU per
/// event fell 38 % at 5,000/s (`docs/performance.md`). Its statistics are exported as
/// `aispm_gatekeeper_jemalloc_bytes`.
#[global_allocator]
static GLOBAL: aispm_jemalloc::Jemalloc = aispm_jemalloc::Jemalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    let common = config.common.clone();
    aispm_runtime::service::main("gatekeeper", &common, |shutdown| {
        aispm_gatekeeper::run(config, shutdown)
    })
}
