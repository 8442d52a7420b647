//! Webhooks out: the changes people and systems want pushed to them, delivered at least once
//! with Standard Webhooks headers and signatures, retried with exponential backoff, and
//! dead-lettered when a subscription's retry window runs out.
//!
//! # The road of one message
//! - A change is noticed: the follower ([`crate::follow`]) folds a blocker, a blocker's
//!   tombstone or a readiness verdict that changes the state ([`crate::state::Transition`]);
//!   the SLA clock here sees an open finding pass its due date; the report center records a
//!   delivery. Each becomes a [`Notification`] whose id derives from what caused it.
//! - [`Webhooks::notify`] writes one message per subscription that wants it to
//!   `<state-dir>/webhooks/pending/<subscription>/<id>.json` (durably, before anything is
//!   sent), unless that message is already pending, sent or dead: a replay or a restart that
//!   sees the same change again adds nothing.
//! - [`Webhooks::run`] sends what is due, signed ([`sign`]); a 2xx marks it sent
//!   (`sent/<subscription>/<id>`, kept 7 days for deduplication); anything else schedules the
//!   next attempt (doubling from the subscription's `initial_backoff` up to `max_backoff`);
//!   past `retry_for` the message moves to `dead/` and to the dead-letter topic, with headers
//!   naming the subscription and the last error.
//!
//! Only changes read after the follower's saved position produce notifications (what happened
//! while the reporter was down included, history before its first start excluded). Messages
//! are not ordered: receivers order by the body's `timestamp` and deduplicate by `webhook-id`.

pub(crate) mod config;
pub(crate) mod event;
pub(crate) mod sign;

pub(crate) use config::Subscription;
pub(crate) use event::{Kind, Notification};

use crate::state::Transition;
use crate::{Error, Result};
use aispm_runtime::clock::SharedClock;
use aispm_runtime::dlq::{DeadLetter, DeadLetters, Stage as DlqStage};
use aispm_runtime::metrics::Metrics;
use aispm_schemas::{FindingRow, FindingStatus, Timestamp};
use futures::StreamExt;
use prometheus::{IntCounterVec, IntGaugeVec};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// How long a sent message's id is kept to deduplicate a second notification of the same change.
const SENT_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most messages in flight at once, over all subscriptions.
const IN_FLIGHT: usize = 16;
/// How often the dispatcher looks at the clock when nothing wakes it (SLA checks, retries).
const TICK: Duration = Duration::from_secs(1);

/// One message for one subscription, as kept on disk until it is sent or dead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Message {
    pub subscription: String,
    pub notification: Notification,
    pub created_at: Timestamp,
    pub attempts: u32,
    pub next_at: Timestamp,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// An open finding with a due date, as the SLA clock keeps it.
#[derive(Debug, Clone, PartialEq)]
struct Due {
    due: Timestamp,
    opened: Timestamp,
    title: String,
    severity: String,
    owner: Option<String>,
    /// The exception covering it, and until when.
    covered_until: Option<Timestamp>,
}

#[derive(Debug)]
struct WebhookMetrics {
    messages: IntCounterVec,
    pending: IntGaugeVec,
}

struct Inner {
    subscriptions: Vec<Subscription>,
    dir: PathBuf,
    clock: SharedClock,
    client: reqwest::Client,
    dead_letters: DeadLetters,
    metrics: WebhookMetrics,
    pending: Mutex<BTreeMap<(String, String), Message>>,
    wake: Notify,
    /// Open findings with a due date, by (tenant, finding id).
    dues: Mutex<BTreeMap<(String, String), Due>>,
}

/// The webhook outbox and its dispatcher; cheap to clone.
#[derive(Clone)]
pub(crate) struct Webhooks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("subscriptions", &self.inner.subscriptions.len())
            .finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

impl Webhooks {
    /// The outbox under `state_dir/webhooks`, with the messages a previous run left pending.
    pub(crate) fn open(
        subscriptions: Vec<Subscription>,
        state_dir: &Path,
        clock: SharedClock,
        dead_letters: DeadLetters,
        metrics: &Metrics,
    ) -> Result<Self> {
        let dir = state_dir.join("webhooks");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aispm-reporter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("the webhook HTTP client: {e}")))?;
        let metrics = WebhookMetrics {
            messages: metrics.counter(
                "webhook_messages_total",
                "Webhook delivery attempts by subscription and outcome (delivered, failed, dead_lettered).",
                &["subscription", "outcome"],
            )?,
            pending: metrics.gauge(
                "webhook_messages_pending",
                "Webhook messages not delivered yet, by subscription.",
                &["subscription"],
            )?,
        };
        let mut pending = BTreeMap::new();
        for s in &subscriptions {
            let d = dir.join("pending").join(&s.id);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
            std::fs::create_dir_all(dir.join("sent").join(&s.id)).map_err(io(&d))?;
            std::fs::create_dir_all(dir.join("dead").join(&s.id)).map_err(io(&d))?;
            for entry in std::fs::read_dir(&d).map_err(io(&d))? {
                let path = entry.map_err(io(&d))?.path();
                if path.extension().is_some_and(|e| e == "json") {
                    let bytes = std::fs::read(&path).map_err(io(&path))?;
                    match serde_json::from_slice::<Message>(&bytes) {
                        // Finished just before a crash: sent or dead already.
                        Ok(m)
                            if dir
                                .join("sent")
                                .join(&s.id)
                                .join(&m.notification.id)
                                .exists()
                                || dir
                                    .join("dead")
                                    .join(&s.id)
                                    .join(format!("{}.json", m.notification.id))
                                    .exists() =>
                        {
                            remove(&path)?;
                        }
                        Ok(m) => {
                            pending.insert((m.subscription.clone(), m.notification.id.clone()), m);
                        }
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "Ignored an unreadable pending webhook message.")
                        }
                    }
                }
            }
            metrics.pending.with_label_values(&[&s.id]).set(0);
        }
        for (sub, _) in pending.keys() {
            metrics.pending.with_label_values(&[sub]).inc();
        }
        let w = Webhooks {
            inner: Arc::new(Inner {
                subscriptions,
                dir,
                clock,
                client,
                dead_letters,
                metrics,
                pending: Mutex::new(pending),
                wake: Notify::new(),
                dues: Mutex::new(BTreeMap::new()),
            }),
        };
        w.prune_sent();
        Ok(w)
    }

    /// Whether any subscription exists (without one, nothing is noticed or kept).
    pub(crate) fn is_enabled(&self) -> bool {
        !self.inner.subscriptions.is_empty()
    }

    fn path(&self, area: &str, sub: &str, id: &str) -> PathBuf {
        let file = if area == "sent" {
            id.to_owned()
        } else {
            format!("{id}.json")
        };
        self.inner.dir.join(area).join(sub).join(file)
    }

    /// Queues `n` for every subscription that wants it, durably. Returns how many messages
    /// were added (0 when each was already pending, sent or dead). Blocking (small file writes).
    pub(crate) fn notify(&self, n: &Notification) -> Result<usize> {
        let mut added = 0;
        for s in &self.inner.subscriptions {
            if !s.wants(n.kind, &n.tenant_id) {
                continue;
            }
            let key = (s.id.clone(), n.id.clone());
            if self.lock_pending().contains_key(&key)
                || self.path("sent", &s.id, &n.id).exists()
                || self.path("dead", &s.id, &n.id).exists()
            {
                continue;
            }
            let now = self.inner.clock.now();
            let m = Message {
                subscription: s.id.clone(),
                notification: n.clone(),
                created_at: now,
                attempts: 0,
                next_at: now,
                last_error: None,
            };
            let path = self.path("pending", &s.id, &n.id);
            crate::store::write_atomic(&path, &serde_json::to_vec(&m)?)?;
            self.lock_pending().insert(key, m);
            self.inner.metrics.pending.with_label_values(&[&s.id]).inc();
            tracing::info!(subscription = %s.id, id = %n.id, kind = n.kind.as_str(), tenant_id = %n.tenant_id, summary = %n.summary, "Queued a webhook message.");
            added += 1;
        }
        if added > 0 {
            self.inner.wake.notify_one();
        }
        Ok(added)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Message>> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Messages not delivered yet, over all subscriptions.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.lock_pending().len()
    }

    /// Takes in one change the follower folded: a finding row always (the SLA clock keeps
    /// every open one), the rest as a notification when `origin` (the record's
    /// `topic/partition/offset`) is given, i.e. when the record is new and not a replay.
    pub(crate) fn observe(&self, t: &Transition, origin: Option<&str>) -> Result<()> {
        let n = match t {
            Transition::Finding {
                tenant_id,
                key,
                row,
            } => {
                self.observe_finding(tenant_id, key, row.as_deref());
                return Ok(());
            }
            _ if !self.is_enabled() => return Ok(()),
            _ => match origin {
                Some(origin) => notification(t, origin),
                None => return Ok(()),
            },
        };
        if let Some(n) = n {
            self.notify(&n)?;
        }
        Ok(())
    }

    /// Keeps the SLA clock's view of one finding row: `None` when the row is gone.
    fn observe_finding(&self, tenant_id: &str, finding_id: &str, row: Option<&FindingRow>) {
        if !self
            .inner
            .subscriptions
            .iter()
            .any(|s| s.events.contains(&Kind::FindingSlaBreached))
        {
            return;
        }
        let key = (tenant_id.to_owned(), finding_id.to_owned());
        let mut dues = self
            .inner
            .dues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match row {
            Some(f) if f.status == FindingStatus::Open && f.due_at.is_some() => {
                dues.insert(
                    key,
                    Due {
                        due: f.due_at.unwrap_or(f.opened_at),
                        opened: f.opened_at,
                        title: f.title.clone(),
                        severity: f.severity.as_str().to_owned(),
                        owner: f.owner.clone(),
                        // An exception without an expiry covers the finding for good.
                        covered_until: f
                            .exception_id
                            .as_ref()
                            .map(|_| f.exception_expires_at.unwrap_or(Timestamp(i64::MAX))),
                    },
                );
            }
            _ => {
                dues.remove(&key);
            }
        }
    }

    /// Notifies every open finding whose due date fell in `(since, now]` and that no live
    /// exception covers.
    fn check_slas(&self, since: Timestamp, now: Timestamp) -> Result<()> {
        let breached: Vec<Notification> = {
            let dues = self
                .inner
                .dues
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            dues.iter()
                .filter(|(_, d)| {
                    d.due > since && d.due <= now && d.covered_until.is_none_or(|u| u < d.due)
                })
                .map(|((tenant, finding), d)| {
                    Notification::new(
                        Kind::FindingSlaBreached,
                        tenant,
                        d.due,
                        &format!("{finding}\0{}\0{}", d.opened.0, d.due.0),
                        format!(
                            "{} finding {finding} ({}) is past its due date {}",
                            d.severity,
                            d.title,
                            d.due.to_rfc3339()
                        ),
                        json!({
                            "tenant_id": tenant, "finding_id": finding, "title": d.title,
                            "severity": d.severity, "owner": d.owner,
                            "opened_at": d.opened.to_rfc3339(), "due_at": d.due.to_rfc3339(),
                        }),
                    )
                })
                .collect()
        };
        for n in &breached {
            self.notify(n)?;
        }
        Ok(())
    }

    fn sla_mark(&self) -> PathBuf {
        self.inner.dir.join("sla-checked-until.json")
    }

    /// Sends due messages until `shutdown`; checks SLAs once `restored` (the follower replayed
    /// the state, so the clock knows every open finding).
    pub(crate) async fn run(
        self,
        mut restored: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        if !self.is_enabled() {
            shutdown.cancelled().await;
            return Ok(());
        }
        for s in &self.inner.subscriptions {
            // Only the origin: a Slack incoming-webhook URL's path is itself a secret.
            let origin = reqwest::Url::parse(&s.url)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default();
            tracing::info!(subscription = %s.id, %origin, events = ?s.events.iter().map(|k| k.as_str()).collect::<Vec<_>>(), retry_for = ?s.retry_for, "Webhook subscription.");
        }
        // The SLA clock resumes where it stopped; on a first start it begins now (no message
        // for findings that were overdue before the first start).
        let mut sla_since: Timestamp = match std::fs::read(self.sla_mark()) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Timestamp)
                .unwrap_or_else(|_| self.inner.clock.now()),
            Err(_) => self.inner.clock.now(),
        };
        let mut last_prune = std::time::Instant::now();
        loop {
            if *restored.borrow() {
                let now = self.inner.clock.now();
                if now > sla_since {
                    let me = self.clone();
                    tokio::task::block_in_place(|| me.check_slas(sla_since, now))?;
                    crate::store::write_atomic(&self.sla_mark(), &serde_json::to_vec(&now.0)?)?;
                    sla_since = now;
                }
            }
            self.send_due().await?;
            if last_prune.elapsed() > Duration::from_secs(3600) {
                self.prune_sent();
                last_prune = std::time::Instant::now();
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = restored.changed(), if !*restored.borrow() => {}
            }
        }
    }

    /// One pass: every message whose time has come, at most [`IN_FLIGHT`] at once.
    async fn send_due(&self) -> Result<()> {
        let now = self.inner.clock.now();
        let due: Vec<Message> = self
            .lock_pending()
            .values()
            .filter(|m| m.next_at <= now)
            .cloned()
            .collect();
        let results: Vec<(Message, std::result::Result<(), String>)> = futures::stream::iter(due)
            .map(|m| async move {
                let r = self.attempt(&m).await;
                (m, r)
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        for (m, r) in results {
            self.settle(m, r).await?;
        }
        Ok(())
    }

    fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.inner.subscriptions.iter().find(|s| s.id == id)
    }

    /// One signed POST; `Ok` on a 2xx answer.
    async fn attempt(&self, m: &Message) -> std::result::Result<(), String> {
        let Some(s) = self.subscription(&m.subscription) else {
            return Err(format!(
                "subscription {} is no longer configured",
                m.subscription
            ));
        };
        let body = m.notification.body(s.format);
        // The transport time (receivers check it against their clock), never the event time.
        let sent_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let signature = sign::signature(&s.key, &m.notification.id, sent_at, &body);
        let response = self
            .inner
            .client
            .post(&s.url)
            .timeout(s.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &m.notification.id)
            .header("webhook-timestamp", sent_at.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                // Without the URL: it may carry a secret (Slack's does) into logs and the DLQ.
                let e = e.without_url();
                format!(
                    "{e}: {}",
                    std::error::Error::source(&e)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        Err(format!("HTTP {status}: {text}"))
    }

    /// Records what an attempt did: sent, retried later, or dead.
    async fn settle(&self, mut m: Message, r: std::result::Result<(), String>) -> Result<()> {
        let sub = m.subscription.clone();
        let id = m.notification.id.clone();
        let pending = self.path("pending", &sub, &id);
        m.attempts += 1;
        match r {
            Ok(()) => {
                self.finish(&sub, &id, "sent", b"", "delivered")?;
                tracing::info!(subscription = %sub, %id, attempts = m.attempts, "Delivered a webhook message.");
            }
            Err(error) => {
                let now = self.inner.clock.now();
                let (retry_for, initial, max) = self
                    .subscription(&sub)
                    .map_or((Duration::ZERO, TICK, TICK), |s| {
                        (s.retry_for, s.initial_backoff, s.max_backoff)
                    });
                m.last_error = Some(error.clone());
                if now >= m.created_at.plus(retry_for) {
                    let body = m.notification.body(
                        self.subscription(&sub)
                            .map_or(event::Format::Standard, |s| s.format),
                    );
                    let source = format!("webhook:{sub}");
                    self.inner
                        .dead_letters
                        .send(DeadLetter {
                            topic: &source,
                            partition: -1,
                            offset: -1,
                            key: Some(id.as_bytes()),
                            payload: Some(&body),
                            stage: DlqStage::Deliver,
                            reason: "webhook_gave_up",
                            error: format!(
                                "{} attempts over {:?}; last: {error}",
                                m.attempts, retry_for
                            ),
                        })
                        .await?;
                    self.finish(&sub, &id, "dead", &serde_json::to_vec(&m)?, "dead_lettered")?;
                    tracing::error!(subscription = %sub, %id, attempts = m.attempts, %error, "Gave up on a webhook message; dead-lettered it.");
                } else {
                    m.next_at = now.plus(crate::schedule::backoff(m.attempts, initial, max));
                    crate::store::write_atomic(&pending, &serde_json::to_vec(&m)?)?;
                    tracing::warn!(subscription = %sub, %id, attempts = m.attempts, %error, next_at = %m.next_at, "A webhook delivery failed; it will be retried.");
                    self.inner
                        .metrics
                        .messages
                        .with_label_values(&[&sub, "failed"])
                        .inc();
                    self.lock_pending().insert((sub, id), m);
                }
            }
        }
        Ok(())
    }

    /// Ends a message: its file in `area` (`sent` or `dead`, written before the pending one is
    /// removed, so a crash in between leaves it in both and it is never sent again), counted
    /// under `outcome`.
    fn finish(&self, sub: &str, id: &str, area: &str, bytes: &[u8], outcome: &str) -> Result<()> {
        crate::store::write_atomic(&self.path(area, sub, id), bytes)?;
        remove(&self.path("pending", sub, id))?;
        self.lock_pending().remove(&(sub.to_owned(), id.to_owned()));
        self.inner.metrics.pending.with_label_values(&[sub]).dec();
        self.inner
            .metrics
            .messages
            .with_label_values(&[sub, outcome])
            .inc();
        Ok(())
    }

    /// Forgets sent ids older than [`SENT_KEPT`].
    fn prune_sent(&self) {
        for s in &self.inner.subscriptions {
            let dir = self.inner.dir.join("sent").join(&s.id);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > SENT_KEPT);
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// The notification for a blocker or readiness transition read at `origin`.
fn notification(t: &Transition, origin: &str) -> Option<Notification> {
    Some(match t {
        Transition::BlockerOpened(b) | Transition::BlockerResolved(b) => {
            let opened = matches!(t, Transition::BlockerOpened(_));
            let kind = if opened {
                Kind::BlockerOpened
            } else {
                Kind::BlockerResolved
            };
            Notification::new(
                kind,
                &b.tenant_id,
                b.detected_at,
                origin,
                format!(
                    "{} blocker {}{}: {}",
                    b.stage.as_str(),
                    b.blocker_id,
                    if opened { " opened" } else { " resolved" },
                    if opened { &b.meaning } else { &b.resolution }
                ),
                json!({
                    "tenant_id": b.tenant_id, "stage": b.stage.as_str(), "blocker_id": b.blocker_id,
                    "kind": b.kind.as_str(), "meaning": b.meaning, "resolution": b.resolution,
                    "subject": b.subject, "evidence": b.evidence, "detected_at": b.detected_at.to_rfc3339(),
                }),
            )
        }
        Transition::ReadinessChanged { before, after } => Notification::new(
            Kind::ReadinessChanged,
            &after.tenant_id,
            after.evaluated_at,
            origin,
            format!(
                "{} is {} ({} blockers)",
                after.stage.as_str(),
                if after.ready { "ready" } else { "not ready" },
                after.blocker_ids.len()
            ),
            json!({
                "tenant_id": after.tenant_id, "stage": after.stage.as_str(),
                "ready": after.ready, "was_ready": before, "blocker_ids": after.blocker_ids,
                "evaluated_at": after.evaluated_at.to_rfc3339(),
            }),
        ),
        Transition::Finding { .. } => return None,
    })
}

/// The notification of a report delivered by `attempt`.
pub(crate) fn report_delivered(
    r: &crate::store::ReportRecord,
    attempt: &crate::store::Attempt,
) -> Notification {
    Notification::new(
        Kind::ReportDelivered,
        &r.tenant_id,
        attempt.at,
        &attempt.event_id,
        format!(
            "{} report {} delivered by {}",
            r.report_type.as_str(),
            r.id,
            attempt.channel.as_str()
        ),
        json!({
            "tenant_id": r.tenant_id, "report_id": r.id, "report_type": r.report_type.as_str(),
            "attempt": attempt.attempt, "channel": attempt.channel.as_str(),
            "recipients": attempt.recipients, "packet_sha256": r.packet.zip_sha256,
            "delivered_at": attempt.at.to_rfc3339(),
        }),
    )
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aispm_runtime::clock::ManualClock;
    use aispm_runtime::kafka::KafkaConfig;

    fn outbox(dir: &Path) -> Webhooks {
        let subs = config::parse(
            "[[subscription]]\nid = \"s\"\nurl = \"http://127.0.0.1:9/x\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nevents = [\"report.delivered\"]\n",
            |_| None,
        )
        .unwrap();
        let metrics = Metrics::new("reporter").unwrap();
        let producer = KafkaConfig::local("127.0.0.1:9")
            .producer_config()
            .create()
            .unwrap();
        let dlq = DeadLetters::new(producer, "dlq", &metrics).unwrap();
        Webhooks::open(subs, dir, ManualClock::new(Timestamp(1_000)), dlq, &metrics).unwrap()
    }

    fn delivered(n: u32) -> Notification {
        Notification::new(
            Kind::ReportDelivered,
            "acme",
            Timestamp(0),
            &format!("r1/attempt/{n}"),
            "s".into(),
            json!({}),
        )
    }

    #[tokio::test]
    async fn the_outbox_survives_restarts_and_never_queues_a_change_twice() {
        let dir = tempfile::tempdir().unwrap();
        let w = outbox(dir.path());
        assert_eq!(w.notify(&delivered(1)).unwrap(), 1);
        assert_eq!(w.notify(&delivered(1)).unwrap(), 0, "already pending");
        let other = Notification {
            kind: Kind::BlockerOpened,
            ..delivered(2)
        };
        assert_eq!(w.notify(&other).unwrap(), 0, "no subscription wants it");
        drop(w);

        // A restart finds it pending; once sent, a restart forgets it and the same change is
        // not queued again.
        let w = outbox(dir.path());
        assert_eq!(w.pending(), 1);
        let m = w.lock_pending().values().next().cloned().unwrap();
        w.settle(m, Ok(())).await.unwrap();
        assert_eq!(w.pending(), 0);
        assert_eq!(w.notify(&delivered(1)).unwrap(), 0, "already sent");
        drop(w);
        assert_eq!(outbox(dir.path()).pending(), 0);

        // A crash between writing `sent/` and removing `pending/` leaves both: the restart
        // drops the pending copy instead of sending it again.
        let w = outbox(dir.path());
        w.notify(&delivered(3)).unwrap();
        let id = delivered(3).id;
        crate::store::write_atomic(&w.path("sent", "s", &id), b"").unwrap();
        drop(w);
        let w = outbox(dir.path());
        assert_eq!(w.pending(), 0);
        assert!(!w.path("pending", "s", &id).exists());

        // A failed attempt is kept with its attempt count and next time.
        w.notify(&delivered(4)).unwrap();
        let m = w.lock_pending().values().next().cloned().unwrap();
        w.settle(m, Err("HTTP 503".into())).await.unwrap();
        drop(w);
        let w = outbox(dir.path());
        let m = w.lock_pending().values().next().cloned().unwrap();
        assert_eq!((m.attempts, m.last_error.as_deref()), (1, Some("HTTP 503")));
        assert_eq!(m.next_at, Timestamp(1_000 + 5_000));
    }
}
