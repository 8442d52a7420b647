//! `aispm-broker`: Apache Kafka for running aispm by hand and for `scripts/soak.sh`, started
//! the way the tests and the demo start it (`aispm_tests::broker`): one KRaft node on
//! 127.0.0.1, its storage kept in a directory, running until SIGINT or SIGTERM.
//!
//! ```sh
//! aispm-broker [--port 9092] [--dir .kafka]
//! ```
//!
//! Prints one JSON line once the broker serves: `{"bootstrap": "127.0.0.1:9092", "pids": [...],
//! "dir": "..."}` (the JVM's pid, for memory figures).

use aispm_tests::Broker;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut port: u16 = 9092;
    let mut dir = PathBuf::from(".kafka");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().unwrap_or_default().parse()?,
            "--dir" => dir = PathBuf::from(args.next().unwrap_or_default()),
            "-h" | "--help" => {
                println!("aispm-broker [--port 9092] [--dir .kafka]");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other}: aispm-broker [--port N] [--dir DIR]"),
        }
    }
    let broker = Broker::start_in(&dir, port)?;
    println!(
        "{}",
        serde_json::json!({
            "bootstrap": broker.bootstrap(),
            "pids": broker.pids(),
            "dir": std::fs::canonicalize(&dir)?.display().to_string(),
        })
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    // A controlled shutdown, as an operator's stop would be.
    let mut broker = broker;
    broker.shut_down_node(0, std::time::Duration::from_secs(60))?;
    Ok(())
}
