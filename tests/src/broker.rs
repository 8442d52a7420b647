//! Tansu, a Kafka-compatible broker, run as a child process for tests and the demo.
//!
//! The binary comes from `scripts/setup.sh` (cached under `~/.cache/aispm/tansu`); set
//! `AISPM_TANSU` to use another. Tansu listens on IPv4 only, so everything uses 127.0.0.1.

use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Tansu keeps its data.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Gone when the broker stops; fastest.
    Memory,
    /// A SQLite file: records and committed offsets survive a broker restart.
    Sqlite(PathBuf),
}

/// A running broker; stopped when dropped.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    port: u16,
    storage: Storage,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The Tansu binary: `$AISPM_TANSU`, else the setup script's cache.
pub fn tansu_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("AISPM_TANSU") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var("HOME").context("HOME is not set")?;
    let p = PathBuf::from(home).join(".cache/aispm/tansu/bin/tansu");
    if !p.exists() {
        bail!(
            "Tansu is not installed at {}: run scripts/setup.sh",
            p.display()
        );
    }
    Ok(p)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl Broker {
    /// A broker with in-memory storage.
    pub fn start() -> Result<Broker> {
        Self::start_with(Storage::Memory)
    }

    /// A broker whose data survives restarts, in a fresh SQLite file.
    pub fn start_durable() -> Result<Broker> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("tansu.db");
        let mut b = Self::start_in(Storage::Sqlite(file), dir)?;
        b.wait_ready()?;
        Ok(b)
    }

    pub fn start_with(storage: Storage) -> Result<Broker> {
        let dir = tempfile::tempdir()?;
        let mut b = Self::start_in(storage, dir)?;
        b.wait_ready()?;
        Ok(b)
    }

    fn start_in(storage: Storage, dir: tempfile::TempDir) -> Result<Broker> {
        let mut b = Broker {
            child: None,
            port: free_port(),
            storage,
            log: dir.path().join("tansu.log"),
            _dir: dir,
        };
        b.spawn()?;
        Ok(b)
    }

    fn spawn(&mut self) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let engine = match &self.storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            // Tansu resolves the path against its working directory: run it beside the file.
            Storage::Sqlite(f) => format!(
                "sqlite://{}",
                f.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let cwd = match &self.storage {
            Storage::Sqlite(f) => f.parent().map(PathBuf::from),
            Storage::Memory => None,
        };
        let mut cmd = Command::new(tansu_binary()?);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let child = cmd
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &engine])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting Tansu")?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("Tansu exited with {status}: {}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "Tansu did not listen on {addr} within 30 s: {}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers` and `--brokers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGKILL: it has no state to flush beyond what it acknowledged).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts the broker on the same port and storage.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.start_again()
    }

    /// Starts a stopped broker again on the same port and storage (a no-op while it runs).
    /// Tries a few times: the port can still be held for a moment by the killed process's
    /// connections, and Tansu exits when it cannot bind.
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..10 {
            self.spawn()?;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.stop();
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("Tansu did not start")))
    }

    /// Whether the broker process is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The broker's whole log (every run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the broker's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
