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
    let mut seen = 0;
    let mut governed = 0;
    let mut shadow = Vec::new();
    let mut high_paths = 0;
    let mut enforced = 0;
    let mut weak_controls = Vec::new();
    let mut open = Vec::new();
    let mut by_severity: std::collections::BTreeMap<&'static str, u64> =
        [("critical", 0), ("high", 0), ("medium", 0), ("low", 0)].into();
    let mut penalty = 0i64;
    let mut overdue = Vec::new();
    let mut risk_accepted = Vec::new();
    let mut expired_exceptions = Vec::new();
    let mut review_overdue = Vec::new();
    let mut evidence_total = 0;
    let mut verified = 0;
    let mut unverified = Vec::new();
    let mut counting_evidence = Vec::new();
    let mut delivered = Vec::new();
    let mut failed = Vec::new();
    let day_ago = Timestamp(now.0 - 24 * 3600 * 1000);
    let recent = |t: Option<Timestamp>| t.is_some_and(|t| t >= day_ago && t <= now);
    let mut opened_24h = Vec::new();
    let mut closed_24h = Vec::new();
    let mut evidence_24h = 0u64;
    let mut exceptions_24h = Vec::new();
    let mut new_assets_24h = Vec::new();
    for r in rows {
        match r {
            ViewRow::Finding(f) => {
                if recent(Some(f.opened_at)) {
                    opened_24h.push(f.finding_id.clone());
                }
                if recent(f.closed_at) {
                    closed_24h.push(f.finding_id.clone());
                }
            }
            ViewRow::Evidence(e) if recent(Some(e.recorded_at)) => evidence_24h += 1,
            ViewRow::Exception(x) if recent(Some(x.granted_at)) => {
                exceptions_24h.push(x.exception_id.clone())
            }
            ViewRow::Coverage(c) if recent(c.first_seen) => {
                new_assets_24h.push(format!("{}/{}", c.kind, c.id))
            }
            _ => {}
        }
        match r {
            ViewRow::Coverage(c) if c.kind != CoverageKind::ActionPath && c.decisions > 0 => {
                seen += 1;
                if c.registered {
                    governed += 1;
                } else {
                    shadow.push(format!("{}/{}", c.kind, c.id));
                }
            }
            ViewRow::Control(c) if c.high_risk_decisions > 0 => {
                high_paths += 1;
                if c.state == ControlState::Enforced {
                    enforced += 1;
                } else {
                    weak_controls.push(c.control_id.clone());
                }
            }
            ViewRow::Finding(f) if f.status == FindingStatus::Open => {
                open.push(f.finding_id.clone());
                *by_severity.entry(f.severity.as_str()).or_default() += 1;
                penalty += match f.severity {
                    Risk::Critical => 25,
                    Risk::High => 10,
                    Risk::Medium => 3,
                    Risk::Low => 1,
                };
                match clock::row_sla(f, now) {
                    clock::Sla::Overdue => overdue.push(f.finding_id.clone()),
                    clock::Sla::RiskAccepted => risk_accepted.push(f.finding_id.clone()),
                    _ => {}
                }
            }
            ViewRow::Exception(x) => {
                match clock::exception_state(x, windows.break_glass_review_window, now) {
                    clock::ExceptionState::Expired => {
                        expired_exceptions.push(x.exception_id.clone())
                    }
                    clock::ExceptionState::ReviewOverdue => {
                        review_overdue.push(x.exception_id.clone())
                    }
                    _ => {}
                }
            }
            ViewRow::Evidence(e) => {
                evidence_total += 1;
                if e.signature_state == SignatureState::Verified {
                    verified += 1;
                } else {
                    unverified.push(e.evidence_id.clone());
                }
                counting_evidence.push(e);
            }
            ViewRow::Delivery(d)
                if d.outcome == "delivered" && d.approved_recipients && d.evidence_id.is_some() =>
            {
                delivered.push(d.report_id.clone())
            }
            ViewRow::Delivery(d) if d.outcome != "delivered" => failed.push(d.report_id.clone()),
            _ => {}
        }
    }
    let mut last_24h = json!({
        "since": day_ago,
        "evidence_recorded": evidence_24h,
        "drill_down": {
            "findings_opened": opened_24h,
            "findings_closed": closed_24h,
            "exceptions_granted": exceptions_24h,
            "assets_first_seen": new_assets_24h,
        },
    });
    cap_drill_down(&mut last_24h);
    // Only evidence that counts for freshness (not synthetic, signature not invalid).
    let newest = clock::newest_evidence(counting_evidence.iter().copied());
    let newest_evidence = newest.map(|e| e.recorded_at);
    // Per stage, only the evidence of its own environment (as the gatekeeper reads it).
    let stale = |stage| {
        let own = clock::newest_evidence(
            counting_evidence
                .iter()
                .copied()
                .filter(|e| e.counts_for(stage)),
        );
        clock::evidence_stale(
            own.map(|e| e.recorded_at),
            windows.evidence_freshness(stage),
            now,
        )
    };
    let layers = json!({
        "coverage": {
            "score": pct(governed, seen),
            "detail": format!("{governed} of {seen} assets seen in decisions are registered"),
            "drill_down": {"shadow_assets": shadow},
        },
        "controls": {
            "score": pct(enforced, high_paths),
            "detail": format!("{enforced} of {high_paths} controls on high-risk paths are enforced"),
            "drill_down": {"not_enforced": weak_controls},
        },
        "findings": {
            "score": (100 - penalty).max(0),
            "detail": format!("{} open findings, {} overdue", open.len(), overdue.len()),
            "open_by_severity": by_severity,
            "drill_down": {
                "open": open,
                "overdue": overdue,
                "risk_accepted": risk_accepted,
                "expired_exceptions": expired_exceptions,
                "break_glass_review_overdue": review_overdue,
            },
        },
        "evidence": {
            "score": pct(verified, evidence_total),
            "detail": format!("{verified} of {evidence_total} evidence artefacts verify against a trust root"),
            "newest_at": newest_evidence,
            "newest_id": newest.map(|e| e.evidence_id.clone()),
            "age_seconds": newest_evidence.map(|t| (now.0 - t.0).max(0) / 1000),
            "stale": {
                "trial": stale(Stage::Trial),
                "pilot": stale(Stage::Pilot),
                "production": stale(Stage::Production),
            },
            "drill_down": {"unverified": unverified},
        },
        "reports": {
            "score": if delivered.is_empty() { 0 } else { 100 },
            "detail": format!("{} packets delivered to approved recipients with audit evidence", delivered.len()),
            "drill_down": {"delivered": delivered, "failed": failed},
        },
    });
    let mut layers = layers;
    for name in LAYERS {
        cap_drill_down(&mut layers[name]);
    }
    layers["findings"]["lists"] = json!({
        "open": "/findings?status=open",
        "overdue": "/findings?status=open&sla=overdue",
        "risk_accepted": "/findings?status=open&sla=risk_accepted",
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

/// Caps each drill-down list of a layer at [`DRILL_CAP`] ids and records every list's full
/// length under `counts`, so a tenant with 100k open findings answers a bounded posture.
fn cap_drill_down(layer: &mut Value) {
    let mut counts = serde_json::Map::new();
    if let Some(lists) = layer["drill_down"].as_object_mut() {
        for (name, ids) in lists.iter_mut() {
            if let Some(a) = ids.as_array_mut() {
                counts.insert(name.clone(), json!(a.len()));
                a.truncate(DRILL_CAP);
            }
        }
    }
    layer["counts"] = Value::Object(counts);
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
    let mut rows = Vec::new();
    for (view, _) in columns::VIEWS {
        for (_, v) in store.scan_prefix(columns::view_cf(view), &prefix)? {
            rows.push(decode_row(view, &v)?);
        }
    }
    Ok(compute(tenant, &rows, windows, now))
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
        self.store.write(batch)
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
        let ids: Vec<String> = (0..DRILL_CAP + 5).map(|i| format!("f{i}")).collect();
        let mut layer = json!({"score": 1, "drill_down": {"open": ids, "overdue": ["f1"]}});
        cap_drill_down(&mut layer);
        assert_eq!(
            layer["drill_down"]["open"].as_array().unwrap().len(),
            DRILL_CAP
        );
        assert_eq!(layer["counts"]["open"], DRILL_CAP + 5);
        assert_eq!(layer["counts"]["overdue"], 1);
        assert_eq!(layer["drill_down"]["overdue"], json!(["f1"]));
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
