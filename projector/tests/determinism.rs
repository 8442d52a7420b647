//! The views are a function of the set of events: any batching, any duplication, and any
//! production order of the same events give byte-identical views.

use aispm_projector::store::Store;
use aispm_projector::{Engine, Input, Settings, Sink};
use aispm_schemas::codec::encode_single_object;
use aispm_schemas::signature;
use aispm_schemas::views::ViewOp;
use aispm_schemas::*;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_763_719_200_000;

fn settings() -> Settings {
    Settings {
        runaway_per_minute: 3,
        loop_repeats: 3,
        denials_per_minute: 3,
        retries_per_minute: 2,
        break_glass_review_ms: 20 * 60_000,
        unused_scope_ms: 20 * 60_000,
        approval_decision_ms: 20 * 60_000,
        ..Settings::default()
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32])
}

/// Blueprint of one event; ids are filled in by position so they are unique.
#[derive(Debug, Clone)]
enum Spec {
    Decision {
        tenant: &'static str,
        agent: &'static str,
        kind: ActionKind,
        tool: &'static str,
        endpoint: &'static str,
        control: Option<&'static str>,
        shadow: bool,
        verdict: Verdict,
        risk: Risk,
        classes: Vec<&'static str>,
        synthetic: bool,
        evidence: u8,
        minute: i64,
    },
    Approval {
        tenant: &'static str,
        kind: ApprovalKind,
        target: usize,
        rule: &'static str,
        minute: i64,
    },
    Asset {
        tenant: &'static str,
        kind: AssetKind,
        id: &'static str,
        bad: bool,
        retired: bool,
        minute: i64,
    },
    Validation {
        tenant: &'static str,
        check: CheckKind,
        pass: bool,
        minute: i64,
    },
}

fn spec() -> impl Strategy<Value = Spec> {
    let tenant = select(vec!["acme", "globex"]);
    let minute = 0..90i64;
    prop_oneof![
        6 => ((tenant.clone(), select(vec!["a1", "a2", "a3"]), select(ActionKind::ALL), select(vec!["s1/x", "s1/y", "s2/z"]), select(vec!["m1", "m2"]), proptest::option::of(select(vec!["c1", "c2"]))), (any::<bool>(), select(Verdict::ALL), select(Risk::ALL), proptest::collection::vec(select(vec!["pii", "secret"]), 0..2), any::<bool>(), 0..4u8, minute.clone()))
            .prop_map(|((tenant, agent, kind, tool, endpoint, control), (shadow, verdict, risk, classes, synthetic, evidence, minute))| Spec::Decision { tenant, agent, kind, tool, endpoint, control, shadow, verdict, risk, classes, synthetic, evidence, minute }),
        3 => (tenant.clone(), select(ApprovalKind::ALL), 0..40usize, select(vec!["AISPM-APR-001", "AISPM-SHADOW-001", "AISPM-DATA-001", "AISPM-EV-001", "AISPM-EV-002"]), minute.clone())
            .prop_map(|(tenant, kind, target, rule, minute)| Spec::Approval { tenant, kind, target, rule, minute }),
        3 => (tenant.clone(), select(vec![AssetKind::Agent, AssetKind::McpTool, AssetKind::McpServer, AssetKind::ModelEndpoint, AssetKind::ApiKey, AssetKind::TrustRoot, AssetKind::Control]), select(vec!["a1", "a2", "s1/x", "s1", "m1", "m2", "k1", "c1"]), any::<bool>(), prop::bool::weighted(0.2), minute.clone())
            .prop_map(|(tenant, kind, id, bad, retired, minute)| Spec::Asset { tenant, kind, id, bad, retired, minute }),
        1 => (tenant, select(CheckKind::ALL), any::<bool>(), minute)
            .prop_map(|(tenant, check, pass, minute)| Spec::Validation { tenant, check, pass, minute }),
    ]
}

/// A low-risk, enforced decision of acme's `agent` under `control`, to model endpoint m1, with
/// no data class and no evidence: the decision the focused tests below vary.
fn low(
    agent: &'static str,
    kind: ActionKind,
    tool: &'static str,
    control: &'static str,
    verdict: Verdict,
    minute: i64,
) -> Spec {
    Spec::Decision {
        tenant: "acme",
        agent,
        kind,
        tool,
        endpoint: "m1",
        control: Some(control),
        shadow: false,
        verdict,
        risk: Risk::Low,
        classes: vec![],
        synthetic: false,
        evidence: 0,
        minute,
    }
}

/// Builds the concrete events: (topic, event bytes).
fn build(specs: &[Spec], topics: &Topics) -> Vec<(String, Vec<u8>, String)> {
    let sk = key();
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let id = format!("ev{i}");
            match s {
                Spec::Decision {
                    tenant,
                    agent,
                    kind,
                    tool,
                    endpoint,
                    control,
                    shadow,
                    verdict,
                    risk,
                    classes,
                    synthetic,
                    evidence,
                    minute,
                } => {
                    let (server, tool_name) = tool.split_once('/').unwrap();
                    let digest = [u8::try_from(i % 251).unwrap(); 32];
                    let ev = match evidence {
                        0 => None,
                        1 => Some(Evidence {
                            evidence_id: format!("evd{}", i % 7),
                            sha256: hex(&digest),
                            uri: "s3://e".into(),
                            signature: None,
                            key_id: None,
                        }),
                        2 => Some(Evidence {
                            evidence_id: format!("evd{}", i % 7),
                            sha256: hex(&digest),
                            uri: "s3://e".into(),
                            signature: Some(signature::sign(
                                &sk,
                                tenant,
                                &format!("evd{}", i % 7),
                                &digest,
                            )),
                            key_id: Some("k1".into()),
                        }),
                        _ => Some(Evidence {
                            evidence_id: format!("evd{}", i % 7),
                            sha256: hex(&digest),
                            uri: "s3://e".into(),
                            signature: Some(signature::sign(
                                &SigningKey::from_bytes(&[1; 32]),
                                tenant,
                                &format!("evd{}", i % 7),
                                &digest,
                            )),
                            key_id: Some("k1".into()),
                        }),
                    };
                    let d = DecisionEvent {
                        event_id: id,
                        tenant_id: (*tenant).into(),
                        occurred_at: Timestamp(T0 + minute * 60_000 + i as i64),
                        source: "gw".into(),
                        agent_id: (*agent).into(),
                        actor: "alice".into(),
                        environment: Environment::ALL[(*minute % 3) as usize],
                        action_kind: *kind,
                        target: "t".into(),
                        repo: Some("acme/app".into()),
                        workflow: None,
                        mcp_server: Some(server.into()),
                        mcp_tool: Some(tool_name.into()),
                        model_endpoint: Some((*endpoint).into()),
                        control_id: control.map(Into::into),
                        // Two policies by minute: a control's policies and their first and
                        // last use are order-free.
                        policy_id: Some(["pol-a", "pol-b"][(*minute % 2) as usize].into()),
                        mode: if *shadow {
                            Mode::Shadow
                        } else {
                            Mode::Enforced
                        },
                        verdict: *verdict,
                        risk: *risk,
                        data_classes: classes.iter().map(|c| (*c).to_owned()).collect(),
                        synthetic: *synthetic,
                        approval_id: None,
                        // Key k1 with one scope, or none, or no key: AISPM-KEY-002 comes and
                        // goes with the key's newest use and each scope's.
                        api_key_id: (i % 4 != 0).then(|| "k1".to_owned()),
                        scopes_used: match i % 4 {
                            1 => vec!["read".into()],
                            2 => vec!["write".into()],
                            _ => vec![],
                        },
                        evidence: ev,
                    };
                    (
                        topics.decisions.clone(),
                        encode_single_object(&d).unwrap(),
                        d.tenant_id.clone(),
                    )
                }
                Spec::Approval {
                    tenant,
                    kind,
                    target,
                    rule,
                    minute,
                } => {
                    let target_id = format!("ev{target}");
                    let finding = match *rule {
                        "AISPM-SHADOW-001" => "AISPM-SHADOW-001:a1".to_owned(),
                        "AISPM-DATA-001" => "AISPM-DATA-001:m1/pii".to_owned(),
                        // One finding per agent and control: name one of the pairs.
                        r => format!(
                            "{r}:{}",
                            aispm_schemas::finding_subject(&[
                                ["a1", "a2", "a3"][*target % 3],
                                ["c1", "c2"][*target % 2],
                            ])
                        ),
                    };
                    let a = ApprovalEvent {
                        event_id: id.clone(),
                        tenant_id: (*tenant).into(),
                        occurred_at: Timestamp(T0 + minute * 60_000 + i as i64),
                        source: "approvals".into(),
                        kind: *kind,
                        decision_id: Some(target_id.clone()),
                        finding_id: Some(finding),
                        control_id: Some("c1".into()),
                        exception_id: Some(format!("x{}", target % 5)),
                        actor: "bob".into(),
                        owner: Some("carol".into()),
                        reason: Some("because".into()),
                        due_at: Some(Timestamp(T0 + 86_400_000)),
                        expires_at: Some(Timestamp(T0 + minute * 30_000)),
                    };
                    (
                        topics.approvals.clone(),
                        encode_single_object(&a).unwrap(),
                        a.tenant_id.clone(),
                    )
                }
                Spec::Asset {
                    tenant,
                    kind,
                    id: asset_id,
                    bad,
                    retired,
                    minute,
                } => {
                    let a = Asset {
                        asset_kind: *kind,
                        asset_id: (*asset_id).into(),
                        status: if *retired {
                            AssetStatus::Retired
                        } else {
                            AssetStatus::Registered
                        },
                        owner: if *bad { None } else { Some("owner".into()) },
                        // Every criticality, so that the risk factors' dependencies are
                        // exercised in every order.
                        criticality: [
                            None,
                            Some(Risk::Low),
                            Some(Risk::Medium),
                            Some(Risk::High),
                            Some(Risk::Critical),
                        ][(*minute % 5) as usize],
                        environment: None,
                        trust: Some(if *bad {
                            Trust::Quarantined
                        } else {
                            Trust::Trusted
                        }),
                        scopes: if *bad {
                            vec!["*".into(), "read".into()]
                        } else {
                            vec!["read".into(), "write".into()]
                        },
                        public: Some(true),
                        auth_required: Some(!bad),
                        public_key: Some(b64(&key().verifying_key().to_bytes())),
                        approved_data_classes: if *bad { vec![] } else { vec!["pii".into()] },
                        recipients: vec![],
                        framework_mappings: vec![],
                        // A key names its agent (the identity view's keys).
                        attributes: [(
                            "agent_id".to_owned(),
                            ["a1", "a2"][(*minute % 2) as usize].to_owned(),
                        )]
                        .into(),
                    };
                    let r = RegistryEvent {
                        event_id: id,
                        tenant_id: (*tenant).into(),
                        occurred_at: Timestamp(T0 + minute * 60_000 + i as i64),
                        source: "registry".into(),
                        asset: Some(a),
                        validation: None,
                    };
                    (
                        topics.registry.clone(),
                        encode_single_object(&r).unwrap(),
                        r.tenant_id.clone(),
                    )
                }
                Spec::Validation {
                    tenant,
                    check,
                    pass,
                    minute,
                } => {
                    let v = Validation {
                        check_kind: *check,
                        result: if *pass {
                            CheckResult::Pass
                        } else {
                            CheckResult::Fail
                        },
                        subject: None,
                        detail: None,
                        evidence: None,
                        environment: Some(Environment::ALL[(*minute % 3) as usize]),
                    };
                    let r = RegistryEvent {
                        event_id: id,
                        tenant_id: (*tenant).into(),
                        occurred_at: Timestamp(T0 + minute * 60_000 + i as i64),
                        source: "validator".into(),
                        asset: None,
                        validation: Some(v),
                    };
                    (
                        topics.registry.clone(),
                        encode_single_object(&r).unwrap(),
                        r.tenant_id.clone(),
                    )
                }
            }
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Produces `events` in the given order (offsets per topic follow it) and applies them in
/// batches cut at `cuts`; returns every view row.
fn project(events: &[(String, Vec<u8>, String)], order: &[usize], cuts: &[usize]) -> Views {
    project_on(events, order, cuts, 1, &[]).0
}

/// [`project`] on an engine with `workers` apply threads; also returns the view changes each
/// tenant's rows went through, in publishing order. Batch `i` ends its epoch unless
/// `commits[i]` is `false` (the last batch always does): an epoch of several batches writes
/// them together.
fn project_on(
    events: &[(String, Vec<u8>, String)],
    order: &[usize],
    cuts: &[usize],
    workers: usize,
    commits: &[bool],
) -> (Views, BTreeMap<String, Vec<String>>) {
    project_with(events, order, cuts, workers, commits, Duration::ZERO, false)
}

/// [`project_on`] publishing changed rows at most once per `publish_every`
/// (`Engine::with_publish_interval`; zero: every batch), and changes of running counts alone
/// once per epoch when `counters_per_epoch` (`Engine::with_counters_per_epoch`).
fn project_with(
    events: &[(String, Vec<u8>, String)],
    order: &[usize],
    cuts: &[usize],
    workers: usize,
    commits: &[bool],
    publish_every: Duration,
    counters_per_epoch: bool,
) -> (Views, BTreeMap<String, Vec<String>>) {
    let (views, batches) = project_batches(events, order, cuts, commits, |engine| {
        engine
            .with_workers(workers)
            .unwrap()
            .with_publish_interval(publish_every)
            .with_counters_per_epoch(counters_per_epoch)
    });
    let codec = Codec::new();
    let mut published: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in batches.into_iter().flatten() {
        // A row's delete is a view change too (`op = delete`): "null", as a tombstone is.
        let deleted = o.sink == Sink::Views
            && value(&o)
                .as_deref()
                .is_some_and(|v| codec.decode::<ViewChange>(v).unwrap().op == ViewOp::Delete);
        published.entry(o.tenant.clone()).or_default().push(format!(
            "{} {}",
            o.key,
            value(&o)
                .as_deref()
                .filter(|_| !deleted)
                .map_or_else(|| "null".to_owned(), hex)
        ));
    }
    (views, published)
}

/// Produces `events` in `order`, applies them in batches cut at `cuts` (batch `i` ends its
/// epoch unless `commits[i]` is `false`; the last always does) on an engine `configure`d, and
/// returns every view row and what each batch published, in order.
fn project_batches(
    events: &[(String, Vec<u8>, String)],
    order: &[usize],
    cuts: &[usize],
    commits: &[bool],
    configure: impl FnOnce(Engine) -> Engine,
) -> (Views, Vec<Vec<aispm_projector::Outgoing>>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), 8 << 20, false).unwrap());
    store.check_version().unwrap();
    let mut engine =
        configure(Engine::new(Arc::clone(&store), Topics::default(), settings(), 64).unwrap());
    let mut next: std::collections::HashMap<&str, i64> = Default::default();
    let inputs: Vec<(String, i64, &Vec<u8>, &String)> = order
        .iter()
        .map(|&i| {
            let (topic, bytes, tenant) = &events[i];
            let o = next.entry(topic.as_str()).or_default();
            *o += 1;
            (topic.clone(), *o - 1, bytes, tenant)
        })
        .collect();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (inputs.len() + 1)).collect();
    bounds.push(inputs.len());
    bounds.sort_unstable();
    bounds.dedup();
    bounds.retain(|&b| b > 0);
    let batches = bounds.len();
    let mut published = Vec::with_capacity(batches);
    for (i, end) in bounds.into_iter().enumerate() {
        let batch: Vec<Input<'_>> = inputs[start..end]
            .iter()
            .map(|(t, o, b, k)| Input::new(t, 0, *o, k.as_bytes(), b))
            .collect();
        let mut p = engine.prepare(&batch).unwrap();
        assert!(
            p.rejected.is_empty(),
            "{:?}",
            p.rejected.first().map(|r| &r.error)
        );
        if commits.get(i) != Some(&false) || i + 1 == batches {
            // With the rows that waited for a publication, if any.
            engine.commit(&mut p).unwrap();
        } else {
            assert!(engine.epoch_open());
        }
        published.push(std::mem::take(&mut p.outgoing));
        start = end;
    }
    assert!(!engine.epoch_open());
    (Views(store.dump_views().unwrap()), published)
}

/// The changes of state (`ViewRow::hash_state`) among what each batch published on the views
/// topic: (batch, key, the new state's digest, `None` for a deleted row), each where a row's
/// state differs from the state its last published change had.
fn state_changes(batches: &[Vec<aispm_projector::Outgoing>]) -> Vec<(usize, String, Option<u64>)> {
    use std::hash::{Hash, Hasher};
    let codec = Codec::new();
    let mut last: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        for o in batch.iter().filter(|o| o.sink == Sink::Views) {
            let row = value(o)
                .as_deref()
                .and_then(|v| codec.decode::<ViewChange>(v).unwrap().row);
            let state = row.map(|row| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                // Views without counts: their whole row is state.
                if !row.hash_state(&mut h) {
                    format!("{row:?}").hash(&mut h);
                }
                h.finish()
            });
            if last.insert(o.key.clone(), state) != Some(state) {
                out.push((i, o.key.clone(), state));
            }
        }
    }
    out
}

/// The events as records of one partition, offsets in order.
fn in_order(events: &[(String, Vec<u8>, String)]) -> Vec<Input<'_>> {
    events
        .iter()
        .enumerate()
        .map(|(i, (t, b, k))| Input::new(t, 0, i as i64, k.as_bytes(), b))
        .collect()
}

/// Every view row; compared row by row so a failure names the rows that differ.
#[derive(PartialEq)]
struct Views(aispm_projector::store::ViewDump);

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rows", self.0.len())
    }
}

/// The rows that differ between two projections, for the failure message.
fn diff(a: &Views, b: &Views) -> String {
    let mut out = Vec::new();
    for (k, v) in &a.0 {
        match b.0.get(k) {
            None => out.push(format!(
                "only left: {} {}",
                k.0,
                String::from_utf8_lossy(&k.1)
            )),
            Some(w) if w != v => out.push(format!(
                "differs: {} {}",
                k.0,
                String::from_utf8_lossy(&k.1)
            )),
            _ => {}
        }
    }
    for k in b.0.keys().filter(|k| !a.0.contains_key(*k)) {
        out.push(format!(
            "only right: {} {}",
            k.0,
            String::from_utf8_lossy(&k.1)
        ));
    }
    out.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn batching_duplication_and_order_do_not_change_the_views(
        specs in proptest::collection::vec(spec(), 1..80),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        shuffle in any::<u64>(),
        commits in proptest::collection::vec(any::<bool>(), 0..10),
    ) {
        let topics = Topics::default();
        let events = build(&specs, &topics);
        let in_order: Vec<usize> = (0..events.len()).collect();
        let reference = project(&events, &in_order, &[]);

        // Re-batched.
        let rebatched = project(&events, &in_order, &cuts);
        prop_assert_eq!(&rebatched, &reference, "re-batched:\n{}", diff(&rebatched, &reference));

        // Duplicates produced again later (same event ids, new offsets).
        let mut with_dups = in_order.clone();
        for d in &dups {
            let i = d.index(events.len());
            with_dups.push(i);
        }
        let duplicated = project(&events, &with_dups, &cuts);
        prop_assert_eq!(&duplicated, &reference, "duplicated:\n{}", diff(&duplicated, &reference));

        // Produced in another order (as the four topics interleave differently).
        let shuffled = shuffled(events.len(), shuffle);
        let reordered = project(&events, &shuffled, &cuts);
        prop_assert_eq!(&reordered, &reference, "reordered:\n{}", diff(&reordered, &reference));

        // Applied with the tenants split over three workers.
        let (split, split_published) = project_on(&events, &shuffled, &cuts, 3, &[]);
        prop_assert_eq!(&split, &reference, "three workers:\n{}", diff(&split, &reference));

        // Batches written together in epochs wherever they end: the same views, and the same
        // view changes published batch by batch.
        let (epochs, epochs_published) = project_on(&events, &shuffled, &cuts, 3, &commits);
        prop_assert_eq!(&epochs, &reference, "epochs:\n{}", diff(&epochs, &reference));
        prop_assert_eq!(
            views_only(&epochs_published),
            views_only(&split_published),
            "epochs published other changes"
        );

        // Rows published at most once an hour: the first batch's at once, then each row once,
        // when its epoch ends. The same views, and never more records than batch by batch. In
        // both, what the (compacted) views topic keeps is exactly the stored rows.
        let hour = Duration::from_secs(3600);
        let (coalesced, coalesced_published) =
            project_with(&events, &shuffled, &cuts, 3, &commits, hour, false);
        prop_assert_eq!(&coalesced, &reference, "coalesced:\n{}", diff(&coalesced, &reference));
        prop_assert_eq!(on_topic(&coalesced), view_rows(&coalesced_published));
        prop_assert_eq!(on_topic(&epochs), view_rows(&epochs_published));
        // The OCSF topic (each finding once per epoch) keeps each stored finding's record
        // exactly, and nothing else, however the epochs were cut.
        prop_assert_eq!(ocsf_of(&epochs), ocsf_records(&epochs_published));
        prop_assert_eq!(ocsf_of(&coalesced), ocsf_records(&coalesced_published));
        prop_assert_eq!(ocsf_of(&split), ocsf_records(&split_published));
        let records = |p: &BTreeMap<String, Vec<String>>| p.values().map(Vec::len).sum::<usize>();
        prop_assert!(records(&coalesced_published) <= records(&epochs_published));

        // Changes of running counts alone published when their epoch ends, state changes at
        // once: the same views, the compacted topics keep exactly the stored rows and
        // findings' records, and never more records than batch by batch.
        let (counted, counted_published) =
            project_with(&events, &shuffled, &cuts, 3, &commits, Duration::ZERO, true);
        prop_assert_eq!(&counted, &reference, "counters per epoch:\n{}", diff(&counted, &reference));
        prop_assert_eq!(on_topic(&counted), view_rows(&counted_published));
        prop_assert_eq!(stored_rows(&counted), topic_rows(&counted_published));
        prop_assert_eq!(stored_rows(&epochs), topic_rows(&epochs_published));
        prop_assert_eq!(ocsf_of(&counted), ocsf_records(&counted_published));
        prop_assert!(records(&counted_published) <= records(&epochs_published));

        // Rows an event is judged, from its aggregate, to change the counts of alone go to the
        // epoch's end underived (`Engine::with_judged_counts`): every change of state still
        // goes out in the batch that made it, as when every changed row is derived and its
        // state compared. A misjudged row would go out when its epoch ends instead: here, a
        // batch per event and one epoch, the last batch.
        let singles: Vec<usize> = (1..events.len()).collect();
        let one_epoch = vec![false; events.len()];
        let judged = |on: bool| {
            let (views, batches) = project_batches(&events, &shuffled, &singles, &one_epoch, |e| {
                e.with_workers(3)
                    .unwrap()
                    .with_counters_per_epoch(true)
                    .with_judged_counts(on)
            });
            (views, state_changes(&batches))
        };
        let ((underived, underived_states), (derived, derived_states)) = (judged(true), judged(false));
        prop_assert_eq!(&underived, &reference, "judged:\n{}", diff(&underived, &reference));
        prop_assert_eq!(&derived, &reference, "derived:\n{}", diff(&derived, &reference));
        prop_assert_eq!(underived_states, derived_states, "a change of state waited");

        // Each stage's share adds up to the row's totals.
        prop_assert_eq!(environments_add_up(&reference), Ok(()));
    }
}

/// The stored rows as views topic keys, `{tenant}/{view}/{row}`.
fn on_topic(views: &Views) -> Vec<String> {
    let mut rows: Vec<String> = views
        .0
        .keys()
        .map(|(cf, k)| {
            let k = String::from_utf8_lossy(k);
            let (tenant, row) = k.split_once('\0').unwrap_or(("", &k));
            format!("{tenant}/{cf}/{row}")
        })
        .collect();
    rows.sort();
    rows
}

/// The stored rows by views topic key, decoded.
fn stored_rows(views: &Views) -> BTreeMap<String, ViewRow> {
    views
        .0
        .iter()
        .map(|((cf, k), bytes)| {
            let (view, _) = aispm_projector::store::columns::VIEWS
                .iter()
                .find(|(_, name)| name == cf)
                .unwrap();
            let k = String::from_utf8_lossy(k);
            let (tenant, row) = k.split_once('\0').unwrap_or(("", &k));
            let decoded = aispm_projector::decode_row(*view, bytes).unwrap();
            (format!("{tenant}/{cf}/{row}"), decoded)
        })
        .collect()
}

/// The rows the views topic keeps of `published` (each key's last change), decoded: what a
/// subscriber reading the compacted topic from the start ends with.
fn topic_rows(published: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, ViewRow> {
    let codec = Codec::new();
    last_values(published)
        .into_iter()
        .filter(|(k, _)| is_view_key(k))
        .map(|(k, v)| {
            let bytes: Vec<u8> = (0..v.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&v[i..i + 2], 16).unwrap())
                .collect();
            let change = codec.decode::<ViewChange>(&bytes).unwrap();
            (k.to_owned(), change.row.unwrap())
        })
        .collect()
}

/// The rows the views topic keeps of `published` (not the OCSF records), sorted.
fn view_rows(published: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let views: Vec<&str> = aispm_projector::store::columns::VIEWS
        .iter()
        .map(|(_, cf)| *cf)
        .collect();
    let mut rows: Vec<String> = last_values(published)
        .into_keys()
        .filter(|k| k.split('/').nth(1).is_some_and(|v| views.contains(&v)))
        .map(str::to_owned)
        .collect();
    rows.sort();
    rows
}

/// Whether a published record's key is a views topic key (`{tenant}/{view}/{row}`), not an
/// OCSF one (`{tenant}/{finding_id}`, a finding id never a view's name).
fn is_view_key(key: &str) -> bool {
    key.split('/').nth(1).is_some_and(|v| {
        aispm_projector::store::columns::VIEWS
            .iter()
            .any(|(_, cf)| *cf == v)
    })
}

/// The views topic's records of `published`, in the order published.
fn views_only(published: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    published
        .iter()
        .map(|(tenant, records)| {
            let views = records
                .iter()
                .filter(|r| is_view_key(r.split_once(' ').map_or(r.as_str(), |(k, _)| k)))
                .cloned()
                .collect();
            (tenant.clone(), views)
        })
        .collect()
}

/// What the OCSF topic keeps of `published`: each finding's last record (hex), by key.
fn ocsf_records(published: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, String> {
    last_values(published)
        .into_iter()
        .filter(|(k, _)| !is_view_key(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Each stored finding as the OCSF topic should keep it: its record, by key.
fn ocsf_of(views: &Views) -> BTreeMap<String, String> {
    use aispm_projector::decode_row;
    views
        .0
        .iter()
        .filter(|((cf, _), _)| cf == "findings")
        .map(|((_, key), bytes)| {
            let key = String::from_utf8_lossy(key);
            let (tenant, id) = key.split_once('\0').unwrap();
            let ViewRow::Finding(f) = decode_row(ViewName::Findings, bytes).unwrap() else {
                unreachable!()
            };
            (
                aispm_schemas::ocsf::record_key(tenant, id),
                hex(&aispm_schemas::ocsf::finding_json(tenant, &f).unwrap()),
            )
        })
        .collect()
}

/// What a compacted topic keeps of `published`: each key's last value, a tombstone or a
/// delete being no value at all.
fn last_values(published: &BTreeMap<String, Vec<String>>) -> BTreeMap<&str, &str> {
    let mut last = BTreeMap::new();
    for record in published.values().flatten() {
        let (key, value) = record.split_once(' ').unwrap_or((record, ""));
        last.insert(key, value);
    }
    last.retain(|_, v| *v != "null");
    last
}

/// Every coverage and control row splits its counts over the environments of the decisions
/// behind them (each stage reads its own share); validations and evidence name theirs.
fn environments_add_up(views: &Views) -> Result<(), String> {
    use aispm_projector::decode_row;
    for ((cf, key), bytes) in &views.0 {
        let key = String::from_utf8_lossy(key);
        match cf.as_str() {
            "coverage" => {
                let ViewRow::Coverage(r) = decode_row(ViewName::Coverage, bytes).unwrap() else {
                    unreachable!()
                };
                let sum =
                    |f: fn(&EnvironmentActivity) -> i64| r.environments.iter().map(f).sum::<i64>();
                if sum(|a| a.decisions) != r.decisions
                    || sum(|a| a.synthetic_decisions) != r.synthetic_decisions
                {
                    return Err(format!("coverage {key}: {r:?}"));
                }
                if r.environments
                    .windows(2)
                    .any(|w| w[0].environment >= w[1].environment)
                {
                    return Err(format!("coverage {key}: environments out of order: {r:?}"));
                }
            }
            "controls" => {
                let ViewRow::Control(r) = decode_row(ViewName::Controls, bytes).unwrap() else {
                    unreachable!()
                };
                let sum =
                    |f: fn(&ControlActivity) -> i64| r.environments.iter().map(f).sum::<i64>();
                if sum(|a| a.enforced_decisions) != r.enforced_decisions
                    || sum(|a| a.shadow_decisions) != r.shadow_decisions
                    || sum(|a| a.high_risk_decisions) != r.high_risk_decisions
                {
                    return Err(format!("control {key}: {r:?}"));
                }
            }
            "validations" => {
                let ViewRow::Validation(r) = decode_row(ViewName::Validations, bytes).unwrap()
                else {
                    unreachable!()
                };
                let env = r.environment.map(|e| e.to_string());
                if !key.contains(&format!("/{}/", env.as_deref().unwrap_or("-"))) {
                    return Err(format!(
                        "validation {key} is not keyed by its environment {env:?}"
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn each_environment_gets_its_own_share_of_the_counts() {
    let topics = Topics::default();
    let mut specs = Vec::new();
    // Decisions on the same agent and path in every environment, and a validation in each.
    for minute in 0..9 {
        specs.push(Spec::Decision {
            tenant: "acme",
            agent: "a1",
            kind: ActionKind::Git,
            tool: "s1/x",
            endpoint: "m1",
            control: Some("c1"),
            shadow: minute % 2 == 0,
            verdict: Verdict::Allow,
            risk: Risk::High,
            classes: vec![],
            synthetic: minute >= 6,
            evidence: 1,
            minute,
        });
    }
    for minute in 0..3 {
        specs.push(Spec::Validation {
            tenant: "acme",
            check: CheckKind::TenantIsolation,
            pass: true,
            minute,
        });
    }
    let events = build(&specs, &topics);
    let views = project(&events, &(0..events.len()).collect::<Vec<_>>(), &[]);
    environments_add_up(&views).unwrap();
    let dump = &views.0;
    // Stored keys are the tenant's, then the row key.
    let row = |cf: &str, key: &str| {
        dump.iter()
            .find(|((c, k), _)| c == cf && k.ends_with(key.as_bytes()))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {cf} row {key}"))
    };
    use aispm_projector::decode_row;
    let ViewRow::Coverage(git) =
        decode_row(ViewName::Coverage, row("coverage", "action_path/git")).unwrap()
    else {
        unreachable!()
    };
    // Minutes 0, 3, 6 are trial; 1, 4, 7 pilot; 2, 5, 8 production; 6, 7, 8 are synthetic.
    let got: Vec<_> = git
        .environments
        .iter()
        .map(|a| (a.environment, a.decisions, a.synthetic_decisions))
        .collect();
    assert_eq!(
        got,
        [
            (Environment::Trial, 3, 1),
            (Environment::Pilot, 3, 1),
            (Environment::Production, 3, 1)
        ]
    );
    for stage in Stage::ALL {
        let Some(ViewRow::Coverage(r)) = ViewRow::Coverage(git.clone()).for_stage(*stage) else {
            panic!("no {stage} share")
        };
        assert_eq!((r.decisions, r.synthetic_decisions), (3, 1));
    }
    let validations: Vec<_> = dump
        .keys()
        .filter(|(cf, _)| cf == "validations")
        .map(|(_, k)| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(validations.len(), 3, "{validations:?}");
}

/// The same spec under another tenant.
fn for_tenant(spec: &Spec, t: &'static str) -> Spec {
    let mut spec = spec.clone();
    match &mut spec {
        Spec::Decision { tenant, .. }
        | Spec::Approval { tenant, .. }
        | Spec::Asset { tenant, .. }
        | Spec::Validation { tenant, .. } => *tenant = t,
    }
    spec
}

#[test]
fn workers_split_the_tenants_and_change_neither_the_views_nor_a_tenants_changes() {
    // Batches of several hundred records, eight tenants.
    const TENANTS: [&str; 8] = [
        "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell",
    ];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let specs: Vec<Spec> = (0..3_000)
        .map(|i| {
            let spec = spec().new_tree(&mut runner).unwrap().current();
            for_tenant(&spec, TENANTS[i % TENANTS.len()])
        })
        .collect();
    let events = build(&specs, &Topics::default());
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.extend((0..events.len()).step_by(7)); // duplicates, produced again later
    let cuts = [900, 1_700, 2_900];

    let (one, one_published) = project_on(&events, &order, &cuts, 1, &[]);
    assert!(one.0.len() > 1_000, "{} rows", one.0.len());
    for workers in [2, 3] {
        let (split, published) = project_on(&events, &order, &cuts, workers, &[]);
        assert_eq!(split, one, "{workers} workers:\n{}", diff(&split, &one));
        // Each tenant's view changes, in the order they were published, are the same.
        assert_eq!(published.len(), TENANTS.len());
        for (tenant, changes) in &one_published {
            assert!(
                published.get(tenant) == Some(changes),
                "{workers} workers: {tenant}'s view changes differ"
            );
        }
    }
}

#[test]
fn redelivered_offsets_are_skipped_and_bad_records_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), 8 << 20, false).unwrap());
    store.check_version().unwrap();
    let topics = Topics::default();
    let mut engine = Engine::new(Arc::clone(&store), topics.clone(), settings(), 64).unwrap();
    let events = build(
        &[Spec::Validation {
            tenant: "acme",
            check: CheckKind::TenantIsolation,
            pass: true,
            minute: 1,
        }],
        &topics,
    );
    let good = Input::new(&topics.registry, 0, 0, b"acme", &events[0].1);
    let mut p = engine.prepare(&[good]).unwrap();
    engine.commit(&mut p).unwrap();
    let before = store.dump_views().unwrap();

    // The same offset again (a rebalance redelivers it) is skipped; garbage is rejected by stage.
    let garbage = Input::new(&topics.registry, 0, 1, b"acme", b"{\"json\":true}");
    let wrong_type = Input::new(&topics.approvals, 0, 0, b"acme", &events[0].1);
    // A record filed under another tenant's key, and one dated past its record timestamp
    // plus the tolerance: judged against the timestamp, so a replay decides the same.
    let misfiled = Input::new(&topics.registry, 0, 2, b"globex", &events[0].1);
    let occurred_at = T0 + 60_000; // the validation's (minute 1)
    let future = Input {
        offset: 3,
        timestamp: Some(occurred_at - 5 * 60_000 - 1),
        ..Input::new(&topics.registry, 0, 3, b"acme", &events[0].1)
    };
    let on_time = Input {
        offset: 4,
        timestamp: Some(occurred_at - 5 * 60_000),
        principal: Some("acme-validator"),
        ..Input::new(&topics.registry, 0, 4, b"acme", &events[0].1)
    };
    let p = engine
        .prepare(&[good, garbage, wrong_type, misfiled, future, on_time])
        .unwrap();
    assert_eq!(p.stats.skipped, 1);
    let reasons: Vec<_> = p
        .rejected
        .iter()
        .map(|r| (r.stage.as_str(), r.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("decode", "framing"),
            ("decode", "incompatible_schema"),
            ("validate", "tenant_mismatch"),
            ("validate", "future_occurred_at"),
        ]
    );
    // The on-time copy is a duplicate event id: applied once, views unchanged.
    assert_eq!(p.stats.duplicates, 1);
    assert!(store.dump_views().unwrap() == before);
}

/// A crash after a batch is durable and before the views topic acknowledged its changes leaves
/// them in the outbox; the next start publishes each changed row once, as stored, with the
/// stamp of its last change: byte for byte what the lost publish would have sent last.
#[test]
fn changes_left_in_the_outbox_are_published_again_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::default();
    let specs: Vec<Spec> = (0..60)
        .map(|i| Spec::Decision {
            tenant: ["acme", "globex"][i % 2],
            agent: ["a1", "a2", "a3"][i % 3],
            kind: ActionKind::ALL[i % ActionKind::ALL.len()],
            tool: ["s1/x", "s2/z"][i % 2],
            endpoint: ["m1", "m2"][i / 7 % 2],
            control: [Some("c1"), None][i / 5 % 2],
            shadow: i % 4 == 0,
            verdict: Verdict::ALL[i % Verdict::ALL.len()],
            risk: Risk::ALL[i % Risk::ALL.len()],
            classes: if i % 3 == 0 { vec!["pii"] } else { vec![] },
            synthetic: false,
            evidence: (i % 4) as u8,
            minute: i as i64,
        })
        .collect();
    let events = build(&specs, &topics);
    let inputs = in_order(&events);

    // Three batches; the first is published and cleared, the other two "crash" before.
    let mut last_sent: std::collections::BTreeMap<String, Option<Vec<u8>>> = Default::default();
    let mut order: Vec<String> = Vec::new();
    {
        let store = Arc::new(Store::open(dir.path(), 8 << 20, false).unwrap());
        store.check_version().unwrap();
        let mut engine = Engine::new(Arc::clone(&store), topics.clone(), settings(), 64).unwrap();
        for (n, chunk) in inputs.chunks(20).enumerate() {
            let mut p = engine.prepare(chunk).unwrap();
            engine.commit(&mut p).unwrap();
            assert!(!p.outgoing.is_empty());
            if n == 0 {
                engine.clear_outbox(p.outbox).unwrap();
                continue;
            }
            for o in &p.outgoing {
                // A finding's OCSF record, sent when its epoch ends, is a change of that row
                // too: both of its records go out again at the later one.
                let row = match o.sink {
                    aispm_projector::Sink::Views => o.key.clone(),
                    aispm_projector::Sink::Ocsf => {
                        let (tenant, id) = o.key.split_once('/').unwrap();
                        format!("{tenant}/findings/{id}")
                    }
                };
                order.retain(|k| k != &row);
                order.push(row);
                last_sent.insert(o.key.clone(), value(o));
            }
        }
    }
    // Each finding's view change, then its OCSF record.
    let order: Vec<String> = order
        .into_iter()
        .flat_map(|row| match row.split_once("/findings/") {
            Some((tenant, id)) => vec![row.clone(), format!("{tenant}/{id}")],
            None => vec![row],
        })
        .collect();

    let store = Arc::new(Store::open(dir.path(), 8 << 20, false).unwrap());
    let mut engine = Engine::new(Arc::clone(&store), topics.clone(), settings(), 64).unwrap();
    let (pending, range) = engine.pending_outbox().unwrap();
    let keys: Vec<String> = pending.iter().map(|o| o.key.clone()).collect();
    assert_eq!(
        keys, order,
        "each row once, in the order of its last change (a finding's with its OCSF record)"
    );
    // Derived again from the state: the same row, stamped no older than when it was sent (a
    // row's stamp can move on while its bytes stay the same).
    let codec = aispm_schemas::Codec::new();
    let change =
        |v: &Option<Vec<u8>>| -> ViewChange { codec.decode(v.as_deref().unwrap()).unwrap() };
    for o in &pending {
        if o.sink == aispm_projector::Sink::Views {
            let (now, sent) = (change(&value(o)), change(&last_sent[&o.key]));
            assert_eq!(now.row, sent.row, "{} differs", o.key);
            assert!(now.changed_at >= sent.changed_at, "{} went back", o.key);
        } else {
            // An OCSF record is a function of its finding's row alone.
            assert!(value(o) == last_sent[&o.key], "{} differs", o.key);
        }
        assert!(o.key.starts_with(&format!("{}/", o.tenant)));
    }
    engine.clear_outbox(range).unwrap();
    assert!(engine.pending_outbox().unwrap().0.is_empty());
}

/// Batches are cut by their working set: the limit starts from a worst-case guess, follows the
/// aggregates per record the batches show, and stays between its floor and `max_records`.
#[test]
fn batch_limit_follows_the_working_set_of_recent_batches() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::default();
    let store = Arc::new(Store::open(dir.path(), 8 << 20, false).unwrap());
    store.check_version().unwrap();
    let mut engine = Engine::new(Arc::clone(&store), topics.clone(), settings(), 64).unwrap();
    let before = engine.batch_limit(50_000, 50_000);
    assert_eq!(before, 6_250, "8 aggregates per record assumed at first");
    assert_eq!(
        engine.batch_limit(100, 50_000),
        100,
        "never above max_records"
    );
    assert_eq!(engine.batch_limit(50_000, 10), 500, "never below the floor");

    // 600 decisions of two agents on one tool and endpoint: few distinct aggregates.
    let specs: Vec<Spec> = (0..600)
        .map(|i| Spec::Decision {
            tenant: "acme",
            agent: ["a1", "a2"][i % 2],
            kind: ActionKind::Mcp,
            tool: "s1/x",
            endpoint: "m1",
            control: Some("c1"),
            shadow: false,
            verdict: Verdict::Allow,
            risk: Risk::Low,
            classes: vec![],
            synthetic: false,
            evidence: 0,
            minute: (i / 100) as i64,
        })
        .collect();
    let events = build(&specs, &topics);
    let inputs = in_order(&events);
    let mut p = engine.prepare(&inputs).unwrap();
    engine.commit(&mut p).unwrap();
    let per_record = p.stats.aggregates as f64 / inputs.len() as f64;
    assert!(
        p.stats.aggregates > 0 && per_record < 8.0,
        "{} aggregates",
        p.stats.aggregates
    );
    let expected = (50_000.0 / ((8.0 + per_record) / 2.0)) as usize;
    assert_eq!(engine.batch_limit(1_000_000, 50_000), expected);
    assert!(engine.batch_limit(50_000, 50_000) > before);
}

/// The row `id` of `view` of tenant `acme` in `views`.
fn acme_row(views: &Views, view: ViewName, id: &str) -> Option<ViewRow> {
    let key = [b"acme\0".as_slice(), id.as_bytes()].concat();
    let bytes = views.0.get(&(view.as_str().to_owned(), key))?;
    Some(aispm_projector::decode_row(view, bytes).unwrap())
}

/// The finding row `id` of tenant `acme` in `views`.
fn finding_row(views: &Views, id: &str) -> Option<FindingRow> {
    match acme_row(views, ViewName::Findings, id)? {
        ViewRow::Finding(f) => Some(f),
        _ => None,
    }
}

/// The views of `events` applied in order, asserted equal to those of the reverse order, of the
/// order cut into batches at `cuts[0]`, and of the reverse order cut at `cuts[1]`.
fn same_whatever_the_order(events: &[(String, Vec<u8>, String)], cuts: [&[usize]; 2]) -> Views {
    let forward: Vec<usize> = (0..events.len()).collect();
    let backward: Vec<usize> = forward.iter().rev().copied().collect();
    let one = project(events, &forward, &[]);
    for (order, cuts) in [
        (&backward, &[][..]),
        (&forward, cuts[0]),
        (&backward, cuts[1]),
    ] {
        let other = project(events, order, cuts);
        assert_eq!(other, one, "{}", diff(&other, &one));
    }
    one
}

/// AISPM-APR-002 of a request made out of order inside a range of requests its agent's clock
/// already found empty in the same epoch (the gap `Overlay::marks_passed` keeps): judged
/// overdue all the same when the clock passes it.
#[test]
fn a_request_made_inside_a_range_found_empty_is_judged_overdue_when_the_clock_passes_it() {
    let topics = Topics::default();
    let decide =
        |verdict, control, minute| low("a1", ActionKind::Command, "s1/x", control, verdict, minute);
    let events = build(
        &[
            decide(Verdict::RequireApproval, "c1", 25),
            // The clock at 30: nothing requested before 10; the next request is at 25.
            decide(Verdict::Allow, "c2", 30),
            // Requested at 15, between the two.
            decide(Verdict::RequireApproval, "c3", 15),
            // The clock at 36: the request at 15 is overdue.
            decide(Verdict::Allow, "c2", 36),
        ],
        &topics,
    );
    let order: Vec<usize> = (0..events.len()).collect();
    let one = project(&events, &order, &[]);
    let f = finding_row(&one, "AISPM-APR-002:a1/c3").expect("requested at 15, overdue at 36");
    assert_eq!(f.event_ids, ["ev2"]);
    // One epoch of a batch per event: the clock's reads follow each other.
    let (each, _) = project_on(&events, &order, &[1, 2, 3], 1, &[false, false, false]);
    assert_eq!(each, one, "{}", diff(&each, &one));
}

/// AISPM-KEY-002: a key's scopes unused for the window (20 minutes here) before its newest use,
/// by event time, so any order and batching of the same events gives the same row; it leaves
/// the view once every scope was used within the window.
#[test]
fn unused_scopes_are_judged_by_event_time_whatever_the_order() {
    let topics = Topics::default();
    // A decision's key and scopes follow its index (see `build`): i % 4 = 0 no key, 1 `read`,
    // 2 `write`, 3 the key with no scope.
    let decide = |minute| low("a1", ActionKind::Git, "s1/x", "c1", Verdict::Allow, minute);
    let check_orders =
        |specs: &[Spec]| same_whatever_the_order(&build(specs, &topics), [&[2], &[1, 3]]);
    let id = "AISPM-KEY-002:k1";
    // k1 granted `read` and `write` at minute 0; `read` used at minute 1, `write` at 5, the
    // key again at 30: both scopes unused for 20 minutes before then.
    let mut specs = vec![
        Spec::Asset {
            tenant: "acme",
            kind: AssetKind::ApiKey,
            id: "k1",
            bad: false,
            retired: false,
            minute: 0,
        },
        decide(1),
        decide(5),
        decide(30),
    ];
    let views = check_orders(&specs);
    let f = finding_row(&views, id).expect("both scopes unused");
    assert_eq!(f.occurrences, 2);
    assert_eq!(f.status, FindingStatus::Open);
    assert_eq!(
        f.opened_at,
        Timestamp(T0 + 21 * 60_000 + 1),
        "read's window ended first"
    );
    assert_eq!(f.last_occurrence_at, Timestamp(T0 + 30 * 60_000 + 3));
    // `read` used at minute 28 (index 5; index 4 carries no key): only `write` is unused.
    specs.extend([decide(26), decide(28)]);
    let views = check_orders(&specs);
    assert_eq!(finding_row(&views, id).map(|f| f.occurrences), Some(1));
    // `write` used at minute 29: nothing is unused, the finding leaves the view.
    specs.push(decide(29));
    let views = check_orders(&specs);
    assert_eq!(finding_row(&views, id), None);
}

/// AISPM-APR-002: an agent's requests under a control still pending at its newest decision
/// (under any control), the window (20 minutes here) or more after they were made. By event
/// time, so any order and batching gives the same row; answering the overdue requests takes it
/// out of the view.
#[test]
fn pending_approvals_past_the_window_are_judged_by_event_time_whatever_the_order() {
    let topics = Topics::default();
    let decide =
        |verdict, control, minute| low("a1", ActionKind::Command, "s1/x", control, verdict, minute);
    let answer = |kind, target, minute| Spec::Approval {
        tenant: "acme",
        kind,
        target,
        rule: "AISPM-APR-001",
        minute,
    };
    let check_orders =
        |specs: &[Spec]| same_whatever_the_order(&build(specs, &topics), [&[1, 2], &[2]]);
    let id = "AISPM-APR-002:a1/c1";
    // ev0 and ev1 request approval under c1 at minutes 1 and 10; a1 acts under c2 at 25.
    let mut specs = vec![
        decide(Verdict::RequireApproval, "c1", 1),
        decide(Verdict::RequireApproval, "c1", 10),
        decide(Verdict::Allow, "c2", 25),
    ];
    let views = check_orders(&specs);
    let f = finding_row(&views, id).expect("ev0 waited 24 minutes");
    assert_eq!((f.occurrences, f.status), (1, FindingStatus::Open));
    assert_eq!(
        f.opened_at,
        Timestamp(T0 + 21 * 60_000),
        "ev0's window ended"
    );
    assert_eq!(
        f.last_occurrence_at,
        Timestamp(T0 + 21 * 60_000),
        "an occurrence is a request's window ending, not the clock"
    );
    assert_eq!(f.event_ids, ["ev0"]);
    assert_eq!(f.severity, Risk::Medium);
    // Before ev0's window ends nothing is overdue: the same requests, a1 last acting at 20.
    let early = check_orders(&[
        specs[0].clone(),
        specs[1].clone(),
        decide(Verdict::Allow, "c2", 20),
    ]);
    assert_eq!(finding_row(&early, id), None, "20 minutes are not yet past");
    assert_eq!(
        finding_row(&views, "AISPM-APR-002:a1/c2"),
        None,
        "c2 has no request"
    );
    // a1 acts again at 31: ev1 (requested at 10) is overdue too.
    specs.push(decide(Verdict::Allow, "c2", 31));
    let views = check_orders(&specs);
    let f = finding_row(&views, id).expect("two overdue");
    assert_eq!(f.occurrences, 2);
    assert_eq!(f.event_ids, ["ev0", "ev1"]);
    assert_eq!(f.last_occurrence_at, Timestamp(T0 + 30 * 60_000 + 1));
    // ev0 granted at 40: only ev1 is overdue, its window ended at 30.
    specs.push(answer(ApprovalKind::ApprovalGranted, 0, 40));
    let views = check_orders(&specs);
    let f = finding_row(&views, id).expect("ev1 still pending");
    assert_eq!(f.occurrences, 1);
    assert_eq!(f.opened_at, Timestamp(T0 + 30 * 60_000 + 1));
    // ev1 denied at 41: none is pending, the finding leaves the view.
    specs.push(answer(ApprovalKind::ApprovalDenied, 1, 41));
    let views = check_orders(&specs);
    assert_eq!(finding_row(&views, id), None);
}

/// An agent with requests pending under many controls: a decision of it re-derives
/// AISPM-APR-002 only for the pairs with a request it made overdue, so one that makes none
/// overdue changes no finding row, however many pairs are pending.
#[test]
fn a_decision_changes_only_the_pending_pairs_it_made_overdue() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), 8 << 20, false).unwrap());
    store.check_version().unwrap();
    let mut engine = Engine::new(Arc::clone(&store), Topics::default(), settings(), 64).unwrap();
    const PAIRS: usize = 300;
    let control = |i: usize| -> &'static str { Box::leak(format!("c{i}").into_boxed_str()) };
    let mut specs: Vec<Spec> = (0..PAIRS)
        .map(|i| {
            let verdict = Verdict::RequireApproval;
            low("a1", ActionKind::Command, "s1/x", control(i), verdict, 1)
        })
        .collect();
    // Minute 25 makes every request overdue; 28 and 31 make none newly overdue (all in the
    // requests' environment: a new one would change every pair's row).
    for minute in [25, 28, 31] {
        specs.push(low(
            "a1",
            ActionKind::Command,
            "s1/x",
            "other",
            Verdict::Allow,
            minute,
        ));
    }
    let events = build(&specs, &Topics::default());
    let inputs = in_order(&events);
    let mut findings_changed = Vec::new();
    for batch in [
        &inputs[..PAIRS],
        &inputs[PAIRS..PAIRS + 1],
        &inputs[PAIRS + 1..],
    ] {
        let mut p = engine.prepare(batch).unwrap();
        engine.commit(&mut p).unwrap();
        findings_changed.push(
            p.stats
                .changes
                .get(&ViewName::Findings)
                .copied()
                .unwrap_or(0),
        );
    }
    assert!(
        findings_changed[1] >= PAIRS as u64,
        "every pair became overdue: {findings_changed:?}"
    );
    assert!(
        findings_changed[2] < 10,
        "no request became overdue, yet {} finding rows changed",
        findings_changed[2]
    );
}

/// With `--counters-per-epoch`, a row whose running counts alone changed is published when
/// the epoch ends, with the counts it has then, and a change of its state at once: an agent's
/// first decision (a new coverage row) and its registration go out in their batch, its other
/// decisions with the epoch's end.
#[test]
fn counts_alone_wait_for_the_epochs_end_and_state_changes_go_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), 8 << 20, false).unwrap());
    store.check_version().unwrap();
    let mut engine = Engine::new(Arc::clone(&store), Topics::default(), settings(), 64)
        .unwrap()
        .with_counters_per_epoch(true);
    let decision = |minute| {
        low(
            "a1",
            ActionKind::Command,
            "s1/x",
            "c1",
            Verdict::Allow,
            minute,
        )
    };
    let registration = Spec::Asset {
        tenant: "acme",
        kind: AssetKind::Agent,
        id: "a1",
        bad: false,
        retired: false,
        minute: 5,
    };
    // Minutes 1, 4 and 7: one environment (`build` picks it by the minute), so no decision
    // but the first adds one to the row.
    let specs = [decision(1), decision(4), registration, decision(7)];
    let events = build(&specs, &Topics::default());
    let inputs = in_order(&events);
    let codec = Codec::new();
    // The agent's coverage row as each batch published it, if it did.
    let mut published = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let mut p = engine.prepare(std::slice::from_ref(input)).unwrap();
        if i + 1 == inputs.len() {
            engine.commit(&mut p).unwrap();
        }
        let coverage = p
            .outgoing
            .iter()
            .filter(|o| o.key == "acme/coverage/agent/a1")
            .filter_map(|o| {
                let change = codec.decode::<ViewChange>(value(o).as_deref()?).unwrap();
                match change.row? {
                    ViewRow::Coverage(r) => Some((r.decisions, r.registered)),
                    _ => None,
                }
            })
            .collect::<Vec<_>>();
        published.push(coverage);
    }
    assert_eq!(
        published,
        [vec![(1, false)], vec![], vec![(2, true)], vec![(3, true)],],
        "the new row and the registration at once, the counts with the epoch's end"
    );
    let stored = store.dump_views().unwrap();
    let row = stored
        .iter()
        .find(|((cf, k), _)| cf == "coverage" && k.as_slice() == b"acme\0agent/a1")
        .map(|(_, v)| aispm_projector::decode_row(ViewName::Coverage, v).unwrap());
    assert!(matches!(row, Some(ViewRow::Coverage(r)) if r.decisions == 3));
}

/// The control row `id` of tenant `acme` in `views`.
fn control_row(views: &Views, id: &str) -> Option<ControlRow> {
    match acme_row(views, ViewName::Controls, id)? {
        ViewRow::Control(c) => Some(c),
        _ => None,
    }
}

/// A control's requests for approval by calendar month: counted in the request's month by
/// its first answer, the newest request's month and the 23 before it kept, the same rows
/// whatever the order and batching (a late request or answer of a month that left the window
/// is not counted).
#[test]
fn a_controls_requests_for_approval_are_counted_by_month_whatever_the_order() {
    let topics = Topics::default();
    let minute = |at: &str| (Timestamp::parse_rfc3339(at).unwrap().0 - T0) / 60_000;
    let request = |at| {
        low(
            "a1",
            ActionKind::Command,
            "s1/x",
            "c1",
            Verdict::RequireApproval,
            minute(at),
        )
    };
    let answer = |kind, target, at| Spec::Approval {
        tenant: "acme",
        kind,
        target,
        rule: "AISPM-APR-001",
        minute: minute(at),
    };
    let months = |specs: &[Spec]| {
        let views = same_whatever_the_order(&build(specs, &topics), [&[2, 3], &[1, 4]]);
        control_row(&views, "c1")
            .expect("c1 decided")
            .approvals
            .into_iter()
            .map(|m| (m.month, m.requested, m.granted, m.denied, m.decide_buckets))
            .collect::<Vec<_>>()
    };
    let buckets = |b: &[(usize, i64)]| {
        let mut v = vec![0; 9];
        for (i, n) in b {
            v[*i] = *n;
        }
        v
    };
    // ev0 and ev1 in November 2025, ev0 granted after 3 minutes (the 5-minute bucket) and
    // denied later (its first answer counts); ev2 in December, denied the next day (the
    // 3-day bucket); ev3 in October 2027, 23 months after November 2025: all kept.
    let mut specs = vec![
        request("2025-11-25T10:00:00Z"),
        request("2025-11-30T23:59:00Z"),
        request("2025-12-01T00:00:00Z"),
        request("2027-10-01T00:00:00Z"),
        answer(ApprovalKind::ApprovalGranted, 0, "2025-11-25T10:03:00Z"),
        answer(ApprovalKind::ApprovalDenied, 0, "2025-11-25T11:00:00Z"),
        answer(ApprovalKind::ApprovalDenied, 2, "2025-12-02T12:00:00Z"),
    ];
    assert_eq!(
        months(&specs),
        [
            ("2025-11".into(), 2, 1, 0, buckets(&[(1, 1)])),
            ("2025-12".into(), 1, 0, 1, buckets(&[(6, 1)])),
            ("2027-10".into(), 1, 0, 0, vec![]),
        ]
    );
    // A request in November 2027: November 2025 leaves the window, in whichever order the
    // requests and ev0's answers arrive.
    specs.push(request("2027-11-02T00:00:00Z"));
    assert_eq!(
        months(&specs),
        [
            ("2025-12".into(), 1, 0, 1, buckets(&[(6, 1)])),
            ("2027-10".into(), 1, 0, 0, vec![]),
            ("2027-11".into(), 1, 0, 0, vec![]),
        ]
    );
}

/// Decisions allowed without approval by one agent under one control are occurrences of one
/// AISPM-APR-001 finding (count, first and last occurrence, environments); an approval of each
/// decision, arriving before or after it, clears its occurrence; a resolution followed by a new
/// occurrence reopens the finding with its SLA running from that occurrence. Whatever the
/// order and batching.
#[test]
fn a_finding_is_one_row_per_agent_and_control() {
    let topics = Topics::default();
    let decide = |agent, minute| Spec::Decision {
        tenant: "acme",
        agent,
        kind: ActionKind::Command,
        tool: "s1/x",
        endpoint: "m1",
        control: Some("c1"),
        shadow: false,
        verdict: Verdict::Allow,
        risk: Risk::High,
        classes: vec![],
        synthetic: false,
        evidence: 2,
        minute,
    };
    let approval = |kind, target, minute| Spec::Approval {
        tenant: "acme",
        kind,
        target,
        rule: "AISPM-APR-001",
        minute,
    };
    let id = "AISPM-APR-001:a1/c1";
    // ev0..ev2 by a1 (minutes 1, 3, 5: three environments), ev3 by a2; ev0 approved later,
    // ev1 approved before its decision was seen (an earlier minute).
    let mut specs = vec![
        decide("a1", 1),
        decide("a1", 3),
        decide("a1", 5),
        decide("a2", 2),
        approval(ApprovalKind::ApprovalGranted, 0, 10),
        approval(ApprovalKind::ApprovalGranted, 1, 0),
    ];
    let check_orders =
        |specs: &[Spec]| same_whatever_the_order(&build(specs, &topics), [&[1, 3], &[2]]);

    let views = check_orders(&specs);
    let f = finding_row(&views, id).expect("one row for a1 under c1");
    assert_eq!(f.subject, "a1/c1");
    assert_eq!(f.occurrences, 3);
    assert_eq!(f.status, FindingStatus::Open, "ev2 is not approved");
    assert_eq!(f.first_occurrence_at, Timestamp(T0 + 60_000));
    assert_eq!(f.opened_at, f.first_occurrence_at);
    assert_eq!(f.last_occurrence_at, Timestamp(T0 + 5 * 60_000 + 2));
    assert_eq!(f.environments.len(), 3, "{:?}", f.environments);
    for e in ["ev0", "ev1", "ev2", "ev4", "ev5"] {
        assert!(
            f.event_ids.iter().any(|x| x == e),
            "{e} in {:?}",
            f.event_ids
        );
    }
    assert_eq!(
        finding_row(&views, "AISPM-APR-001:a2/c1").map(|f| f.occurrences),
        Some(1)
    );
    // Stages read their own: a finding raised only in production counts for production only.
    let a2 = finding_row(&views, "AISPM-APR-001:a2/c1").unwrap();
    assert_eq!(a2.environments, vec![Environment::Production]);
    assert!(a2.counts_for(Stage::Production));
    assert!(!a2.counts_for(Stage::Trial));

    // The last unapproved decision approved: closed, the condition no longer holds.
    specs.push(approval(ApprovalKind::ApprovalGranted, 2, 12));
    let views = check_orders(&specs);
    let f = finding_row(&views, id).unwrap();
    assert_eq!(f.status, FindingStatus::Closed);
    assert_eq!(f.resolution.as_deref(), Some("condition no longer holds"));

    // Resolved at minute 20; a new occurrence at minute 30 reopens it from there.
    specs.push(approval(ApprovalKind::FindingResolved, 0, 20));
    let views = check_orders(&specs);
    assert_eq!(
        finding_row(&views, id).unwrap().status,
        FindingStatus::Closed
    );
    specs.push(decide("a1", 30));
    let n = specs.len() as i64 - 1;
    let views = check_orders(&specs);
    let f = finding_row(&views, id).unwrap();
    assert_eq!(f.status, FindingStatus::Open);
    assert_eq!(f.occurrences, 4);
    assert_eq!(f.opened_at, Timestamp(T0 + 30 * 60_000 + n));
    assert_eq!(f.first_occurrence_at, Timestamp(T0 + 60_000));
    assert_eq!(
        f.due_at,
        Some(Timestamp(f.opened_at.0 + 14 * 86_400_000)),
        "the SLA runs from the reopening"
    );
}

/// Duplicates arriving after a restart are applied once: the new engine's may-exist filter
/// (`filter.rs`) knows every stored key, so a "no" never hides a stored event id, aggregate or
/// row. Also with more workers than before (the keys are split between them by tenant).
#[test]
fn duplicates_after_a_restart_change_nothing() {
    let topics = Topics::default();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let specs: Vec<Spec> = (0..400)
        .map(|_| spec().new_tree(&mut runner).unwrap().current())
        .collect();
    let events = build(&specs, &topics);
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let store = Arc::new(Store::open(dir.path(), 8 << 20, false).unwrap());
        store.check_version().unwrap();
        let mut engine = Engine::new(Arc::clone(&store), topics.clone(), settings(), 64).unwrap();
        let mut p = engine.prepare(&in_order(&events)).unwrap();
        engine.commit(&mut p).unwrap();
        store.dump_views().unwrap()
    };
    for workers in [1, 3] {
        let store = Arc::new(Store::open(dir.path(), 8 << 20, false).unwrap());
        let mut engine = Engine::new(Arc::clone(&store), topics.clone(), settings(), 64)
            .unwrap()
            .with_workers(workers)
            .unwrap();
        // The same events again at later offsets: every one is a duplicate.
        let again: Vec<Input<'_>> = events
            .iter()
            .enumerate()
            .map(|(i, (t, b, k))| {
                Input::new(t, 0, (events.len() * workers + i) as i64, k.as_bytes(), b)
            })
            .collect();
        let mut p = engine.prepare(&again).unwrap();
        assert_eq!(p.stats.duplicates, events.len() as u64, "{workers} workers");
        assert!(p.outgoing.is_empty(), "{workers} workers: nothing changed");
        engine.commit(&mut p).unwrap();
        assert!(store.dump_views().unwrap() == first);
    }
}

/// A registry event for `tenant` at `minute`: asset `kind`/`id` with the given criticality,
/// exposure and scopes (event id `reg-{n}`).
#[allow(clippy::too_many_arguments)]
fn register(
    n: usize,
    tenant: &str,
    kind: AssetKind,
    id: &str,
    criticality: Option<Risk>,
    public: Option<bool>,
    auth_required: Option<bool>,
    scopes: &[&str],
    minute: i64,
) -> (String, Vec<u8>, String) {
    let r = RegistryEvent {
        event_id: format!("reg-{n}"),
        tenant_id: tenant.into(),
        occurred_at: Timestamp(T0 + minute * 60_000),
        source: "registry".into(),
        asset: Some(Asset {
            asset_kind: kind,
            asset_id: id.into(),
            status: AssetStatus::Registered,
            owner: Some("owner".into()),
            criticality,
            environment: None,
            trust: Some(Trust::Trusted),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            public,
            auth_required,
            public_key: None,
            approved_data_classes: vec![],
            recipients: vec![],
            framework_mappings: vec![],
            attributes: Default::default(),
        }),
        validation: None,
    };
    (
        Topics::default().registry,
        encode_single_object(&r).unwrap(),
        tenant.to_owned(),
    )
}

/// `spec` (a decision) denied, under `control`: it raises no finding of its own.
fn denied(spec: Spec, under: &'static str) -> Spec {
    match spec {
        Spec::Decision {
            tenant,
            agent,
            kind,
            tool,
            endpoint,
            shadow,
            risk,
            classes,
            synthetic,
            evidence,
            minute,
            ..
        } => Spec::Decision {
            tenant,
            agent,
            kind,
            tool,
            endpoint,
            control: Some(under),
            shadow,
            verdict: Verdict::Deny,
            risk,
            classes,
            synthetic,
            evidence,
            minute,
        },
        other => other,
    }
}

/// A finding's risk score follows each of its factors, with the points `docs/risk.md` gives,
/// whatever order and batching the events arrive in (registrations before or after the
/// decisions, in other batches), and one tenant's facts never move another's score.
#[test]
fn a_findings_risk_follows_each_factor_whatever_the_order() {
    let topics = Topics::default();
    let decide =
        |tenant, kind, tool, endpoint, classes: Vec<&'static str>, minute| Spec::Decision {
            tenant,
            agent: "a1",
            kind,
            tool,
            endpoint,
            control: Some("c1"),
            shadow: false,
            verdict: Verdict::Allow,
            risk: Risk::High,
            classes,
            synthetic: false,
            evidence: 2,
            minute,
        };
    let id = "AISPM-APR-001:a1/c1";
    let score =
        |specs: &[Spec], extra: &[(String, Vec<u8>, String)]| -> (i64, Vec<(String, i64)>) {
            let mut events = build(specs, &topics);
            events.extend(extra.iter().cloned());
            let forward: Vec<usize> = (0..events.len()).collect();
            let backward: Vec<usize> = forward.iter().rev().copied().collect();
            let one = project(&events, &forward, &[]);
            for (order, cuts) in [
                (&backward, vec![]),
                (&forward, vec![1]),
                (&backward, vec![1, 2]),
            ] {
                let other = project(&events, order, &cuts);
                assert_eq!(other, one, "{}", diff(&other, &one));
            }
            let f = finding_row(&one, id).expect("the finding");
            assert_eq!(
                f.risk.score,
                f.risk.factors.iter().map(|x| x.points).sum::<i64>()
            );
            let factors = f
                .risk
                .factors
                .iter()
                .map(|x| (x.factor.clone(), x.points))
                .collect();
            (f.risk.score, factors)
        };
    let points = |factors: &[(String, i64)], name: &str| {
        factors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap()
    };

    // A model call in production (minute 2), high and allowed without approval, by an
    // unregistered agent that reached one tool, one repo and one endpoint: severity high 25,
    // not registered 10, production 10, exposure 0, no data 0, no privilege 0, radius 3.
    let base = vec![decide("acme", ActionKind::Model, "s1/x", "m1", vec![], 2)];
    let (s0, f0) = score(&base, &[]);
    assert_eq!(s0, 25 + 10 + 10 + 3, "{f0:?}");

    // Environment: the same decision in pilot (minute 4) gives 5, in trial (minute 3) nothing.
    let (s, f) = score(
        &[decide("acme", ActionKind::Model, "s1/x", "m1", vec![], 4)],
        &[],
    );
    assert_eq!((s, points(&f, "environment")), (s0 - 5, 5));
    let (s, f) = score(
        &[decide("acme", ActionKind::Model, "s1/x", "m1", vec![], 3)],
        &[],
    );
    assert_eq!((s, points(&f, "environment")), (s0 - 10, 0));

    // Criticality and exposure: registered low, public with authentication.
    let low = register(
        0,
        "acme",
        AssetKind::Agent,
        "a1",
        Some(Risk::Low),
        Some(true),
        Some(true),
        &["repo:read"],
        1,
    );
    let (s, f) = score(&base, std::slice::from_ref(&low));
    assert_eq!((points(&f, "criticality"), points(&f, "exposure")), (0, 5));
    assert_eq!(s, s0 - 10 + 5);
    // Registered critical and public without authentication, with an admin scope.
    let critical = register(
        1,
        "acme",
        AssetKind::Agent,
        "a1",
        Some(Risk::Critical),
        Some(true),
        Some(false),
        &["repo:*"],
        1,
    );
    let (s, f) = score(&base, std::slice::from_ref(&critical));
    assert_eq!(
        (
            points(&f, "criticality"),
            points(&f, "exposure"),
            points(&f, "privilege")
        ),
        (15, 10, 5)
    );
    assert_eq!(s, s0 - 10 + 15 + 10 + 5);
    // The newest registration wins, whichever arrives first (minute 5 after minute 1).
    let later = register(
        2,
        "acme",
        AssetKind::Agent,
        "a1",
        Some(Risk::Low),
        Some(false),
        None,
        &[],
        5,
    );
    let (s, f) = score(&base, &[critical.clone(), later]);
    assert_eq!(
        (
            points(&f, "criticality"),
            points(&f, "exposure"),
            points(&f, "privilege")
        ),
        (0, 0, 0)
    );
    assert_eq!(s, s0 - 10);

    // Data sensitivity: a later decision of the agent carried PII (7), then a secret (10).
    let mut specs = base.clone();
    specs.push(decide(
        "acme",
        ActionKind::Model,
        "s1/x",
        "m1",
        vec!["pii"],
        4,
    ));
    let (s, f) = score(&specs, &[]);
    assert_eq!((s, points(&f, "data_sensitivity")), (s0 + 7, 7));
    specs.push(decide(
        "acme",
        ActionKind::Model,
        "s1/x",
        "m1",
        vec!["secret"],
        6,
    ));
    assert_eq!(points(&score(&specs, &[]).1, "data_sensitivity"), 10);

    // Privilege: the agent ran a command (on another control: this finding's own events are
    // unchanged).
    let mut specs = base.clone();
    specs.push(denied(
        decide("acme", ActionKind::Command, "s1/x", "m1", vec![], 4),
        "c2",
    ));
    let (s, f) = score(&specs, &[]);
    assert_eq!((s, points(&f, "privilege")), (s0 + 5, 5));

    // Blast radius: another tool and another endpoint (and the same repo): 5 targets.
    let mut specs = base.clone();
    specs.push(denied(
        decide("acme", ActionKind::Mcp, "s2/z", "m2", vec![], 4),
        "c1",
    ));
    let (s, f) = score(&specs, &[]);
    assert_eq!((s, points(&f, "blast_radius")), (s0 + 2, 5));
    // Targets last used more than 30 days before the agent's newest decision drop out.
    let month = 31 * 24 * 60;
    specs.push(denied(
        decide("acme", ActionKind::Model, "s1/x", "m1", vec![], month + 2),
        "c1",
    ));
    let (_, f) = score(&specs, &[]);
    assert_eq!(
        points(&f, "blast_radius"),
        3,
        "s2/z and m2 are older than 30 days"
    );

    // Another tenant's agent of the same name: registered critical, with secrets and commands.
    // acme's score does not move.
    let mut specs = base.clone();
    specs.push(decide(
        "globex",
        ActionKind::Command,
        "s2/z",
        "m2",
        vec!["secret"],
        2,
    ));
    let globex = register(
        3,
        "globex",
        AssetKind::Agent,
        "a1",
        Some(Risk::Critical),
        Some(true),
        Some(false),
        &["*"],
        1,
    );
    assert_eq!(score(&specs, &[globex]), (s0, f0));
}

/// The runtime signals fire at their thresholds and not below (this file's `settings`: a loop
/// is 3 attempts of one call in a minute, a denial storm 3 denials, a retry burst 2 attempts of
/// a call denied at least once, runaway more than 3 decisions), each minute counted on its
/// own, whatever the order and batching.
#[test]
fn runtime_signals_fire_at_their_thresholds_and_not_below() {
    let topics = Topics::default();
    let call = |kind, tool, verdict, minute| low("a1", kind, tool, "c1", verdict, minute);
    let allow = |tool, minute| call(ActionKind::Mcp, tool, Verdict::Allow, minute);
    let deny = |tool, minute| call(ActionKind::Mcp, tool, Verdict::Deny, minute);
    let signals = |specs: &[Spec]| -> Vec<(String, i64)> {
        let events = build(specs, &topics);
        let forward: Vec<usize> = (0..events.len()).collect();
        let backward: Vec<usize> = forward.iter().rev().copied().collect();
        let one = project(&events, &forward, &[]);
        for (order, cuts) in [
            (&backward, vec![]),
            (&forward, vec![1, 2]),
            (&backward, vec![1]),
        ] {
            let other = project(&events, order, &cuts);
            assert_eq!(other, one, "{}", diff(&other, &one));
        }
        aispm_schemas::rules::SIGNALS
            .iter()
            .filter_map(|r| {
                finding_row(&one, &format!("{}:a1", r.id)).map(|f| (r.id.to_owned(), f.occurrences))
            })
            .collect()
    };
    let loop_ = "AISPM-RUN-002".to_owned();
    let storm = "AISPM-RUN-003".to_owned();
    let retry = "AISPM-RUN-004".to_owned();
    let runaway = "AISPM-RUN-001".to_owned();

    // A loop: the same call three times in a minute; twice is not one, nor three over two
    // minutes.
    assert_eq!(signals(&[allow("s1/x", 2), allow("s1/x", 2)]), []);
    assert_eq!(
        signals(&[allow("s1/x", 2), allow("s1/x", 2), allow("s1/y", 2)]),
        []
    );
    assert_eq!(
        signals(&[allow("s1/x", 2), allow("s1/x", 2), allow("s1/x", 3)]),
        []
    );
    assert_eq!(
        signals(&[allow("s1/x", 2), allow("s1/x", 2), allow("s1/x", 2)]),
        [(loop_.clone(), 1)]
    );
    // In two minutes: two minutes of the signal.
    assert_eq!(
        signals(&[
            allow("s1/x", 2),
            allow("s1/x", 2),
            allow("s1/x", 2),
            allow("s2/z", 5),
            allow("s2/z", 5),
            allow("s2/z", 5),
        ]),
        [(loop_.clone(), 2)],
        "three decisions a minute are not runaway"
    );

    // A denial storm: three denials of different calls in a minute; two are not.
    assert_eq!(signals(&[deny("s1/x", 2), deny("s1/y", 2)]), []);
    assert_eq!(
        signals(&[deny("s1/x", 2), deny("s1/y", 2), deny("s2/z", 2)]),
        [(storm.clone(), 1)]
    );

    // A retry burst: a call denied, and tried again in the same minute (in either order); the
    // same two attempts allowed are not one, nor a retry in the next minute.
    assert_eq!(
        signals(&[deny("s1/x", 2), allow("s1/x", 2)]),
        [(retry.clone(), 1)]
    );
    assert_eq!(signals(&[allow("s1/x", 2), allow("s1/x", 2)]), []);
    assert_eq!(signals(&[deny("s1/x", 2), allow("s1/x", 3)]), []);
    // Three denied attempts of one call: a loop, a storm and a retry burst at once.
    assert_eq!(
        signals(&[deny("s1/x", 2), deny("s1/x", 2), deny("s1/x", 2)]),
        [(loop_.clone(), 1), (storm, 1), (retry, 1)]
    );

    // Runaway: more than three decisions in a minute.
    assert_eq!(
        signals(&[allow("s1/x", 2), allow("s1/y", 2), allow("s2/z", 2)]),
        []
    );
    let four = [
        allow("s1/x", 2),
        allow("s1/y", 2),
        allow("s2/z", 2),
        call(ActionKind::File, "s1/x", Verdict::Allow, 2),
    ];
    assert_eq!(signals(&four), [(runaway, 1)]);
}

/// When a spec's event occurred (as `build` dates the `i`-th).
fn occurred(spec: &Spec, i: usize) -> Timestamp {
    let minute = match spec {
        Spec::Decision { minute, .. }
        | Spec::Approval { minute, .. }
        | Spec::Asset { minute, .. }
        | Spec::Validation { minute, .. } => *minute,
    };
    Timestamp(T0 + minute * 60_000 + i as i64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The views as of T, replayed from the events a projector keeps, are byte for byte the
    /// views of a fresh projector fed only the events that occurred by T, whatever order the
    /// events arrived in.
    #[test]
    fn the_views_as_of_t_are_those_of_a_projector_fed_the_events_up_to_t(
        specs in proptest::collection::vec(spec(), 1..80),
        minute in 0..95i64,
        shuffle in any::<u64>(),
    ) {
        let topics = Topics::default();
        let events = build(&specs, &topics);
        let order = shuffled(events.len(), shuffle);
        let dir = tempfile::tempdir().unwrap();
        let full = project_into(&events, &order, dir.path());
        let at = Timestamp(T0 + minute * 60_000 + 30_000);
        let up_to: Vec<usize> = (0..events.len())
            .filter(|&i| occurred(&specs[i], i) <= at)
            .collect();
        let reference = project(&events, &up_to, &[]);
        for tenant in ["acme", "globex"] {
            let scratch = tempfile::tempdir().unwrap();
            let (store, summary) = aispm_projector::as_of::replay(
                &full,
                &topics,
                &settings(),
                tenant,
                at,
                &scratch.path().join("db"),
            )
            .unwrap();
            let replayed = Views(store.dump_views().unwrap());
            let mut theirs = reference.0.clone();
            theirs.retain(|(_, k), _| k.starts_with(format!("{tenant}\0").as_bytes()));
            let theirs = Views(theirs);
            prop_assert_eq!(&replayed, &theirs, "as of {}:\n{}", at, diff(&replayed, &theirs));
            let mine = |i: &usize| events[*i].2 == tenant;
            prop_assert_eq!(summary.events, up_to.iter().filter(|i| mine(i)).count() as u64);
            prop_assert_eq!(
                summary.events + summary.after,
                (0..events.len()).filter(|i| mine(i)).count() as u64
            );
            // `Input::new` gives no record timestamp: nothing can be judged late.
            prop_assert_eq!(summary.arrival_unknown, summary.events);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A replay as of T from a checkpoint is byte for byte a replay from nothing, with the
    /// same counts: checkpoints made every few events from those that had arrived, then
    /// extended after the rest arrived (late ones among them, that occurred before a
    /// checkpoint's instant), whatever the arrival order and the spacing.
    #[test]
    fn a_replay_from_a_checkpoint_is_a_replay_from_nothing(
        specs in proptest::collection::vec(spec(), 1..80),
        minute in 0..95i64,
        shuffle in any::<u64>(),
        arrived_first in 0..=100usize,
        every in 1..12usize,
    ) {
        let topics = Topics::default();
        let events = build(&specs, &topics);
        let order = shuffled(events.len(), shuffle);
        let first = order.len() * arrived_first / 100;
        let dir = tempfile::tempdir().unwrap();
        let source = Arc::new(Store::open(&dir.path().join("db"), 8 << 20, false).unwrap());
        source.check_version().unwrap();
        let mut engine = Engine::new(Arc::clone(&source), topics.clone(), settings(), 64).unwrap();
        // The first events arrive as they occur; the rest after every one of them occurred.
        let mut feed = |part: &[usize], from: usize, late: bool| {
            let inputs: Vec<Input<'_>> = part
                .iter()
                .enumerate()
                .map(|(o, &i)| {
                    let (t, b, k) = &events[i];
                    Input {
                        timestamp: Some(if late {
                            T0 + 200 * 60_000
                        } else {
                            occurred(&specs[i], i).0
                        }),
                        ..Input::new(t, 0, (from + o) as i64, k.as_bytes(), b)
                    }
                })
                .collect();
            let mut p = engine.prepare(&inputs).unwrap();
            prop_assert!(p.rejected.is_empty());
            engine.commit(&mut p).unwrap();
            Ok(())
        };
        let at = Timestamp(T0 + minute * 60_000 + 30_000);
        let end = Timestamp(T0 + 100 * 60_000);
        feed(&order[..first], 0, false)?;
        let mut kept: BTreeMap<&str, Vec<aispm_projector::checkpoints::Checkpoint>> =
            BTreeMap::new();
        let extend = |kept: &mut BTreeMap<&str, Vec<_>>, round: usize| {
            for tenant in ["acme", "globex"] {
                let list = kept.entry(tenant).or_default();
                let made = aispm_projector::checkpoints::extend(
                    &source,
                    &topics,
                    &settings(),
                    tenant,
                    list.last(),
                    end,
                    every,
                    &dir.path().join(format!("{tenant}-{round}")),
                    &dir.path().join("work"),
                )
                .unwrap()
                .made;
                // Each is as of an instant no earlier than the one before, and holds more.
                let mut before = list.last().map(|l| (l.at, l.events));
                for c in &made {
                    prop_assert!(before.is_none_or(|(at, events)| at <= c.at && events < c.events));
                    prop_assert!(c.events >= every as u64);
                    before = Some((c.at, c.events));
                }
                list.extend(made);
            }
            Ok(())
        };
        extend(&mut kept, 0)?;
        feed(&order[first..], first, true)?;
        extend(&mut kept, 1)?;
        for tenant in ["acme", "globex"] {
            let base = kept[tenant].iter().rev().find(|c| c.at <= at);
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (from_nothing, expected) = aispm_projector::as_of::replay(
                &source, &topics, &settings(), tenant, at, &a.path().join("db"),
            )
            .unwrap();
            let (from_base, summary) = aispm_projector::as_of::replay_from(
                &source, &topics, &settings(), tenant, at, base, &b.path().join("db"),
            )
            .unwrap();
            let (x, y) = (
                Views(from_base.dump_views().unwrap()),
                Views(from_nothing.dump_views().unwrap()),
            );
            prop_assert_eq!(&x, &y, "as of {} from {:?}:\n{}", at, base.map(|c| c.at), diff(&x, &y));
            prop_assert_eq!(
                (summary.events, summary.after, summary.late, summary.arrival_unknown),
                (expected.events, expected.after, expected.late, expected.arrival_unknown)
            );
            prop_assert_eq!(summary.from_checkpoint, base.map(|c| c.at));
            prop_assert_eq!(summary.applied, summary.events - base.map_or(0, |c| c.events));
        }
    }
}

/// `0..n` in an order drawn from `seed` (xorshift, Fisher-Yates): an arrival order.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// Applies `events` in `order` into a store under `dir`, one batch, and returns the store.
fn project_into(
    events: &[(String, Vec<u8>, String)],
    order: &[usize],
    dir: &std::path::Path,
) -> Store {
    let store = Arc::new(Store::open(dir, 8 << 20, false).unwrap());
    store.check_version().unwrap();
    let mut engine = Engine::new(Arc::clone(&store), Topics::default(), settings(), 64).unwrap();
    let inputs: Vec<Input<'_>> = order
        .iter()
        .enumerate()
        .map(|(o, &i)| {
            let (t, b, k) = &events[i];
            Input::new(t, 0, o as i64, k.as_bytes(), b)
        })
        .collect();
    let mut p = engine.prepare(&inputs).unwrap();
    engine.commit(&mut p).unwrap();
    drop(engine);
    Arc::try_unwrap(store).unwrap_or_else(|_| panic!("the store is still shared"))
}

/// Events with record timestamps: one that arrived after T is counted late, and one whose
/// record timestamp is missing is counted as of unknown arrival.
#[test]
fn an_event_that_occurred_by_t_but_arrived_after_it_is_counted_late() {
    let topics = Topics::default();
    let specs: Vec<Spec> = (0..4)
        .map(|m| {
            low(
                "a1",
                ActionKind::Command,
                "s1/x",
                "c1",
                Verdict::Allow,
                m * 10,
            )
        })
        .collect();
    let events = build(&specs, &topics);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), 8 << 20, false).unwrap());
    store.check_version().unwrap();
    let mut engine = Engine::new(Arc::clone(&store), Topics::default(), settings(), 64).unwrap();
    // Minutes 0, 10, 20, 30; T is minute 15. The minute-10 event reached the broker at minute
    // 25 (late), the minute-0 one at minute 1, the minute-20 one has no timestamp.
    let arrivals = [Some(1), Some(25), None, Some(31)];
    let inputs: Vec<Input<'_>> = events
        .iter()
        .zip(arrivals)
        .enumerate()
        .map(|(o, ((t, b, k), arrived))| Input {
            timestamp: arrived.map(|m| T0 + m * 60_000),
            ..Input::new(t, 0, o as i64, k.as_bytes(), b)
        })
        .collect();
    let mut p = engine.prepare(&inputs).unwrap();
    assert!(p.rejected.is_empty());
    engine.commit(&mut p).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let at = Timestamp(T0 + 15 * 60_000);
    let (_, summary) =
        aispm_projector::as_of::replay(&store, &topics, &settings(), "acme", at, scratch.path())
            .unwrap();
    assert_eq!(
        (
            summary.events,
            summary.after,
            summary.late,
            summary.arrival_unknown
        ),
        (2, 2, 1, 0),
        "{summary:?}"
    );
}

/// An outgoing record's value as published (`None`: a tombstone).
fn value(o: &aispm_projector::Outgoing) -> Option<Vec<u8>> {
    o.value().unwrap().map(std::borrow::Cow::into_owned)
}
