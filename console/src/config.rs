//! The console's flags. Each also reads an `AISPM_*` environment variable; the doc comments are
//! the `--help` text.

use aispm_runtime::config::{CommonArgs, LogFormat, ReadApis};
use aispm_runtime::http::HttpArgs;
use aispm_runtime::tls::ClientTlsArgs;
use std::net::SocketAddr;
use std::time::Duration;

/// Configuration of the console.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "aispm-console", version, about)]
pub struct Config {
    /// Address the console serves on (pages, /metrics, /healthz, /readyz).
    #[arg(long, env = "AISPM_CONSOLE_ADDR", default_value = "127.0.0.1:8084")]
    pub http_addr: SocketAddr,

    #[command(flatten)]
    pub apis: ReadApis,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub client_tls: ClientTlsArgs,

    /// How long a sign-in lasts without activity.
    #[arg(long, env = "AISPM_CONSOLE_SESSION_IDLE", value_parser = humantime::parse_duration, default_value = "30m")]
    pub session_idle: Duration,

    /// Longest a sign-in lasts, active or not.
    #[arg(long, env = "AISPM_CONSOLE_SESSION_MAX", value_parser = humantime::parse_duration, default_value = "8h")]
    pub session_max: Duration,

    /// Mark the session cookie `Secure`: set it when the console is served over TLS (by a
    /// terminating proxy), so the browser never sends the cookie in clear.
    #[arg(long, env = "AISPM_CONSOLE_SECURE_COOKIE")]
    pub secure_cookie: bool,

    /// Time allowed for one call to a service's API.
    #[arg(long, env = "AISPM_CONSOLE_UPSTREAM_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub upstream_timeout: Duration,

    /// Log format.
    #[arg(long, env = "AISPM_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// How long to wait for in-flight requests after SIGINT/SIGTERM.
    #[arg(long, env = "AISPM_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,
}

impl Config {
    /// Defaults for tests: an ephemeral port and the given services.
    pub fn local(projector: &str, gatekeeper: &str, reporter: &str) -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            apis: ReadApis {
                projector: projector.to_owned(),
                gatekeeper: gatekeeper.to_owned(),
                reporter: reporter.to_owned(),
            },
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(8 * 3600),
            secure_cookie: false,
            upstream_timeout: Duration::from_secs(10),
            http: HttpArgs::default(),
            client_tls: ClientTlsArgs::default(),
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(10),
        }
    }

    /// The process settings every aispm binary shares (logs, grace period); the console has no
    /// broker and no tokens file of its own.
    pub fn common(&self) -> CommonArgs {
        let mut c = CommonArgs::local("");
        c.log_format = self.log_format;
        c.shutdown_grace = self.shutdown_grace;
        c
    }
}
