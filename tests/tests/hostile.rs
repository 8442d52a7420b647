//! Hostile load against the real binaries on a real broker, each met without stalling anyone
//! else: an event over the size policy, slow uploads that would hold the byte budget, a flood
//! of failed authentications, a flood of report requests. Each test prints its figures; the
//! figures are recorded in `docs/reliability.md`.
#![allow(clippy::unwrap_used)]

use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::kafka::random_prefix;
use aispm_tests::process::Service;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const ACME: &str = "acme-secret";
const GLOBEX: &str = "globex-secret";
const ALL: &str = r#"["read", "emit", "approve", "register", "validate", "admin", "reports"]"#;

fn tokens() -> String {
    format!(
        "[[tokens]]\ntoken = \"{ACME}\"\ntenants = [\"acme\"]\nscopes = {ALL}\nname = \"acme\"\n\n\
         [[tokens]]\ntoken = \"{GLOBEX}\"\ntenants = [\"globex\"]\nscopes = {ALL}\nname = \"globex\"\n"
    )
}

async fn ingest(broker: &Broker, dir: &std::path::Path, extra: &[&str]) -> Service {
    std::fs::write(dir.join("tokens.toml"), tokens()).unwrap();
    let mut args: Vec<String> = vec![
        "--brokers".into(),
        broker.bootstrap(),
        "--tokens-file".into(),
        dir.join("tokens.toml").display().to_string(),
        "--topic-prefix".into(),
        random_prefix(),
        "--partitions".into(),
        "3".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    // 0.0.0.0-free: loopback, but any 127/8 source address reaches it.
    let mut service = Service::start(
        "aispm-ingest",
        &format!("127.0.0.1:{}", free_port()),
        &args,
        dir,
    )
    .unwrap();
    service.wait_ready(Duration::from_secs(60)).await.unwrap();
    service
}

fn decision(id: &str, tenant: &str) -> Value {
    json!({
        "type": "decision", "event_id": id, "tenant_id": tenant,
        "occurred_at": "2026-11-21T10:00:00Z", "source": "gw-1", "agent_id": "coder-agent",
        "actor": "alice", "environment": "production", "action_kind": "mcp", "target": "repo",
        "mcp_server": "github-mcp", "mcp_tool": "create_issue", "mode": "enforced",
        "verdict": "allow", "risk": "low"
    })
}

fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .build()
        .unwrap()
}

/// Posts `body` and answers (status, body, elapsed).
async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let r = client
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Another tenant's latency: `n` sequential one-event requests.
async fn latencies(client: &reqwest::Client, url: &str, prefix: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (s, b, took) = post(
            client,
            url,
            GLOBEX,
            &decision(&format!("{prefix}-{i}"), "globex"),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        out.push(took);
    }
    out.sort();
    out
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_over_the_size_policy_is_refused_with_its_reason() {
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = ingest(&broker, dir.path(), &[]).await;
    let url = format!("{}/v1/events", svc.http);
    let client = reqwest::Client::new();
    // The largest valid registry event: 256 attributes of 8 KiB each, about 2.1 MB.
    let attributes: serde_json::Map<String, Value> = (0..256)
        .map(|i| (format!("a{i}"), Value::String("x".repeat(8 * 1024))))
        .collect();
    let big = json!({
        "type": "registry", "event_id": "big-1", "tenant_id": "acme",
        "occurred_at": "2026-11-21T10:00:00Z", "source": "registry",
        "asset": {"asset_kind": "agent", "asset_id": "agent-big", "status": "registered", "owner": "platform-team", "attributes": attributes}
    });
    let (s, b, _) = post(&client, &url, ACME, &json!([decision("ok-1", "acme"), big])).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let err = &b["details"]["errors"][0];
    assert_eq!(err["index"], 1, "{b}");
    assert_eq!(err["event_id"], "big-1", "{b}");
    let reason = err["reason"].as_str().unwrap();
    assert!(reason.starts_with("record_too_large"), "{reason}");
    println!("size policy: ingest refused an oversized event: {reason}");
    // The service is fine and takes the valid event alone.
    let (s, b, _) = post(&client, &url, ACME, &decision("ok-1", "acme")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
}

/// 50 slow uploads from one token: four hold a slot each (and their bytes) until the body
/// deadline answers them 408; the others get 429 for that token at once; another tenant's
/// requests keep their latency.
#[tokio::test(flavor = "multi_thread")]
async fn slow_uploads_from_one_token_leave_another_tenants_latency_alone() {
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = ingest(
        &broker,
        dir.path(),
        &[
            "--body-timeout",
            "6s",
            "--max-body-bytes",
            "1000000",
            "--max-buffered-bytes",
            "8000000",
        ],
    )
    .await;
    let url = format!("{}/v1/events", svc.http);
    let client = reqwest::Client::new();
    // Warm up, then the other tenant's latency on a quiet service.
    latencies(&client, &url, "warm", 20).await;
    let quiet = latencies(&client, &url, "quiet", 200).await;

    let addr = svc.http.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..50 {
        let addr = addr.clone();
        slow.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ACME}\r\ncontent-type: application/json\r\ncontent-length: 900000\r\nconnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            // A byte every 200 ms until the server answers (or 20 s).
            let mut response = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut buf = [0u8; 1024];
            while Instant::now() < deadline {
                let _ = stream.write_all(b" ").await;
                match tokio::time::timeout(
                    Duration::from_millis(200),
                    tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
                )
                .await
                {
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => {
                        response.extend_from_slice(&buf[..n]);
                        if response.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    Ok(Err(_)) => break,
                    Err(_) => {}
                }
            }
            let text = String::from_utf8_lossy(&response).into_owned();
            let status: u16 = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            (status, started.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hostile = latencies(&client, &url, "hostile", 200).await;
    let mut answers = std::collections::BTreeMap::<u16, (usize, Duration)>::new();
    for h in slow {
        let (status, at) = h.await.unwrap();
        let e = answers.entry(status).or_insert((0, Duration::ZERO));
        e.0 += 1;
        e.1 = e.1.max(at);
    }
    let (q99, h99) = (percentile(&quiet, 0.99), percentile(&hostile, 0.99));
    println!(
        "slow uploads: 50 from one token answered {answers:?} (status: count, latest answer); other tenant p50/p99 quiet {:?}/{q99:?}, beside the slow uploads {:?}/{h99:?}",
        percentile(&quiet, 0.5),
        percentile(&hostile, 0.5),
    );
    assert_eq!(
        answers.get(&429).map(|a| a.0),
        Some(46),
        "all but the token's 4 slots refused: {answers:?}"
    );
    assert_eq!(
        answers.get(&408).map(|a| a.0),
        Some(4),
        "the admitted slow uploads end at the body deadline: {answers:?}"
    );
    assert!(
        h99 < Duration::from_millis(100) || h99 < q99.mul_f64(1.5) + Duration::from_millis(20),
        "the other tenant's p99 went from {q99:?} to {h99:?}"
    );
    let m = svc.metrics().await;
    assert!(
        m.contains(
            r#"aispm_ingest_requests_total{outcome="throttled",reason="token_concurrency"} 46"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"aispm_ingest_requests_total{outcome="timeout",reason="body_timeout"} 4"#),
        "{m}"
    );
    // The budget is whole again: the slow token may post at once.
    let (s, b, _) = post(&client, &url, ACME, &decision("after-1", "acme")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(metric(&m, "aispm_ingest_buffered_bytes"), 0.0, "{m}");
}

/// A flood of bad tokens from one address is throttled (429 before any check) after its
/// allowance of failures, while a valid token from another address is served throughout.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_auth_flood_is_throttled_while_valid_tokens_pass() {
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svc = ingest(&broker, dir.path(), &["--auth-failures-per-minute", "30"]).await;
    let url = format!("{}/v1/events", svc.http);
    let attacker = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let user = client_from(Ipv4Addr::new(127, 0, 0, 1));

    let flood = {
        let url = url.clone();
        let attacker = attacker.clone();
        tokio::spawn(async move {
            let mut counts = std::collections::BTreeMap::<u16, usize>::new();
            let mut retry_after = std::collections::BTreeSet::<String>::new();
            let started = Instant::now();
            for i in 0..2000 {
                let r = attacker
                    .post(&url)
                    .bearer_auth(format!("guess-{i:08}"))
                    .json(&decision(&format!("x-{i}"), "acme"))
                    .send()
                    .await
                    .unwrap();
                *counts.entry(r.status().as_u16()).or_default() += 1;
                if let Some(v) = r.headers().get("retry-after") {
                    retry_after.insert(v.to_str().unwrap().to_owned());
                }
            }
            (counts, retry_after, started.elapsed())
        })
    };
    let mut served = Vec::new();
    for i in 0..200 {
        let (s, b, took) = post(&user, &url, GLOBEX, &decision(&format!("v-{i}"), "globex")).await;
        assert_eq!(s, StatusCode::ACCEPTED, "a valid token was refused: {b}");
        served.push(took);
    }
    let (counts, retry_after, took) = flood.await.unwrap();
    served.sort();
    println!(
        "failed-auth flood: 2000 guesses from 127.0.0.2 in {took:?} answered {counts:?}; 200 valid requests from 127.0.0.1 all 202, p50/p99 {:?}/{:?}",
        percentile(&served, 0.5),
        percentile(&served, 0.99)
    );
    let unauthorized = counts.get(&401).copied().unwrap_or(0);
    // 30 at once, then one every 2 s while the flood lasts.
    let allowance = 30.0 + took.as_secs_f64() / 2.0 + 1.0;
    assert!(
        unauthorized >= 30 && unauthorized as f64 <= allowance,
        "the allowance is 30 failures a minute: {counts:?} in {took:?}"
    );
    assert_eq!(counts.get(&429).copied().unwrap_or(0), 2000 - unauthorized);
    // The throttled address is told when to come back: within the 2 s a failure refills.
    assert!(
        retry_after.iter().all(|v| v == "1" || v == "2") && !retry_after.is_empty(),
        "{retry_after:?}"
    );
    let m = svc.metrics().await;
    assert!(
        metric(&m, "aispm_ingest_auth_throttled_total") >= (2000 - unauthorized) as f64,
        "{m}"
    );
}

/// Asks for a report; answers the status, the time it took and the Retry-After, if any.
async fn request_report(
    client: &reqwest::Client,
    reporter: &str,
    tenant: &str,
    token: &str,
) -> (u16, Duration, Option<u64>) {
    let started = Instant::now();
    let r = client
        .post(format!("{reporter}/v1/tenants/{tenant}/reports"))
        .bearer_auth(token)
        .json(&json!({"type": "cso"}))
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (r.status().as_u16(), started.elapsed(), retry)
}

/// One tenant floods the reporter with report requests; another tenant's reports take as long
/// as they did before the flood, and the flood meets 429 with Retry-After.
#[tokio::test(flavor = "multi_thread")]
async fn a_report_flood_from_one_tenant_leaves_anothers_report_latency_alone() {
    use aispm_tests::demo::{OTHER_TENANT_TOKEN, Pipeline, TENANT, TENANT_TOKEN};
    let work = tempfile::tempdir().unwrap();
    let p = Pipeline::start(work.path()).await.unwrap();
    p.emit("open").unwrap();
    let (s, b) = p
        .post_events(OTHER_TENANT_TOKEN, &decision("g-1", "globex"))
        .await
        .unwrap();
    assert_eq!(s, 202, "{b}");
    let client = reqwest::Client::new();
    let reporter = p.reporter.http.clone();
    // Both tenants are known to the reporter (404 until their rows arrive).
    for (tenant, token) in [(TENANT, TENANT_TOKEN), ("globex", OTHER_TENANT_TOKEN)] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = client
                .get(format!("{reporter}/v1/tenants/{tenant}/reports"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let probe = client
                .get(format!("{}/v1/tenants/{tenant}/posture", p.projector.http))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            if r.status() == 200 && probe.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "{tenant} never became known");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let mut quiet = Vec::new();
    while quiet.len() < 3 {
        let (s, took, _) = request_report(&client, &reporter, "globex", OTHER_TENANT_TOKEN).await;
        if s == 404 || s == 503 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        assert!((200..300).contains(&s), "globex report: {s}");
        quiet.push(took);
    }

    let stop = tokio_util::sync::CancellationToken::new();
    let flood = {
        let (client, reporter, stop) = (client.clone(), reporter.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answers = std::collections::BTreeMap::<u16, usize>::new();
            let mut retry_after = std::collections::BTreeSet::new();
            while !stop.is_cancelled() {
                let burst: Vec<_> = (0..10)
                    .map(|_| {
                        let (client, reporter) = (client.clone(), reporter.clone());
                        tokio::spawn(async move {
                            request_report(&client, &reporter, TENANT, TENANT_TOKEN).await
                        })
                    })
                    .collect();
                for b in burst {
                    let (s, _, retry) = b.await.unwrap();
                    *answers.entry(s).or_default() += 1;
                    retry_after.extend(retry);
                }
            }
            (answers, retry_after)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut hostile = Vec::new();
    for _ in 0..3 {
        let (s, took, _) = request_report(&client, &reporter, "globex", OTHER_TENANT_TOKEN).await;
        assert!(
            (200..300).contains(&s),
            "globex report during the flood: {s}\n{}",
            p.reporter.log_tail()
        );
        hostile.push(took);
    }
    stop.cancel();
    let (answers, retry_after) = flood.await.unwrap();
    quiet.sort();
    hostile.sort();
    println!(
        "report flood: acme's requests answered {answers:?} (Retry-After {retry_after:?} s); globex report latency min/median/max quiet {:?}/{:?}/{:?}, during the flood {:?}/{:?}/{:?}",
        quiet[0], quiet[1], quiet[2], hostile[0], hostile[1], hostile[2]
    );
    let made: usize = answers
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    assert!(
        made <= 15,
        "the allowance is 15 at once (60 an hour): {answers:?}"
    );
    assert!(answers.get(&429).copied().unwrap_or(0) > 0, "{answers:?}");
    assert!(
        answers.keys().all(|s| (200..300).contains(s) || *s == 429),
        "only 2xx and 429: {answers:?}"
    );
    assert!(!retry_after.is_empty());
    assert!(
        hostile[1] < quiet[1] * 3 + Duration::from_millis(500),
        "globex's median report latency went from {:?} to {:?}",
        quiet[1],
        hostile[1]
    );
}
