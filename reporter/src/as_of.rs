//! Packets as of a past instant T: the tenant's state as it was, read from the services that
//! own it, never rebuilt here.
//!
//! - The view rows come from the projector's replay of the tenant's events that occurred by T
//!   (`GET /v1/tenants/{t}/rows?as_of=T`, `projector/src/as_of.rs`).
//! - Each stage's verdict and open blockers come from the gatekeeper's rules judged at T
//!   (`GET /v1/tenants/{t}/readiness?stage=&as_of=T`, `gatekeeper/src/as_of.rs`).
//! - The report providers and trust roots are the reporter's own, as now: they decide where
//!   the packet goes today and which key anchors it.
//!
//! Both reads go with a token that may read the tenant: the requester's own
//! (`POST /v1/tenants/{t}/reports` with `"as_of"`), or the cadence's `--read-token-file` for
//! the quarterly archive as of the quarter's end. The projector replays one tenant at a time:
//! its `429` is waited out, by its `Retry-After`, until `--as-of-timeout`.

use crate::state::{TenantMeta, TenantState};
use crate::{Error, Result};
use aispm_runtime::http::ApiError;
use aispm_runtime::peer::Peer;
use aispm_schemas::views::AsOf;
use aispm_schemas::{Blocker, Readiness, Stage, Timestamp};
use axum::http::{HeaderValue, StatusCode};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Blockers per page read from the gatekeeper (its most).
const BLOCKER_PAGE: usize = 1000;

/// Packets as of a past instant (`"as_of"` in a report request, and the quarterly archive as of
/// the quarter's end): the tenant's view rows as of then from the projector's replay, and its
/// verdicts as of then from the gatekeeper's rules, both read over their HTTP APIs.
#[derive(Debug, Clone, clap::Args)]
pub struct AsOfArgs {
    /// The projector's HTTP API (its view rows as of a past instant, `/rows?as_of=`).
    #[arg(
        long,
        env = "AISPM_PROJECTOR_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub projector_url: String,

    /// The gatekeeper's HTTP API (its readiness as of a past instant, `/readiness?as_of=`).
    #[arg(
        long,
        env = "AISPM_GATEKEEPER_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub gatekeeper_url: String,

    /// Trust for the projector's and the gatekeeper's certificates when they serve HTTPS.
    #[command(flatten)]
    pub client_tls: aispm_runtime::tls::ClientTlsArgs,

    /// Longest wait for a tenant's state as of a past instant (the projector's replay, and
    /// its turns when another replay runs, included).
    #[arg(long, env = "AISPM_AS_OF_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5m")]
    pub as_of_timeout: Duration,

    /// A file holding the bearer token the cadence reads the state as of a past instant with:
    /// a token of the tokens file with scope `read` on every tenant (`tenants = ["*"]`), for
    /// the quarterly archive as of the quarter's end. A report requested through the API reads
    /// with the requester's own token. Without it, quarterly packets are made as of their run,
    /// and say so.
    #[arg(long, env = "AISPM_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,
}

impl Default for AsOfArgs {
    fn default() -> Self {
        AsOfArgs {
            projector_url: "http://127.0.0.1:8081".into(),
            gatekeeper_url: "http://127.0.0.1:8082".into(),
            client_tls: aispm_runtime::tls::ClientTlsArgs::default(),
            as_of_timeout: Duration::from_secs(300),
            read_token_file: None,
        }
    }
}

/// Where a tenant's past state is read from.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    projector: Peer,
    gatekeeper: Peer,
    timeout: Duration,
    read_token: Option<HeaderValue>,
}

/// A packet's instant and the token its state is read with.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub at: Timestamp,
    pub token: HeaderValue,
}

impl Source {
    /// The projector and gatekeeper of `args`, and the cadence's token if one is configured.
    pub(crate) fn new(args: &AsOfArgs) -> Result<Source> {
        let http = args
            .client_tls
            .client_builder()?
            .timeout(args.as_of_timeout)
            .build()
            .map_err(|e| Error::Config(format!("the HTTP client for past states: {e}")))?;
        let read_token = match &args.read_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(Error::Config(format!(
                        "--read-token-file {}: the file holds no token",
                        path.display()
                    )));
                }
                let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    Error::Config(format!(
                        "--read-token-file {}: the token is not a valid header value",
                        path.display()
                    ))
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Source {
            projector: Peer::new("projector", &args.projector_url, http.clone()),
            gatekeeper: Peer::new("gatekeeper", &args.gatekeeper_url, http),
            timeout: args.as_of_timeout,
            read_token,
        })
    }

    /// Whether the cadence has a token to read past states with (`--read-token-file`).
    pub(crate) fn has_read_token(&self) -> bool {
        self.read_token.is_some()
    }

    /// The request for the cadence's packet as of `at`, if the cadence has a token to read with.
    pub(crate) fn cadence(&self, at: Timestamp) -> Option<Request> {
        self.read_token.clone().map(|token| Request { at, token })
    }

    /// The tenant's state as of `req.at`, with `meta`'s providers and trust roots, and what the
    /// projector's replay included. A `429` is retried after its `Retry-After` until the
    /// timeout; any other refusal is returned as the service gave it.
    pub(crate) async fn tenant(
        &self,
        req: &Request,
        tenant: &str,
        meta: &TenantMeta,
    ) -> Result<(TenantState, AsOf), ApiError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.read(req, tenant, meta).await {
                Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => {
                    let wait = e.retry_after.unwrap_or(Duration::from_secs(1));
                    if Instant::now() + wait > deadline {
                        return Err(e);
                    }
                    tracing::info!(tenant_id = %tenant, at = %req.at, wait_s = wait.as_secs(), reason = %e.message, "Waiting for a turn to read a past state.");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn read(
        &self,
        req: &Request,
        tenant: &str,
        meta: &TenantMeta,
    ) -> Result<(TenantState, AsOf), ApiError> {
        let at = req.at.to_rfc3339();
        let mut t = TenantState {
            providers: meta.providers.clone(),
            trust_roots: meta.trust_roots.clone(),
            ..TenantState::default()
        };
        let included = self
            .projector
            .rows_as_of(&req.token, tenant, &at, |_, key, row| {
                t.insert(key.to_owned(), row);
                Ok(())
            })
            .await?;
        let path = format!("/v1/tenants/{tenant}/readiness");
        for stage in Stage::ALL {
            let bad = |what: &str| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "peer_answer",
                    format!("the gatekeeper's {stage} verdict as of {at}: {what}"),
                )
            };
            let query = [("stage", stage.as_str().to_owned()), ("as_of", at.clone())];
            let mut open = BTreeMap::new();
            let mut verdict = None;
            self.gatekeeper
                .pages(&path, &req.token, &query, BLOCKER_PAGE, |page| {
                    for b in page["blockers"].as_array().into_iter().flatten() {
                        let blocker: Blocker = serde_json::from_value(json!({
                            "tenant_id": tenant,
                            "stage": stage,
                            "blocker_id": b["id"],
                            "kind": b["kind"],
                            "meaning": b["meaning"],
                            "resolution": b["resolution"],
                            "subject": b["subject"],
                            "evidence": b["evidence"],
                            "detected_at": b["detected_at"],
                        }))
                        .map_err(|e| bad(&format!("a blocker that does not decode: {e}")))?;
                        open.insert(blocker.blocker_id.clone(), blocker);
                    }
                    let ready = page["ready"].as_bool().ok_or_else(|| bad("no `ready`"))?;
                    let evaluated_at: Timestamp =
                        serde_json::from_value(page["evaluated_at"].clone())
                            .map_err(|e| bad(&format!("`evaluated_at`: {e}")))?;
                    verdict = Some((ready, evaluated_at));
                    Ok(())
                })
                .await?;
            let (ready, evaluated_at) = verdict.ok_or_else(|| bad("no answer"))?;
            t.readiness.insert(
                *stage,
                Readiness {
                    tenant_id: tenant.to_owned(),
                    stage: *stage,
                    ready,
                    blocker_ids: open.keys().cloned().collect(),
                    evaluated_at,
                },
            );
            t.blockers.insert(*stage, open);
        }
        t.updated_at = Some(req.at);
        Ok((t, included))
    }
}
