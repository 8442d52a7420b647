//! `aispm-gatekeeper`: parse the flags, then run the service until a signal.

use aispm_gatekeeper::Config;
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = Config::parse();
    let common = config.common.clone();
    aispm_runtime::service::main("gatekeeper", &common, |shutdown| {
        aispm_gatekeeper::run(config, shutdown)
    })
}
