//! One definition per clock rule (`aispm_schemas::clock`): the gatekeeper, the reporter and
//! the projector's API are given the same tenant state, the same flags and the same instants,
//! on both sides of every boundary and at it, and must agree on what is overdue, which
//! exceptions expired, which break-glass events went unreviewed and whether evidence is stale.
//!
//! Each side runs its production code as a library call, no copy of it:
//! - the gatekeeper: its state folding (`state::TenantState::apply`) and its rules
//!   (`rules::evaluate`), the blockers it would publish;
//! - the reporter: `report::build`, the document a packet is rendered from (key figures,
//!   blocking findings, accepted risks, the freshness check), and the packet's CSV tables;
//! - the projector: the helpers its `/findings`, `/exceptions` and `/posture` handlers call.
//!
//! Each side takes its windows from its own `Config`, parsed from the same command line.

use aispm_gatekeeper::Policy;
use aispm_reporter::report::{self, Request};
use aispm_schemas::views::*;
use aispm_schemas::{BlockerKind, Environment, ReportType, Risk, Stage, Timestamp, clock};
use aispm_tests::rows;
use clap::Parser;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const TENANT: &str = "acme";
const H: i64 = 3_600_000;
/// An instant of reference: every row and boundary is placed relative to it.
const T0: Timestamp = Timestamp(1_800_000_000_000);

/// The windows, set once on the command line every service parses.
const FLAGS: &[&str] = &[
    "--trial-evidence-freshness",
    "10d",
    "--pilot-evidence-freshness",
    "3d",
    "--production-evidence-freshness",
    "6h",
    "--break-glass-review-window",
    "2h",
    "--tenant-isolation-freshness",
    "20d",
];

#[derive(Parser)]
struct ReporterCli {
    #[command(flatten)]
    config: aispm_reporter::Config,
}

#[derive(Parser)]
struct ProjectorCli {
    #[command(flatten)]
    config: aispm_projector::Config,
}

/// The windows of each service, from its own flags.
fn windows() -> (clock::Windows, clock::Windows, clock::Windows) {
    let args: Vec<&str> = std::iter::once("x").chain(FLAGS.iter().copied()).collect();
    let gatekeeper = aispm_gatekeeper::Config::parse_from(args.clone())
        .windows
        .clock();
    let reporter = ReporterCli::parse_from(args.clone()).config.clock.windows();
    let projector = ProjectorCli::parse_from(args.clone())
        .config
        .clock
        .windows();
    (gatekeeper, reporter, projector)
}

fn at(offset: i64) -> Timestamp {
    Timestamp(T0.0 + offset)
}

// The boundaries, one per rule.
/// `h-due` (high) and `m-due` (medium) are due here.
const DUE: i64 = 10 * H;
/// `x-exp` (covering the past-due `h-covered`) expires here.
const EXPIRY: i64 = 20 * H;
/// `bg-open` was invoked at `BG_INVOKED`; its 2 h review window ends here.
const BG_INVOKED: i64 = 28 * H;
const REVIEW_DEADLINE: i64 = BG_INVOKED + 2 * H;
/// The newest evidence that counts was recorded here: production (6 h), pilot (3 d) and trial
/// (10 d) freshness end at `EVIDENCE + window`.
const EVIDENCE: i64 = 30 * H;

/// A high or medium finding, open since T0, owned, due at `due` (the shared row otherwise).
fn finding(id: &str, severity: Risk, due: i64) -> FindingRow {
    FindingRow {
        subject: id.to_owned(),
        opened_at: T0,
        first_occurrence_at: T0,
        last_occurrence_at: T0,
        ..rows::finding(
            id,
            severity,
            Some("bob"),
            Some(at(due)),
            FindingStatus::Open,
        )
    }
}

fn exception(id: &str, kind: ExceptionKind, granted: i64) -> ExceptionRow {
    rows::exception(id, kind, at(granted))
}

fn evidence(id: &str, recorded: i64, synthetic: bool, sig: SignatureState) -> EvidenceRow {
    EvidenceRow {
        signature_state: sig,
        synthetic,
        ..rows::evidence_row(id, at(recorded))
    }
}

/// The tenant's rows, as the projector publishes them (row key, row).
fn rows() -> Vec<(String, ViewRow)> {
    let mut findings = vec![
        // Overdue from DUE on.
        finding("h-due", Risk::High, DUE),
        // Past due from DUE on, but a medium finding is never overdue.
        finding("m-due", Risk::Medium, DUE),
    ];
    // Past due long ago, covered by `x-exp` until EXPIRY: overdue from then on.
    let mut covered = finding("h-covered", Risk::High, 2 * H);
    covered.exception_id = Some("x-exp".into());
    covered.exception_expires_at = Some(at(EXPIRY));
    findings.push(covered);
    // Covered by an exception without expiry: never overdue.
    let mut accepted = finding("c-accepted", Risk::Critical, 2 * H);
    accepted.exception_id = Some("x-forever".into());
    findings.push(accepted);
    // Closed at its due instant: late, but closed is never overdue.
    let mut closed = finding("h-closed", Risk::High, DUE);
    closed.status = FindingStatus::Closed;
    closed.closed_at = Some(at(DUE));
    findings.push(closed);

    let mut x_exp = exception("x-exp", ExceptionKind::Exception, H);
    x_exp.finding_id = Some("h-covered".into());
    x_exp.expires_at = Some(at(EXPIRY));
    let mut x_forever = exception("x-forever", ExceptionKind::Exception, H);
    x_forever.finding_id = Some("c-accepted".into());
    // Unreviewed: `break_glass_unreviewed` from REVIEW_DEADLINE on.
    let bg_open = exception("bg-open", ExceptionKind::BreakGlass, BG_INVOKED);
    // Reviewed at its deadline instant (late) and 1 ms before it (in time): neither is ever
    // unreviewed.
    let mut bg_late = exception("bg-late", ExceptionKind::BreakGlass, BG_INVOKED);
    bg_late.reviewed_at = Some(at(REVIEW_DEADLINE));
    bg_late.reviewed_by = Some("carol".into());
    let mut bg_ok = exception("bg-ok", ExceptionKind::BreakGlass, BG_INVOKED);
    bg_ok.reviewed_at = Some(at(REVIEW_DEADLINE - 1));
    bg_ok.reviewed_by = Some("carol".into());

    // The newest real evidence of each stage, recorded at the same instant (each stage reads
    // its own environment's).
    let in_env = |id: &str, env: Environment| EvidenceRow {
        environment: Some(env),
        ..evidence(id, EVIDENCE, false, SignatureState::Verified)
    };
    let evidence = [
        evidence("ev-real", EVIDENCE, false, SignatureState::Verified),
        in_env(NEWEST[1].1, Environment::Pilot),
        in_env(NEWEST[2].1, Environment::Trial),
        evidence("ev-old", 0, false, SignatureState::Unsigned),
        // Newer, but neither counts for freshness.
        evidence(
            "ev-synthetic",
            EVIDENCE + 3 * H,
            true,
            SignatureState::Verified,
        ),
        evidence(
            "ev-forged",
            EVIDENCE + 4 * H,
            false,
            SignatureState::Invalid,
        ),
    ];

    let mut out: Vec<(String, ViewRow)> = Vec::new();
    out.extend(
        findings
            .into_iter()
            .map(|f| (f.finding_id.clone(), ViewRow::Finding(f))),
    );
    out.extend(
        [x_exp, x_forever, bg_open, bg_late, bg_ok]
            .into_iter()
            .map(|x| (x.exception_id.clone(), ViewRow::Exception(x))),
    );
    out.extend(
        evidence
            .into_iter()
            .map(|e| (e.evidence_id.clone(), ViewRow::Evidence(e))),
    );
    out
}

/// The newest real evidence of each stage's environment (ids below `ev-real`, so that the
/// tenant-wide newest is production's).
const NEWEST: [(Stage, &str); 3] = [
    (Stage::Production, "ev-real"),
    (Stage::Pilot, "ev-pilot"),
    (Stage::Trial, "ev-poc"),
];

/// What one service says at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    overdue: BTreeSet<String>,
    expired_exceptions: BTreeSet<String>,
    unreviewed_break_glass: BTreeSet<String>,
    /// Stages for which the evidence is stale.
    stale: BTreeSet<Stage>,
}

fn set<'a>(ids: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    ids.into_iter().map(str::to_owned).collect()
}

/// The gatekeeper: folds the rows into its state and evaluates its rules at `now`.
fn gatekeeper(windows: clock::Windows, now: Timestamp) -> Verdict {
    let mut state = aispm_gatekeeper::TenantState::default();
    for (key, row) in rows() {
        state.apply(row.view(), &key, Some(row)).unwrap();
    }
    let config = aispm_gatekeeper::Config::parse_from(["x"]);
    let policy = Policy::new(windows, &config.stages);
    let eval = aispm_gatekeeper::evaluate(&state, &policy, now);
    let production = &eval.stages[Stage::Production.index()];
    let subjects = |kind: BlockerKind| {
        set(production
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| d.subject.as_deref().unwrap_or_default()))
    };
    Verdict {
        overdue: subjects(BlockerKind::FindingOverdue),
        expired_exceptions: subjects(BlockerKind::ExceptionExpired),
        unreviewed_break_glass: subjects(BlockerKind::BreakGlassUnreviewed),
        stale: Stage::ALL
            .iter()
            .copied()
            .filter(|s| {
                eval.stages[s.index()]
                    .iter()
                    .any(|d| d.kind == BlockerKind::EvidenceStale)
            })
            .collect(),
    }
}

/// The reporter's tenant state, holding the same rows.
fn reporter_state() -> aispm_reporter::state::TenantState {
    let mut t = aispm_reporter::state::TenantState::default();
    for (key, row) in rows() {
        t.insert(key, row);
    }
    t
}

fn packet(
    t: &aispm_reporter::state::TenantState,
    ty: ReportType,
    windows: clock::Windows,
    now: Timestamp,
) -> report::Document {
    report::build(
        t,
        &Request {
            report_id: format!("r-{ty}-{}", now.0),
            tenant_id: TENANT.into(),
            report_type: ty,
            generated_at: now,
            windows,
            signer_public_key: "PUB".into(),
            fallback_key_id: "aispm-reporter".into(),
            requested_by: "test".into(),
            as_of: None,
        },
    )
}

/// The reporter: the documents of a production, a pilot and a trial packet at `now`. Every
/// figure that states a clock rule must agree with the others within the packet.
fn reporter(windows: clock::Windows, now: Timestamp) -> Verdict {
    let t = reporter_state();
    let doc = packet(&t, ReportType::ProductionReadiness, windows, now);
    let k = &doc.kpis;
    let overdue = set(k.overdue_ids.iter().map(String::as_str));
    assert_eq!(k.findings_overdue as usize, overdue.len());
    assert_eq!(
        set(doc
            .blocking_findings
            .iter()
            .filter(|f| f.overdue)
            .map(|f| f.finding_id.as_str())),
        overdue,
        "blocking findings vs key figures at {now}"
    );
    let expired = set(k.expired_exception_ids.iter().map(String::as_str));
    assert_eq!(
        set(doc
            .accepted_risks
            .iter()
            .filter(|r| r.expired)
            .map(|r| r.exception_id.as_str())),
        expired,
        "accepted risks vs key figures at {now}"
    );
    let unreviewed = set(k.break_glass_unreviewed_ids.iter().map(String::as_str));
    assert_eq!(k.break_glass_unreviewed as usize, unreviewed.len());
    assert_eq!(k.break_glass_reviewed_late_ids, ["bg-late"]);

    // The packet's tables (CSV) state the same per row, from the same document.
    let ciso = packet(&t, ReportType::Ciso, windows, now);
    let files =
        aispm_reporter::render::files(&ciso, &aispm_reporter::render::exported_findings(&t, &ciso))
            .unwrap();
    // A table's rows as maps from its header's column names (read with the csv crate: titles
    // and risk factors hold quoted commas).
    let table = |name: &str| -> Vec<BTreeMap<String, String>> {
        let f = files
            .iter()
            .find(|f| f.path == format!("tables/{name}.csv"))
            .unwrap_or_else(|| panic!("no {name}.csv"));
        let mut r = csv::Reader::from_reader(f.bytes.as_slice());
        let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
        r.records()
            .map(|row| {
                header
                    .iter()
                    .cloned()
                    .zip(row.unwrap().iter().map(str::to_owned))
                    .collect()
            })
            .collect()
    };
    let findings = table("findings");
    let csv_overdue = set(findings
        .iter()
        .filter(|r| r["sla_state"] == "overdue")
        .map(|r| r["finding_id"].as_str()));
    assert_eq!(csv_overdue, overdue, "findings.csv vs key figures at {now}");
    let states = table("break_glass");
    let csv_unreviewed = set(states
        .iter()
        .filter(|r| r["state"] == "review_overdue")
        .map(|r| r["exception_id"].as_str()));
    assert_eq!(csv_unreviewed, unreviewed, "break_glass.csv at {now}");
    let csv_expired = set(table("exceptions")
        .iter()
        .filter(|r| r["state"] == "expired")
        .map(|r| r["exception_id"].as_str()));
    assert_eq!(csv_expired, expired, "exceptions.csv at {now}");

    // The freshness check of a packet for each stage.
    let stale = [
        (Stage::Production, ReportType::ProductionReadiness),
        (Stage::Pilot, ReportType::PilotLaunch),
        (Stage::Trial, ReportType::TrialHandoff),
    ]
    .into_iter()
    .filter(|(stage, ty)| {
        let d = packet(&t, *ty, windows, now);
        assert_eq!(d.freshness.stage, *stage);
        let newest = NEWEST.iter().find(|(s, _)| s == stage).map(|(_, id)| *id);
        assert_eq!(d.freshness.newest_evidence_id.as_deref(), newest);
        d.freshness.status == report::checks::Status::Fail
    })
    .map(|(stage, _)| stage)
    .collect();
    Verdict {
        overdue,
        expired_exceptions: expired,
        unreviewed_break_glass: unreviewed,
        stale,
    }
}

/// The projector's API: the states its `/findings` and `/exceptions` handlers attach to each
/// row, and its `/posture`, at `now`.
fn projector(windows: clock::Windows, now: Timestamp) -> Verdict {
    let rows: Vec<ViewRow> = rows().into_iter().map(|(_, r)| r).collect();
    let mut overdue = BTreeSet::new();
    let mut expired = BTreeSet::new();
    let mut unreviewed = BTreeSet::new();
    for r in &rows {
        match r {
            ViewRow::Finding(f) if aispm_projector::sla_state(f, now) == "overdue" => {
                overdue.insert(f.finding_id.clone());
            }
            ViewRow::Exception(x) => match aispm_projector::exception_state(x, &windows, now) {
                "expired" => {
                    expired.insert(x.exception_id.clone());
                }
                "review_overdue" => {
                    unreviewed.insert(x.exception_id.clone());
                }
                _ => {}
            },
            _ => {}
        }
    }
    let p = aispm_projector::posture(TENANT, &rows, &windows, now);
    let drill = |key: &str| -> BTreeSet<String> {
        p["layers"]["findings"]["drill_down"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(drill("overdue"), overdue, "posture vs /findings at {now}");
    assert_eq!(drill("expired_exceptions"), expired);
    assert_eq!(drill("break_glass_review_overdue"), unreviewed);
    assert_eq!(p["layers"]["evidence"]["newest_id"], "ev-real");
    let stale = Stage::ALL
        .iter()
        .copied()
        .filter(|s| p["layers"]["evidence"]["stale"][s.as_str()] == Value::Bool(true))
        .collect();
    Verdict {
        overdue,
        expired_exceptions: expired,
        unreviewed_break_glass: unreviewed,
        stale,
    }
}

/// The three agree at `now`; returns what they say.
fn agree(now: Timestamp) -> Verdict {
    let (gw, rw, pw) = windows();
    let g = gatekeeper(gw, now);
    let r = reporter(rw, now);
    let p = projector(pw, now);
    assert_eq!(g, r, "gatekeeper vs reporter at {now}");
    assert_eq!(g, p, "gatekeeper vs projector at {now}");
    g
}

#[test]
fn every_service_takes_the_windows_from_the_same_flags() {
    let (g, r, p) = windows();
    assert_eq!(g, r);
    assert_eq!(g, p);
    assert_eq!(
        g.production_evidence_freshness,
        Duration::from_secs(6 * 3600)
    );
    assert_eq!(g.break_glass_review_window, Duration::from_secs(2 * 3600));
    assert_eq!(
        g.evidence_freshness(Stage::Pilot),
        Duration::from_secs(3 * 86_400)
    );
    // Without flags, every service has the schemas' defaults.
    let none = ["x"];
    assert_eq!(
        aispm_gatekeeper::Config::parse_from(none).windows.clock(),
        clock::Windows::default()
    );
    assert_eq!(
        ReporterCli::parse_from(none).config.clock.windows(),
        clock::Windows::default()
    );
    assert_eq!(
        ProjectorCli::parse_from(none).config.clock.windows(),
        clock::Windows::default()
    );
}

/// At every boundary, 1 ms before it, at it, and 1 ms after it, the gatekeeper, the reporter
/// and the projector say the same; and what they say flips exactly at the boundary instant.
#[test]
fn gatekeeper_reporter_and_projector_agree_on_both_sides_of_every_boundary() {
    let (w, _, _) = windows();
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap();
    // (boundary, what holds from it on, checked on the verdict)
    type Holds = Box<dyn Fn(&Verdict) -> bool>;
    let boundaries: Vec<(&str, i64, Holds)> = vec![
        (
            "h-due is overdue",
            DUE,
            Box::new(|v: &Verdict| v.overdue.contains("h-due")),
        ),
        (
            "x-exp expired",
            EXPIRY,
            Box::new(|v: &Verdict| v.expired_exceptions.contains("x-exp")),
        ),
        (
            "h-covered is overdue once x-exp expires",
            EXPIRY,
            Box::new(|v: &Verdict| v.overdue.contains("h-covered")),
        ),
        (
            "bg-open is unreviewed",
            REVIEW_DEADLINE,
            Box::new(|v: &Verdict| v.unreviewed_break_glass.contains("bg-open")),
        ),
        (
            "evidence is stale for production",
            EVIDENCE + ms(w.production_evidence_freshness),
            Box::new(|v: &Verdict| v.stale.contains(&Stage::Production)),
        ),
        (
            "evidence is stale for pilot",
            EVIDENCE + ms(w.pilot_evidence_freshness),
            Box::new(|v: &Verdict| v.stale.contains(&Stage::Pilot)),
        ),
        (
            "evidence is stale for trial",
            EVIDENCE + ms(w.trial_evidence_freshness),
            Box::new(|v: &Verdict| v.stale.contains(&Stage::Trial)),
        ),
    ];
    for (what, boundary, holds) in &boundaries {
        for (offset, want) in [(-1, false), (0, true), (1, true)] {
            let now = at(boundary + offset);
            let v = agree(now);
            assert_eq!(
                holds(&v),
                want,
                "{what}: at boundary {offset:+} ms ({now}) every service says {v:?}"
            );
            // What never holds, whatever the instant.
            for never in ["m-due", "c-accepted", "h-closed"] {
                assert!(!v.overdue.contains(never), "{never} overdue at {now}");
            }
            assert!(!v.expired_exceptions.contains("x-forever"));
            for reviewed in ["bg-late", "bg-ok"] {
                assert!(!v.unreviewed_break_glass.contains(reviewed));
            }
        }
    }
}

/// The projector's own states beyond the blockers: past due (medium), risk accepted, reviewed
/// late, per the same rules.
#[test]
fn the_projector_api_names_the_states_the_rules_define() {
    let (w, _, _) = windows();
    let now = at(REVIEW_DEADLINE + H);
    let states: Vec<(String, &str)> = rows()
        .iter()
        .filter_map(|(_, r)| match r {
            ViewRow::Finding(f) => Some((f.finding_id.clone(), aispm_projector::sla_state(f, now))),
            ViewRow::Exception(x) => Some((
                x.exception_id.clone(),
                aispm_projector::exception_state(x, &w, now),
            )),
            _ => None,
        })
        .collect();
    let get = |id: &str| states.iter().find(|(i, _)| i == id).unwrap().1;
    assert_eq!(get("h-due"), "overdue");
    assert_eq!(get("m-due"), "past_due");
    assert_eq!(get("h-covered"), "overdue");
    assert_eq!(get("c-accepted"), "risk_accepted");
    assert_eq!(get("h-closed"), "closed_late");
    assert_eq!(get("x-exp"), "expired");
    assert_eq!(get("x-forever"), "active");
    assert_eq!(get("bg-open"), "review_overdue");
    assert_eq!(get("bg-late"), "reviewed_late");
    assert_eq!(get("bg-ok"), "reviewed");
    let ev = rows()
        .into_iter()
        .find_map(|(_, r)| match r {
            ViewRow::Evidence(e) if e.evidence_id == "ev-forged" => Some(e),
            _ => None,
        })
        .unwrap();
    let f = aispm_projector::evidence_freshness(&ev, &w, now);
    assert_eq!(f["counts_for_freshness"], false);
}
