//! proptest strategies for every contract type (shared by the schema tests).
#![allow(dead_code, unreachable_pub)]

use aispm_schemas::*;
use proptest::collection::{btree_map, vec};
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;

pub fn id() -> impl Strategy<Value = String> {
    "[a-z0-9_.-]{1,16}"
}
pub fn text() -> impl Strategy<Value = String> {
    // Any Unicode, including the empty string.
    ".{0,24}"
}
pub fn ts() -> impl Strategy<Value = Timestamp> {
    (validate::MIN_TIMESTAMP.0..validate::MAX_TIMESTAMP.0).prop_map(Timestamp)
}
pub fn hex64() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}
fn ids() -> impl Strategy<Value = Vec<String>> {
    vec(id(), 0..4)
}

pub fn evidence() -> impl Strategy<Value = Evidence> {
    (id(), hex64(), text(), of(text()), of(id())).prop_map(
        |(evidence_id, sha256, uri, signature, key_id)| Evidence {
            evidence_id,
            sha256,
            uri,
            signature,
            key_id,
        },
    )
}

pub fn decision() -> impl Strategy<Value = DecisionEvent> {
    let head = (
        id(),
        id(),
        ts(),
        id(),
        id(),
        id(),
        select(Environment::ALL),
        select(ActionKind::ALL),
        text(),
    );
    let opts = (
        of(id()),
        of(id()),
        of(id()),
        of(id()),
        of(id()),
        of(id()),
        of(id()),
    );
    let tail = (
        select(Mode::ALL),
        select(Verdict::ALL),
        select(Risk::ALL),
        ids(),
        any::<bool>(),
        of(id()),
        of(evidence()),
    );
    (head, opts, tail).prop_map(
        |(
            (
                event_id,
                tenant_id,
                occurred_at,
                source,
                agent_id,
                actor,
                environment,
                action_kind,
                target,
            ),
            (repo, workflow, mcp_server, mcp_tool, model_endpoint, control_id, policy_id),
            (mode, verdict, risk, data_classes, synthetic, approval_id, evidence),
        )| DecisionEvent {
            event_id,
            tenant_id,
            occurred_at,
            source,
            agent_id,
            actor,
            environment,
            action_kind,
            target,
            repo,
            workflow,
            mcp_server,
            mcp_tool,
            model_endpoint,
            control_id,
            policy_id,
            mode,
            verdict,
            risk,
            data_classes,
            synthetic,
            approval_id,
            api_key_id: None,
            scopes_used: vec![],
            evidence,
        },
    )
}

pub fn approval() -> impl Strategy<Value = ApprovalEvent> {
    let head = (id(), id(), ts(), id(), select(ApprovalKind::ALL));
    let tail = (
        of(id()),
        of(id()),
        of(id()),
        of(id()),
        id(),
        of(id()),
        of(text()),
        of(ts()),
        of(ts()),
    );
    (head, tail).prop_map(
        |(
            (event_id, tenant_id, occurred_at, source, kind),
            (
                decision_id,
                finding_id,
                control_id,
                exception_id,
                actor,
                owner,
                reason,
                due_at,
                expires_at,
            ),
        )| ApprovalEvent {
            event_id,
            tenant_id,
            occurred_at,
            source,
            kind,
            decision_id,
            finding_id,
            control_id,
            exception_id,
            actor,
            owner,
            reason,
            due_at,
            expires_at,
        },
    )
}

pub fn asset() -> impl Strategy<Value = Asset> {
    let head = (
        select(AssetKind::ALL),
        id(),
        select(AssetStatus::ALL),
        of(id()),
        of(select(Risk::ALL)),
        of(select(Environment::ALL)),
        of(select(Trust::ALL)),
    );
    let tail = (
        ids(),
        of(any::<bool>()),
        of(any::<bool>()),
        of(text()),
        ids(),
        ids(),
        ids(),
        btree_map(id(), text(), 0..3),
    );
    (head, tail).prop_map(
        |(
            (asset_kind, asset_id, status, owner, criticality, environment, trust),
            (
                scopes,
                public,
                auth_required,
                public_key,
                approved_data_classes,
                recipients,
                framework_mappings,
                attributes,
            ),
        )| Asset {
            asset_kind,
            asset_id,
            status,
            owner,
            criticality,
            environment,
            trust,
            scopes,
            public,
            auth_required,
            public_key,
            approved_data_classes,
            recipients,
            framework_mappings,
            attributes,
        },
    )
}

pub fn validation() -> impl Strategy<Value = Validation> {
    (
        select(CheckKind::ALL),
        select(CheckResult::ALL),
        of(id()),
        of(text()),
        of(evidence()),
        of(select(Environment::ALL)),
    )
        .prop_map(
            |(check_kind, result, subject, detail, evidence, environment)| Validation {
                check_kind,
                result,
                subject,
                detail,
                evidence,
                environment,
            },
        )
}

fn environment_activity() -> impl Strategy<Value = EnvironmentActivity> {
    (
        select(Environment::ALL),
        i(),
        i(),
        of(ts()),
        of(id()),
        of(id()),
    )
        .prop_map(
            |(
                environment,
                decisions,
                synthetic_decisions,
                last_seen,
                last_decision_id,
                last_real_decision_id,
            )| EnvironmentActivity {
                environment,
                decisions,
                synthetic_decisions,
                last_seen,
                last_decision_id,
                last_real_decision_id,
            },
        )
}

fn control_activity() -> impl Strategy<Value = ControlActivity> {
    (
        select(Environment::ALL),
        select(ControlState::ALL),
        i(),
        i(),
        i(),
        ids(),
        of(ts()),
    )
        .prop_map(
            |(
                environment,
                state,
                enforced_decisions,
                shadow_decisions,
                high_risk_decisions,
                decision_ids,
                last_decision_at,
            )| ControlActivity {
                environment,
                state,
                enforced_decisions,
                shadow_decisions,
                high_risk_decisions,
                decision_ids,
                last_decision_at,
            },
        )
}

pub fn registry() -> impl Strategy<Value = RegistryEvent> {
    let body = prop_oneof![
        asset().prop_map(|a| (Some(a), None)),
        validation().prop_map(|v| (None, Some(v))),
    ];
    (id(), id(), ts(), id(), body).prop_map(
        |(event_id, tenant_id, occurred_at, source, (asset, validation))| RegistryEvent {
            event_id,
            tenant_id,
            occurred_at,
            source,
            asset,
            validation,
        },
    )
}

pub fn delivery() -> impl Strategy<Value = ReportDeliveryEvent> {
    let head = (
        id(),
        id(),
        ts(),
        id(),
        id(),
        select(ReportType::ALL),
        select(DeliveryChannel::ALL),
        select(DeliveryOutcome::ALL),
    );
    let tail = (
        ids(),
        any::<bool>(),
        of(id()),
        of(text()),
        hex64(),
        1..10i32,
        of(text()),
        of(evidence()),
    );
    (head, tail).prop_map(
        |(
            (event_id, tenant_id, occurred_at, source, report_id, report_type, channel, outcome),
            (
                recipients,
                approved_recipients,
                message_id,
                server_response,
                packet_sha256,
                attempt,
                error,
                evidence,
            ),
        )| ReportDeliveryEvent {
            event_id,
            tenant_id,
            occurred_at,
            source,
            report_id,
            report_type,
            channel,
            outcome,
            recipients,
            approved_recipients,
            message_id,
            server_response,
            packet_sha256,
            attempt,
            error,
            evidence,
        },
    )
}

fn i() -> impl Strategy<Value = i64> {
    0..1_000_000i64
}

pub fn view_row() -> impl Strategy<Value = ViewRow> {
    let coverage = (
        (
            select(CoverageKind::ALL),
            id(),
            any::<bool>(),
            any::<bool>(),
            of(id()),
            of(id()),
            i(),
        ),
        (i(), of(ts()), of(ts()), of(id()), of(id()), any::<bool>()),
        vec(environment_activity(), 0..3),
    )
        .prop_map(
            |(
                (kind, id, registered, retired, owner, trust, decisions),
                (
                    synthetic_decisions,
                    first_seen,
                    last_seen,
                    last_decision_id,
                    last_real_decision_id,
                    shadow_ai,
                ),
                environments,
            )| {
                ViewRow::Coverage(CoverageRow {
                    asserted_by: None,
                    kind,
                    id,
                    registered,
                    retired,
                    owner,
                    trust,
                    decisions,
                    synthetic_decisions,
                    first_seen,
                    last_seen,
                    last_decision_id,
                    last_real_decision_id,
                    shadow_ai,
                    environments,
                })
            },
        );
    let control = (
        id(),
        select(ControlState::ALL),
        any::<bool>(),
        i(),
        i(),
        i(),
        ids(),
        ids(),
        ids(),
        of(ts()),
        vec(control_activity(), 0..3),
        (
            of(ts()),
            vec(
                (id(), ts(), ts(), i()).prop_map(
                    |(policy_id, first_seen_at, last_seen_at, decisions)| PolicyUse {
                        policy_id,
                        first_seen_at,
                        last_seen_at,
                        decisions,
                    },
                ),
                0..3,
            ),
            vec(
                (id(), i(), i(), i(), i(), vec(i(), 0..10)).prop_map(
                    |(month, requested, granted, denied, decide_ms_sum, decide_buckets)| {
                        ApprovalMonth {
                            month,
                            requested,
                            granted,
                            denied,
                            decide_ms_sum,
                            decide_buckets,
                        }
                    },
                ),
                0..3,
            ),
        ),
    )
        .prop_map(
            |(
                control_id,
                state,
                registered,
                enforced_decisions,
                shadow_decisions,
                high_risk_decisions,
                action_kinds,
                framework_mappings,
                decision_ids,
                last_decision_at,
                environments,
                (last_enforced_at, policies, approvals),
            )| {
                ViewRow::Control(ControlRow {
                    last_enforced_at,
                    policies,
                    approvals,
                    asserted_by: None,
                    control_id,
                    state,
                    registered,
                    enforced_decisions,
                    shadow_decisions,
                    high_risk_decisions,
                    action_kinds,
                    framework_mappings,
                    decision_ids,
                    last_decision_at,
                    environments,
                })
            },
        );
    let finding = (
        (
            id(),
            id(),
            text(),
            select(Risk::ALL),
            select(FindingStatus::ALL),
            id(),
            of(id()),
            of(ts()),
        ),
        (
            ts(),
            of(ts()),
            of(text()),
            ids(),
            ids(),
            i(),
            of(id()),
            of(ts()),
        ),
        (i(), vec((id(), text(), i()), 0..8)),
    )
        .prop_map(
            |(
                (finding_id, rule_id, title, severity, status, subject, owner, due_at),
                (
                    opened_at,
                    closed_at,
                    resolution,
                    frameworks,
                    event_ids,
                    occurrences,
                    exception_id,
                    exception_expires_at,
                ),
                (score, factors),
            )| {
                ViewRow::Finding(FindingRow {
                    asserted_by: None,
                    finding_id,
                    rule_id,
                    title,
                    severity,
                    status,
                    subject,
                    owner,
                    due_at,
                    opened_at,
                    closed_at,
                    resolution,
                    frameworks,
                    event_ids,
                    occurrences,
                    exception_id,
                    exception_expires_at,
                    first_occurrence_at: opened_at,
                    last_occurrence_at: opened_at,
                    environments: Vec::new(),
                    risk: RiskScore {
                        score,
                        factors: factors
                            .into_iter()
                            .map(|(factor, value, points)| RiskFactor {
                                factor,
                                value,
                                points,
                            })
                            .collect(),
                    },
                })
            },
        );
    let exception = (
        (
            id(),
            select(ExceptionKind::ALL),
            of(id()),
            of(id()),
            of(id()),
            of(id()),
            of(id()),
        ),
        (
            of(text()),
            ts(),
            of(ts()),
            any::<bool>(),
            of(ts()),
            of(id()),
            ids(),
        ),
    )
        .prop_map(
            |(
                (exception_id, kind, finding_id, control_id, decision_id, owner, actor),
                (reason, granted_at, expires_at, revoked, reviewed_at, reviewed_by, event_ids),
            )| {
                ViewRow::Exception(ExceptionRow {
                    asserted_by: None,
                    exception_id,
                    kind,
                    finding_id,
                    control_id,
                    decision_id,
                    owner,
                    actor,
                    reason,
                    granted_at,
                    expires_at,
                    revoked,
                    reviewed_at,
                    reviewed_by,
                    event_ids,
                })
            },
        );
    let evidence = (
        id(),
        id(),
        hex64(),
        text(),
        select(SignatureState::ALL),
        of(id()),
        ts(),
        any::<bool>(),
        of(id()),
        of(select(Environment::ALL)),
    )
        .prop_map(
            |(
                evidence_id,
                event_id,
                sha256,
                uri,
                signature_state,
                key_id,
                recorded_at,
                synthetic,
                action_kind,
                environment,
            )| {
                ViewRow::Evidence(EvidenceRow {
                    asserted_by: None,
                    evidence_id,
                    event_id,
                    sha256,
                    uri,
                    signature_state,
                    key_id,
                    recorded_at,
                    synthetic,
                    action_kind,
                    environment,
                    agent_id: None,
                    control_id: None,
                })
            },
        );
    let validation = (
        id(),
        of(id()),
        id(),
        of(id()),
        ts(),
        id(),
        of(text()),
        of(select(Environment::ALL)),
        (select(SignatureState::ALL), of(id())),
    )
        .prop_map(
            |(
                check_kind,
                subject,
                result,
                evidence_id,
                validated_at,
                event_id,
                detail,
                environment,
                (signature_state, key_id),
            )| {
                ViewRow::Validation(ValidationRow {
                    asserted_by: None,
                    check_kind,
                    subject,
                    result,
                    evidence_id,
                    validated_at,
                    event_id,
                    detail,
                    environment,
                    signature_state,
                    key_id,
                })
            },
        );
    let delivery = (
        (id(), id(), id(), id(), ids(), any::<bool>(), of(id())),
        (hex64(), 1..5i32, ts(), id(), of(id()), of(text())),
    )
        .prop_map(
            |(
                (
                    report_id,
                    report_type,
                    channel,
                    outcome,
                    recipients,
                    approved_recipients,
                    message_id,
                ),
                (packet_sha256, attempt, delivered_at, event_id, evidence_id, error),
            )| {
                ViewRow::Delivery(DeliveryRow {
                    asserted_by: None,
                    report_id,
                    report_type,
                    channel,
                    outcome,
                    recipients,
                    approved_recipients,
                    message_id,
                    packet_sha256,
                    attempt,
                    delivered_at,
                    event_id,
                    evidence_id,
                    error,
                })
            },
        );
    prop_oneof![
        coverage, control, finding, exception, evidence, validation, delivery
    ]
}

pub fn view_change() -> impl Strategy<Value = ViewChange> {
    (id(), id(), of(view_row()), ts(), id()).prop_map(
        |(tenant_id, key, row, changed_at, cause_event_id)| {
            let view = row.as_ref().map_or(ViewName::Findings, ViewRow::view);
            ViewChange::new(tenant_id, view, key, row, changed_at, cause_event_id)
        },
    )
}

pub fn blocker() -> impl Strategy<Value = Blocker> {
    (
        id(),
        select(Stage::ALL),
        id(),
        select(BlockerKind::ALL),
        text(),
        text(),
        of(id()),
        ids(),
        ts(),
    )
        .prop_map(
            |(
                tenant_id,
                stage,
                blocker_id,
                kind,
                meaning,
                resolution,
                subject,
                evidence,
                detected_at,
            )| Blocker {
                tenant_id,
                stage,
                blocker_id,
                kind,
                meaning,
                resolution,
                subject,
                evidence,
                detected_at,
            },
        )
}

pub fn readiness() -> impl Strategy<Value = Readiness> {
    (id(), select(Stage::ALL), any::<bool>(), ids(), ts()).prop_map(
        |(tenant_id, stage, ready, blocker_ids, evaluated_at)| Readiness {
            tenant_id,
            stage,
            ready,
            blocker_ids,
            evaluated_at,
        },
    )
}
