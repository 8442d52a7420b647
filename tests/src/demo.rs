//! The demo and the full-pipeline test share this driver: a broker, the four services and an
//! SMTP server on 127.0.0.1, the demo scenario sent through ingest, and a readiness packet
//! delivered by the reporter. Every step returns what it observed, for the `demo` binary to
//! print and the pipeline test to assert on.

use crate::Broker;
use crate::broker::free_port;
use crate::process::{Service, binary};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TENANT: &str = "acme";
/// The demo tenant's token (the tenant's security team: every scope), another tenant's, and an
/// operator token (every tenant, `read` only).
pub const TENANT_TOKEN: &str = "demo-acme-token";
pub const OTHER_TENANT_TOKEN: &str = "demo-globex-token";
pub const OPERATOR_TOKEN: &str = "demo-operator-token";
/// The demo tenant's agent gateway: `emit` only.
pub const GATEWAY_TOKEN: &str = "demo-acme-gateway-token";
/// The demo tenant's dashboard: `read` only.
pub const READER_TOKEN: &str = "demo-acme-reader-token";
/// The reporter's own credential: it reads every tenant's state as of a quarter's end for the
/// quarterly archive (`--read-token-file`), and nothing else.
pub const REPORTER_READ_TOKEN: &str = "demo-reporter-read-token";

/// The demo's tokens file: one line per token, `tenants` and `scopes` as a role needs them.
pub fn tokens_toml() -> String {
    let all = r#"["read", "emit", "approve", "register", "validate", "admin", "reports"]"#;
    [
        (TENANT_TOKEN, format!(r#"["{TENANT}"]"#), all.to_owned(), "acme"),
        (OTHER_TENANT_TOKEN, r#"["globex"]"#.to_owned(), all.to_owned(), "globex"),
        (OPERATOR_TOKEN, r#"["*"]"#.to_owned(), r#"["read"]"#.to_owned(), "operator"),
        (GATEWAY_TOKEN, format!(r#"["{TENANT}"]"#), r#"["emit"]"#.to_owned(), "acme-gateway"),
        (READER_TOKEN, format!(r#"["{TENANT}"]"#), r#"["read"]"#.to_owned(), "acme-dashboard"),
        (REPORTER_READ_TOKEN, r#"["*"]"#.to_owned(), r#"["read"]"#.to_owned(), "aispm-reporter"),
    ]
    .iter()
    .map(|(token, tenants, scopes, name)| {
        format!("[[tokens]]\ntoken = \"{token}\"\ntenants = {tenants}\nscopes = {scopes}\nname = \"{name}\"\n")
    })
    .collect::<Vec<_>>()
    .join("\n")
}

/// The demo tenant's connector (registered by the scenario) and the credential it holds for
/// the live system it reads.
pub const CONNECTOR: &str = "okta-connector";
pub const CONNECTOR_CREDENTIAL: &str = "SSWS demo-okta-api-token";

/// A stand-in for the live system the demo's connector reads: an identity provider's users API
/// (`GET /api/v1/users`) on 127.0.0.1 that answers 401 without the connector's credential.
/// Real HTTP on a real socket; there is no Okta org here to probe instead.
#[derive(Debug)]
pub struct LiveSystem {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveSystem {
    pub fn start() -> Result<LiveSystem> {
        use axum::http::{HeaderMap, StatusCode};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/api/v1/users", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let users = |headers: HeaderMap| async move {
            let authorized = headers
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == CONNECTOR_CREDENTIAL.as_bytes());
            if authorized {
                let users: Vec<Value> = (1..=3)
                    .map(|n| {
                        json!({"id": format!("00u{n}"), "status": "ACTIVE",
                        "profile": {"login": format!("user{n}@{TENANT}.example")}})
                    })
                    .collect();
                (StatusCode::OK, axum::Json(Value::from(users)))
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(
                        json!({"errorCode": "E0000011", "errorSummary": "Invalid token provided"}),
                    ),
                )
            }
        };
        let app = axum::Router::new().route("/api/v1/users", axum::routing::get(users));
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(LiveSystem {
            url,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for LiveSystem {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a validator run said: exit 0 passed, 1 failed (both print a JSON summary), anything
/// else could not run.
fn validator_outcome(name: &str, out: &std::process::Output) -> Result<(bool, Value)> {
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    match out.status.code() {
        Some(0) => Ok((true, summary)),
        Some(1) => Ok((false, summary)),
        _ => bail!(
            "aispm-validate {name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Writes the demo validator key where `aispm-validate` and the reporter read it
/// (`<work>/validator/validator.key`); returns its path.
pub fn validator_key_file(work: &Path) -> Result<PathBuf> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let dir = work.join("validator");
    std::fs::create_dir_all(&dir)?;
    let key_file = dir.join("validator.key");
    std::fs::write(
        &key_file,
        STANDARD.encode(aispm_tools::scenario::demo_validator_key().to_bytes()),
    )?;
    Ok(key_file)
}

/// Runs aispm's live-connector probe (`aispm-validate connector`) for the demo tenant's
/// connector against `live_url`, sending `credential` as the connector would, and posting
/// signed results for production and trial. Returns whether it passed, and its summary.
pub fn connector_probe(
    work: &Path,
    ingest: &str,
    live_url: &str,
    credential: &str,
) -> Result<(bool, Value)> {
    let key_file = validator_key_file(work)?;
    let out = Command::new(binary("aispm-validate")?)
        .args(["connector", "--tenant", TENANT, "--connector", CONNECTOR])
        .args(["--url", live_url])
        .args(["--header", &format!("Authorization: {credential}")])
        .arg("--key")
        .arg(&key_file)
        .args(["--key-id", aispm_tools::scenario::ids::VALIDATOR_KEY])
        .args(["--environments", "production,trial", "--ingest", ingest])
        .arg("--out")
        .arg(work.join("validator"))
        // The token from the environment, as an operator's scheduler would pass it.
        .env("AISPM_VALIDATE_TOKEN", TENANT_TOKEN)
        .output()?;
    validator_outcome("connector", &out)
}

/// The second tenant of the demo's tokens file (the isolation probe needs two).
pub const OTHER_TENANT: &str = "globex";

/// The tenants the demo's isolation probe covers: (tenant, read token, write token).
pub const PROBE_TENANTS: [(&str, &str, &str); 2] = [
    (TENANT, READER_TOKEN, TENANT_TOKEN),
    (OTHER_TENANT, OTHER_TENANT_TOKEN, OTHER_TENANT_TOKEN),
];

/// Runs aispm's tenant-isolation probe (`aispm-validate isolation`) against the services at
/// `urls` (ingest, projector, gatekeeper, reporter) for the demo tenant and [`OTHER_TENANT`],
/// posting signed results for `environments` (comma-separated). The demo validator key is
/// registered in the other tenant first (the scenario registers it in its own). Returns
/// whether the probe passed, and its summary.
pub async fn isolation_probe(
    client: &reqwest::Client,
    work: &Path,
    urls: [&str; 4],
    environments: &str,
) -> Result<(bool, Value)> {
    isolation_probe_with(client, work, urls, environments, &PROBE_TENANTS).await
}

/// [`isolation_probe`] with the tenants and tokens given (a wrongly scoped token, say).
pub async fn isolation_probe_with(
    client: &reqwest::Client,
    work: &Path,
    urls: [&str; 4],
    environments: &str,
    tenants: &[(&str, &str, &str)],
) -> Result<(bool, Value)> {
    use aispm_tools::scenario::{demo_validator_key, ids};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let key = demo_validator_key();
    let register = json!({"type": "registry", "event_id": "globex-validator-key",
        "tenant_id": OTHER_TENANT, "occurred_at": aispm_schemas::Timestamp::now().to_rfc3339(),
        "source": "security-team", "asset": {"asset_kind": "trust_root",
        "asset_id": ids::VALIDATOR_KEY, "status": "registered", "owner": "security-team",
        "scopes": ["validator"], "public_key": STANDARD.encode(key.verifying_key().as_bytes())}});
    let r = client
        .post(format!("{}/v1/events", urls[0]))
        .bearer_auth(OTHER_TENANT_TOKEN)
        .json(&register)
        .send()
        .await?;
    if r.status().as_u16() != 202 {
        bail!(
            "registering the validator key in {OTHER_TENANT}: {}",
            r.status()
        );
    }
    let key_file = validator_key_file(work)?;
    let dir = work.join("validator");
    let tenants_file = dir.join("tenants.toml");
    std::fs::write(
        &tenants_file,
        tenants
            .iter()
            .map(|(t, read, write)| {
                format!(
                    "[[tenants]]\ntenant = \"{t}\"\nread_token = \"{read}\"\nwrite_token = \"{write}\"\n"
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    let out = Command::new(binary("aispm-validate")?)
        .arg("isolation")
        .arg("--tenants-file")
        .arg(&tenants_file)
        .arg("--key")
        .arg(&key_file)
        .args([
            "--key-id",
            ids::VALIDATOR_KEY,
            "--environments",
            environments,
        ])
        .args(["--ingest", urls[0], "--projector", urls[1]])
        .args(["--gatekeeper", urls[2], "--reporter", urls[3]])
        .arg("--out")
        .arg(&dir)
        .output()?;
    validator_outcome("isolation", &out)
}

/// A real SMTP server (scripts/smtp_sink.py on Debian's aiosmtpd) saving what it receives.
#[derive(Debug)]
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl SmtpSink {
    /// Starts the server on a free port; a port taken between choosing and binding it (another
    /// test's) costs a retry on another, up to three.
    pub fn start(dir: &Path) -> Result<SmtpSink> {
        std::fs::create_dir_all(dir)?;
        let mut refusal = String::new();
        for _ in 0..3 {
            let port = free_port();
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/smtp_sink.py");
            let mut child = Command::new("/usr/bin/python3")
                .arg(&script)
                .arg(port.to_string())
                .arg(dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting the SMTP server (needs python3-aiosmtpd: scripts/setup.sh)")?;
            let mut line = String::new();
            let stdout = child.stdout.take().context("no stdout")?;
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
            if line.trim() == "ready" {
                // Its stderr is drained from here on: a full pipe would stall it, a closed one
                // would fail its logging.
                if let Some(mut e) = child.stderr.take() {
                    std::thread::spawn(move || std::io::copy(&mut e, &mut std::io::sink()));
                }
                return Ok(SmtpSink {
                    child,
                    port,
                    dir: dir.to_owned(),
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            refusal.clear();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut refusal)?;
            }
        }
        bail!(
            "the SMTP server did not start: {}",
            refusal.lines().last().unwrap_or("(no error)")
        )
    }

    /// The messages received so far (`msg-N.json`).
    pub fn messages(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for n in 1.. {
            let Ok(text) = std::fs::read_to_string(self.dir.join(format!("msg-{n}.json"))) else {
                break;
            };
            out.extend(serde_json::from_str(&text).ok());
        }
        out
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signs in to the console at `base` as a browser does (the form's nonce and its cookie, then
/// the token); answers the session cookie (`name=value`). `http` must not follow redirects.
pub async fn console_sign_in(http: &reqwest::Client, base: &str, token: &str) -> Result<String> {
    let first_cookie = |r: &reqwest::Response| {
        r.headers()
            .get(reqwest::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned)
    };
    let form = http.get(format!("{base}/sign-in")).send().await?;
    let nonce_cookie = first_cookie(&form).context("the sign-in form came without its cookie")?;
    let body = form.text().await?;
    let field = "name=\"sign_in\" value=\"";
    let at = body.find(field).context("the sign-in form has no nonce")? + field.len();
    let nonce = body[at..].split('"').next().unwrap_or_default();
    let signed = http
        .post(format!("{base}/sign-in"))
        .header(reqwest::header::COOKIE, nonce_cookie)
        .form(&[("token", token), ("sign_in", nonce)])
        .send()
        .await?;
    if signed.status() != reqwest::StatusCode::SEE_OTHER {
        bail!("signing in to the console: {}", signed.status());
    }
    first_cookie(&signed).context("the console set no session cookie")
}

/// The demo subscription's Standard Webhooks secret (32 bytes).
pub const DEMO_WEBHOOK_SECRET: &str = "whsec_YWlzcG0gZGVtbyB3ZWJob29rIHNlY3JldCwgMzIgQiE=";

/// Everything the demo runs.
#[derive(Debug)]
pub struct Pipeline {
    pub broker: Broker,
    pub smtp: SmtpSink,
    /// Where the reporter's webhooks go (`<work>/webhooks/received.jsonl`), each verified.
    pub webhooks: crate::webhooks::WebhookSink,
    /// The live system the demo tenant's connector reads.
    pub live: LiveSystem,
    pub ingest: Service,
    pub projector: Service,
    pub gatekeeper: Service,
    pub reporter: Service,
    /// The web console, reading the three services with each viewer's token.
    pub console: Service,
    pub work: PathBuf,
    client: reqwest::Client,
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

impl Pipeline {
    /// Starts the broker, the SMTP server and the four services, with state under `work`.
    pub async fn start(work: &Path) -> Result<Pipeline> {
        Self::start_with(work, &[]).await
    }

    /// As [`Pipeline::start`], with more flags for the reporter (tests that request packets by
    /// the hundred lift its per-tenant limits).
    pub async fn start_with(work: &Path, reporter_args: &[&str]) -> Result<Pipeline> {
        std::fs::create_dir_all(work)?;
        let work = std::fs::canonicalize(work)?;
        let logs = work.join("logs");
        std::fs::create_dir_all(&logs)?;
        // The broker's storage and log stay beside the services' (kafka/node-1/server.log).
        let broker = Broker::start_in(&work.join("kafka"), free_port())?;
        let smtp = SmtpSink::start(&work.join("mailbox"))?;
        let webhooks = crate::webhooks::WebhookSink::start(
            free_port(),
            &work.join("webhooks"),
            &serde_json::json!({"/aispm": DEMO_WEBHOOK_SECRET}),
        )?;
        let subscriptions = work.join("webhooks.toml");
        std::fs::write(
            &subscriptions,
            format!(
                "[[subscription]]\nid = \"secops\"\nurl = \"http://127.0.0.1:{}/aispm\"\nsecret = \"{DEMO_WEBHOOK_SECRET}\"\nevents = [\"blocker.opened\", \"blocker.resolved\", \"readiness.changed\", \"finding.sla_breached\", \"report.delivered\"]\ntenants = [\"{TENANT}\"]\ninitial_backoff = \"1s\"\n",
                webhooks.port
            ),
        )?;
        let live = LiveSystem::start()?;
        let validator_key = validator_key_file(&work)?.display().to_string();
        let tokens = work.join("tokens.toml");
        std::fs::write(&tokens, tokens_toml())?;
        let read_token = work.join("reporter-read-token");
        std::fs::write(&read_token, REPORTER_READ_TOKEN)?;
        let key = work.join("reporter-key.pem");
        if !key.exists() {
            let out = Command::new(binary("aispm-reporter")?)
                .args(["keygen", "--out"])
                .arg(&key)
                .output()?;
            if !out.status.success() {
                bail!("keygen failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let bootstrap = broker.bootstrap();
        let tokens = tokens.display().to_string();
        let common = |extra: &[&str]| {
            let mut a = strings(&[
                "--brokers",
                &bootstrap,
                "--tokens-file",
                &tokens,
                "--partitions",
                "3",
            ]);
            a.extend(strings(extra));
            a
        };
        let addr = || format!("127.0.0.1:{}", free_port());
        let state = |s: &str| work.join("state").join(s).display().to_string();
        // The projector creates the input topics; start it first so nothing races topic creation.
        let projector = Service::start(
            "aispm-projector",
            &addr(),
            &common(&[
                "--state-dir",
                &state("projector"),
                "--batch-wait",
                "5ms",
                // Replay checkpoints at the scale of a scenario (100 000 events by default), so
                // a replay as of a past instant starts from one.
                "--as-of-checkpoint-events",
                "40",
                "--as-of-checkpoint-interval",
                "2s",
            ]),
            &logs,
        )?;
        let gatekeeper = Service::start(
            "aispm-gatekeeper",
            &addr(),
            // Readiness as of a past instant reads the projector's rows as of then.
            &common(&[
                "--evaluation-interval",
                "2s",
                "--projector-url",
                &projector.http,
            ]),
            &logs,
        )?;
        let reporter = Service::start(
            "aispm-reporter",
            &addr(),
            &common(&[
                "--state-dir",
                &state("reporter"),
                "--out-dir",
                &work.join("packets").display().to_string(),
                "--signing-key",
                &key.display().to_string(),
                "--smtp-url",
                &format!("smtp://127.0.0.1:{}", smtp.port),
                "--smtp-timeout",
                "5s",
                // Deliveries prove the report providers they reach, signed by the demo's
                // validator key (the scenario registers it in the tenant).
                "--validator-key",
                &validator_key,
                "--validator-key-id",
                aispm_tools::scenario::ids::VALIDATOR_KEY,
                "--provider-environments",
                "production,trial",
                "--webhooks",
                &subscriptions.display().to_string(),
                // Packets as of a past instant read the projector's and gatekeeper's state
                // as of then; the quarterly archive with the reporter's own token.
                "--projector-url",
                &projector.http,
                "--gatekeeper-url",
                &gatekeeper.http,
                "--read-token-file",
                &read_token.display().to_string(),
            ])
            .into_iter()
            .chain(strings(reporter_args))
            .collect::<Vec<_>>(),
            &logs,
        )?;
        let ingest = Service::start("aispm-ingest", &addr(), &common(&[]), &logs)?;
        let console = Service::start(
            "aispm-console",
            &addr(),
            &strings(&[
                "--projector",
                &projector.http,
                "--gatekeeper",
                &gatekeeper.http,
                "--reporter",
                &reporter.http,
            ]),
            &logs,
        )?;
        let mut p = Pipeline {
            broker,
            smtp,
            webhooks,
            live,
            ingest,
            projector,
            gatekeeper,
            reporter,
            console,
            work,
            client: reqwest::Client::new(),
        };
        for s in [
            &mut p.projector,
            &mut p.gatekeeper,
            &mut p.reporter,
            &mut p.ingest,
            &mut p.console,
        ] {
            s.wait_ready(Duration::from_secs(90)).await?;
        }
        Ok(p)
    }

    /// Sends a phase of the demo scenario (`open` or `remediate`) through the ingest API, as
    /// an agent runtime without a Kafka client would; returns emit's summary line.
    pub fn emit(&self, phase: &str) -> Result<String> {
        let out = Command::new(binary("aispm-ingest")?)
            .args([
                "emit",
                "--scenario",
                "demo",
                "--phase",
                phase,
                "--tenant",
                TENANT,
                "--to",
                "http",
            ])
            .args(["--url", &self.ingest.http, "--token", TENANT_TOKEN])
            .env("RUST_LOG", "warn")
            .output()?;
        if !out.status.success() {
            bail!(
                "emit {phase} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs the isolation probe against this pipeline for the production and trial stages
    /// ([`isolation_probe`]).
    pub async fn validate_isolation(&self) -> Result<(bool, Value)> {
        isolation_probe(
            &self.client,
            &self.work,
            [
                &self.ingest.http,
                &self.projector.http,
                &self.gatekeeper.http,
                &self.reporter.http,
            ],
            "production,trial",
        )
        .await
    }

    /// Runs the live-connector probe for the demo tenant's connector against [`LiveSystem`]
    /// with `credential` ([`connector_probe`]).
    pub fn validate_connector(&self, credential: &str) -> Result<(bool, Value)> {
        connector_probe(&self.work, &self.ingest.http, &self.live.url, credential)
    }

    /// Signs in to the console with `token` and saves each of `pages` (console paths) as
    /// `<dir>/<name>.html`, with the console's stylesheet beside them, and, when Chromium is
    /// installed, a screenshot `<dir>/<name>.png` of each taken by headless Chromium. Returns the
    /// files written.
    pub async fn console_snapshots(
        &self,
        dir: &Path,
        token: &str,
        pages: &[(&str, &str)],
    ) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base = &self.console.http;
        let cookie = console_sign_in(&http, base, token).await?;
        let css = http
            .get(format!("{base}/assets/console.css"))
            .send()
            .await?
            .text()
            .await?;
        std::fs::write(dir.join("console.css"), css)?;
        let mut written = Vec::new();
        for (name, path) in pages {
            let r = http
                .get(format!("{base}{path}"))
                .header(reqwest::header::COOKIE, &cookie)
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("console {path}: {}", r.status());
            }
            let page = r
                .text()
                .await?
                .replace("/assets/console.css", "console.css");
            let html = dir.join(format!("{name}.html"));
            std::fs::write(&html, page)?;
            written.push(html.clone());
            let png = dir.join(format!("{name}.png"));
            let shot = Command::new("chromium")
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    "--window-size=1280,1400",
                ])
                .arg(format!("--screenshot={}", png.display()))
                .arg(format!("file://{}", html.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if shot.is_ok_and(|s| s.success()) && png.exists() {
                written.push(png);
            }
        }
        Ok(written)
    }

    /// POSTs `events` to ingest with `token`; returns the status and the answer.
    pub async fn post_events(&self, token: &str, events: &Value) -> Result<(u16, Value)> {
        let r = self
            .client
            .post(format!("{}/v1/events", self.ingest.http))
            .bearer_auth(token)
            .json(events)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// An OpenTelemetry-instrumented agent in the trial environment exports one trace
    /// (OTLP/JSON) to ingest's `/v1/traces` with the gateway's token: its `invoke_agent` span
    /// and the `execute_tool` span the gateway governed (allowed by an enforced control). The
    /// tool span becomes a decision in trial, which production never reads. Returns the status
    /// and ingest's answer.
    pub async fn post_otel_trace(&self) -> Result<(u16, Value)> {
        let now_ns = (aispm_schemas::Timestamp::now().0 * 1_000_000).to_string();
        let attrs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": {"stringValue": v}}))
                .collect::<Vec<_>>()
        };
        let trace = serde_json::json!({"resourceSpans": [{
            "resource": {"attributes": attrs(&[
                ("service.name", "review-agent"),
                ("deployment.environment.name", "trial"),
            ])},
            "scopeSpans": [{"scope": {"name": "aispm-demo"}, "spans": [
                {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7",
                 "name": "invoke_agent review-agent", "kind": 1, "startTimeUnixNano": now_ns,
                 "attributes": attrs(&[("gen_ai.operation.name", "invoke_agent"), ("gen_ai.agent.name", "review-agent")])},
                {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "53995c3f42cd8ad8",
                 "parentSpanId": "00f067aa0ba902b7", "name": "execute_tool read_file", "kind": 1,
                 "startTimeUnixNano": now_ns,
                 "attributes": attrs(&[
                     ("gen_ai.operation.name", "execute_tool"), ("gen_ai.tool.name", "read_file"),
                     ("aispm.action_kind", "file"), ("aispm.target", "src/lib.rs"),
                     ("aispm.verdict", "allow"), ("aispm.control_id", "ctl-file-write"),
                     ("aispm.mode", "enforced"), ("aispm.risk", "low"),
                 ])},
            ]}],
        }]});
        let r = self
            .client
            .post(format!("{}/v1/traces", self.ingest.http))
            .bearer_auth(GATEWAY_TOKEN)
            .json(&trace)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// What an attacker holding the gateway's token, or a clock trick, tries against the
    /// verdict: each attempt and how it was answered (none may be accepted).
    pub async fn forgeries(&self) -> Result<Vec<(String, u16, String)>> {
        let now = aispm_schemas::Timestamp::now();
        let y2099 = aispm_schemas::Timestamp::parse_rfc3339("2099-01-01T00:00:00Z")
            .map_err(anyhow::Error::msg)?;
        let validation = |id: &str, at: aispm_schemas::Timestamp| {
            json!({"type": "registry", "event_id": id, "tenant_id": TENANT,
                "occurred_at": at.to_rfc3339(), "source": "forger",
                "validation": {"check_kind": "tenant_isolation", "result": "pass",
                    "environment": "production"}})
        };
        let attempts = [
            (
                "the gateway's token posts a passing tenant_isolation validation",
                GATEWAY_TOKEN,
                validation("forged-isolation", now),
            ),
            (
                "the gateway's token resolves its own findings",
                GATEWAY_TOKEN,
                json!({"type": "approval", "event_id": "forged-resolution", "tenant_id": TENANT,
                    "occurred_at": now.to_rfc3339(), "source": "forger", "kind": "finding_resolved",
                    "finding_id": "F-ANY", "actor": "gateway", "reason": "trust me"}),
            ),
            (
                "the gateway's token registers its own trust root",
                GATEWAY_TOKEN,
                json!({"type": "registry", "event_id": "forged-root", "tenant_id": TENANT,
                    "occurred_at": now.to_rfc3339(), "source": "forger",
                    "asset": {"asset_kind": "trust_root", "asset_id": "forger-key", "status": "registered",
                        "public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}}),
            ),
            (
                "a validation dated 2099, to outlive every freshness window",
                TENANT_TOKEN,
                validation("forged-2099", y2099),
            ),
            (
                "a decision with evidence dated 2099, to keep the evidence fresh forever",
                GATEWAY_TOKEN,
                json!({"type": "decision", "event_id": "forged-evidence-2099", "tenant_id": TENANT,
                    "occurred_at": y2099.to_rfc3339(), "source": "forger", "agent_id": "coder-agent",
                    "actor": "mallory", "environment": "production", "action_kind": "git",
                    "target": "git push", "mode": "enforced", "verdict": "allow", "risk": "low",
                    "evidence": {"evidence_id": "forged-ev-2099", "sha256": "ab".repeat(32),
                        "uri": "s3://forger/ev"}}),
            ),
            (
                "a finding resolution dated 2099, to outlast any later reopening",
                TENANT_TOKEN,
                json!({"type": "approval", "event_id": "forged-resolution-2099",
                    "tenant_id": TENANT, "occurred_at": y2099.to_rfc3339(), "source": "forger",
                    "kind": "finding_resolved", "finding_id": "F-ANY", "actor": "mallory",
                    "reason": "resolved in the future"}),
            ),
        ];
        let mut out = Vec::new();
        for (what, token, event) in attempts {
            let (status, body) = self.post_events(token, &event).await?;
            let reason = body["details"]["errors"][0]["reason"]
                .as_str()
                .or(body["message"].as_str())
                .unwrap_or_default()
                .to_owned();
            out.push((what.to_owned(), status, reason));
        }
        Ok(out)
    }

    /// Hostile input, each refused without touching anyone else: an event over the size
    /// policy, and 40 guessed tokens from another address (127.0.0.2). Returns what each was
    /// answered, as lines for the demo.
    pub async fn hostile(&self) -> Result<Vec<(String, String)>> {
        let attributes: serde_json::Map<String, Value> = (0..256)
            .map(|i| (format!("a{i}"), Value::String("x".repeat(8 * 1024))))
            .collect();
        let huge = json!({"type": "registry", "event_id": "huge-1", "tenant_id": TENANT,
            "occurred_at": aispm_schemas::Timestamp::now().to_rfc3339(), "source": "mallory",
            "asset": {"asset_kind": "agent", "asset_id": "agent-huge", "status": "registered",
                "owner": "platform-team", "attributes": attributes}});
        let (status, body) = self.post_events(TENANT_TOKEN, &huge).await?;
        let reason = body["details"]["errors"][0]["reason"]
            .as_str()
            .unwrap_or_default();
        let mut out = vec![(
            "a valid 2.1 MB registry event (256 attributes of 8 KiB)".to_owned(),
            format!("{status} {reason}"),
        )];
        let guesser = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
            .build()?;
        let mut answers = std::collections::BTreeMap::<u16, usize>::new();
        for i in 0..40 {
            let r = guesser
                .post(format!("{}/v1/events", self.ingest.http))
                .bearer_auth(format!("guess-{i:04}"))
                .json(&json!([]))
                .send()
                .await?;
            *answers.entry(r.status().as_u16()).or_default() += 1;
        }
        // The gateway's token, from 127.0.0.1, still authenticates: its empty batch gets the
        // answer an empty batch gets, not 429.
        let (status, body) = self.post_events(GATEWAY_TOKEN, &json!([])).await?;
        out.push((
            "40 guessed tokens from 127.0.0.2".to_owned(),
            format!(
                "{} answered 401, then {} answered 429 auth_throttled; meanwhile the gateway at 127.0.0.1 is served ({status} {})",
                answers.get(&401).copied().unwrap_or(0),
                answers.get(&429).copied().unwrap_or(0),
                body["error"].as_str().unwrap_or_default()
            ),
        ));
        Ok(out)
    }

    pub async fn get(&self, base: &str, path: &str) -> Result<Value> {
        let r = self
            .client
            .get(format!("{base}{path}"))
            .bearer_auth(TENANT_TOKEN)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("GET {path}: {status} {body}");
        }
        Ok(body)
    }

    /// The sum of a metric's samples (every label set) on a service's `/metrics`.
    pub async fn metric_sum(&self, base: &str, name: &str) -> Result<f64> {
        let text = self
            .client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// The production readiness verdict from the gatekeeper.
    pub async fn readiness(&self) -> Result<Value> {
        self.get(
            &self.gatekeeper.http,
            &format!("/v1/tenants/{TENANT}/readiness?stage=production"),
        )
        .await
    }

    /// Waits until the projector has applied every event ingest accepted, or `timeout`.
    pub async fn caught_up(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let accepted = crate::process::sum(
                &self.ingest.metrics().await,
                "aispm_ingest_events_total",
                r#"outcome="accepted""#,
            );
            let applied = crate::process::sum(
                &self.projector.metrics().await,
                "aispm_projector_events_total",
                r#"outcome="applied""#,
            );
            if accepted > 0.0 && applied >= accepted {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the projector applied {applied} of the {accepted} events ingest accepted within {timeout:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the verdict until `done` holds on the set of blocker kinds (and it is stable for a
    /// second), or `timeout`.
    pub async fn readiness_until(
        &self,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        let mut since = Instant::now();
        loop {
            if let Ok(v) = self.readiness().await {
                if v["blockers"] != last["blockers"] || v["ready"] != last["ready"] {
                    since = Instant::now();
                }
                last = v;
                if done(&last) && since.elapsed() > Duration::from_secs(1) {
                    return Ok(last);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "readiness did not settle as expected within {timeout:?}; last: {last:#}\nprojector:\n{}\ngatekeeper:\n{}",
                    self.projector.log_tail(),
                    self.gatekeeper.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Runs Debian's `minisign -V` on a packet archive (its `.minisig` beside it) against the
    /// pinned reporter key; `None` when minisign is not installed.
    pub fn minisign_verify(&self, zip: &str) -> Option<(bool, String)> {
        let out = Command::new("minisign")
            .args(["-Vm", zip, "-p"])
            .arg(self.public_key_file())
            .output()
            .ok()?;
        Some(outcome(&out))
    }

    /// Asks the reporter for a packet of `kind`, delivered by SMTP.
    pub async fn report(&self, kind: &str) -> Result<Value> {
        self.report_with(json!({"type": kind})).await
    }

    /// Asks the reporter for the packet `body` describes (`type`, `recipients`, `as_of`).
    pub async fn report_with(&self, body: Value) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self
                .client
                .post(format!(
                    "{}/v1/tenants/{TENANT}/reports",
                    self.reporter.http
                ))
                .bearer_auth(TENANT_TOKEN)
                .json(&body)
                .send()
                .await?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            match status {
                200..=299 => return Ok(body),
                // Still replaying its topics, or not yet seen the tenant.
                503 | 404 if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                _ => bail!("POST reports: {status} {body}"),
            }
        }
    }

    /// The reporter key's minisign public key file (`aispm-reporter keygen` writes it beside
    /// the private key): the operator's pin, from outside any packet.
    pub fn public_key_file(&self) -> PathBuf {
        self.work.join("reporter-key.pub")
    }

    /// Runs `aispm-reporter verify` on a packet against the pinned reporter key; returns its
    /// output and whether it passed.
    pub fn verify(&self, packet: &str) -> Result<(bool, String)> {
        let out = Command::new(binary("aispm-reporter")?)
            .args(["verify", packet, "--public-key"])
            .arg(self.public_key_file())
            .output()?;
        Ok(outcome(&out))
    }
}

/// Whether a command passed, and what it printed (stdout, then stderr).
fn outcome(out: &std::process::Output) -> (bool, String) {
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_owned(),
    )
}

/// The blocker kinds of a verdict, sorted.
pub fn blocker_kinds(verdict: &Value) -> Vec<String> {
    let mut kinds: Vec<String> = verdict["blockers"]
        .as_array()
        .map(|b| {
            b.iter()
                .filter_map(|x| x["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    kinds.sort();
    kinds.dedup();
    kinds
}
