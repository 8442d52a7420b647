//! A real webhook receiver for the tests and the demo: `scripts/webhook_receiver.py`, which
//! verifies every request with the Standard Webhooks reference library (PyPI
//! `standardwebhooks`) and logs it, one JSON line per request.

use crate::process::venv_python;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SCRIPT: &str = include_str!("../../scripts/webhook_receiver.py");

/// A running receiver; stopped when dropped (what it logged stays in its directory).
#[derive(Debug)]
pub struct WebhookSink {
    child: Child,
    pub port: u16,
    /// `received.jsonl`: `{"path", "id", "ok", "payload" | "error", "received_at"}` per request.
    pub log: PathBuf,
}

impl WebhookSink {
    /// Listens on 127.0.0.1:`port`, verifying requests to each path of `secrets`
    /// (`{"/path": "whsec_..."}`); logs to `dir/received.jsonl` (appending across restarts).
    pub fn start(port: u16, dir: &Path, secrets: &Value) -> Result<WebhookSink> {
        std::fs::create_dir_all(dir)?;
        let script = dir.join("webhook_receiver.py");
        std::fs::write(&script, SCRIPT)?;
        let log = dir.join("received.jsonl");
        let mut child = Command::new(venv_python())
            .arg(&script)
            .arg(port.to_string())
            .arg(&log)
            .arg(secrets.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the webhook receiver")?;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().context("no stdout")?),
            &mut line,
        )?;
        if line.trim() != "ready" {
            let _ = child.kill();
            bail!(
                "the webhook receiver did not start (scripts/setup.sh installs standardwebhooks)"
            );
        }
        Ok(WebhookSink { child, port, log })
    }

    /// What a receiver logging to `log` has received so far.
    pub fn received_in(log: &Path) -> Vec<Value> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn received(&self) -> Vec<Value> {
        Self::received_in(&self.log)
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
