//! The posture: a score per layer (coverage, control state, findings, evidence, reports), each
//! with the row ids behind it so an operator can drill from the number to the events. Overdue,
//! expired, unreviewed and stale are [`aispm_schemas::clock`]'s rules, with the gatekeeper's
//! windows.

use crate::project::decode_row;
use crate::state::{Tag, state_key};
use crate::store::{Store, columns};
use aispm_schemas::*;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most ids a drill-down list carries; its `count` says how many there are, and `lists` names
/// the list route that pages through all of them where one filters for them.
pub(crate) const DRILL_CAP: usize = 100;

/// The layers, in the order they are shown.
pub(crate) const LAYERS: [&str; 5] = ["coverage", "controls", "findings", "evidence", "reports"];

fn pct(good: usize, total: usize) -> f64 {
    if total == 0 {
        100.0
    } else {
        (good as f64 * 1000.0 / total as f64).round() / 10.0
    }
}

/// Computes the posture from a tenant's rows at `now`, judged with `windows`.
pub fn compute(tenant: &str, rows: &[ViewRow], windows: &clock::Windows, now: Timestamp) -> Value {
    let mut fold = Fold::new(windows, now);
    for r in rows {
        fold.add(r);
    }
    fold.finish(tenant)
}

/// A drill-down list as it is gathered: its first [`DRILL_CAP`] ids and how many there are.
#[derive(Debug, Default)]
struct Drill {
    ids: Vec<String>,
    count: usize,
}

impl Drill {
    fn push(&mut self, id: impl FnOnce() -> String) {
        if self.ids.len() < DRILL_CAP {
            self.ids.push(id());
        }
        self.count += 1;
    }

    fn len(&self) -> usize {
        self.count
    }
}

/// `{"drill_down": {name: ids…}, "counts": {name: count…}}` of a layer's lists.
fn drill_down<const N: usize>(lists: [(&str, Drill); N]) -> (Value, Value) {
    let mut ids = serde_json::Map::new();
    let mut counts = serde_json::Map::new();
    for (name, d) in lists {
        counts.insert(name.to_owned(), json!(d.count));
        ids.insert(name.to_owned(), json!(d.ids));
    }
    (Value::Object(ids), Value::Object(counts))
}

/// The posture's one pass over a tenant's rows: each row is folded in as it is read, so what
/// a computation holds is the counts, the first ids of each list and the newest evidence, not
/// the tenant's rows (which grow with its history).
struct Fold<'w> {
    windows: &'w clock::Windows,
    now: Timestamp,
    day_ago: Timestamp,
    seen: usize,
    governed: usize,
    shadow: Drill,
    high_paths: usize,
    enforced: usize,
    weak_controls: Drill,
    open: Drill,
    by_severity: std::collections::BTreeMap<&'static str, u64>,
    penalty: i64,
    overdue: Drill,
    risk_accepted: Drill,
    expired_exceptions: Drill,
    review_overdue: Drill,
    evidence_total: usize,
    verified: usize,
    unverified: Drill,
    /// The newest evidence that counts for freshness ([`clock::newest_evidence`]), overall
    /// and per stage (its own environment's, as the gatekeeper reads it).
    newest: Option<EvidenceRow>,
    newest_per_stage: [Option<EvidenceRow>; 3],
    delivered: Drill,
    failed: Drill,
    opened_24h: Drill,
    closed_24h: Drill,
    evidence_24h: u64,
    exceptions_24h: Drill,
    new_assets_24h: Drill,
}

/// `slot` becomes the newer of itself and `e` by [`clock::newest_evidence`]'s order.
fn keep_newest_evidence(slot: &mut Option<EvidenceRow>, e: &EvidenceRow) {
    let newer = match slot {
        None => clock::newest_evidence([e]).is_some(),
        Some(best) => clock::newest_evidence([&*best, e]).is_some_and(|n| std::ptr::eq(n, e)),
    };
    if newer {
        *slot = Some(e.clone());
    }
}

impl<'w> Fold<'w> {
    fn new(windows: &'w clock::Windows, now: Timestamp) -> Self {
        Fold {
            windows,
            now,
            day_ago: Timestamp(now.0 - 24 * 3600 * 1000),
            seen: 0,
            governed: 0,
            shadow: Drill::default(),
            high_paths: 0,
            enforced: 0,
            weak_controls: Drill::default(),
            open: Drill::default(),
            by_severity: [("critical", 0), ("high", 0), ("medium", 0), ("low", 0)].into(),
            penalty: 0,
            overdue: Drill::default(),
            risk_accepted: Drill::default(),
            expired_exceptions: Drill::default(),
            review_overdue: Drill::default(),
            evidence_total: 0,
            verified: 0,
            unverified: Drill::default(),
            newest: None,
            newest_per_stage: [None, None, None],
            delivered: Drill::default(),
            failed: Drill::default(),
            opened_24h: Drill::default(),
            closed_24h: Drill::default(),
            evidence_24h: 0,
            exceptions_24h: Drill::default(),
            new_assets_24h: Drill::default(),
        }
    }

    fn recent(&self, t: Option<Timestamp>) -> bool {
        t.is_some_and(|t| t >= self.day_ago && t <= self.now)
    }

    fn add(&mut self, r: &ViewRow) {
        let now = self.now;
        match r {
            ViewRow::Finding(f) => {
                if self.recent(Some(f.opened_at)) {
                    self.opened_24h.push(|| f.finding_id.clone());
                }
                if self.recent(f.closed_at) {
                    self.closed_24h.push(|| f.finding_id.clone());
                }
            }
            ViewRow::Evidence(e) if self.recent(Some(e.recorded_at)) => self.evidence_24h += 1,
            ViewRow::Exception(x) if self.recent(Some(x.granted_at)) => {
                self.exceptions_24h.push(|| x.exception_id.clone())
            }
            ViewRow::Coverage(c) if self.recent(c.first_seen) => {
                self.new_assets_24h.push(|| format!("{}/{}", c.kind, c.id))
            }
            _ => {}
        }
        match r {
            ViewRow::Coverage(c) if c.kind != CoverageKind::ActionPath && c.decisions > 0 => {
                self.seen += 1;
                if c.registered {
                    self.governed += 1;
                } else {
                    self.shadow.push(|| format!("{}/{}", c.kind, c.id));
                }
            }
            ViewRow::Control(c) if c.high_risk_decisions > 0 => {
                self.high_paths += 1;
                if c.state == ControlState::Enforced {
                    self.enforced += 1;
                } else {
                    self.weak_controls.push(|| c.control_id.clone());
                }
            }
            ViewRow::Finding(f) if f.status == FindingStatus::Open => {
                self.open.push(|| f.finding_id.clone());
                *self.by_severity.entry(f.severity.as_str()).or_default() += 1;
                self.penalty += match f.severity {
                    Risk::Critical => 25,
                    Risk::High => 10,
                    Risk::Medium => 3,
                    Risk::Low => 1,
                };
                match clock::row_sla(f, now) {
                    clock::Sla::Overdue => self.overdue.push(|| f.finding_id.clone()),
                    clock::Sla::RiskAccepted => self.risk_accepted.push(|| f.finding_id.clone()),
                    _ => {}
                }
            }
            ViewRow::Exception(x) => {
                match clock::exception_state(x, self.windows.break_glass_review_window, now) {
                    clock::ExceptionState::Expired => {
                        self.expired_exceptions.push(|| x.exception_id.clone())
                    }
                    clock::ExceptionState::ReviewOverdue => {
                        self.review_overdue.push(|| x.exception_id.clone())
                    }
                    _ => {}
                }
            }
            ViewRow::Evidence(e) => {
                self.evidence_total += 1;
                if e.signature_state == SignatureState::Verified {
                    self.verified += 1;
                } else {
                    self.unverified.push(|| e.evidence_id.clone());
                }
                keep_newest_evidence(&mut self.newest, e);
                for stage in Stage::ALL.iter().copied() {
                    if e.counts_for(stage) {
                        keep_newest_evidence(&mut self.newest_per_stage[stage.index()], e);
                    }
                }
            }
            ViewRow::Delivery(d)
                if d.outcome == "delivered" && d.approved_recipients && d.evidence_id.is_some() =>
            {
                self.delivered.push(|| d.report_id.clone())
            }
            ViewRow::Delivery(d) if d.outcome != "delivered" => {
                self.failed.push(|| d.report_id.clone())
            }
            _ => {}
        }
    }

    fn finish(self, tenant: &str) -> Value {
        let (now, windows) = (self.now, self.windows);
        let (drill, counts) = drill_down([
            ("findings_opened", self.opened_24h),
            ("findings_closed", self.closed_24h),
            ("exceptions_granted", self.exceptions_24h),
            ("assets_first_seen", self.new_assets_24h),
        ]);
        let last_24h = json!({
            "since": self.day_ago,
            "evidence_recorded": self.evidence_24h,
            "drill_down": drill,
            "counts": counts,
        });
        let newest_evidence = self.newest.as_ref().map(|e| e.recorded_at);
        let stale = |stage: Stage| {
            clock::evidence_stale(
                self.newest_per_stage[stage.index()]
                    .as_ref()
                    .map(|e| e.recorded_at),
                windows.evidence_freshness(stage),
                now,
            )
        };
        let (seen, governed, high_paths, enforced) =
            (self.seen, self.governed, self.high_paths, self.enforced);
        let (open, overdue) = (self.open.len(), self.overdue.len());
        let (coverage_drill, coverage_counts) = drill_down([("shadow_assets", self.shadow)]);
        let (controls_drill, controls_counts) = drill_down([("not_enforced", self.weak_controls)]);
        let (findings_drill, findings_counts) = drill_down([
            ("open", self.open),
            ("overdue", self.overdue),
            ("risk_accepted", self.risk_accepted),
            ("expired_exceptions", self.expired_exceptions),
            ("break_glass_review_overdue", self.review_overdue),
        ]);
        let (evidence_drill, evidence_counts) = drill_down([("unverified", self.unverified)]);
        let delivered = self.delivered.len();
        let (reports_drill, reports_counts) =
            drill_down([("delivered", self.delivered), ("failed", self.failed)]);
        let layers = json!({
            "coverage": {
                "score": pct(governed, seen),
                "detail": format!("{governed} of {seen} assets seen in decisions are registered"),
                "drill_down": coverage_drill,
                "counts": coverage_counts,
            },
            "controls": {
                "score": pct(enforced, high_paths),
                "detail": format!("{enforced} of {high_paths} controls on high-risk paths are enforced"),
                "drill_down": controls_drill,
                "counts": controls_counts,
            },
            "findings": {
                "score": (100 - self.penalty).max(0),
                "detail": format!("{open} open findings, {overdue} overdue"),
                "open_by_severity": self.by_severity,
                "drill_down": findings_drill,
                "counts": findings_counts,
                "lists": {
                    "open": "/findings?status=open",
                    "overdue": "/findings?status=open&sla=overdue",
                    "risk_accepted": "/findings?status=open&sla=risk_accepted",
                },
            },
            "evidence": {
                "score": pct(self.verified, self.evidence_total),
                "detail": format!(
                    "{} of {} evidence artefacts verify against a trust root",
                    self.verified, self.evidence_total
                ),
                "newest_at": newest_evidence,
                "newest_id": self.newest.as_ref().map(|e| e.evidence_id.clone()),
                "age_seconds": newest_evidence.map(|t| (now.0 - t.0).max(0) / 1000),
                "stale": {
                    "trial": stale(Stage::Trial),
                    "pilot": stale(Stage::Pilot),
                    "production": stale(Stage::Production),
                },
                "drill_down": evidence_drill,
                "counts": evidence_counts,
            },
            "reports": {
                "score": if delivered == 0 { 0 } else { 100 },
                "detail": format!("{delivered} packets delivered to approved recipients with audit evidence"),
                "drill_down": reports_drill,
                "counts": reports_counts,
            },
        });
        let scores: Vec<f64> = LAYERS
            .iter()
            .filter_map(|l| layers[l]["score"].as_f64())
            .collect();
        let overall = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
        json!({
            "tenant_id": tenant,
            "score": (overall * 10.0).round() / 10.0,
            "layers": layers,
            "last_24h": last_24h,
            "evaluated_at": now,
        })
    }
}

/// Reads every row of a tenant's views and computes its posture at `now` (blocking: call it
/// off the async runtime).
pub(crate) fn compute_stored(
    store: &Store,
    tenant: &str,
    windows: &clock::Windows,
    now: Timestamp,
) -> crate::error::Result<Value> {
    let prefix = columns::tenant_prefix(tenant);
    let mut fold = Fold::new(windows, now);
    for (view, _) in columns::VIEWS {
        store.walk_from(columns::view_cf(view), &prefix, &prefix, |_, v| {
            fold.add(&decode_row(view, v)?);
            Ok(true)
        })?;
    }
    Ok(fold.finish(tenant))
}

/// A tenant's posture as last computed.
#[derive(Debug, Clone)]
struct Kept {
    value: Arc<Value>,
    /// When its computation started and how long it took.
    started: Instant,
    took: Duration,
}

/// Keeps each tenant's posture computed off the request path: a tenant the projector applied
/// events for is recomputed at most every [`Keeper::MIN_EVERY`] (or ten times as long as its
/// last computation took, so a tenant of 100k findings costs a bounded share of a core), and
/// every kept posture at least every [`Keeper::REFRESH`] (its clock-dependent states: overdue,
/// expired, stale). `/posture` answers with `computed_at`: fresh for a small tenant (see
/// [`Keeper::get`]), the kept one for a large tenant, whose page must not wait for a scan of
/// every row. Each computation is also a sample of the tenant's trend: the
/// last one of each hour is stored (`Tag::Trend`, kept [`Keeper::TREND_DAYS`] days).
#[derive(Debug)]
pub(crate) struct Keeper {
    store: Arc<Store>,
    windows: clock::Windows,
    kept: Mutex<HashMap<String, Kept>>,
    changed: Mutex<HashSet<String>>,
    /// One computation at a time per tenant: a request waits for the one running and then
    /// shares the next (one that started after it asked), so a burst of first requests for a
    /// large tenant costs two scans, not one per request, and no answer predates its request.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Computations run (the tests count them).
    computations: std::sync::atomic::AtomicU64,
}

/// One hour's sample of a tenant's posture.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct TrendSample {
    pub at: Timestamp,
    pub score: f64,
    /// Score per layer, in [`LAYERS`] order.
    pub layers: Vec<f64>,
    pub open_findings: u64,
}

const HOUR_MS: i64 = 3600 * 1000;

impl Keeper {
    pub(crate) const MIN_EVERY: Duration = Duration::from_secs(5);
    /// A tenant whose posture computes faster than this is computed fresh on request.
    pub(crate) const FRESH_BUDGET: Duration = Duration::from_millis(20);
    pub(crate) const REFRESH: Duration = Duration::from_secs(300);
    pub(crate) const TREND_DAYS: i64 = 30;

    pub(crate) fn new(store: Arc<Store>, windows: clock::Windows) -> Self {
        Keeper {
            store,
            windows,
            kept: Mutex::new(HashMap::new()),
            changed: Mutex::new(HashSet::new()),
            flights: Mutex::new(HashMap::new()),
            computations: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many computations have run.
    #[cfg(test)]
    pub(crate) fn computations(&self) -> u64 {
        self.computations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The projector applied events for these tenants.
    pub(crate) fn changed<'a>(&self, tenants: impl Iterator<Item = &'a str>) {
        if let Ok(mut c) = self.changed.lock() {
            for t in tenants {
                if !c.contains(t) {
                    c.insert(t.to_owned());
                }
            }
        }
    }

    /// The tenant's posture: computed now when none is kept or its last computation took less
    /// than [`Keeper::FRESH_BUDGET`]; otherwise the kept one (its `computed_at` says when).
    pub(crate) async fn get(self: &Arc<Self>, tenant: &str) -> crate::error::Result<Arc<Value>> {
        let kept = self
            .kept
            .lock()
            .ok()
            .and_then(|k| k.get(tenant).map(|k| (Arc::clone(&k.value), k.took)));
        match kept {
            Some((v, took)) if took >= Self::FRESH_BUDGET => Ok(v),
            _ => self.recompute(tenant).await,
        }
    }

    /// Computes the tenant's posture now, keeps it and stores it as the hour's trend sample;
    /// or, when another computation started after this was asked and while it waited for its
    /// turn, answers that one's result.
    async fn recompute(self: &Arc<Self>, tenant: &str) -> crate::error::Result<Arc<Value>> {
        let asked = Instant::now();
        let flight = match self.flights.lock() {
            Ok(mut f) => Arc::clone(f.entry(tenant.to_owned()).or_default()),
            Err(_) => Arc::default(),
        };
        let _turn = flight.lock().await;
        let shared = self.kept.lock().ok().and_then(|k| {
            k.get(tenant)
                .filter(|k| k.started >= asked)
                .map(|k| Arc::clone(&k.value))
        });
        if let Some(v) = shared {
            return Ok(v);
        }
        self.computations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let me = Arc::clone(self);
        let t = tenant.to_owned();
        let started = Instant::now();
        let (value, took) = tokio::task::spawn_blocking(move || {
            let now = Timestamp::now();
            let mut v = compute_stored(&me.store, &t, &me.windows, now)?;
            v["computed_at"] = json!(now);
            v["compute_ms"] = json!(started.elapsed().as_millis() as u64);
            me.store_sample(&t, &v, now)?;
            Ok::<_, crate::error::Error>((v, started.elapsed()))
        })
        .await
        .map_err(|e| crate::error::Error::Other(e.to_string()))??;
        let value = Arc::new(value);
        if let Ok(mut k) = self.kept.lock() {
            k.insert(
                tenant.to_owned(),
                Kept {
                    value: Arc::clone(&value),
                    started,
                    took,
                },
            );
        }
        Ok(value)
    }

    /// Tenants due for a recomputation.
    fn due(&self) -> Vec<String> {
        let (Ok(kept), Ok(mut changed)) = (self.kept.lock(), self.changed.lock()) else {
            return vec![];
        };
        let mut due = Vec::new();
        for (t, k) in kept.iter() {
            let age = k.started.elapsed();
            let gap = Self::MIN_EVERY.max(k.took * 10);
            if (changed.contains(t) && age >= gap) || age >= Self::REFRESH {
                due.push(t.clone());
            }
        }
        // Changed tenants never kept yet: computed once, so that they have a trend.
        due.extend(changed.iter().filter(|t| !kept.contains_key(*t)).cloned());
        for t in &due {
            changed.remove(t);
        }
        due
    }

    /// Recomputes the due tenants every second until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            for t in self.due() {
                if let Err(e) = self.recompute(&t).await {
                    tracing::warn!(tenant = %t, error = %e, "Could not compute the posture.");
                }
            }
        }
    }

    fn store_sample(&self, tenant: &str, v: &Value, now: Timestamp) -> crate::error::Result<()> {
        let sample = TrendSample {
            at: now,
            score: v["score"].as_f64().unwrap_or(0.0),
            layers: LAYERS
                .iter()
                .map(|l| v["layers"][l]["score"].as_f64().unwrap_or(0.0))
                .collect(),
            open_findings: v["layers"]["findings"]["counts"]["open"]
                .as_u64()
                .unwrap_or(0),
        };
        let hour = now.0.div_euclid(HOUR_MS) * HOUR_MS;
        let mut batch = rocksdb::WriteBatch::default();
        let key = |h: i64| state_key(tenant, Tag::Trend, &format!("{:020}", h.max(0)));
        self.store.batch_put(
            &mut batch,
            columns::STATE,
            &key(hour),
            &crate::store::encode(&sample),
        )?;
        // The sample that fell out of the window.
        self.store.batch_delete(
            &mut batch,
            columns::STATE,
            &key(hour - Self::TREND_DAYS * 24 * HOUR_MS),
        )?;
        // A sample is taken at a time, not derived from the input topics: no replay makes it
        // again, so it is logged even when the views are not.
        self.store.write_logged(batch)
    }

    /// The tenant's hourly samples since `since`, oldest first.
    pub(crate) fn trend(
        &self,
        tenant: &str,
        since: Timestamp,
    ) -> crate::error::Result<Vec<TrendSample>> {
        let prefix = state_key(tenant, Tag::Trend, "");
        let start = state_key(tenant, Tag::Trend, &format!("{:020}", since.0.max(0)));
        let limit = usize::try_from(Self::TREND_DAYS * 24 + 1).unwrap_or(usize::MAX);
        self.store
            .scan_from(columns::STATE, &prefix, &start, limit)?
            .iter()
            .map(|(_, v)| crate::store::decode(v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_downs_are_capped_and_counted() {
        let mut open = Drill::default();
        for i in 0..DRILL_CAP + 5 {
            open.push(|| format!("f{i}"));
        }
        let mut overdue = Drill::default();
        overdue.push(|| "f1".into());
        let (drill, counts) = drill_down([("open", open), ("overdue", overdue)]);
        assert_eq!(drill["open"].as_array().unwrap().len(), DRILL_CAP);
        assert_eq!(drill["open"][0], "f0", "the first ids, in row order");
        assert_eq!(counts["open"], DRILL_CAP + 5);
        assert_eq!(counts["overdue"], 1);
        assert_eq!(drill["overdue"], json!(["f1"]));
    }

    // One runtime thread: every request of the burst has asked before the first computation
    // (on the blocking pool) hands its answer back, whatever else loads the machine, which is
    // what a burst is; on worker threads a loaded machine spreads the requests out in time.
    #[tokio::test]
    async fn a_burst_of_requests_shares_the_computations() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 8 << 20, false).unwrap());
        let keeper = Arc::new(Keeper::new(store, clock::Windows::default()));
        let burst = (0..32).map(|_| {
            let k = Arc::clone(&keeper);
            tokio::spawn(async move { k.recompute("acme").await.map(|v| v["computed_at"].clone()) })
        });
        let answers = futures::future::join_all(burst).await;
        assert!(answers.iter().all(|a| matches!(a, Ok(Ok(_)))));
        let runs = keeper.computations();
        assert!(
            (1..=2).contains(&runs),
            "{runs} computations for 32 requests"
        );
        // Asked again afterwards: computed again (no answer predates its request).
        keeper.recompute("acme").await.unwrap();
        assert_eq!(keeper.computations(), runs + 1);
    }
}
