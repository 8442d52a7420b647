//! The gatekeeper's flags. Every flag also reads an `AISPM_*` environment variable; durations are
//! humantime (`90s`, `24h`, `7d`). The doc comments are the `--help` text.

use aispm_runtime::config::{ClockArgs, CommonArgs};
use aispm_runtime::tls::ClientTlsArgs;
use aispm_schemas::{BlockerKind, Stage, clock};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

/// Real evidence rows tracked per tenant unless configured otherwise.
pub(crate) const DEFAULT_TRACKED_EVIDENCE: NonZeroUsize = NonZeroUsize::new(256).expect("nonzero");

/// `aispm-gatekeeper`: continuous readiness per tenant and stage.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "aispm-gatekeeper", version, about)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    /// The HTTP server's flags (TLS, failed-authentication throttling).
    #[command(flatten)]
    pub http: aispm_runtime::http::HttpArgs,

    /// Address of the readiness API, `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "AISPM_HTTP_ADDR", default_value = "127.0.0.1:8082")]
    pub http_addr: SocketAddr,

    /// Kafka consumer group the gatekeeper instances share (they split the view partitions).
    #[arg(
        long,
        env = "AISPM_GATEKEEPER_GROUP",
        default_value = "aispm-gatekeeper"
    )]
    pub group_id: String,

    /// Real evidence rows tracked per tenant: the newest this many, which is all
    /// `evidence_stale` needs (the newest one) with room for invalidations. Older rows are not
    /// kept; if every tracked row is invalidated or removed, the newest evidence is unknown and
    /// `evidence_stale` is raised until newer evidence arrives or a restart replays the views.
    #[arg(
        long,
        env = "AISPM_TRACKED_EVIDENCE_PER_TENANT",
        default_value_t = DEFAULT_TRACKED_EVIDENCE
    )]
    pub tracked_evidence_per_tenant: NonZeroUsize,

    #[command(flatten)]
    pub windows: Windows,

    #[command(flatten)]
    pub stages: StageBlockers,

    /// The projector's HTTP API: readiness as of a past instant (`?as_of=`) reads the tenant's
    /// view rows as of then from it, with the caller's own token.
    #[arg(
        long,
        env = "AISPM_PROJECTOR_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub projector_url: String,

    /// Trust for the projector's certificate when it serves HTTPS.
    #[command(flatten)]
    pub client_tls: ClientTlsArgs,

    /// Longest wait for the projector's rows as of a past instant (its replay included).
    #[arg(long, env = "AISPM_AS_OF_TIMEOUT", value_parser = humantime::parse_duration, default_value = "2m")]
    pub as_of_timeout: Duration,
}

/// Time windows for the clock-driven blockers, and how often every tenant is re-evaluated.
#[derive(Debug, Clone, clap::Args)]
pub struct Windows {
    /// The clock rules' windows (evidence freshness per stage, break-glass review, tenant
    /// isolation freshness): the same flags the reporter and the projector take, so all three
    /// judge with the same windows (`aispm_schemas::clock`).
    #[command(flatten)]
    pub clock: ClockArgs,

    /// Every tenant is re-evaluated at least this often. Expiries and staleness are also
    /// scheduled at the exact instant they happen; this sweep is the safety net.
    #[arg(long, env = "AISPM_EVALUATION_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub evaluation_interval: Duration,
}

impl Windows {
    /// The clock rules' windows.
    pub fn clock(&self) -> clock::Windows {
        self.clock.windows()
    }
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            clock: ClockArgs::default(),
            evaluation_interval: Duration::from_secs(30),
        }
    }
}

/// Which blocker kinds apply to which stage.
#[derive(Debug, Clone, clap::Args)]
pub struct StageBlockers {
    /// Blocker kinds evaluated for the trial stage, comma-separated.
    #[arg(long, env = "AISPM_TRIAL_BLOCKERS", value_delimiter = ',', value_parser = parse_kind,
          default_values_t = TRIAL.to_vec())]
    pub trial_blockers: Vec<BlockerKind>,

    /// Blocker kinds evaluated for the pilot stage, comma-separated.
    #[arg(long, env = "AISPM_PILOT_BLOCKERS", value_delimiter = ',', value_parser = parse_kind,
          default_values_t = PILOT.to_vec())]
    pub pilot_blockers: Vec<BlockerKind>,

    /// Blocker kinds evaluated for the production stage, comma-separated.
    #[arg(long, env = "AISPM_PRODUCTION_BLOCKERS", value_delimiter = ',', value_parser = parse_kind,
          default_values_t = BlockerKind::ALL.to_vec())]
    pub production_blockers: Vec<BlockerKind>,
}

/// Default trial blockers: the tenant is wired to live systems, isolated, and producing evidence.
pub(crate) const TRIAL: &[BlockerKind] = &[
    BlockerKind::MissingLiveConnectorEvidence,
    BlockerKind::TenantIsolationNotProven,
    BlockerKind::EvidenceStale,
];

/// Default pilot blockers: the trial's, plus real traffic on every governed path, enforced
/// controls on high-risk paths, owned critical findings and reviewed break-glass.
pub(crate) const PILOT: &[BlockerKind] = &[
    BlockerKind::MissingLiveConnectorEvidence,
    BlockerKind::TenantIsolationNotProven,
    BlockerKind::EvidenceStale,
    BlockerKind::RuntimeWorkflowSyntheticOnly,
    BlockerKind::CriticalFindingUnowned,
    BlockerKind::ControlMissing,
    BlockerKind::BreakGlassUnreviewed,
];

fn parse_kind(s: &str) -> Result<BlockerKind, String> {
    s.trim().parse()
}

impl StageBlockers {
    /// The kinds that apply to `stage`.
    pub fn kinds(&self, stage: Stage) -> BTreeSet<BlockerKind> {
        let v = match stage {
            Stage::Trial => &self.trial_blockers,
            Stage::Pilot => &self.pilot_blockers,
            Stage::Production => &self.production_blockers,
        };
        v.iter().copied().collect()
    }
}

impl Default for StageBlockers {
    fn default() -> Self {
        StageBlockers {
            trial_blockers: TRIAL.to_vec(),
            pilot_blockers: PILOT.to_vec(),
            production_blockers: BlockerKind::ALL.to_vec(),
        }
    }
}

impl Config {
    /// Defaults for tests and embedding: local broker, an ephemeral HTTP port.
    pub fn local(brokers: &str) -> Self {
        Config {
            common: CommonArgs::local(brokers),
            http: aispm_runtime::http::HttpArgs::default(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            group_id: "aispm-gatekeeper".to_owned(),
            tracked_evidence_per_tenant: DEFAULT_TRACKED_EVIDENCE,
            windows: Windows::default(),
            stages: StageBlockers::default(),
            projector_url: "http://127.0.0.1:8081".to_owned(),
            client_tls: ClientTlsArgs::default(),
            as_of_timeout: Duration::from_secs(120),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse_from(["aispm-gatekeeper"]);
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8082");
        assert_eq!(
            c.windows.clock().evidence_freshness(Stage::Production),
            Duration::from_secs(86_400)
        );
        assert_eq!(c.stages.kinds(Stage::Production).len(), 10);
        assert_eq!(c.tracked_evidence_per_tenant.get(), 256);
        assert_eq!(
            c.stages.kinds(Stage::Trial),
            TRIAL.iter().copied().collect()
        );
        assert_eq!(
            c.stages.kinds(Stage::Pilot),
            PILOT.iter().copied().collect()
        );

        let c = Config::parse_from([
            "aispm-gatekeeper",
            "--production-evidence-freshness",
            "3s",
            "--trial-blockers",
            "evidence_stale,control_missing",
            "--evaluation-interval",
            "250ms",
            "--tracked-evidence-per-tenant",
            "16",
        ]);
        assert_eq!(c.tracked_evidence_per_tenant.get(), 16);
        assert_eq!(
            c.windows.clock.production_evidence_freshness,
            Duration::from_secs(3)
        );
        assert_eq!(c.windows.evaluation_interval, Duration::from_millis(250));
        assert_eq!(
            c.stages.kinds(Stage::Trial),
            [BlockerKind::EvidenceStale, BlockerKind::ControlMissing]
                .into_iter()
                .collect()
        );
        assert!(Config::try_parse_from(["x", "--pilot-blockers", "nonsense"]).is_err());
        assert!(Config::try_parse_from(["x", "--tracked-evidence-per-tenant", "0"]).is_err());
    }
}
