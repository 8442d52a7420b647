//! The aispm service binaries as child processes: start, wait for health, kill -9, restart.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary (`aispm-projector`, …), built by `cargo build --bins`.
pub fn binary(name: &str) -> Result<PathBuf> {
    // Binaries live in target/<profile>; test executables one level down, in deps/.
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("executable has no directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    let p = dir.join(name);
    if !p.exists() {
        bail!(
            "{} is missing: build it with `cargo build --bins`",
            p.display()
        );
    }
    Ok(p)
}

/// A service child process; killed when dropped.
#[derive(Debug)]
pub struct Service {
    name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
    pub http: String,
    /// The client of [`Service::wait_ready`] and [`Service::metrics`].
    client: reqwest::Client,
}

impl Service {
    /// Starts `name` with `args`; its HTTP API is at `http_addr` (passed as `--http-addr`).
    pub fn start(
        name: &str,
        http_addr: &str,
        args: &[String],
        log_dir: &std::path::Path,
    ) -> Result<Service> {
        Self::start_with_env(name, http_addr, args, &[], log_dir)
    }

    /// As [`Service::start`], with environment variables set for the process (kept across
    /// restarts), e.g. `AISPM_KAFKA_OPTIONS` as compose/ sets it.
    pub fn start_with_env(
        name: &str,
        http_addr: &str,
        args: &[String],
        envs: &[(String, String)],
        log_dir: &std::path::Path,
    ) -> Result<Service> {
        let mut s = Service {
            name: name.to_owned(),
            args: args.to_vec(),
            envs: envs.to_vec(),
            child: None,
            log: log_dir.join(format!("{name}-{}.log", http_addr.replace([':', '.'], "_"))),
            http: format!("http://{http_addr}"),
            client: reqwest::Client::new(),
        };
        s.args
            .extend(["--http-addr".to_owned(), http_addr.to_owned()]);
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(binary(&self.name)?)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("AISPM_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// The service serves HTTPS (it was started with `--tls-cert` and `--tls-key`): its URL
    /// becomes `https://`, and `client` (which trusts the test's CA) reaches it.
    pub fn over_https(&mut self, client: reqwest::Client) {
        self.http = self.http.replacen("http://", "https://", 1);
        self.client = client;
    }

    /// Waits until `GET /readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let client = self.client.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.http)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("{} exited with {status}:\n{}", self.name, self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready within {timeout:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id of the running child, if one runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit (up to `timeout`); returns its exit success.
    pub fn terminate(&mut self, timeout: Duration) -> Result<bool> {
        let Some(mut c) = self.child.take() else {
            return Ok(true);
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait()? {
                return Ok(status.success());
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` for the process to exit on its own; its exit status, or `None`
    /// while it still runs.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(c) = self.child.as_mut() else {
                return Ok(None);
            };
            if let Some(status) = c.try_wait()? {
                self.child = None;
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The whole log of this service (every run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the process again with the same arguments.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// The service's `GET /metrics` (Prometheus text); empty if it does not answer.
    pub async fn metrics(&self) -> String {
        match self
            .client
            .get(format!("{}/metrics", self.http))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// One sample of its `GET /metrics`: the value on the line that starts with `series`
    /// (name and labels as Prometheus prints them), 0 when absent.
    pub async fn sample(&self, series: &str) -> f64 {
        sample(&self.metrics().await, series)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The project venv's Python (`$AISPM_PYTHON`, else `~/.cache/aispm/venv/bin/python` when it
/// exists, else `python3`): scripts/setup.sh installs the foreign clients and selenium there.
pub fn venv_python() -> String {
    if let Ok(p) = std::env::var("AISPM_PYTHON") {
        return p;
    }
    let venv = std::env::var("HOME").map(|h| format!("{h}/.cache/aispm/venv/bin/python"));
    match venv {
        Ok(p) if Path::new(&p).exists() => p,
        _ => "python3".to_owned(),
    }
}

/// axe-core's browser bundle (`$AISPM_AXE_JS`, else where scripts/setup.sh puts it).
pub fn axe_js() -> PathBuf {
    match std::env::var_os("AISPM_AXE_JS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/aispm/axe/node_modules/axe-core/axe.min.js"),
    }
}

/// Where a test keeps what a person may want to look at afterwards (screenshots):
/// `$CARGO_TARGET_DIR/artifacts/<name>`, else `target/artifacts/<name>` in the workspace.
pub fn artifacts_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("artifacts").join(name)
}

/// Bytes of the files under `dir`, recursively (0 for what cannot be read).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Runs `cmd` to the end and returns its standard output parsed as JSON; panics when the
/// command fails (naming `context`, with its stdout and stderr) or prints something else.
pub fn run_json(cmd: &mut std::process::Command, context: &str) -> serde_json::Value {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{context}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{context}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{context}: stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The value of one sample line of a Prometheus text page, the line that starts with `series`
/// (name and labels as printed); 0 when absent.
pub fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The sum of every sample of the metric `name` whose labels contain `label` (e.g.
/// `outcome="accepted"`) on a Prometheus text page.
pub fn sum(page: &str, name: &str, label: &str) -> f64 {
    page.lines()
        .filter_map(|l| {
            let labels = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = labels.split_once("} ")?;
            labels
                .contains(label)
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_the_samples_whose_labels_match() {
        let page = "# HELP aispm_ingest_events_total x\n\
            aispm_ingest_events_total{outcome=\"accepted\",type=\"decision\"} 40\n\
            aispm_ingest_events_total{outcome=\"accepted\",type=\"registry\"} 3\n\
            aispm_ingest_events_total{outcome=\"refused\",type=\"decision\"} 7\n\
            aispm_ingest_events_total_other{outcome=\"accepted\"} 100\n";
        let sum = super::sum(page, "aispm_ingest_events_total", "outcome=\"accepted\"");
        assert_eq!(sum, 43.0);
    }
}
