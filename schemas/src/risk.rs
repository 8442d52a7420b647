//! A finding's risk: a score from 0 to 100, the sum of seven explained factors, so that
//! findings rank by what they put at stake and not by their rule's severity alone. The
//! projector computes it when it derives a finding (`FindingRow::risk`); the API, the console
//! and the reports order findings by [`RankKey`]. The table of points is `docs/risk.md`.
//!
//! | factor | from | points |
//! |---|---|---|
//! | `severity` | the rule | low 5, medium 15, high 25, critical 35 |
//! | `criticality` | the registry's `criticality` of the resource | low 0, medium 5, high 10, critical 15; registered without one 5; not registered 10; no asset 5 |
//! | `environment` | the stages whose events raised it | production 10, pilot 5, trial 0; none named (counts for every stage) 10 |
//! | `exposure` | the resource's registration | public without authentication 10, public with it 5, otherwise 0 |
//! | `data_sensitivity` | data classes in the decisions behind it | secret or phi 10, pii 7, any other class 3, none 0 |
//! | `privilege` | wildcard or admin scopes; command or git actions | 5 each |
//! | `blast_radius` | distinct MCP tools, repos and model endpoints the agent reached in the 30 days up to the day of its newest decision ([`reach_since`]) | one point each, at most 10 |
//!
//! The score is a pure function of its inputs: the same facts give the same score, whatever
//! order the events arrived in.

use crate::{Environment, Risk};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The days of the blast radius' window: targets reached in the 30 days (UTC) up to and
/// including the day of the agent's newest decision ([`reach_since`]).
pub const REACH_WINDOW_DAYS: i64 = 30;

const DAY_MS: i64 = 86_400_000;

/// Where the blast radius' window starts for an agent whose newest decision was at `newest`
/// (ms): the start of the 30th UTC day back, counting the newest decision's day. The window
/// moves a day at a time, so an agent's radius changes when it reaches a new target or when a
/// day turns, not with every decision.
pub fn reach_since(newest: i64) -> i64 {
    (newest.div_euclid(DAY_MS) - (REACH_WINDOW_DAYS - 1)) * DAY_MS
}

/// Most blast-radius points (one per target).
pub const MAX_REACH_POINTS: i64 = 10;

/// What the finding's resource is, as the registry knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// The finding is about no one asset (an exception, unattributed evidence).
    None,
    /// Seen in decisions, never registered (shadow AI): its criticality is unknown.
    Unregistered,
    /// Registered, with the criticality the registry gave it, if any.
    Registered(Option<Risk>),
}

/// What an agent reached in the window: the blast radius.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reach {
    pub mcp_tools: i64,
    pub repos: i64,
    pub model_endpoints: i64,
}

/// The facts a score is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub severity: Risk,
    pub asset: Asset,
    /// The finding's environments; empty: it counts for every stage.
    pub environments: Vec<Environment>,
    pub public: Option<bool>,
    pub auth_required: Option<bool>,
    /// Data classes in the decisions behind it (or the class it is about).
    pub data_classes: BTreeSet<String>,
    /// Whether the resource (or its agent) holds wildcard or admin scopes ([`privileged_scope`]).
    pub privileged_scopes: bool,
    /// Privileged action kinds its agent performed (`command`, `git`).
    pub privileged_actions: BTreeSet<String>,
    /// The agent's reach; `None` when the finding is about no agent.
    pub reach: Option<Reach>,
}

/// One factor: its name, the value it read, and the points it adds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RiskFactor {
    pub factor: String,
    pub value: String,
    pub points: i64,
}
crate::avro_record!(RiskFactor {
    factor,
    value,
    points
});

/// A score and the factors that make it up (they sum to it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RiskScore {
    pub score: i64,
    pub factors: Vec<RiskFactor>,
}
crate::avro_record!(RiskScore { score, factors });

impl RiskScore {
    /// The factors that add points, in words: `severity high +25, environment production
    /// +10, …` (empty when none does). What the console, the packets and the demo show.
    pub fn explain(&self) -> String {
        self.factors
            .iter()
            .filter(|f| f.points != 0)
            .map(|f| format!("{} {} +{}", f.factor.replace('_', " "), f.value, f.points))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether a scope grants everything or administration (`*`, `admin`, `repo:*`,
/// `tools:admin`, `models/*`): the scopes of AISPM-KEY-001 and of the privilege factor.
pub fn privileged_scope(scope: &str) -> bool {
    let s = scope.to_ascii_lowercase();
    s == "*" || s == "admin" || s.ends_with(":*") || s.ends_with(":admin") || s.ends_with("/*")
}

/// Whether an action kind is privileged: running commands or changing repositories.
pub fn privileged_action(action_kind: &str) -> bool {
    matches!(action_kind, "command" | "git")
}

fn factor(factor: &str, value: impl Into<String>, points: i64) -> RiskFactor {
    RiskFactor {
        factor: factor.to_owned(),
        value: value.into(),
        points,
    }
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The score of `inputs`, with every factor (also those adding nothing) in table order.
pub fn score(i: &Inputs) -> RiskScore {
    let severity = match i.severity {
        Risk::Low => 5,
        Risk::Medium => 15,
        Risk::High => 25,
        Risk::Critical => 35,
    };
    let level = |r: Risk| match r {
        Risk::Low => 0,
        Risk::Medium => 5,
        Risk::High => 10,
        Risk::Critical => 15,
    };
    let criticality = match i.asset {
        Asset::None => factor("criticality", "no asset (counted as medium)", 5),
        Asset::Unregistered => factor("criticality", "not registered (counted as high)", 10),
        Asset::Registered(None) => factor("criticality", "not stated (counted as medium)", 5),
        Asset::Registered(Some(r)) => factor("criticality", r.as_str(), level(r)),
    };
    let environment = if i.environments.is_empty() {
        factor("environment", "every stage", 10)
    } else {
        let top = i
            .environments
            .iter()
            .max_by_key(|e| env_rank(**e))
            .copied()
            .unwrap_or(Environment::Production);
        factor(
            "environment",
            top.as_str(),
            match top {
                Environment::Production => 10,
                Environment::Pilot => 5,
                Environment::Trial => 0,
            },
        )
    };
    let exposure = match (i.public, i.auth_required) {
        (Some(true), Some(true)) => factor("exposure", "public, authenticated", 5),
        (Some(true), _) => factor("exposure", "public, no authentication", 10),
        (Some(false), _) => factor("exposure", "not public", 0),
        (None, _) => factor("exposure", "not stated", 0),
    };
    let class_points = |c: &str| match c {
        "secret" | "phi" => 10,
        "pii" => 7,
        _ => 3,
    };
    let data = match i.data_classes.iter().map(|c| class_points(c)).max() {
        None => factor("data_sensitivity", "no data classes", 0),
        Some(p) => factor(
            "data_sensitivity",
            i.data_classes
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            p,
        ),
    };
    let mut why = Vec::new();
    if i.privileged_scopes {
        why.push("wildcard or admin scopes".to_owned());
    }
    if !i.privileged_actions.is_empty() {
        let kinds: Vec<&str> = i.privileged_actions.iter().map(String::as_str).collect();
        why.push(format!("{} actions", kinds.join(" and ")));
    }
    let privilege = factor(
        "privilege",
        if why.is_empty() {
            "none".to_owned()
        } else {
            why.join("; ")
        },
        5 * i64::from(i.privileged_scopes) + 5 * i64::from(!i.privileged_actions.is_empty()),
    );
    let blast = match i.reach {
        None => factor("blast_radius", "not about an agent", 0),
        Some(r) => factor(
            "blast_radius",
            format!(
                "{}, {}, {} in 30 days",
                plural(r.mcp_tools, "MCP tool", "MCP tools"),
                plural(r.repos, "repo", "repos"),
                plural(r.model_endpoints, "model endpoint", "model endpoints"),
            ),
            (r.mcp_tools + r.repos + r.model_endpoints).clamp(0, MAX_REACH_POINTS),
        ),
    };
    let factors = vec![
        factor("severity", i.severity.as_str(), severity),
        criticality,
        environment,
        exposure,
        data,
        privilege,
        blast,
    ];
    RiskScore {
        score: factors.iter().map(|f| f.points).sum::<i64>().clamp(0, 100),
        factors,
    }
}

fn env_rank(e: Environment) -> u8 {
    match e {
        Environment::Trial => 0,
        Environment::Pilot => 1,
        Environment::Production => 2,
    }
}

fn severity_rank(r: Risk) -> u8 {
    match r {
        Risk::Low => 0,
        Risk::Medium => 1,
        Risk::High => 2,
        Risk::Critical => 3,
    }
}

/// A finding's place in the order findings are listed in: highest risk first, then higher
/// severity, then the newest occurrence, then by id (a total order, so pages never overlap);
/// smaller comes first (`FindingRow::rank_key`, `FindingRow::by_rank`). It is also the cursor
/// of a page ranked by risk ([`RankKey::encode`]), so the next page starts after it even when
/// the rows changed in between.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RankKey {
    neg_score: i64,
    neg_severity: i64,
    neg_last_occurrence: i64,
    finding_id: String,
}

impl RankKey {
    pub fn new(score: i64, severity: Risk, last_occurrence_ms: i64, finding_id: &str) -> Self {
        RankKey {
            neg_score: score.saturating_neg(),
            neg_severity: -i64::from(severity_rank(severity)),
            neg_last_occurrence: last_occurrence_ms.saturating_neg(),
            finding_id: finding_id.to_owned(),
        }
    }

    /// `{score} \0 {severity} \0 {last occurrence} \0 {finding id}`.
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{}\0{}\0{}\0{}",
            self.neg_score, self.neg_severity, self.neg_last_occurrence, self.finding_id
        )
        .into_bytes()
    }

    /// The key [`RankKey::encode`] wrote; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(bytes).ok()?;
        let mut parts = s.splitn(4, '\0');
        Some(RankKey {
            neg_score: parts.next()?.parse().ok()?,
            neg_severity: parts.next()?.parse().ok()?,
            neg_last_occurrence: parts.next()?.parse().ok()?,
            finding_id: parts.next()?.to_owned(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn base() -> Inputs {
        Inputs {
            severity: Risk::High,
            asset: Asset::Registered(Some(Risk::Medium)),
            environments: vec![Environment::Pilot],
            public: None,
            auth_required: None,
            data_classes: BTreeSet::new(),
            privileged_scopes: false,
            privileged_actions: BTreeSet::new(),
            reach: Some(Reach::default()),
        }
    }

    fn points(s: &RiskScore, name: &str) -> i64 {
        s.factors.iter().find(|f| f.factor == name).unwrap().points
    }

    #[test]
    fn the_factors_sum_to_the_score_and_are_all_named() {
        let s = score(&base());
        assert_eq!(s.score, 25 + 5 + 5);
        let names: Vec<&str> = s.factors.iter().map(|f| f.factor.as_str()).collect();
        assert_eq!(
            names,
            [
                "severity",
                "criticality",
                "environment",
                "exposure",
                "data_sensitivity",
                "privilege",
                "blast_radius"
            ]
        );
        assert_eq!(s.score, s.factors.iter().map(|f| f.points).sum::<i64>());
    }

    #[test]
    fn the_explanation_names_the_factors_that_add_points() {
        assert_eq!(
            score(&base()).explain(),
            "severity high +25, criticality medium +5, environment pilot +5"
        );
    }

    #[test]
    fn each_factor_raises_the_score() {
        let b = score(&base()).score;
        let raised: Vec<(&str, Inputs)> = vec![
            (
                "severity",
                Inputs {
                    severity: Risk::Critical,
                    ..base()
                },
            ),
            (
                "criticality",
                Inputs {
                    asset: Asset::Registered(Some(Risk::Critical)),
                    ..base()
                },
            ),
            (
                "environment",
                Inputs {
                    environments: vec![Environment::Trial, Environment::Production],
                    ..base()
                },
            ),
            (
                "exposure",
                Inputs {
                    public: Some(true),
                    auth_required: Some(false),
                    ..base()
                },
            ),
            (
                "data_sensitivity",
                Inputs {
                    data_classes: ["pii".to_owned()].into(),
                    ..base()
                },
            ),
            (
                "privilege",
                Inputs {
                    privileged_actions: ["command".to_owned()].into(),
                    ..base()
                },
            ),
            (
                "blast_radius",
                Inputs {
                    reach: Some(Reach {
                        mcp_tools: 2,
                        repos: 1,
                        model_endpoints: 1,
                    }),
                    ..base()
                },
            ),
        ];
        for (name, inputs) in raised {
            let s = score(&inputs);
            assert!(s.score > b, "{name}: {} not above {b}", s.score);
            assert!(points(&s, name) > points(&score(&base()), name), "{name}");
        }
    }

    #[test]
    fn the_highest_of_everything_is_one_hundred_and_the_radius_is_capped() {
        let s = score(&Inputs {
            severity: Risk::Critical,
            asset: Asset::Registered(Some(Risk::Critical)),
            environments: vec![],
            public: Some(true),
            auth_required: Some(false),
            data_classes: ["secret".to_owned(), "pii".to_owned()].into(),
            privileged_scopes: true,
            privileged_actions: ["git".to_owned()].into(),
            reach: Some(Reach {
                mcp_tools: 40,
                repos: 9,
                model_endpoints: 3,
            }),
        });
        assert_eq!(s.score, 100);
        assert_eq!(points(&s, "blast_radius"), MAX_REACH_POINTS);
        assert_eq!(points(&s, "data_sensitivity"), 10);
    }

    #[test]
    fn a_rank_key_round_trips_and_orders_by_risk_first() {
        let a = RankKey::new(70, Risk::Medium, 5, "b");
        let b = RankKey::new(40, Risk::Critical, 9, "a");
        let c = RankKey::new(40, Risk::Critical, 9, "ax");
        let d = RankKey::new(40, Risk::Critical, 3, "a");
        let mut keys = vec![d.clone(), c.clone(), b.clone(), a.clone()];
        keys.sort();
        assert_eq!(keys, [a, b.clone(), c, d]);
        assert_eq!(RankKey::decode(&b.encode()), Some(b));
        assert_eq!(RankKey::decode(b"not a key"), None);
    }

    #[test]
    fn the_reach_window_is_thirty_utc_days_ending_with_the_newest_decisions_day() {
        let day = 86_400_000;
        let newest = 100 * day + 5_000;
        assert_eq!(reach_since(newest), 71 * day);
        assert_eq!(reach_since(100 * day), reach_since(101 * day - 1));
        assert_eq!(reach_since(0), -29 * day);
    }

    #[test]
    fn privileged_scopes_are_wildcards_and_admin() {
        for s in ["*", "admin", "repo:*", "tools:ADMIN", "models/*"] {
            assert!(privileged_scope(s), "{s}");
        }
        for s in ["repo:read", "administrator-view", "models/gpt"] {
            assert!(!privileged_scope(s), "{s}");
        }
    }
}
