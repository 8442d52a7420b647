//! `scripts/demo.sh` runs this: the whole pipeline on one machine, narrated.

use aispm_tests::demo::{CONNECTOR, CONNECTOR_CREDENTIAL, Pipeline, TENANT, blocker_kinds};
use std::path::PathBuf;
use std::time::Duration;

fn step(n: u32, what: &str) {
    println!("\n== {n}. {what}");
}

fn verdict_line(v: &serde_json::Value) -> String {
    format!(
        "ready_for_aispm_production: {}   ({} blockers)",
        v["ready_for_aispm_production"],
        v["blockers"].as_array().map_or(0, Vec::len)
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let work = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".demo".into()));
    let p = start(&work).await?;
    open(&p).await?;
    fold(&p).await?;
    forge(&p).await?;
    let before_remediation = remediate(&p).await?;
    probe_connector(&p).await?;
    probe_isolation(&p).await?;
    let report = deliver(&p).await?;
    ready(&p).await?;
    // The remediation's events are dated from ten minutes before they were sent (event time
    // decides): a minute before that is the tenant before any of it.
    print_as_of(&p, before_remediation.minus(Duration::from_secs(11 * 60))).await?;
    print_monthly(&p).await?;
    where_to_look(&p, &report).await
}

/// 1. The broker, the SMTP server, the live system and the services, started.
async fn start(work: &std::path::Path) -> anyhow::Result<Pipeline> {
    step(
        1,
        "Starting Apache Kafka (one KRaft node), an SMTP server, the live system the tenant's connector reads, and the four services",
    );
    let p = Pipeline::start(work).await?;
    println!("broker      {}", p.broker.bootstrap());
    for (name, s) in [
        ("ingest", &p.ingest),
        ("projector", &p.projector),
        ("gatekeeper", &p.gatekeeper),
        ("reporter", &p.reporter),
    ] {
        println!("{name:<11} {}   (/metrics /healthz /readyz)", s.http);
    }
    println!("console     {}   (the web console)", p.console.http);
    println!(
        "smtp        127.0.0.1:{}   (mailbox {})",
        p.smtp.port,
        p.smtp.dir.display()
    );
    println!(
        "live system {}   (a stand-in identity provider: the okta-connector reads its users)",
        p.live.url
    );

    Ok(p)
}

/// 2. The demo scenario, posted as an agent runtime would, and an OpenTelemetry trace.
async fn open(p: &Pipeline) -> anyhow::Result<()> {
    step(
        2,
        &format!(
            "An agent runtime posts the demo scenario for tenant '{TENANT}' to the ingest API"
        ),
    );
    println!("{}", p.emit("open")?);
    println!(
        "(shadow agents, a quarantined MCP tool, a shadow-mode control, an expired exception, stale and unsigned evidence, unreviewed break-glass, no live validations)"
    );

    let (status, answer) = p.post_otel_trace().await?;
    println!(
        "otel        an OpenTelemetry-instrumented agent in trial exported its trace (invoke_agent, then an execute_tool its gateway allowed) to /v1/traces: {status} {answer}; both spans are trial decisions, which production never reads"
    );

    Ok(())
}

/// 3. The blockers the scenario opens, the posture, the maps and the console's pages of it.
async fn fold(p: &Pipeline) -> anyhow::Result<()> {
    step(
        3,
        "The projector folds the events into views; the gatekeeper finds the blockers",
    );
    // Every event posted is folded before the posture is read: the same figures every run.
    p.caught_up(Duration::from_secs(90)).await?;
    let open = p
        .readiness_until(Duration::from_secs(90), |v| {
            v["blockers"].as_array().is_some_and(|b| b.len() >= 8)
        })
        .await?;
    println!("{}", verdict_line(&open));
    for b in open["blockers"].as_array().into_iter().flatten() {
        println!(
            "  - {:<33} {}",
            b["kind"].as_str().unwrap_or(""),
            b["evidence"].as_array().map_or(String::new(), |e| e
                .iter()
                .take(3)
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    let posture = p
        .get(&p.projector.http, &format!("/v1/tenants/{TENANT}/posture"))
        .await?;
    println!(
        "posture score {} — coverage {}, controls {}, findings {}, evidence {}, reports {}",
        posture["score"],
        posture["layers"]["coverage"]["score"],
        posture["layers"]["controls"]["score"],
        posture["layers"]["findings"]["score"],
        posture["layers"]["evidence"]["score"],
        posture["layers"]["reports"]["score"]
    );
    println!(
        "  {}",
        posture["layers"]["findings"]["detail"]
            .as_str()
            .unwrap_or("")
    );

    print_maps(p).await?;

    let critical = format!(
        "/t/{TENANT}/finding?id={}",
        aispm_tools::scenario::ids::CRITICAL_FINDING
            .replace(':', "%3A")
            .replace('/', "%2F")
    );
    let decision = format!(
        "/t/{TENANT}/event?id={}",
        aispm_tools::scenario::ids::critical_decision(TENANT)
    );
    match p
        .console_snapshots(
            &p.work.join("console"),
            aispm_tests::demo::TENANT_TOKEN,
            &[
                ("overview-open", &format!("/t/{TENANT}")),
                ("critical-finding", &critical),
                ("decision-behind-it", &decision),
            ],
        )
        .await
    {
        Ok(files) => println!(
            "console     the overview, the critical finding it links to and the decision behind it, as the console shows them: {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Err(e) => println!("console     snapshots failed: {e:#}"),
    }

    Ok(())
}

/// 4. Forged clearances and hostile input, refused; the verdict unchanged.
async fn forge(p: &Pipeline) -> anyhow::Result<()> {
    step(
        4,
        "Forgeries: the gateway's token and a clock trick try to clear blockers, and are refused",
    );
    for (what, status, reason) in p.forgeries().await? {
        println!("  - {what}: {status} {reason}");
    }
    println!("  and hostile input is refused without stalling anyone else:");
    for (what, answer) in p.hostile().await? {
        println!("  - {what}: {answer}");
    }
    let after = p.readiness().await?;
    println!(
        "{} (unchanged: {} blockers)",
        verdict_line(&after),
        after["blockers"].as_array().map_or(0, Vec::len)
    );

    Ok(())
}

/// 5. The team's remediation: returns the instant before it, to look back at with `as_of=`.
async fn remediate(p: &Pipeline) -> anyhow::Result<aispm_schemas::Timestamp> {
    step(
        5,
        "The team remediates: registrations, reviews, owners, enforced controls, real workflows",
    );
    let before_remediation = aispm_schemas::Timestamp::now();
    println!("{}", p.emit("remediate")?);
    let left = p
        .readiness_until(Duration::from_secs(90), |v| {
            blocker_kinds(v)
                == [
                    "missing_live_connector_evidence",
                    "report_delivery_unverified",
                    "tenant_isolation_not_proven",
                ]
        })
        .await?;
    println!("{}", verdict_line(&left));
    for k in blocker_kinds(&left) {
        println!("  - {k}");
    }
    println!(
        "  (the staging gateway's real git pushes and fresh evidence count for trial only: production judged on its own)"
    );
    println!(
        "  (what is left is for aispm's validators to prove by doing the work, never for the tenant to claim)"
    );

    Ok(before_remediation)
}

/// 6. The connector probe, with a revoked credential and then the current one.
async fn probe_connector(p: &Pipeline) -> anyhow::Result<()> {
    step(
        6,
        &format!(
            "aispm's connector probe reads the live system with the {CONNECTOR}'s credential, and signs the result"
        ),
    );
    for (label, credential) in [
        ("revoked credential", "SSWS revoked-token"),
        ("current credential", CONNECTOR_CREDENTIAL),
    ] {
        let (passed, probe) = p.validate_connector(credential)?;
        println!(
            "probe       {} with the {label}: {}",
            if passed { "pass" } else { "fail" },
            probe["detail"].as_str().unwrap_or("")
        );
        println!(
            "            transcript {} (credential redacted)",
            probe["transcript"].as_str().unwrap_or("")
        );
    }
    let left = p
        .readiness_until(Duration::from_secs(90), |v| {
            blocker_kinds(v) == ["report_delivery_unverified", "tenant_isolation_not_proven"]
        })
        .await?;
    println!("{}", verdict_line(&left));

    Ok(())
}

/// 7. The isolation probe.
async fn probe_isolation(p: &Pipeline) -> anyhow::Result<()> {
    step(
        7,
        "aispm's isolation probe tries every read route with each tenant's token against the other tenant, and signs the result",
    );
    let (passed, probe) = p.validate_isolation().await?;
    println!(
        "probe       {} — {} requests, transcript {} (sha256 {})",
        if passed { "pass" } else { "FAIL" },
        probe["requests"],
        probe["transcript"].as_str().unwrap_or(""),
        probe["sha256"].as_str().unwrap_or("")
    );
    if !passed {
        anyhow::bail!("the isolation probe failed: {probe:#}");
    }
    let left = p
        .readiness_until(Duration::from_secs(90), |v| {
            blocker_kinds(v) == ["report_delivery_unverified"]
        })
        .await?;
    println!("{}", verdict_line(&left));

    Ok(())
}

/// 8. The signed production readiness packet, verified and mailed: returns its record.
async fn deliver(p: &Pipeline) -> anyhow::Result<serde_json::Value> {
    step(
        8,
        "The reporter generates a signed production readiness packet and mails it to the approved recipients",
    );
    let report = p.report("production_readiness").await?;
    println!(
        "packet      {}",
        report["packet"]["dir"].as_str().unwrap_or("")
    );
    println!(
        "archive     {}   sha256 {}",
        report["packet"]["zip"].as_str().unwrap_or(""),
        report["packet"]["sha256"].as_str().unwrap_or("")
    );
    println!(
        "delivery    {} to {} ({})",
        report["delivery"]["status"],
        report["delivery"]["recipients"],
        report["delivery"]["server_response"].as_str().unwrap_or("")
    );
    let (ok, out) = p.verify(report["packet"]["zip"].as_str().unwrap_or(""))?;
    println!(
        "verify      {}",
        if ok {
            out.lines().next().unwrap_or("OK")
        } else {
            "FAILED"
        }
    );
    if !ok {
        anyhow::bail!("the packet did not verify: {out}");
    }
    let zip = report["packet"]["zip"].as_str().unwrap_or("");
    let pin = p.public_key_file();
    match p.minisign_verify(zip) {
        Some((true, out)) => println!(
            "minisign    {} (minisign -Vm {zip} -p {})",
            out.lines().next().unwrap_or("OK"),
            pin.display()
        ),
        Some((false, out)) => anyhow::bail!("minisign refused the packet: {out}"),
        None => println!(
            "minisign    not installed; verify with: minisign -Vm {zip} -p {}",
            pin.display()
        ),
    }
    println!("mailbox     {} message(s)", p.smtp.messages().len());
    println!(
        "provider    the delivery proves acme-smtp: signed report_provider passes (production, trial), the SMTP reply as evidence under {}/packets/validations/{TENANT}/",
        p.work.display()
    );

    Ok(report)
}

/// 9. The delivery's audit event makes the tenant ready; the webhooks heard every change.
async fn ready(p: &Pipeline) -> anyhow::Result<()> {
    step(
        9,
        "The delivery audit event flows back through the projector; the gatekeeper re-evaluates",
    );
    let ready = p
        .readiness_until(Duration::from_secs(90), |v| v["ready"] == true)
        .await?;
    println!("{}", verdict_line(&ready));

    // The secops webhook heard every change, the last being production turning ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let received = loop {
        let r = p.webhooks.received();
        let flipped = r.iter().any(|m| {
            m["payload"]["type"] == "readiness.changed"
                && m["payload"]["data"]["stage"] == "production"
                && m["payload"]["data"]["ready"] == true
        });
        if flipped || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut by_type = std::collections::BTreeMap::<String, usize>::new();
    for m in &received {
        *by_type
            .entry(
                m["payload"]["type"]
                    .as_str()
                    .unwrap_or("unverified")
                    .to_owned(),
            )
            .or_default() += 1;
    }
    println!(
        "webhooks    {} signed messages to the secops endpoint, {} verified by the Standard Webhooks library: {}",
        received.len(),
        received.iter().filter(|m| m["ok"] == true).count(),
        by_type
            .iter()
            .map(|(t, n)| format!("{t} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("            {}", p.webhooks.log.display());
    // The projector writes its batches to RocksDB together, each key once per epoch.
    let http = &p.projector.http;
    let batches = p
        .metric_sum(http, "aispm_projector_batch_records_count")
        .await?;
    let epochs = p
        .metric_sum(http, "aispm_projector_epoch_batches_count")
        .await?;
    let applied = p
        .metric_sum(http, "aispm_projector_batch_records_sum")
        .await?;
    println!(
        "epochs      the projector applied {applied} records in {batches} batches, written to RocksDB in {epochs} epochs (each key once per epoch)"
    );
    Ok(())
}

/// Where to look: the packet, the console and the logs.
async fn where_to_look(p: &Pipeline, report: &serde_json::Value) -> anyhow::Result<()> {
    println!(
        "\nThe readiness packet: {}",
        report["packet"]["dir"].as_str().unwrap_or("")
    );
    println!(
        "Open it in a browser: {}/report.html",
        report["packet"]["dir"].as_str().unwrap_or("")
    );
    if let Ok(files) = p
        .console_snapshots(
            &p.work.join("console"),
            aispm_tests::demo::TENANT_TOKEN,
            &[("overview-ready", &format!("/t/{TENANT}"))],
        )
        .await
    {
        println!(
            "The console's overview now: {}",
            files
                .last()
                .map(|f| f.display().to_string())
                .unwrap_or_default()
        );
    }
    println!(
        "The console: {}  sign in with the token {} (acme's security team), {} (acme's read-only dashboard) or {} (operator: every tenant)",
        p.console.http,
        aispm_tests::demo::TENANT_TOKEN,
        aispm_tests::demo::READER_TOKEN,
        aispm_tests::demo::OPERATOR_TOKEN
    );
    println!("Logs: {}/logs", p.work.display());
    // At a terminal the services stay up for the console until Ctrl-C; a script's demo ends.
    if std::io::IsTerminal::is_terminal(&std::io::stdin())
        || std::env::var_os("AISPM_DEMO_STAY").is_some()
    {
        println!("\nThe broker and the services keep running for the console; Ctrl-C stops them.");
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}

/// The posture now and as of `at` (before the remediation), replayed from the events the
/// projector keeps (`?as_of=`), the readiness then, and a readiness archive as of then (the
/// packet the quarterly cadence makes as of each quarter's end).
async fn print_as_of(p: &Pipeline, at: aispm_schemas::Timestamp) -> anyhow::Result<()> {
    let path = format!("/v1/tenants/{TENANT}/posture");
    let now = p.get(&p.projector.http, &path).await?;
    let then = p
        .get(&p.projector.http, &format!("{path}?as_of={at}"))
        .await?;
    let open = |v: &serde_json::Value| {
        v["layers"]["findings"]["detail"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    println!(
        "as of       {at} (before the remediation began): posture score {} ({}); now {} ({})",
        then["score"],
        open(&then),
        now["score"],
        open(&now)
    );
    println!(
        "            replayed {} events that occurred by then ({} reached the broker later, event time decides); {} occurred after",
        then["as_of"]["events"], then["as_of"]["late"], then["as_of"]["after"]
    );
    if let Some(from) = then["as_of"]["from_checkpoint"].as_str() {
        println!(
            "            from the projector's replay checkpoint as of {from}: {} of them applied, in {} ms",
            then["as_of"]["applied"], then["as_of"]["replay_ms"]
        );
    }
    let readiness = p
        .get(
            &p.gatekeeper.http,
            &format!("/v1/tenants/{TENANT}/readiness?stage=production&as_of={at}"),
        )
        .await?;
    println!(
        "            readiness then, judged by the gatekeeper's rules at that instant: {}",
        verdict_line(&readiness)
    );
    let archive = p
        .report_with(serde_json::json!({"type": "production_readiness", "as_of": at.to_string()}))
        .await?;
    println!(
        "            the readiness archive as of then (signed now, {}): {}\n            {}/report.html",
        archive["delivery"]["status"].as_str().unwrap_or(""),
        archive["headline"].as_str().unwrap_or(""),
        archive["packet"]["dir"].as_str().unwrap_or("")
    );
    Ok(())
}

/// The monthly review (the `cso` report, which the cadence runs on the 1st of each month),
/// generated now: its exception aging, policy drift and approval trends, read from the
/// packet's report.json.
async fn print_monthly(p: &Pipeline) -> anyhow::Result<()> {
    let report = p.report("cso").await?;
    let dir = report["packet"]["dir"].as_str().unwrap_or("");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(
        std::path::Path::new(dir).join("report.json"),
    )?)?;
    let a = &doc["exception_aging"];
    println!(
        "monthly     {dir}/report.html: {} exception(s) in force ({} under 30 days, {} 30 to 90, {} older; {} without expiry, {} expiring within 30 days), {} expired unrenewed",
        a["in_force"],
        a["under_30_days"],
        a["from_30_to_90_days"],
        a["over_90_days"],
        a["without_expiry"],
        a["expiring_within_30_days"],
        a["expired_unrenewed"],
    );
    for d in doc["policy_drift"].as_array().into_iter().flatten() {
        println!(
            "            drift: {} {} {} -> {} at {}",
            d["control_id"].as_str().unwrap_or(""),
            d["change"].as_str().unwrap_or(""),
            d["from"].as_str().unwrap_or(""),
            d["to"].as_str().unwrap_or(""),
            d["at"].as_str().unwrap_or(""),
        );
    }
    // Approval trends: the months with requests, then each control's in the last month.
    let trends = &doc["approval_trends"];
    let bound = |b: &serde_json::Value| match b["within_ms"].as_i64() {
        Some(ms) => format!("{} min", ms / 60_000),
        None if b.is_null() => "-".to_owned(),
        None => "over a week".to_owned(),
    };
    for m in trends["months"].as_array().into_iter().flatten() {
        if m["requested"].as_i64().unwrap_or(0) > 0 {
            println!(
                "            approvals {}: {} requested, {} granted, {} denied, {} pending; median time to decision within {}",
                m["month"].as_str().unwrap_or(""),
                m["requested"],
                m["granted"],
                m["denied"],
                m["pending"],
                bound(&m["median"]),
            );
        }
    }
    for c in trends["controls"].as_array().into_iter().flatten() {
        println!(
            "            approvals by control: {} {} requested ({} the month before), {} pending",
            c["control_id"].as_str().unwrap_or(""),
            c["this_month"]["requested"],
            c["previous_requested"],
            c["this_month"]["pending"],
        );
    }
    Ok(())
}

/// What the views show besides the blockers: the highest-risk findings with their factors, the
/// data-exposure map, the requests for approval, and coder-agent's identity and access.
async fn print_maps(p: &Pipeline) -> anyhow::Result<()> {
    let ranked = p
        .get(
            &p.projector.http,
            &format!("/v1/tenants/{TENANT}/findings?status=open&limit=5"),
        )
        .await?;
    println!("highest-risk open findings (score = the sum of the factors, docs/risk.md):");
    for f in ranked["findings"].as_array().into_iter().flatten() {
        let risk: aispm_schemas::RiskScore =
            serde_json::from_value(f["risk"].clone()).unwrap_or_default();
        println!(
            "  {:>3}  {:<45} {}",
            risk.score,
            f["finding_id"].as_str().unwrap_or(""),
            risk.explain()
        );
    }

    let flows = p
        .get(
            &p.projector.http,
            &format!("/v1/tenants/{TENANT}/data-flows"),
        )
        .await?;
    println!("data flows (each data class to each destination, docs/views.md):");
    for f in flows["flows"].as_array().into_iter().flatten() {
        println!(
            "  {:<9} -> {:<14} {:<24} {} decision(s), {} denied, {} agent(s), {}",
            f["data_class"].as_str().unwrap_or(""),
            f["destination_kind"].as_str().unwrap_or(""),
            f["destination"].as_str().unwrap_or(""),
            f["decisions"],
            f["denied"],
            f["agent_count"],
            if f["approved"] == true {
                "approved for it"
            } else {
                "NOT approved for it"
            }
        );
    }
    let stats = p
        .get(
            &p.projector.http,
            &format!("/v1/tenants/{TENANT}/approval-stats"),
        )
        .await?;
    println!("requests for approval (per control and agent):");
    for r in stats["stats"].as_array().into_iter().flatten() {
        let median = match r["time_to_decision"]["p50_at_most_ms"].as_u64() {
            Some(ms) => format!("within {} min", ms / 60_000),
            None if r["time_to_decision"]["answered"] == 0 => "none answered".into(),
            None => "over a week".into(),
        };
        println!(
            "  {:<16} {:<18} requested {}, granted {}, denied {}, pending {} ({} overdue); median answer {median}",
            r["control_id"].as_str().unwrap_or(""),
            r["agent_id"].as_str().unwrap_or(""),
            r["requested"],
            r["granted"],
            r["denied"],
            r["pending"],
            r["pending_overdue"],
        );
    }
    let pending = p
        .get(
            &p.projector.http,
            &format!("/v1/tenants/{TENANT}/findings?rule=AISPM-APR-002&status=open"),
        )
        .await?;
    for f in pending["findings"].as_array().into_iter().flatten() {
        println!(
            "  {}: {} request(s) still pending past the decision window while the agent acted on (opened {})",
            f["finding_id"].as_str().unwrap_or(""),
            f["occurrences"],
            f["opened_at"].as_str().unwrap_or(""),
        );
    }

    let identity = p
        .get(
            &p.projector.http,
            &format!("/v1/tenants/{TENANT}/agents/coder-agent/identity"),
        )
        .await?;
    println!(
        "identity of coder-agent (owner {}): acted for {} actor(s), in {} repo(s), with {} key(s)",
        identity["registration"]["owner"].as_str().unwrap_or("none"),
        identity["actors"],
        identity["relations"]["repo"]["targets"],
        identity["keys"].as_array().map_or(0, Vec::len),
    );
    for k in identity["keys"].as_array().into_iter().flatten() {
        let list = |field: &str| {
            k[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["scope"].as_str().or_else(|| s.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let used: Vec<&str> = k["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["decisions"].as_i64().unwrap_or(0) > 0)
            .filter_map(|s| s["scope"].as_str())
            .collect();
        println!(
            "  key {:<20} {} decision(s); scopes used: {}; granted but unused for 30 days: {} ({})",
            k["key_id"].as_str().unwrap_or(""),
            k["decisions"],
            used.join(", "),
            list("unused_scopes"),
            k["findings"]["unused_scopes"]
                .as_str()
                .unwrap_or("no finding"),
        );
    }
    Ok(())
}
