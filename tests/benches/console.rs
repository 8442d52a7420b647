//! Console page benchmark (a bench binary printing figures and writing JSON, not a timed test).
//!
//! The target: every console page rendered server-side within 50 ms p99 for a tenant
//! with 100k findings and 1M decisions. The bench starts the whole pipeline from release
//! binaries (Apache Kafka, the four services and the console, `Pipeline::start`), sends the
//! demo scenario's `open` phase for `acme` (blockers, exceptions, evidence, approvals), then
//! produces `AISPM_BENCH_PAGE_DECISIONS` (default 1 000 000) decisions for `acme` straight to
//! the decision topic: `AISPM_BENCH_PAGE_FINDINGS` (default 100 000) unregistered agents
//! (each a shadow-AI finding), each deciding in turn under 200 controls, against 1 000 model
//! endpoints, 5 000 repos and for 10 000 actors, over the last 30 days. Once the projector
//! applied every one and the gatekeeper read the view changes (or after
//! `AISPM_BENCH_SETTLE_SECS`, default 120, with how many it still had to read), it signs in to
//! the console as a person does (form, nonce, cookie) and
//! requests each page `AISPM_BENCH_PAGE_REQUESTS` times (default 200) one after another,
//! through the console to the projector, gatekeeper and reporter over HTTP: p50, p99 and max
//! per page, and the posture's computation time (the one cost that grows with the tenant,
//! kept off the request path by the projector's posture keeper).
//!
//! Writes `bench/console.json` and `bench/console.md`.
//!
//! Run: `source ~/.cache/aispm/env.sh && cargo build --release --bins &&
//! cargo bench -p aispm-tests --bench console`.

use aispm_schemas::codec::encode_single_object;
use aispm_schemas::{DecisionEvent, Topics};
use aispm_tests::demo::{OPERATOR_TOKEN, Pipeline, TENANT, TENANT_TOKEN};
use aispm_tests::kafka::send_waiting;
use aispm_tests::measure::env_or;
use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The `i`th generated decision: agent `i % agents`, the rest spread over their pools.
fn decision(i: u64, agents: u64, now: i64) -> DecisionEvent {
    let risk = ["low", "medium", "high", "critical"][(i % 7 % 4) as usize];
    let verdict = if i.is_multiple_of(5) { "deny" } else { "allow" };
    let v = json!({
        "event_id": format!("bench-d{i}"),
        "tenant_id": TENANT,
        "occurred_at": aispm_schemas::Timestamp(now - 30 * DAY_MS + (i as i64 * 7919) % (30 * DAY_MS)).to_string(),
        "source": "bench-gateway",
        "agent_id": format!("bench-agent-{}", i % agents),
        "actor": format!("user-{}@acme.example", i % 10_000),
        "environment": "production",
        "action_kind": "model",
        "target": "chat.completions",
        "repo": format!("acme/repo-{}", i % 5_000),
        "model_endpoint": format!("model-{}", i % 1_000),
        "control_id": format!("ctl-bench-{}", i % 200),
        "mode": "enforced",
        "verdict": verdict,
        "risk": risk,
        "data_classes": [],
        "synthetic": false,
    });
    serde_json::from_value(v).expect("a valid decision")
}

fn produce(brokers: &str, topic: &str, n: u64, agents: u64) -> Result<f64> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "1")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .create()?;
    let now = aispm_schemas::Timestamp::now().0;
    let started = Instant::now();
    for i in 0..n {
        let bytes = encode_single_object(&decision(i, agents, now))?;
        send_waiting(&producer, BaseRecord::to(topic).key(TENANT).payload(&bytes))?;
    }
    producer.flush(Duration::from_secs(300))?;
    Ok(started.elapsed().as_secs_f64())
}

/// The sum of a metric's samples whose line contains `filter` (a service's `/metrics`).
async fn metric(client: &reqwest::Client, base: &str, name: &str, filter: &str) -> Result<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The projector's applied events (its `/metrics`).
async fn applied(client: &reqwest::Client, projector: &str) -> Result<u64> {
    Ok(metric(client, projector, "aispm_projector_events_total", "applied").await? as u64)
}

/// A signed-in console session: its client and its session cookie.
struct Signed {
    client: reqwest::Client,
    cookie: String,
}

/// The `name=value` of a response's cookie, if it sets one.
fn cookie_of(r: &reqwest::Response) -> Option<String> {
    let c = r
        .headers()
        .get(reqwest::header::SET_COOKIE)?
        .to_str()
        .ok()?;
    Some(c.split(';').next()?.to_owned())
}

/// Signs in as a person does: the sign-in form (its nonce and cookie), then the token.
async fn sign_in(console: &str, token: &str) -> Result<Signed> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = client.get(format!("{console}/sign-in")).send().await?;
    let form_cookie = cookie_of(&r).context("the sign-in form's cookie")?;
    let form = r.text().await?;
    let nonce = form
        .split("name=\"sign_in\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .context("the sign-in form's nonce")?
        .to_owned();
    let r = client
        .post(format!("{console}/sign-in"))
        .header(reqwest::header::COOKIE, form_cookie)
        .form(&[("token", token), ("sign_in", nonce.as_str())])
        .send()
        .await?;
    if r.status().as_u16() != 303 {
        bail!("sign-in answered {}", r.status());
    }
    let cookie = cookie_of(&r).context("the session cookie")?;
    Ok(Signed { client, cookie })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main]
async fn main() -> Result<()> {
    let findings = env_or("AISPM_BENCH_PAGE_FINDINGS", 100_000);
    let decisions = env_or("AISPM_BENCH_PAGE_DECISIONS", 1_000_000).max(findings);
    let requests = env_or("AISPM_BENCH_PAGE_REQUESTS", 200).max(1);
    let work = tempfile::tempdir()?;
    let p = Pipeline::start(work.path()).await?;
    p.emit("open")?;
    let client = reqwest::Client::new();
    let before = applied(&client, &p.projector.http).await?;
    let topics = Topics::default();
    println!("[console bench] producing {decisions} decisions over {findings} agents for {TENANT}");
    let produced_s = produce(
        &p.broker.bootstrap(),
        &topics.decisions,
        decisions,
        findings,
    )?;
    let started = Instant::now();
    loop {
        let n = match applied(&client, &p.projector.http).await {
            Ok(n) => n,
            Err(e) => bail!("the projector: {e}\n{}", p.projector.log_tail()),
        };
        if n >= before + decisions {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the projector applied {} of {decisions}", n - before);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let apply_s = started.elapsed().as_secs_f64();
    // The gatekeeper reads the views topic the projector published every change to: the
    // pages are timed once it has caught up, as a deployment at rest is, or after
    // AISPM_BENCH_SETTLE_SECS (default 120) with what it still has to read (the figure says).
    let settle = env_or("AISPM_BENCH_SETTLE_SECS", 120);
    let gatekeeper_lag;
    loop {
        let lag = metric(
            &client,
            &p.gatekeeper.http,
            "aispm_gatekeeper_consumer_lag_messages",
            "",
        )
        .await
        .unwrap_or(f64::MAX);
        if lag == 0.0 || started.elapsed().as_secs_f64() - apply_s > settle as f64 {
            gatekeeper_lag = lag;
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let settled_s = started.elapsed().as_secs_f64() - apply_s;
    println!(
        "[console bench] after {settled_s:.1} s the gatekeeper is {gatekeeper_lag} view changes behind"
    );
    println!(
        "[console bench] produced in {produced_s:.1} s, applied in {apply_s:.1} s ({:.0} events/s)",
        decisions as f64 / apply_s
    );

    // The posture's cost: one computation over every row (what the keeper does off the
    // request path); the projector's log of the first request tells it by timing here.
    let t = Instant::now();
    let posture: Value = client
        .get(format!("{}/v1/tenants/{TENANT}/posture", p.projector.http))
        .bearer_auth(TENANT_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let posture_ms = t.elapsed().as_secs_f64() * 1000.0;
    let open = posture["layers"]["findings"]["counts"]["open"]
        .as_u64()
        .unwrap_or(0);
    let compute_ms = posture["compute_ms"].as_u64().unwrap_or(0);
    println!(
        "[console bench] posture: {open} open findings, first answer {posture_ms:.0} ms, one computation {compute_ms} ms"
    );
    if open < findings {
        bail!("the tenant has {open} open findings, fewer than {findings}");
    }

    let console = &p.console.http;
    let session = match sign_in(console, TENANT_TOKEN).await {
        Ok(s) => s,
        Err(e) => bail!(
            "{e}\nconsole:\n{}\ngatekeeper:\n{}",
            p.console.log_tail(),
            p.gatekeeper.log_tail()
        ),
    };
    let operator = sign_in(console, OPERATOR_TOKEN).await?;
    let finding = aispm_schemas::finding_subject(&["bench-agent-7"]);
    let pages: Vec<(&str, String, &Signed)> = vec![
        ("tenants (operator)", "/".to_owned(), &operator),
        ("overview", format!("/t/{TENANT}"), &session),
        (
            "blockers (production)",
            format!("/t/{TENANT}/blockers?stage=production"),
            &session,
        ),
        (
            "findings open",
            format!("/t/{TENANT}/findings?status=open"),
            &session,
        ),
        (
            "findings critical overdue",
            format!("/t/{TENANT}/findings?severity=critical&sla=overdue"),
            &session,
        ),
        (
            "finding detail",
            format!("/t/{TENANT}/finding?id=AISPM-SHADOW-001%3A{finding}"),
            &session,
        ),
        (
            "decision",
            format!("/t/{TENANT}/event?id=bench-d7"),
            &session,
        ),
        ("coverage", format!("/t/{TENANT}/coverage"), &session),
        (
            "coverage shadow AI",
            format!("/t/{TENANT}/coverage?shadow_ai=true"),
            &session,
        ),
        (
            "agent",
            format!("/t/{TENANT}/asset?key=agent%2Fbench-agent-7"),
            &session,
        ),
        ("controls", format!("/t/{TENANT}/controls"), &session),
        ("exceptions", format!("/t/{TENANT}/exceptions"), &session),
        ("approvals", format!("/t/{TENANT}/approvals"), &session),
        (
            "evidence",
            format!("/t/{TENANT}/evidence?within=30d"),
            &session,
        ),
        ("validations", format!("/t/{TENANT}/validations"), &session),
        ("reports", format!("/t/{TENANT}/reports"), &session),
    ];
    let mut rows = Vec::new();
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>9}",
        "page", "p50 ms", "p99 ms", "max ms", "KiB"
    );
    for (name, path, who) in &pages {
        let mut ms = Vec::with_capacity(requests as usize);
        let mut bytes = 0;
        for _ in 0..requests {
            let t = Instant::now();
            let r = who
                .client
                .get(format!("{console}{path}"))
                .header(reqwest::header::COOKIE, &who.cookie)
                .send()
                .await?;
            let status = r.status();
            let body = r.bytes().await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if status != 200 {
                bail!(
                    "{name} ({path}) answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            bytes = body.len();
        }
        ms.sort_by(f64::total_cmp);
        let (p50, p99, max) = (
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms[ms.len() - 1],
        );
        println!(
            "{name:<28} {p50:>8.1} {p99:>8.1} {max:>8.1} {:>9.1}",
            bytes as f64 / 1024.0
        );
        rows.push(
            json!({"page": name, "path": path, "requests": requests, "p50_ms": p50,
            "p99_ms": p99, "max_ms": max, "bytes": bytes}),
        );
    }
    let worst = rows
        .iter()
        .filter_map(|r| r["p99_ms"].as_f64())
        .fold(0.0, f64::max);
    println!(
        "[console bench] worst page p99 {worst:.1} ms (target 50 ms) over {} pages",
        rows.len()
    );
    let report = json!({
        "findings": open,
        "decisions": decisions,
        "requests_per_page": requests,
        "apply_seconds": apply_s,
        "gatekeeper_lag_when_timed": gatekeeper_lag,
        "posture_first_answer_ms": posture_ms,
        "posture_compute_ms": compute_ms,
        "worst_p99_ms": worst,
        "pages": rows,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench");
    std::fs::write(
        dir.join("console.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let mut md = format!(
        "# Console pages\n\n{open} open findings and {decisions} decisions for one tenant; \
         {requests} requests per page, one after another, through the console to the services \
         (release build, 2 cores). The projector applied the decisions in {apply_s:.0} s; \
         when the pages were timed the gatekeeper had {gatekeeper_lag} view changes left to \
         read. Posture's first answer: {posture_ms:.0} ms; one computation of it (off the request path, by \
         the projector's posture keeper): {compute_ms} ms.\n\n| page | p50 ms | p99 ms | max ms | KiB |\n|---|---|---|---|---|\n"
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            r["page"].as_str().unwrap_or(""),
            r["p50_ms"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(0.0),
            r["max_ms"].as_f64().unwrap_or(0.0),
            r["bytes"].as_f64().unwrap_or(0.0) / 1024.0
        ));
    }
    std::fs::write(dir.join("console.md"), md)?;
    Ok(())
}
