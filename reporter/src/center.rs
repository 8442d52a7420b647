//! The report center: runs the report path for one request (choose tenant and type, check
//! freshness and trust roots, list blocking findings and accepted risks, generate, sign,
//! deliver, record the delivery) and keeps retrying deliveries that failed.

use crate::deliver::{self, Channel, Delivered};
use crate::keys::KeyRing;
use crate::metrics::ReporterMetrics;
use crate::packet::{self, Meta};
use crate::publish::Publisher;
use crate::report::{self, Request};
use crate::schedule::Period;
use crate::state::{self, Shared};
use crate::store::{Attempt, ReportRecord, SmtpTranscript, Status, Store};
use crate::{Error, Result, render};
use aispm_runtime::clock::SharedClock;
use aispm_schemas::{
    CheckKind, DeliveryOutcome, Environment, Evidence, RegistryEvent, ReportDeliveryEvent,
    ReportType, Timestamp,
};
use aispm_validate::sign::{Claim, Transcript, ValidatorKey, signed_result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What asked for a report.
#[derive(Debug, Clone)]
pub(crate) enum Trigger {
    /// The HTTP API, with the caller's name.
    Api(String),
    Cadence(Period),
}

impl Trigger {
    fn label(&self) -> &'static str {
        match self {
            Trigger::Api(_) => "api",
            Trigger::Cadence(_) => "cadence",
        }
    }

    fn describe(&self) -> String {
        match self {
            Trigger::Api(p) => format!("api:{p}"),
            Trigger::Cadence(p) => format!("cadence:{p}"),
        }
    }
}

/// Why a report could not be generated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GenerateError {
    #[error("the reporter is still replaying its state from the topics")]
    NotReady,
    #[error("no posture data for tenant {0}")]
    UnknownTenant(String),
    #[error("not approved recipients for the tenant: {}", .0.join(", "))]
    Unapproved(Vec<String>),
    /// The state as of a past instant could not be read: the projector's or gatekeeper's
    /// refusal (or the instant's), as given.
    #[error("the state as of that instant: {}", .0.message)]
    AsOf(aispm_runtime::http::ApiError),
    #[error(transparent)]
    Failed(#[from] Error),
}

/// Settings of the report center.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub out_dir: PathBuf,
    /// The clock rules' windows packets judge with.
    pub windows: aispm_schemas::clock::Windows,
    pub fallback_key_id: String,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub source: String,
    /// Validates the report providers by the deliveries (`--validator-key`).
    pub provider_check: Option<Arc<ProviderCheck>>,
    /// The wall clock: packets' generation times, due retries, the cadence.
    pub clock: SharedClock,
    /// Told about each delivery (`report.delivered`).
    pub webhooks: crate::webhooks::Webhooks,
    /// Where a tenant's state as of a past instant is read.
    pub as_of: crate::as_of::Source,
}

/// The report-provider validator: the key that signs the results and the environments they
/// count for.
#[derive(Debug)]
pub struct ProviderCheck {
    pub key: ValidatorKey,
    pub environments: Vec<Environment>,
}

/// The providers among `providers` that `mailed` reached: those with at least one recipient
/// mailed (compared case-insensitively), with the recipients it reached.
pub(crate) fn providers_mailed(
    providers: &BTreeMap<String, Vec<String>>,
    mailed: &[String],
) -> BTreeMap<String, Vec<String>> {
    providers
        .iter()
        .filter_map(|(id, recipients)| {
            let reached: Vec<String> = mailed
                .iter()
                .filter(|m| state::is_approved(recipients, m))
                .cloned()
                .collect();
            (!reached.is_empty()).then(|| (id.clone(), reached))
        })
        .collect()
}

/// Generates, delivers and records reports.
#[derive(Debug)]
pub(crate) struct Center {
    settings: Settings,
    state: Shared,
    store: Store,
    keys: KeyRing,
    channel: Channel,
    publisher: Publisher,
    metrics: ReporterMetrics,
    restored: watch::Receiver<bool>,
}

impl Center {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        settings: Settings,
        state: Shared,
        store: Store,
        keys: KeyRing,
        channel: Channel,
        publisher: Publisher,
        metrics: ReporterMetrics,
        restored: watch::Receiver<bool>,
    ) -> Result<Self> {
        let c = Center {
            settings,
            state,
            store,
            keys,
            channel,
            publisher,
            metrics,
            restored,
        };
        // A record whose first attempt was in flight when the process stopped is due now.
        for r in c.store.live() {
            if r.status == Status::Retrying && r.next_attempt_at.is_none() {
                let mut r = r;
                r.next_attempt_at = Some(c.settings.clock.now());
                c.store.put(&r)?;
            }
        }
        c.metrics.deliveries_pending.set(c.store.pending() as i64);
        Ok(c)
    }

    /// The signing keys: the current one and the previous ones, as published.
    pub(crate) fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Resolves once the follower has replayed the topics up to their ends at start.
    pub(crate) async fn restored(&self) {
        let mut rx = self.restored.clone();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Watches whether the follower has replayed the state topics.
    pub(crate) fn restored_receiver(&self) -> watch::Receiver<bool> {
        self.restored.clone()
    }

    pub(crate) fn is_restored(&self) -> bool {
        *self.restored.borrow()
    }

    pub(crate) fn tenant_ids(&self) -> Vec<String> {
        self.state.tenant_ids()
    }

    /// Where a tenant's state as of a past instant is read.
    pub(crate) fn as_of(&self) -> &crate::as_of::Source {
        &self.settings.as_of
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Runs the report path for `tenant` and `report_type`, including the first delivery
    /// attempt; later attempts run in [`Center::run_retries`].
    pub(crate) async fn generate(
        &self,
        tenant: &str,
        report_type: ReportType,
        trigger: Trigger,
        recipients: Option<Vec<String>>,
        as_of: Option<crate::as_of::Request>,
    ) -> Result<ReportRecord, GenerateError> {
        if !self.is_restored() {
            return Err(GenerateError::NotReady);
        }
        // Tenant ids name directories: never follow one that could leave the packet directory.
        if !aispm_schemas::TenantId::is_valid(tenant) {
            return Err(GenerateError::UnknownTenant(tenant.to_owned()));
        }
        // Checked on the in-memory part first: a refused request reads no rows.
        let meta = self
            .state
            .tenant_meta(tenant)
            .ok_or_else(|| GenerateError::UnknownTenant(tenant.to_owned()))?;
        if let Some(rs) = &recipients {
            let approved = meta.approved_recipients();
            let bad: Vec<String> = rs
                .iter()
                .filter(|r| !state::is_approved(&approved, r))
                .cloned()
                .collect();
            if !bad.is_empty() {
                return Err(GenerateError::Unapproved(bad));
            }
        }
        let started = Instant::now();
        let (t, replayed) = match &as_of {
            // As of a past instant: the projector's and the gatekeeper's state as of then.
            Some(req) => {
                if req.at > self.settings.clock.now() {
                    return Err(GenerateError::AsOf(
                        aispm_runtime::http::ApiError::bad_request(format!(
                            "as_of {} is in the future",
                            req.at.to_rfc3339()
                        )),
                    ));
                }
                let (t, included) = self
                    .settings
                    .as_of
                    .tenant(req, tenant, &meta)
                    .await
                    .map_err(GenerateError::AsOf)?;
                (t, Some(included))
            }
            // Every row of the tenant, read from the row store: held for this packet only.
            None => {
                drop(meta);
                let t = tokio::task::block_in_place(|| self.state.tenant(tenant))?
                    .ok_or_else(|| GenerateError::UnknownTenant(tenant.to_owned()))?;
                (t, None)
            }
        };
        let now = self.settings.clock.now();
        let id = uuid::Uuid::now_v7().to_string();
        let public_key = self.keys.current().public_key_b64();
        let req = Request {
            report_id: id.clone(),
            tenant_id: tenant.to_owned(),
            report_type,
            generated_at: now,
            windows: self.settings.windows,
            signer_public_key: public_key,
            fallback_key_id: self.settings.fallback_key_id.clone(),
            requested_by: trigger.describe(),
            as_of: replayed,
        };
        let doc = report::build(&t, &req);
        let findings = render::exported_findings(&t, &doc);
        let files = render::files(&doc, &findings)?;
        let written = {
            let out = self.settings.out_dir.clone();
            let key_id = doc.trust_roots.packet_key_id.clone();
            let meta_generated = now.to_rfc3339();
            let type_str = report_type.as_str();
            let signer = self.keys.current();
            let id = id.as_str();
            // Small synchronous file writes; block_in_place keeps the runtime responsive.
            tokio::task::block_in_place(|| {
                packet::write(
                    &out,
                    &Meta {
                        report_id: id,
                        tenant_id: tenant,
                        report_type: type_str,
                        generated_at: meta_generated,
                        key_id: &key_id,
                    },
                    files,
                    signer,
                )
            })?
        };
        self.metrics
            .generation_seconds
            .with_label_values(&[report_type.as_str()])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.packet_bytes.observe(written.zip_bytes as f64);
        self.metrics
            .reports_generated
            .with_label_values(&[report_type.as_str(), trigger.label()])
            .inc();
        tracing::info!(
            tenant_id = %tenant, report_id = %id, report_type = %report_type,
            packet_sha256 = %written.zip_sha256, files = written.manifest.files.len(),
            as_of = ?replayed.map(|a| a.at.to_rfc3339()),
            "Generated a report packet."
        );
        let mut record = ReportRecord {
            id,
            tenant_id: tenant.to_owned(),
            report_type,
            title: doc.title.clone(),
            headline: doc.headline.clone(),
            requested_by: doc.requested_by.clone(),
            created_at: now,
            as_of: replayed.map(|a| a.at),
            packet: written,
            requested_recipients: recipients,
            status: Status::Retrying,
            attempts: vec![],
            // In flight: the retry loop leaves it alone until this attempt is recorded.
            next_attempt_at: None,
            evidence_signature: None,
        };
        // The delivery evidence is signed now, by the key that signed the packet.
        record.evidence_signature = self.keys.current().sign_evidence(
            &record.tenant_id,
            &record.evidence_id(),
            &record.packet.manifest_sha256,
        );
        self.store.put(&record)?;
        Ok(self.attempt(record).await?)
    }

    /// The recipients of the next attempt, and whether every one is approved for the tenant.
    fn recipients(&self, r: &ReportRecord) -> (Vec<String>, bool) {
        // The in-memory part only: an attempt never reads the tenant's rows.
        let approved = self.state.approved_recipients(&r.tenant_id);
        let wanted = r
            .requested_recipients
            .clone()
            .unwrap_or_else(|| approved.clone());
        // Never mail anyone who is not (or no longer) approved.
        let approved: Vec<String> = wanted
            .into_iter()
            .filter(|w| state::is_approved(&approved, w))
            .collect();
        let ok = !approved.is_empty();
        (approved, ok)
    }

    /// One delivery attempt: deliver, record durably, publish the outcome.
    async fn attempt(&self, mut r: ReportRecord) -> Result<ReportRecord> {
        let n = r.attempts.len() as i32 + 1;
        let now = self.settings.clock.now();
        let (outcome, approved): (Result<Delivered, String>, bool) = match &self.channel {
            Channel::Smtp(smtp) => {
                let (recipients, approved) = self.recipients(&r);
                (smtp.send(&r, &recipients, n).await, approved)
            }
            Channel::Export => (deliver::export(&r, self.keys.all()).await, false),
        };
        // A delivery to approved recipients proves the providers it reached.
        let (providers, transcript) = match (&outcome, &self.channel) {
            (Ok(d), Channel::Smtp(smtp)) if approved && self.settings.provider_check.is_some() => {
                // The mail is sent: a transcript that cannot be written costs the validation,
                // never the record of the delivery.
                self.provider_transcript(&r, n, now, smtp, d)
                    .unwrap_or_else(|e| {
                        tracing::error!(report_id = %r.id, error = %e, "Could not write the SMTP transcript; no provider validation for this delivery.");
                        (vec![], None)
                    })
            }
            _ => (vec![], None),
        };
        let channel = self.channel.kind();
        let attempt = match outcome {
            Ok(d) => {
                tracing::info!(
                    tenant_id = %r.tenant_id, report_id = %r.id, attempt = n, %channel,
                    recipients = %d.recipients.join(","), message_id = ?d.message_id,
                    "Delivered a report packet."
                );
                r.status = Status::Delivered;
                r.next_attempt_at = None;
                Attempt {
                    attempt: n,
                    at: now,
                    channel,
                    outcome: DeliveryOutcome::Delivered,
                    recipients: d.recipients,
                    approved_recipients: approved,
                    message_id: d.message_id,
                    server_response: d.server_response,
                    error: None,
                    event_id: format!("{}/attempt/{n}", r.id),
                    published: false,
                    providers,
                    transcript,
                }
            }
            Err(error) => {
                let last = n as u32 >= self.settings.max_attempts;
                if last {
                    r.status = Status::Failed;
                    r.next_attempt_at = None;
                } else {
                    r.status = Status::Retrying;
                    r.next_attempt_at = Some(now.plus(crate::schedule::backoff(
                        n as u32,
                        self.settings.retry_initial,
                        self.settings.retry_max,
                    )));
                }
                tracing::warn!(
                    tenant_id = %r.tenant_id, report_id = %r.id, attempt = n, %channel, %error,
                    gave_up = last, next_attempt_at = ?r.next_attempt_at,
                    "A report delivery failed."
                );
                let (recipients, approved) = match &self.channel {
                    Channel::Smtp(_) => self.recipients(&r),
                    Channel::Export => (vec![], false),
                };
                Attempt {
                    attempt: n,
                    at: now,
                    channel,
                    outcome: DeliveryOutcome::Failed,
                    recipients,
                    approved_recipients: approved,
                    message_id: None,
                    server_response: None,
                    error: Some(error),
                    event_id: format!("{}/attempt/{n}", r.id),
                    published: false,
                    providers: vec![],
                    transcript: None,
                }
            }
        };
        self.metrics
            .deliveries
            .with_label_values(&[channel.as_str(), attempt.outcome.as_str()])
            .inc();
        if attempt.outcome == DeliveryOutcome::Delivered {
            // Queued before the attempt is recorded: a crash in between delivers again under
            // the same attempt number, hence the same notification id (no second message).
            let n = crate::webhooks::report_delivered(&r, &attempt);
            self.settings.webhooks.notify(&n)?;
        }
        r.attempts.push(attempt);
        // Durable before it is announced: a crash now republishes the same event id.
        self.store.put(&r)?;
        self.publish_pending(&mut r).await;
        self.metrics
            .deliveries_pending
            .set(self.store.pending() as i64);
        Ok(r)
    }

    /// Writes the SMTP transcript of a delivery that reached approved recipients, once, at
    /// `<out-dir>/validations/<tenant>/<report id>-attempt-<n>.smtp.json`: the providers it
    /// reached and the server's reply. The providers' validations carry it as evidence.
    fn provider_transcript(
        &self,
        r: &ReportRecord,
        n: i32,
        at: Timestamp,
        smtp: &deliver::Smtp,
        d: &Delivered,
    ) -> Result<(Vec<String>, Option<SmtpTranscript>)> {
        let registered = self
            .state
            .tenant_meta(&r.tenant_id)
            .map(|m| m.providers)
            .unwrap_or_default();
        let reached = providers_mailed(&registered, &d.recipients);
        if reached.is_empty() {
            return Ok((vec![], None));
        }
        let doc = json!({
            "check": "report_provider",
            "tenant": r.tenant_id,
            "report_id": r.id,
            "attempt": n,
            "at": at.to_rfc3339(),
            "server": smtp.server(),
            "from": smtp.from(),
            "recipients": d.recipients,
            "providers": reached,
            "message_id": d.message_id,
            "server_response": d.server_response,
            "packet_sha256": r.packet.zip_sha256,
        });
        let dir = self.settings.out_dir.join("validations").join(&r.tenant_id);
        let path = dir.join(format!("{}-attempt-{n}.smtp.json", r.id));
        let bytes = serde_json::to_vec_pretty(&doc)?;
        crate::store::write_atomic(&path, &bytes)?;
        let t = Transcript::describe(&path, "", &bytes);
        Ok((
            reached.into_keys().collect(),
            Some(SmtpTranscript {
                uri: t.uri,
                sha256: t.sha256,
            }),
        ))
    }

    /// The signed `report_provider` results of a delivered attempt: one per provider it
    /// reached and environment. Deterministic (ids, time, signature), so a republish is
    /// applied once.
    fn provider_results(&self, r: &ReportRecord, a: &Attempt) -> Result<Vec<RegistryEvent>> {
        let (Some(check), Some(t)) = (&self.settings.provider_check, &a.transcript) else {
            return Ok(vec![]);
        };
        let mut out = Vec::new();
        for provider in &a.providers {
            for env in &check.environments {
                let claim = Claim {
                    source: &self.settings.source,
                    event_id: format!("{}/report_provider/{provider}/{env}", a.event_id),
                    tenant: &r.tenant_id,
                    check_kind: CheckKind::ReportProvider,
                    environment: *env,
                    subject: Some(provider),
                    passed: true,
                    detail: format!(
                        "report {} delivered to {} approved recipient(s); the server answered {}",
                        r.id,
                        a.recipients.len(),
                        a.server_response
                            .as_deref()
                            .unwrap_or("without a reply text")
                    ),
                    at: a.at,
                };
                let evidence = Transcript {
                    evidence_id: format!(
                        "report/{}/attempt/{}/smtp/{provider}/{env}",
                        r.id, a.attempt
                    ),
                    uri: t.uri.clone(),
                    sha256: t.sha256.clone(),
                };
                let event = signed_result(&check.key, &claim, &evidence)
                    .map_err(|e| Error::Config(format!("signing a provider validation: {e:#}")))?;
                out.push(event);
            }
        }
        Ok(out)
    }

    /// Publishes an attempt's delivery event, then its provider validations.
    async fn publish_attempt(&self, r: &ReportRecord, a: &Attempt) -> Result<()> {
        let ev = self.event(r, a);
        self.publisher.publish(&ev).await?;
        for v in self.provider_results(r, a)? {
            self.publisher.publish_validation(&v).await?;
        }
        self.metrics
            .events_published
            .with_label_values(&[ev.outcome.as_str()])
            .inc();
        Ok(())
    }

    fn event(&self, r: &ReportRecord, a: &Attempt) -> ReportDeliveryEvent {
        ReportDeliveryEvent {
            event_id: a.event_id.clone(),
            tenant_id: r.tenant_id.clone(),
            occurred_at: a.at,
            source: self.settings.source.clone(),
            report_id: r.id.clone(),
            report_type: r.report_type,
            channel: a.channel,
            outcome: a.outcome,
            recipients: a.recipients.clone(),
            approved_recipients: a.approved_recipients,
            message_id: a.message_id.clone(),
            server_response: a.server_response.clone(),
            packet_sha256: r.packet.zip_sha256.clone(),
            attempt: a.attempt,
            error: a.error.clone(),
            evidence: Some(Evidence {
                evidence_id: r.evidence_id(),
                sha256: r.packet.manifest_sha256.clone(),
                uri: format!("file://{}", r.packet.dir.join(packet::MANIFEST).display()),
                signature: r.evidence_signature.clone().or_else(|| {
                    self.keys.current().sign_evidence(
                        &r.tenant_id,
                        &r.evidence_id(),
                        &r.packet.manifest_sha256,
                    )
                }),
                key_id: Some(r.packet.manifest.signer.key_id.clone()),
            }),
        }
    }

    /// Publishes the record's unacknowledged events, in attempt order; stops at the first
    /// failure (the retry loop tries again).
    async fn publish_pending(&self, r: &mut ReportRecord) {
        let mut changed = false;
        for i in 0..r.attempts.len() {
            if r.attempts[i].published {
                continue;
            }
            match self.publish_attempt(r, &r.attempts[i]).await {
                Ok(()) => {
                    r.attempts[i].published = true;
                    changed = true;
                }
                Err(e) => {
                    let reason = if e.is_transient() {
                        "transient"
                    } else {
                        "other"
                    };
                    self.metrics
                        .publish_errors
                        .with_label_values(&[reason])
                        .inc();
                    tracing::warn!(report_id = %r.id, event_id = %r.attempts[i].event_id, error = %e, "Could not publish a delivery event; will retry.");
                    break;
                }
            }
        }
        if changed && let Err(e) = self.store.put(r) {
            tracing::error!(report_id = %r.id, error = %e, "Could not record a published delivery event.");
        }
    }

    /// The wall clock the center reads.
    pub(crate) fn clock(&self) -> &SharedClock {
        &self.settings.clock
    }

    /// Retries due deliveries and republishes unacknowledged events until `shutdown`.
    pub(crate) async fn run_retries(&self, shutdown: CancellationToken) -> Result<()> {
        // Not before the state is replayed: an attempt now would find the tenant's approved
        // recipients missing and record a failure that is not one (and, for an attempt cut
        // short by a crash after the server took the mail, deliver it again later under a new
        // attempt number).
        tokio::select! {
            _ = self.restored() => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        loop {
            let now = self.settings.clock.now();
            let (work, _next) = self.store.work(now);
            for mut r in work {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                // Events of attempts recorded a moment ago are being published by their caller.
                let stale = r
                    .attempts
                    .iter()
                    .any(|a| !a.published && a.at < now.minus(Duration::from_secs(5)));
                if stale {
                    self.publish_pending(&mut r).await;
                }
                if r.status == Status::Retrying
                    && r.next_attempt_at.is_some_and(|t| t <= now)
                    && let Err(e) = self.attempt(r).await
                {
                    tracing::error!(error = %e, "A delivery retry could not be recorded.");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_is_proven_only_by_its_own_recipients() {
        let providers = BTreeMap::from([
            ("acme-smtp".to_owned(), vec!["CISO@acme.example".to_owned()]),
            (
                "acme-sec".to_owned(),
                vec!["secops@acme.example".to_owned()],
            ),
        ]);
        let reached = providers_mailed(&providers, &["ciso@acme.example".to_owned()]);
        assert_eq!(
            reached,
            BTreeMap::from([("acme-smtp".to_owned(), vec!["ciso@acme.example".to_owned()])])
        );
        assert!(providers_mailed(&providers, &["intruder@evil.example".to_owned()]).is_empty());
    }
}
