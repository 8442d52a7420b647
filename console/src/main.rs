//! `aispm-console`: parse the flags, then serve the console until a signal.

use aispm_console::Config;
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = Config::parse();
    let common = config.common();
    aispm_runtime::service::main("console", &common, |shutdown| {
        aispm_console::run(config, shutdown)
    })
}
