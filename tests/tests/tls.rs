//! Every service over HTTPS: the real binaries started with `--tls-cert` and `--tls-key` (a CA
//! and certificates made with the `openssl` CLI), reached by a real client that verifies the
//! certificate; the console reads the other services over HTTPS too (`--ca-cert`). Then the
//! certificate is replaced on disk: new connections get the new one within seconds, and a
//! broken replacement leaves the old one in service.
#![allow(clippy::unwrap_used)]

use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::kafka::random_prefix;
use aispm_tests::process::Service;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "tls-acme-token-0123456789abcdef";

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` making a new P-256 key into `<name>.key`, then `rest`.
fn new_key_request(dir: &Path, name: &str, rest: &[&str]) {
    let key = format!("{name}.key");
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
    ];
    args.extend_from_slice(rest);
    openssl(&args, dir);
}

/// A CA named `name` in `dir`: `<name>.pem` and `<name>.key`.
fn ca(dir: &Path, name: &str) -> PathBuf {
    new_key_request(
        dir,
        name,
        &[
            "-x509",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(format!("{name}.pem"))
}

/// A server certificate for localhost and 127.0.0.1 signed by CA `ca`: `<name>.pem`, `<name>.key`.
fn server_cert(dir: &Path, ca: &str, name: &str) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    new_key_request(
        dir,
        name,
        &["-out", &format!("{name}.csr"), "-subj", "/CN=localhost"],
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
        dir,
    );
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// A client builder that trusts the CA at `ca` and nothing else.
fn trusting(ca: &Path) -> reqwest::ClientBuilder {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
}

fn client_trusting(ca: &Path) -> reqwest::Client {
    trusting(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Replaces `to` with `from`'s bytes in one rename, as a certificate manager does.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_answers_over_https_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca1 = ca(d, "ca1");
    let (cert, key) = server_cert(d, "ca1", "server");
    // Each service gets its own copy, so replacing one service's files touches no other.
    let files = |svc: &str| {
        let (c, k) = (d.join(format!("{svc}.pem")), d.join(format!("{svc}.key")));
        std::fs::copy(&cert, &c).unwrap();
        std::fs::copy(&key, &k).unwrap();
        (c.display().to_string(), k.display().to_string())
    };
    std::fs::write(
        d.join("tokens.toml"),
        format!(
            "[[tokens]]\ntoken = \"{TOKEN}\"\ntenants = [\"acme\"]\nscopes = [\"read\", \"emit\", \"reports\"]\nname = \"acme\"\n"
        ),
    )
    .unwrap();
    let broker = Broker::start().unwrap();
    let prefix = random_prefix();
    let common = |svc: &str, extra: &[&str]| -> Vec<String> {
        let (c, k) = files(svc);
        let mut a: Vec<String> = [
            "--brokers",
            &broker.bootstrap(),
            "--topic-prefix",
            &prefix,
            "--partitions",
            "3",
            "--tokens-file",
            &d.join("tokens.toml").display().to_string(),
            "--tls-cert",
            &c,
            "--tls-key",
            &k,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let addr = || format!("127.0.0.1:{}", free_port());
    let client = client_trusting(&ca1);
    let state = |s: &str| d.join(s).display().to_string();
    let mut projector = Service::start(
        "aispm-projector",
        &addr(),
        &common("projector", &["--state-dir", &state("projector-state")]),
        d,
    )
    .unwrap();
    let mut gatekeeper =
        Service::start("aispm-gatekeeper", &addr(), &common("gatekeeper", &[]), d).unwrap();
    let mut reporter = Service::start(
        "aispm-reporter",
        &addr(),
        &common(
            "reporter",
            &[
                "--state-dir",
                &state("reporter-state"),
                "--schedule",
                "none",
            ],
        ),
        d,
    )
    .unwrap();
    let mut ingest = Service::start("aispm-ingest", &addr(), &common("ingest", &[]), d).unwrap();
    for s in [&mut projector, &mut gatekeeper, &mut reporter, &mut ingest] {
        s.over_https(client.clone());
        s.wait_ready(Duration::from_secs(90)).await.unwrap();
    }
    let (ccert, ckey) = files("console");
    let mut console = Service::start(
        "aispm-console",
        &addr(),
        &[
            "--projector".to_owned(),
            projector.http.clone(),
            "--gatekeeper".to_owned(),
            gatekeeper.http.clone(),
            "--reporter".to_owned(),
            reporter.http.clone(),
            "--ca-cert".to_owned(),
            ca1.display().to_string(),
            "--tls-cert".to_owned(),
            ccert,
            "--tls-key".to_owned(),
            ckey,
        ],
        d,
    )
    .unwrap();
    console.over_https(client.clone());
    console.wait_ready(Duration::from_secs(30)).await.unwrap();

    // Every service, over HTTPS, verified against the CA.
    let mut timings = Vec::new();
    for s in [&projector, &gatekeeper, &reporter, &ingest, &console] {
        assert!(s.http.starts_with("https://127.0.0.1:"), "{}", s.http);
        let fresh = client_trusting(&ca1);
        let started = Instant::now();
        let r = fresh
            .get(format!("{}/healthz", s.http))
            .send()
            .await
            .unwrap();
        timings.push(started.elapsed());
        assert_eq!(r.status(), 200, "{}", s.http);
        assert_eq!(r.version(), reqwest::Version::HTTP_11);
    }

    // The API works end to end over HTTPS: an event in through ingest, read from the projector.
    let r = client
        .post(format!("{}/v1/events", ingest.http))
        .bearer_auth(TOKEN)
        .json(&json!({
            "type": "decision", "event_id": "tls-1", "tenant_id": "acme",
            "occurred_at": "2026-11-21T10:00:00Z", "source": "gw", "agent_id": "agent-over-tls",
            "actor": "alice", "environment": "production", "action_kind": "file",
            "target": "/etc/hosts", "mode": "enforced", "verdict": "allow", "risk": "low"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: serde_json::Value = client
            .get(format!(
                "{}/v1/tenants/acme/coverage?kind=agent",
                projector.http
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["coverage"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["id"] == "agent-over-tls"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "never applied: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The console signs in by asking the gatekeeper over HTTPS (trusting --ca-cert).
    let no_redirect = trusting(&ca1)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let session = aispm_tests::demo::console_sign_in(&no_redirect, &console.http, TOKEN)
        .await
        .unwrap();
    assert!(session.starts_with("aispm_session="), "{session}");

    // A client that does not trust the CA is refused by its own verification.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let e = untrusting
        .get(format!("{}/healthz", ingest.http))
        .send()
        .await
        .unwrap_err();
    let chain = format!("{e:?}");
    assert!(
        chain.contains("UnknownIssuer") || chain.contains("certificate"),
        "{chain}"
    );
    // Plain HTTP to the TLS port is not served, and the service goes on.
    let plain = reqwest::Client::new()
        .get(format!(
            "{}/healthz",
            ingest.http.replacen("https://", "http://", 1)
        ))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "{plain:?}"
    );
    assert_eq!(
        client
            .get(format!("{}/healthz", ingest.http))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Renewal: ingest's files replaced by a certificate of another CA.
    let ca2 = ca(d, "ca2");
    let (cert2, key2) = server_cert(d, "ca2", "renewed");
    let replaced = Instant::now();
    replace(&key2, &d.join("ingest.key"));
    replace(&cert2, &d.join("ingest.pem"));
    let trusting2 = || client_trusting(&ca2);
    let reload = loop {
        if let Ok(r) = trusting2()
            .get(format!("{}/healthz", ingest.http))
            .send()
            .await
            && r.status() == 200
        {
            break replaced.elapsed();
        }
        assert!(
            replaced.elapsed() < Duration::from_secs(20),
            "the renewed certificate was not served:\n{}",
            ingest.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The old CA no longer verifies new connections.
    assert!(
        client_trusting(&ca1)
            .get(format!("{}/healthz", ingest.http))
            .send()
            .await
            .is_err()
    );

    // A broken replacement is refused: the renewed certificate stays in service.
    std::fs::write(
        d.join("ingest.pem"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = client_trusting(&ca2)
            .get(format!("{}/metrics", ingest.http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains(r#"aispm_ingest_tls_reloads_total{outcome="refused"} 1"#) {
            break m;
        }
        assert!(Instant::now() < deadline, "no refused reload counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(metrics.contains(r#"aispm_ingest_tls_reloads_total{outcome="ok"} 1"#));
    assert_eq!(
        trusting2()
            .get(format!("{}/healthz", ingest.http))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the previous certificate is still served"
    );
    println!(
        "tls: 5 services over HTTPS, first request (handshake included) {:?}; renewed certificate served {reload:?} after the files were replaced; a broken replacement refused, the renewed one kept",
        timings
    );
}
