//! Flags common to every service. Each flag also reads an `AISPM_*` environment variable; the
//! doc comments are the `--help` text.

use crate::auth::Tokens;
use crate::kafka::KafkaConfig;
use aispm_schemas::{Topics, clock};
use std::path::PathBuf;
use std::time::Duration;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The flags every aispm service takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "AISPM_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Bearer tokens bound to tenants (TOML: `[[tokens]]` with token or sha256, tenants, scopes). Without it the
    /// HTTP API refuses every request except health and metrics.
    #[arg(long, env = "AISPM_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Prefix of every topic name: `{prefix}decisions.v1`, …
    #[arg(long, env = "AISPM_TOPIC_PREFIX", default_value = aispm_schemas::topics::DEFAULT_PREFIX)]
    pub topic_prefix: String,

    /// Partitions for topics this service creates.
    #[arg(long, env = "AISPM_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,

    /// Replication factor for topics this service creates.
    #[arg(long, env = "AISPM_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,

    /// Log format.
    #[arg(long, env = "AISPM_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// A librdkafka property passed through as is (SASL, TLS, tuning), e.g.
    /// `--kafka-option security.protocol=SASL_SSL`. Repeatable; in the environment, comma-separated.
    #[arg(long = "kafka-option", env = "AISPM_KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_key_value)]
    pub kafka_options: Vec<(String, String)>,

    /// How long to wait for in-flight work to finish after SIGINT/SIGTERM.
    #[arg(long, env = "AISPM_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,

    /// How often glibc's free heap memory is handed back to the system (`malloc_trim`); `0s`
    /// never. Without it, memory freed inside glibc's heaps stays resident.
    #[arg(long, env = "AISPM_MALLOC_TRIM_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub malloc_trim_interval: Duration,
}

impl CommonArgs {
    /// The bearer tokens of `--tokens-file`. Without the flag there are none, and every
    /// authenticated route of `api` (named in the warning logged here) is refused.
    pub fn tokens(&self, api: &str) -> crate::Result<Tokens> {
        match &self.tokens_file {
            Some(path) => Tokens::load(path),
            None => {
                tracing::warn!("No --tokens-file: {api} refuses every authenticated request.");
                Ok(Tokens::none())
            }
        }
    }

    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers.clone(),
            options: self.kafka_options.clone(),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
        }
    }

    /// Defaults for tests and embedding: local broker, default topics, no tokens.
    pub fn local(brokers: &str) -> Self {
        CommonArgs {
            brokers: brokers.to_owned(),
            tokens_file: None,
            topic_prefix: aispm_schemas::topics::DEFAULT_PREFIX.to_owned(),
            partitions: 6,
            replication_factor: 1,
            log_format: LogFormat::Text,
            kafka_options: vec![],
            shutdown_grace: Duration::from_secs(10),
            malloc_trim_interval: Duration::from_secs(30),
        }
    }
}

/// The windows of the clock rules (`aispm_schemas::clock`): the same flags, environment
/// variables and defaults in every service that judges them (the gatekeeper's blockers, the
/// reporter's packets, the projector's API states and break-glass finding), so that set once in
/// a deployment's environment, they agree.
#[derive(Debug, Clone, clap::Args)]
pub struct ClockArgs {
    /// Newest evidence older than this is stale for the trial stage (`evidence_stale`).
    #[arg(long, env = "AISPM_TRIAL_EVIDENCE_FRESHNESS", value_parser = humantime::parse_duration, default_value = "30d")]
    pub trial_evidence_freshness: Duration,

    /// Newest evidence older than this is stale for the pilot stage (`evidence_stale`).
    #[arg(long, env = "AISPM_PILOT_EVIDENCE_FRESHNESS", value_parser = humantime::parse_duration, default_value = "7d")]
    pub pilot_evidence_freshness: Duration,

    /// Newest evidence older than this is stale for the production stage (`evidence_stale`).
    #[arg(long, env = "AISPM_PRODUCTION_EVIDENCE_FRESHNESS", value_parser = humantime::parse_duration, default_value = "24h")]
    pub production_evidence_freshness: Duration,

    /// A break-glass event must be reviewed within this long after it was invoked
    /// (`break_glass_unreviewed`; a later review is late).
    #[arg(long, env = "AISPM_BREAK_GLASS_REVIEW_WINDOW", value_parser = humantime::parse_duration, default_value = "24h")]
    pub break_glass_review_window: Duration,

    /// A passing `tenant_isolation` validation proves isolation for this long.
    #[arg(long, env = "AISPM_TENANT_ISOLATION_FRESHNESS", value_parser = humantime::parse_duration, default_value = "30d")]
    pub tenant_isolation_freshness: Duration,

    /// A request for approval should be answered within this long (`approval_overdue`: the
    /// projector's `/approval-stats` counts the requests pending past it).
    #[arg(long, env = "AISPM_APPROVAL_DECISION_WINDOW", value_parser = humantime::parse_duration, default_value = "4h")]
    pub approval_decision_window: Duration,
}

impl ClockArgs {
    /// The windows these flags set.
    pub fn windows(&self) -> clock::Windows {
        clock::Windows {
            trial_evidence_freshness: self.trial_evidence_freshness,
            pilot_evidence_freshness: self.pilot_evidence_freshness,
            production_evidence_freshness: self.production_evidence_freshness,
            break_glass_review_window: self.break_glass_review_window,
            tenant_isolation_freshness: self.tenant_isolation_freshness,
            approval_decision_window: self.approval_decision_window,
        }
    }
}

impl From<clock::Windows> for ClockArgs {
    fn from(w: clock::Windows) -> Self {
        ClockArgs {
            trial_evidence_freshness: w.trial_evidence_freshness,
            pilot_evidence_freshness: w.pilot_evidence_freshness,
            production_evidence_freshness: w.production_evidence_freshness,
            break_glass_review_window: w.break_glass_review_window,
            tenant_isolation_freshness: w.tenant_isolation_freshness,
            approval_decision_window: w.approval_decision_window,
        }
    }
}

/// The defaults of [`clock::Windows`].
impl Default for ClockArgs {
    fn default() -> Self {
        clock::Windows::default().into()
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not key=value"))?;
    if k.trim().is_empty() {
        return Err(format!("'{s}' has an empty key"));
    }
    Ok((k.trim().to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn kafka_options_pass_through() {
        let cli = Cli::parse_from([
            "x",
            "--kafka-option",
            "security.protocol=SASL_SSL",
            "--kafka-option",
            "sasl.password=a=b",
        ]);
        assert_eq!(
            cli.common.kafka_options,
            [
                ("security.protocol".into(), "SASL_SSL".into()),
                ("sasl.password".into(), "a=b".into())
            ]
        );
        assert!(Cli::try_parse_from(["x", "--kafka-option", "novalue"]).is_err());
        assert_eq!(cli.common.topics().decisions, "aispm.decisions.v1");
    }

    #[derive(Parser)]
    struct ClockCli {
        #[command(flatten)]
        clock: ClockArgs,
    }

    #[test]
    fn clock_flag_defaults_are_the_schemas_defaults() {
        let cli = ClockCli::parse_from(["x"]);
        assert_eq!(cli.clock.windows(), clock::Windows::default());
        assert_eq!(ClockArgs::default().windows(), clock::Windows::default());
        let cli = ClockCli::parse_from([
            "x",
            "--production-evidence-freshness",
            "3s",
            "--break-glass-review-window",
            "90m",
        ]);
        let w = cli.clock.windows();
        assert_eq!(w.production_evidence_freshness, Duration::from_secs(3));
        assert_eq!(w.break_glass_review_window, Duration::from_secs(5400));
        assert_eq!(
            w.trial_evidence_freshness,
            clock::DEFAULT_TRIAL_EVIDENCE_FRESHNESS
        );
    }
}

/// The services' read APIs, for the programs that read them from outside with a viewer's or a
/// prober's token (the console, the isolation probe).
#[derive(Debug, Clone, clap::Args)]
pub struct ReadApis {
    /// The projector's HTTP API (views, findings, evidence, posture).
    #[arg(
        long,
        env = "AISPM_PROJECTOR_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub projector: String,

    /// The gatekeeper's HTTP API (readiness, the token's principal).
    #[arg(
        long,
        env = "AISPM_GATEKEEPER_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub gatekeeper: String,

    /// The reporter's HTTP API (reports).
    #[arg(
        long,
        env = "AISPM_REPORTER_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    pub reporter: String,
}
