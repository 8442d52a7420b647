//! The tenant-isolation probe (`aispm-validate isolation`).
//!
//! 1. Plants a canary in every tenant: a `repo` asset named `aispm-isolation-canary/{nonce}/{tenant}`,
//!    registered through ingest with the tenant's write token, and waits until the tenant's own
//!    read token sees it on the projector (the positive control: a probe that sees nothing
//!    proves nothing).
//! 2. With each tenant's read token, asks every tenant-scoped read route of the projector,
//!    gatekeeper and reporter for every other tenant ([`ROUTES`]); each must answer 403. It
//!    also reads its own tenant's routes and the all-tenant readiness route: no other tenant's
//!    canary may appear in any answer.
//! 3. Writes the transcript (every request, status and canary seen) to `--out`, and posts one
//!    `tenant_isolation` result per tenant, signed by the validator key over the claim and the
//!    transcript's digest. Tenant B passes when its canary was visible to B, every request of
//!    another tenant's token for B's routes was refused with 403, and B's canary appeared in no
//!    other tenant's answer.
//! 4. Retires the canaries.

use crate::sign::{self, Claim, SignerArgs, Transcript, signed_result};
use aispm_runtime::config::ReadApis;
use aispm_schemas::{
    Asset, AssetKind, AssetStatus, CheckKind, InputEvent, RegistryEvent, Timestamp,
};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The `source` of the events the probe posts.
const SOURCE: &str = "aispm-validate";

/// `aispm-validate isolation` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct IsolationArgs {
    /// The tenants to probe and their tokens (TOML: `[[tenants]]` with `tenant`, `read_token`:
    /// `read` for that tenant only, and `write_token`: `register` and `validate` for it).
    #[arg(long, env = "AISPM_VALIDATE_TENANTS_FILE")]
    pub tenants_file: PathBuf,

    #[command(flatten)]
    pub signer: SignerArgs,

    #[command(flatten)]
    pub apis: ReadApis,

    /// Where the transcript is written.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,

    /// How long to wait for a tenant's canary to become visible to it.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub canary_timeout: Duration,
}

/// One tenant of the tenants file.
#[derive(Debug, Clone, Deserialize)]
pub struct ProbeTenant {
    pub tenant: String,
    pub read_token: String,
    pub write_token: String,
}

#[derive(Debug, Deserialize)]
struct TenantsFile {
    tenants: Vec<ProbeTenant>,
}

/// The services a route belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    Projector,
    Gatekeeper,
    Reporter,
}

/// Every tenant-scoped read route of the services; `{tenant}` is the tenant asked for and
/// `{id}` an id (the canary's, which exists in its own tenant only).
pub const ROUTES: [(Service, &str); 13] = [
    (Service::Projector, "/v1/tenants/{tenant}/coverage"),
    (Service::Projector, "/v1/tenants/{tenant}/controls"),
    (Service::Projector, "/v1/tenants/{tenant}/findings"),
    (Service::Projector, "/v1/tenants/{tenant}/exceptions"),
    (Service::Projector, "/v1/tenants/{tenant}/validations"),
    (Service::Projector, "/v1/tenants/{tenant}/report-deliveries"),
    (Service::Projector, "/v1/tenants/{tenant}/evidence/{id}"),
    (Service::Projector, "/v1/tenants/{tenant}/posture"),
    (
        Service::Gatekeeper,
        "/v1/tenants/{tenant}/readiness?stage=production",
    ),
    (
        Service::Gatekeeper,
        "/v1/tenants/{tenant}/readiness?stage=trial",
    ),
    (Service::Reporter, "/v1/tenants/{tenant}/reports"),
    (Service::Reporter, "/v1/tenants/{tenant}/reports/{id}"),
    (
        Service::Reporter,
        "/v1/tenants/{tenant}/reports/{id}/packet.zip",
    ),
];

/// Routes that list several tenants: a tenant's token may be refused, or answered with its own
/// tenants only; never with another's canary.
pub const SHARED_ROUTES: [(Service, &str); 1] = [(Service::Gatekeeper, "/v1/readiness")];

/// One request of the probe.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The tenant whose read token asked.
    pub token_of: String,
    /// The tenant asked for (`None`: a route over several tenants).
    pub target: Option<String>,
    pub service: Service,
    pub path: String,
    pub status: u16,
    /// Other tenants' canaries found in the answer.
    pub foreign_canaries: Vec<String>,
    pub ok: bool,
}

/// The outcome for one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct TenantResult {
    pub tenant: String,
    pub passed: bool,
    /// The tenant saw its own canary (the probe's positive control).
    pub canary_visible: bool,
    /// Requests for this tenant by other tenants' tokens not refused with 403.
    pub answered: usize,
    /// Answers to other tenants' tokens that held this tenant's canary.
    pub leaked: usize,
    /// The result events posted (one per environment), each accepted by ingest (202).
    pub event_ids: Vec<String>,
}

/// What the probe prints at the end (one JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub passed: bool,
    pub requests: usize,
    pub transcript: String,
    pub sha256: String,
    pub tenants: Vec<TenantResult>,
}

struct Probe<'a> {
    args: &'a IsolationArgs,
    http: reqwest::Client,
}

impl Probe<'_> {
    fn base(&self, s: Service) -> &str {
        match s {
            Service::Projector => &self.args.apis.projector,
            Service::Gatekeeper => &self.args.apis.gatekeeper,
            Service::Reporter => &self.args.apis.reporter,
        }
    }

    /// GETs `path` of `service` with `token`: the status and the body's text.
    async fn get(&self, service: Service, path: &str, token: &str) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base(service).trim_end_matches('/'));
        let r = self
            .http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = r.status().as_u16();
        // Bodies are read as bytes: a packet archive is not text, and a canary in it still is.
        let body = r.bytes().await.unwrap_or_default();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Whether the tenant's repo coverage, read with `token` page by page, lists `canary`.
    async fn lists_canary(&self, tenant: &str, canary: &str, token: &str) -> Result<bool> {
        let mut after = String::new();
        loop {
            let path = format!("/v1/tenants/{tenant}/coverage?kind=repo{after}");
            let (status, body) = self.get(Service::Projector, &path, token).await?;
            if status != 200 {
                return Ok(false);
            }
            if body.contains(canary) {
                return Ok(true);
            }
            let page: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            match page["next_cursor"].as_str() {
                Some(c) => after = format!("&after={c}"),
                None => return Ok(false),
            }
        }
    }

    /// POSTs one event to ingest with `token`.
    async fn post(&self, token: &str, event: &InputEvent) -> Result<()> {
        sign::post(&self.http, &self.args.signer.ingest, token, event).await
    }
}

fn canary_asset(tenant: &str, id: &str, status: AssetStatus) -> InputEvent {
    InputEvent::Registry(RegistryEvent {
        event_id: format!("{id}/{}", status.as_str()).replace('/', "-"),
        tenant_id: tenant.to_owned(),
        occurred_at: Timestamp::now(),
        source: SOURCE.into(),
        asset: Some(Asset {
            status,
            owner: Some("aispm-validate".into()),
            ..Asset::registered(AssetKind::Repo, id)
        }),
        validation: None,
    })
}

/// Runs the probe and posts the results.
pub async fn run(args: &IsolationArgs) -> Result<Summary> {
    let text = std::fs::read_to_string(&args.tenants_file)
        .with_context(|| format!("reading {}", args.tenants_file.display()))?;
    let file: TenantsFile =
        toml::from_str(&text).with_context(|| format!("{}", args.tenants_file.display()))?;
    if file.tenants.len() < 2 {
        bail!("isolation needs at least two tenants to probe each against the other");
    }
    let (key, environments) = args.signer.load()?;
    let probe = Probe {
        args,
        http: args.signer.http_client(Duration::from_secs(10))?,
    };
    let nonce = uuid::Uuid::now_v7().simple().to_string();
    let started_at = Timestamp::now();
    let canary = |t: &str| format!("aispm-isolation-canary/{nonce}/{t}");

    // 1. Plant the canaries, and see each from its own tenant.
    for t in &file.tenants {
        probe
            .post(
                &t.write_token,
                &canary_asset(&t.tenant, &canary(&t.tenant), AssetStatus::Registered),
            )
            .await?;
    }
    let mut visible: BTreeMap<&str, bool> = BTreeMap::new();
    let deadline = Instant::now() + args.canary_timeout;
    for t in &file.tenants {
        let seen = loop {
            if probe
                .lists_canary(&t.tenant, &canary(&t.tenant), &t.read_token)
                .await?
            {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        visible.insert(&t.tenant, seen);
    }

    // 2. Every tenant's token against every other tenant's routes, its own, and shared ones.
    let foreign = |me: &str, body: &str| -> Vec<String> {
        file.tenants
            .iter()
            .filter(|o| o.tenant != me && body.contains(&canary(&o.tenant)))
            .map(|o| o.tenant.clone())
            .collect()
    };
    let mut checks = Vec::new();
    for me in &file.tenants {
        for target in &file.tenants {
            for (service, route) in ROUTES {
                let path = route
                    .replace("{tenant}", &target.tenant)
                    .replace("{id}", &canary(&target.tenant).replace('/', "-"));
                let (status, body) = probe.get(service, &path, &me.read_token).await?;
                let seen = foreign(&me.tenant, &body);
                let own = me.tenant == target.tenant;
                // Its own routes answer as they will (200, 404 for an unknown id); another
                // tenant's must refuse with 403. No answer may hold another tenant's canary.
                let ok = seen.is_empty() && (own || status == 403);
                checks.push(Check {
                    token_of: me.tenant.clone(),
                    target: Some(target.tenant.clone()),
                    service,
                    path,
                    status,
                    foreign_canaries: seen,
                    ok,
                });
            }
        }
        for (service, path) in SHARED_ROUTES {
            let (status, body) = probe.get(service, path, &me.read_token).await?;
            let seen = foreign(&me.tenant, &body);
            checks.push(Check {
                token_of: me.tenant.clone(),
                target: None,
                service,
                path: path.to_owned(),
                status,
                ok: seen.is_empty(),
                foreign_canaries: seen,
            });
        }
    }

    // 3. The transcript, then one signed result per tenant.
    let per_tenant: Vec<(&ProbeTenant, bool, usize, usize)> = file
        .tenants
        .iter()
        .map(|t| {
            let answered = checks
                .iter()
                .filter(|c| c.target.as_deref() == Some(&t.tenant) && c.token_of != t.tenant)
                .filter(|c| c.status != 403)
                .count();
            let leaked = checks
                .iter()
                .filter(|c| c.foreign_canaries.contains(&t.tenant))
                .count();
            let seen = visible.get(t.tenant.as_str()).copied().unwrap_or(false);
            (t, seen && answered == 0 && leaked == 0, answered, leaked)
        })
        .collect();
    let transcript = json!({
        "probe": "tenant_isolation",
        "nonce": nonce,
        "environments": environments.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        "started_at": started_at.to_rfc3339(),
        "finished_at": Timestamp::now().to_rfc3339(),
        "services": {
            "ingest": args.signer.ingest, "projector": args.apis.projector,
            "gatekeeper": args.apis.gatekeeper, "reporter": args.apis.reporter,
        },
        "canaries": file.tenants.iter().map(|t| (t.tenant.clone(), Value::from(canary(&t.tenant)))).collect::<serde_json::Map<_, _>>(),
        "canary_visible_to_its_tenant": visible,
        "checks": checks,
        "results": per_tenant.iter().map(|(t, passed, answered, leaked)| json!({
            "tenant": t.tenant, "passed": passed, "answered": answered, "leaked": leaked,
        })).collect::<Vec<_>>(),
    });
    std::fs::create_dir_all(&args.out)?;
    let bytes = serde_json::to_vec_pretty(&transcript)?;
    let path = args.out.join(format!("isolation-{nonce}.json"));
    let evidence = Transcript::write(&path, &format!("isolation-{nonce}"), &bytes)?;

    let mut tenants = Vec::new();
    for (t, passed, answered, leaked) in per_tenant {
        let detail = if passed {
            format!(
                "{} requests for this tenant by {} other tenant token(s) were refused with 403; its canary appeared in no other tenant's answer",
                checks
                    .iter()
                    .filter(|c| c.target.as_deref() == Some(&t.tenant) && c.token_of != t.tenant)
                    .count(),
                file.tenants.len() - 1
            )
        } else if !visible.get(t.tenant.as_str()).copied().unwrap_or(false) {
            "the tenant's own canary never became visible to its read token: the probe proves nothing".to_owned()
        } else {
            format!(
                "{answered} request(s) by other tenants' tokens were not refused with 403; the tenant's canary leaked into {leaked} other answer(s)"
            )
        };
        let mut event_ids = Vec::new();
        for environment in &environments {
            let event_id = format!("isolation-{nonce}-{}-{environment}", t.tenant);
            // One evidence item per environment (each row counts for its own stage), all
            // naming the same transcript.
            let evidence = Transcript {
                evidence_id: format!("{}-{environment}", evidence.evidence_id),
                ..evidence.clone()
            };
            let claim = Claim {
                source: SOURCE,
                event_id: event_id.clone(),
                tenant: &t.tenant,
                check_kind: CheckKind::TenantIsolation,
                environment: *environment,
                subject: None,
                passed,
                detail: detail.clone(),
                at: Timestamp::now(),
            };
            let result = signed_result(&key, &claim, &evidence)?;
            probe
                .post(&t.write_token, &InputEvent::Registry(result))
                .await?;
            event_ids.push(event_id);
        }
        tenants.push(TenantResult {
            tenant: t.tenant.clone(),
            passed,
            canary_visible: visible.get(t.tenant.as_str()).copied().unwrap_or(false),
            answered,
            leaked,
            event_ids,
        });
    }

    // 4. Retire the canaries (they stay visible as retired repos, with their history).
    for t in &file.tenants {
        probe
            .post(
                &t.write_token,
                &canary_asset(&t.tenant, &canary(&t.tenant), AssetStatus::Retired),
            )
            .await?;
    }

    Ok(Summary {
        passed: tenants.iter().all(|t| t.passed),
        requests: checks.len(),
        transcript: evidence.uri,
        sha256: evidence.sha256,
        tenants,
    })
}
