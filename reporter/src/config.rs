//! The reporter's flags. Each also reads an `AISPM_*` environment variable; the doc comments
//! are the `--help` text.

use crate::schedule::ScheduleArg;
use aispm_runtime::config::{ClockArgs, CommonArgs};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Configuration of the reporter service.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    /// The HTTP server's flags (TLS, failed-authentication throttling).
    #[command(flatten)]
    pub http: aispm_runtime::http::HttpArgs,

    /// Address of the HTTP API (reports, /metrics, /healthz, /readyz).
    #[arg(long, env = "AISPM_HTTP_ADDR", default_value = "127.0.0.1:8083")]
    pub http_addr: SocketAddr,

    /// The reporter's own state: report records, the delivery retry queue, the cadence's last
    /// runs, (unless --signing-key is given) the signing key, and `views-db`, the view rows
    /// followed from the views topic (rebuilt at every start).
    #[arg(
        long,
        env = "AISPM_STATE_DIR",
        default_value = "./aispm-reporter-state"
    )]
    pub state_dir: PathBuf,

    /// Where packets are written (`<out-dir>/<tenant>/<report-id>/` and `.zip`); without
    /// --smtp-url this is also the export delivery. Default: `<state-dir>/packets`.
    #[arg(long, env = "AISPM_OUT_DIR")]
    pub out_dir: Option<PathBuf>,

    /// SMTP server to deliver packets through: `smtp://host:25` (plain),
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS) or `smtps://user:pass@host:465`.
    /// Without it packets are exported to --out-dir instead of mailed.
    #[arg(long, env = "AISPM_SMTP_URL")]
    pub smtp_url: Option<String>,

    /// The From address of report mails.
    #[arg(
        long,
        env = "AISPM_SMTP_FROM",
        default_value = "aispm reporter <aispm-reporter@localhost>"
    )]
    pub smtp_from: String,

    /// Time allowed for one SMTP delivery attempt.
    #[arg(long, env = "AISPM_SMTP_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub smtp_timeout: Duration,

    /// Ed25519 private key (PKCS#8 PEM, from `aispm-reporter keygen`) that signs packets: the
    /// current key. Default: `<state-dir>/signing-key.pem`, created on first start.
    #[arg(long, env = "AISPM_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,

    /// A previous signing key, published beside the current one (`GET /v1/signing-keys`,
    /// `<out-dir>/signing-keys.json`) so that packets it signed still verify; never used to
    /// sign. A minisign public key file (`keygen` writes `<key>.pub`), a public key PEM, or the
    /// old private key PEM (only its public half is read). Repeatable (comma-separated in the
    /// environment).
    #[arg(
        long = "previous-signing-key",
        env = "AISPM_PREVIOUS_SIGNING_KEYS",
        value_delimiter = ','
    )]
    pub previous_signing_keys: Vec<PathBuf>,

    /// Key id named in manifests and delivery evidence when the tenant has not registered the
    /// signing key as a `trust_root` asset (when it has, that asset's id is used).
    #[arg(long, env = "AISPM_KEY_ID", default_value = "aispm-reporter")]
    pub key_id: String,

    /// The clock rules' windows (evidence freshness per stage, break-glass review, tenant
    /// isolation freshness): the gatekeeper's flags, so a packet judges "stale" and "reviewed in
    /// time" with the same windows as the gate (`aispm_schemas::clock`).
    #[command(flatten)]
    pub clock: ClockArgs,

    /// Delivery attempts per packet before it is given up as failed.
    #[arg(long, env = "AISPM_DELIVERY_ATTEMPTS", default_value_t = 6)]
    pub delivery_attempts: u32,

    /// Delay before the first retry of a failed delivery; doubles with each attempt.
    #[arg(long, env = "AISPM_RETRY_INITIAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub retry_initial: Duration,

    /// Longest delay between two delivery attempts.
    #[arg(long, env = "AISPM_RETRY_MAX", value_parser = humantime::parse_duration, default_value = "30m")]
    pub retry_max: Duration,

    /// Scheduled reports, `PERIOD=TYPE`, repeatable (comma-separated in the environment).
    /// PERIOD is daily, weekly (Mondays), monthly (the 1st), quarterly (1 Jan/Apr/Jul/Oct) or
    /// `every:<duration>`; TYPE is a report type. `none` disables the cadence.
    #[arg(
        long = "schedule",
        env = "AISPM_SCHEDULE",
        value_delimiter = ',',
        default_value = "daily=blockers_digest,weekly=coverage_findings,monthly=cso,quarterly=production_readiness"
    )]
    pub schedule: Vec<ScheduleArg>,

    /// UTC hour at which daily, weekly, monthly and quarterly reports run.
    #[arg(long, env = "AISPM_SCHEDULE_HOUR", default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..24))]
    pub schedule_hour: u32,

    /// A validator key (the 32-byte Ed25519 seed in base64, as `aispm-validate` reads it):
    /// with it, each SMTP delivery to approved recipients also publishes a signed, passing
    /// `report_provider` validation per provider mailed, the server's reply as its evidence.
    /// The tenant must register the key as a `trust_root` with `scopes: ["validator"]` for the
    /// result to count. Without it no provider validation is published.
    #[arg(long, env = "AISPM_VALIDATOR_KEY_FILE")]
    pub validator_key: Option<PathBuf>,

    /// The `trust_root` id the validator key is registered under.
    #[arg(
        long,
        env = "AISPM_VALIDATOR_KEY_ID",
        default_value = "aispm-reporter-validator"
    )]
    pub validator_key_id: String,

    /// The environments (stages) this reporter's mail path serves: one provider validation
    /// per environment, each counting for its stage only.
    #[arg(
        long,
        env = "AISPM_PROVIDER_ENVIRONMENTS",
        value_delimiter = ',',
        default_value = "production"
    )]
    pub provider_environments: Vec<String>,

    /// Webhook subscriptions (a TOML file, see `docs/webhooks.md`): blocker opened or
    /// resolved, readiness changed, finding past its SLA, report delivered, each sent with
    /// Standard Webhooks signatures and retried until the subscription's `retry_for`.
    #[arg(long, env = "AISPM_WEBHOOKS_FILE")]
    pub webhooks: Option<PathBuf>,

    /// The `source` of the delivery events this reporter publishes.
    #[arg(long, env = "AISPM_SOURCE", default_value = "aispm-reporter")]
    pub source: String,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Where packets as of a past instant read the tenant's state ([`crate::as_of`]).
    #[command(flatten)]
    pub as_of: crate::as_of::AsOfArgs,
}

/// What one tenant may ask of the reporter through the API: each request loads every row of
/// the tenant, renders, signs, writes and mails, so a flood from one tenant must meet 429
/// without slowing anyone else's reports. Scheduled reports are not counted.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Reports one tenant may request per hour, with a burst of a quarter of it (at least 1:
    /// at the default, all ten report types at once);
    /// more are answered 429 with the Retry-After that lets the next one pass. 0: no limit.
    #[arg(long, env = "AISPM_REPORTS_PER_TENANT_PER_HOUR", default_value_t = 60)]
    pub reports_per_tenant_per_hour: u32,

    /// Reports one tenant may have in generation at once; another request meanwhile is
    /// answered 429.
    #[arg(long, env = "AISPM_REPORT_CONCURRENCY_PER_TENANT", default_value_t = 1)]
    pub report_concurrency_per_tenant: usize,

    /// Reports generated at once across all tenants; the others wait their turn.
    #[arg(long, env = "AISPM_MAX_CONCURRENT_REPORTS", default_value_t = 2)]
    pub max_concurrent_reports: usize,
}

impl Default for LimitArgs {
    fn default() -> Self {
        LimitArgs {
            reports_per_tenant_per_hour: 60,
            report_concurrency_per_tenant: 1,
            max_concurrent_reports: 2,
        }
    }
}

impl Config {
    /// Defaults for tests and embedding: local broker, state under `state_dir`, export delivery.
    pub fn local(brokers: &str, state_dir: PathBuf) -> Self {
        Config {
            common: CommonArgs::local(brokers),
            http: aispm_runtime::http::HttpArgs::default(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir,
            out_dir: None,
            smtp_url: None,
            smtp_from: "aispm reporter <aispm-reporter@localhost>".into(),
            smtp_timeout: Duration::from_secs(30),
            signing_key: None,
            previous_signing_keys: vec![],
            key_id: "aispm-reporter".into(),
            clock: ClockArgs::default(),
            delivery_attempts: 6,
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(1800),
            schedule: vec![],
            schedule_hour: 6,
            validator_key: None,
            webhooks: None,
            validator_key_id: "aispm-reporter-validator".into(),
            provider_environments: vec!["production".into()],
            source: "aispm-reporter".into(),
            limits: LimitArgs::default(),
            as_of: crate::as_of::AsOfArgs::default(),
        }
    }

    /// The packet directory.
    pub fn out_dir(&self) -> PathBuf {
        self.out_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("packets"))
    }

    /// The view-row database (see [`crate::rows`]).
    pub fn views_db_path(&self) -> PathBuf {
        self.state_dir.join("views-db")
    }

    /// The report-provider validator, when --validator-key is given.
    pub fn provider_check(&self) -> crate::Result<Option<crate::center::ProviderCheck>> {
        let Some(path) = &self.validator_key else {
            return Ok(None);
        };
        let key = aispm_validate::sign::ValidatorKey::load(path, &self.validator_key_id)
            .map_err(|e| crate::Error::Config(format!("--validator-key: {e:#}")))?;
        let environments = aispm_validate::sign::environments(&self.provider_environments)
            .map_err(|e| crate::Error::Config(format!("--provider-{e:#}")))?;
        Ok(Some(crate::center::ProviderCheck { key, environments }))
    }

    /// The signing key's path.
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key
            .clone()
            .unwrap_or_else(|| self.state_dir.join("signing-key.pem"))
    }
}
