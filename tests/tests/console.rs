//! The console against the real services, over real HTTP, as a browser talks to it: sign in
//! with a token, get an HttpOnly SameSite=Strict session cookie, open the tenant, follow a
//! blocker's link to the finding behind it and on to its events and evidence; another tenant is
//! a refusal page without any of its data; forms without the CSRF token are refused; the CSP
//! forbids every script.

use aispm_tests::demo::{OPERATOR_TOKEN, Pipeline, READER_TOKEN, TENANT_TOKEN, blocker_kinds};
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use std::time::Duration;

/// A browser's view of the console: no redirects followed, the session cookie kept.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    csp: Option<String>,
    set_cookie: Option<String>,
    body: String,
}

impl Browser {
    fn new(base: &str) -> Self {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookie: None,
        }
    }

    async fn page(&mut self, r: reqwest::RequestBuilder) -> Page {
        let r = match &self.cookie {
            Some(c) => r.header(COOKIE, c),
            None => r,
        };
        let r = r.send().await.unwrap();
        let h = |name| {
            r.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let (location, csp, set_cookie) = (h(LOCATION), h(CONTENT_SECURITY_POLICY), h(SET_COOKIE));
        if let Some(c) = &set_cookie {
            let pair = c.split(';').next().unwrap().to_owned();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        Page {
            status: r.status().as_u16(),
            location,
            csp,
            set_cookie,
            body: r.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let r = self.http.get(url);
        self.page(r).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self.http.post(format!("{}{path}", self.base)).form(form);
        self.page(r).await
    }

    /// Follows redirects from `path` as a browser would; the final page.
    async fn follow(&mut self, path: &str) -> (String, Page) {
        let mut at = path.to_owned();
        for _ in 0..5 {
            let p = self.get(&at).await;
            match p.location.clone() {
                Some(l) if (300..400).contains(&p.status) => at = l,
                _ => return (at, p),
            }
        }
        panic!("too many redirects from {path}");
    }

    /// Signs in as a person does: the form first (its nonce and cookie), then the token.
    async fn sign_in(&mut self, token: &str) -> Page {
        let form = self.get("/sign-in").await;
        let nonce = hidden(&form.body, "sign_in");
        self.post("/sign-in", &[("token", token), ("sign_in", &nonce)])
            .await
    }
}

/// The CSRF token of the page's first form that carries one.
fn csrf(body: &str) -> String {
    hidden(body, "csrf")
}

/// The value of the page's first hidden field `name`.
fn hidden(body: &str, name: &str) -> String {
    let field = format!("name=\"{name}\" value=\"");
    let at = body
        .find(&field)
        .unwrap_or_else(|| panic!("no {name} field"))
        + field.len();
    body[at..].split('"').next().unwrap().to_owned()
}

/// Every `href` of a page that starts with `prefix`, HTML entities undone.
fn links(body: &str, prefix: &str) -> Vec<String> {
    body.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(|h| h.replace("&amp;", "&"))
        .filter(|h| h.starts_with(prefix))
        .collect()
}

/// Asks `base` for each path with the tenant's token and checks the status it answers.
async fn statuses<P: AsRef<str>>(base: &str, expected: &[(P, u16)]) {
    for (path, status) in expected {
        let path = path.as_ref();
        let r = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(TENANT_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), *status, "{path}");
    }
}

/// The pipeline with the demo scenario's "open" phase applied: every production blocker up.
async fn opened(work: &std::path::Path) -> Pipeline {
    let p = Pipeline::start(work).await.unwrap();
    p.emit("open").unwrap();
    p.readiness_until(Duration::from_secs(120), |v| blocker_kinds(v).len() >= 10)
        .await
        .unwrap();
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_drills_from_a_blocker_to_the_events_behind_it() {
    let work = tempfile::tempdir().unwrap();
    let p = opened(work.path()).await;
    let mut b = Browser::new(&p.console.http);

    // Signed out: every page leads to the sign-in form, which is served with the strict CSP.
    let home = b.get("/").await;
    assert_eq!(home.status, 303);
    assert_eq!(home.location.as_deref(), Some("/sign-in"));
    let form = b.get("/sign-in").await;
    assert_eq!(form.status, 200);
    let csp = form.csp.unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert!(!form.body.contains("<script"), "no script on any page");
    let css = b.get("/assets/console.css").await;
    assert_eq!(css.status, 200);

    // A wrong token is refused; the acme dashboard's token (read only) signs in.
    // Login CSRF: a sign-in posted without the form's nonce (another site's form) is refused.
    let forged = b.post("/sign-in", &[("token", READER_TOKEN)]).await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.body.contains("not served to this browser"));
    let refused = b.sign_in("not-a-token").await;
    assert_eq!(refused.status, 401);
    // No session: only a fresh sign-in form (and its nonce cookie).
    assert!(
        refused
            .set_cookie
            .as_deref()
            .is_none_or(|c| c.starts_with("aispm_sign_in=")),
        "{:?}",
        refused.set_cookie
    );
    let signed = b.sign_in(READER_TOKEN).await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let cookie = signed.set_cookie.unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(READER_TOKEN),
        "the token never goes to the browser"
    );

    // A tenant-bound token lands on its tenant's overview: every production blocker, with
    // its meaning and links to what is behind it.
    let (at, overview) = b.follow("/").await;
    assert_eq!(at, "/t/acme");
    assert_eq!(overview.status, 200);
    for kind in blocker_kinds(&p.readiness().await.unwrap()) {
        assert!(overview.body.contains(&kind), "{kind} is on the overview");
    }
    assert!(overview.body.contains("not ready"));
    assert!(overview.body.contains("Posture"));

    // The critical finding's blocker links to the finding, which shows its rule, severity and
    // the events behind it.
    let critical = aispm_tools::scenario::ids::CRITICAL_FINDING;
    let link = links(&overview.body, "/t/acme/go?id=")
        .into_iter()
        .find(|l| l.contains("AISPM-DATA-001"))
        .expect("a blocker links to the critical finding");
    let (at, finding) = b.follow(&link).await;
    assert!(at.starts_with("/t/acme/finding?id="), "{at}");
    assert_eq!(finding.status, 200, "{}", finding.body);
    assert!(finding.body.contains(critical));
    assert!(finding.body.contains("critical"));
    assert!(finding.body.contains("Events behind it"));
    let events = links(&finding.body, "/t/acme/go?id=");
    assert!(!events.is_empty(), "the finding names its events");

    // An evidence id behind a blocker opens the evidence row with its signature state.
    let mut evidence_seen = false;
    for l in links(&overview.body, "/t/acme/go?id=") {
        let (_, page) = b.follow(&l).await;
        if page.body.contains("Evidence") && page.body.contains("signature_state") {
            evidence_seen = true;
            break;
        }
    }
    assert!(evidence_seen, "some blocker links to an evidence row");

    // The findings list filters and links each row.
    let list = b
        .get("/t/acme/findings?status=open&severity=critical")
        .await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains(critical));
    assert!(
        !list.body.contains("AISPM-APR-001"),
        "filtered by severity: {}",
        list.body
    );

    // Another tenant: a refusal page, and none of its data.
    let other = b.get("/t/globex").await;
    assert_eq!(other.status, 403);
    assert!(other.body.contains("Refused"));
    assert!(!other.body.contains("blocker") && !other.body.contains("Posture"));

    // The one write: without the session's CSRF token it is refused; with it, a read-only
    // token is still refused by the reporter (no `reports` scope).
    let reports = b.get("/t/acme/reports").await;
    assert_eq!(reports.status, 200);
    let forged = b
        .post("/t/acme/reports", &[("type", "cso"), ("csrf", "forged")])
        .await;
    assert_eq!(forged.status, 403);
    assert!(forged.body.contains("CSRF"));
    let token = csrf(&reports.body);
    let no_scope = b
        .post("/t/acme/reports", &[("type", "cso"), ("csrf", &token)])
        .await;
    assert_eq!(no_scope.status, 403, "{}", no_scope.body);

    // Sign-out needs the CSRF token too, then ends the session.
    let out = b.post("/sign-out", &[("csrf", &token)]).await;
    assert_eq!(out.status, 303);
    assert!(b.cookie.is_none(), "the cookie is cleared");
    assert_eq!(b.get("/t/acme").await.status, 303);

    // The tenant's security team requests a packet through the console.
    let mut team = Browser::new(&p.console.http);
    assert_eq!(team.sign_in(TENANT_TOKEN).await.status, 303);
    let reports = team.get("/t/acme/reports").await;
    let token = csrf(&reports.body);
    let made = team
        .post(
            "/t/acme/reports",
            &[("type", "blockers_digest"), ("csrf", &token)],
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    assert!(made.body.contains("generated"), "{}", made.body);

    // Coverage, controls and exceptions: each a page, each row linked to its own row.
    let shadow = team.get("/t/acme/coverage?shadow_ai=true").await;
    assert_eq!(shadow.status, 200, "{}", shadow.body);
    for agent in aispm_tools::scenario::ids::SHADOW_AGENTS {
        assert!(shadow.body.contains(agent), "{agent} is shadow AI");
    }
    assert!(
        !shadow.body.contains("coder-agent"),
        "a registered agent is not shadow AI"
    );
    let asset = links(&shadow.body, "/t/acme/asset?key=")
        .into_iter()
        .find(|l| l.contains("notebook-agent"))
        .expect("a shadow agent links to its row");
    let (_, row) = team.follow(&asset).await;
    assert_eq!(row.status, 200, "{}", row.body);
    assert!(row.body.contains("Asset") && row.body.contains("shadow_ai"));
    let controls = team.get("/t/acme/controls").await;
    assert_eq!(controls.status, 200);
    let shadow_control = aispm_tools::scenario::ids::SHADOW_CONTROL;
    assert!(controls.body.contains(shadow_control) && controls.body.contains("shadowed"));
    // The resolver finds a control and an asset by id alone (coverage keys are `kind/id`).
    let (_, control) = team
        .follow(&format!("/t/acme/go?id={shadow_control}"))
        .await;
    assert!(control.body.contains("Control") && control.body.contains("shadow_decisions"));
    let (_, agent) = team.follow("/t/acme/go?id=slack-summarizer").await;
    assert!(agent.body.contains("Asset") && agent.body.contains("decisions"));
    let exceptions = team.get("/t/acme/exceptions").await;
    assert_eq!(exceptions.status, 200, "{}", exceptions.body);
    assert!(
        exceptions.body.contains("break_glass"),
        "{}",
        exceptions.body
    );
    // The evidence search: the projector filters by signature state, and the states partition
    // the tenant's evidence.
    // Evidence may still be arriving (the pipeline keeps applying): the partition is checked
    // between two equal totals, up to ten times.
    let mut attempts = 0;
    let all = loop {
        attempts += 1;
        let all = p
            .get(&p.projector.http, "/v1/tenants/acme/evidence")
            .await
            .unwrap();
        let total = all["evidence"].as_array().unwrap().len();
        let mut by_state = 0;
        for state in ["verified", "unsigned", "invalid", "unknown_key"] {
            let page = p
                .get(
                    &p.projector.http,
                    &format!("/v1/tenants/acme/evidence?signature_state={state}"),
                )
                .await
                .unwrap();
            let rows = page["evidence"].as_array().unwrap();
            assert!(rows.iter().all(|r| r["signature_state"] == state), "{page}");
            by_state += rows.len();
        }
        let after = p
            .get(&p.projector.http, "/v1/tenants/acme/evidence")
            .await
            .unwrap()["evidence"]
            .as_array()
            .unwrap()
            .len();
        if after == total || attempts == 10 {
            assert!(total > 0 && by_state == total, "{by_state} of {total}");
            break all;
        }
    };
    // By agent and by control: each search answers exactly the rows whose decision named it.
    let rows = all["evidence"].as_array().unwrap();
    for field in ["agent", "control"] {
        let named: std::collections::BTreeSet<&str> = rows
            .iter()
            .filter_map(|r| r[format!("{field}_id")].as_str())
            .collect();
        assert!(!named.is_empty(), "some evidence names its {field}: {all}");
        for id in named {
            let want = rows
                .iter()
                .filter(|r| r[format!("{field}_id")] == id)
                .count();
            let mut url = reqwest::Url::parse("http://x/v1/tenants/acme/evidence").unwrap();
            url.query_pairs_mut().append_pair(field, id);
            let path = format!("{}?{}", url.path(), url.query().unwrap_or(""));
            let page = p.get(&p.projector.http, &path).await.unwrap();
            let got = page["evidence"].as_array().unwrap();
            assert_eq!(got.len(), want, "{field}={id}: {page}");
            assert!(got.iter().all(|r| r[format!("{field}_id")] == id));
        }
    }
    let by_agent = team.get("/t/acme/evidence?agent=slack-summarizer").await;
    assert_eq!(by_agent.status, 200, "{}", by_agent.body);
    assert!(
        by_agent.body.contains(r#"value="slack-summarizer""#),
        "the search keeps its agent: {}",
        by_agent.body
    );
    let future = p
        .get(
            &p.projector.http,
            "/v1/tenants/acme/evidence?since=2999-01-01T00:00:00Z",
        )
        .await
        .unwrap();
    assert_eq!(future["evidence"].as_array().unwrap().len(), 0);
    let search = team
        .get("/t/acme/evidence?signature_state=verified&within=30d")
        .await;
    assert_eq!(search.status, 200, "{}", search.body);
    assert!(search.body.contains("Evidence of acme"));
    let missing = team.get("/t/acme/go?id=no-such-thing").await;
    assert_eq!(missing.status, 404);

    // The projector keeps every applied event by id: the decision behind the critical finding,
    // as it arrived, with who asserted it and the rows it names; nothing for another tenant.
    let d = p
        .get(
            &p.projector.http,
            &format!(
                "/v1/tenants/acme/events/{}",
                aispm_tools::scenario::ids::critical_decision("acme")
            ),
        )
        .await
        .unwrap();
    assert_eq!(d["type"], "decision", "{d}");
    assert_eq!(d["event"]["agent_id"], "slack-summarizer");
    assert_eq!(d["event"]["data_classes"], serde_json::json!(["pii"]));
    assert!(d["asserted_by"].is_string(), "{d}");
    assert!(
        d["rows"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("coverage/model_endpoint/openai-gpt-4o")),
        "{d}"
    );
    statuses(
        &p.projector.http,
        &[
            ("/v1/tenants/acme/events/no-such-event", 404),
            ("/v1/tenants/globex/events/acme-open-d14-model-pii", 403),
        ],
    )
    .await;

    // The posture says when it was computed and what changed in the last day; each
    // computation is the hour's sample of the tenant's trend, drawn on the overview.
    let posture = p
        .get(&p.projector.http, "/v1/tenants/acme/posture")
        .await
        .unwrap();
    assert!(posture["computed_at"].is_string(), "{posture}");
    let opened = &posture["last_24h"]["counts"]["findings_opened"];
    assert!(opened.as_u64().is_some(), "{posture}");
    assert_eq!(
        posture["layers"]["findings"]["counts"]["open"],
        serde_json::json!(
            posture["layers"]["findings"]["drill_down"]["open"]
                .as_array()
                .unwrap()
                .len()
        ),
        "{posture}"
    );
    let trend = p
        .get(&p.projector.http, "/v1/tenants/acme/posture/trend?days=1")
        .await
        .unwrap();
    let samples = trend["samples"].as_array().unwrap();
    assert!(
        !samples.is_empty()
            && samples[0]["layers"].as_array().unwrap().len() == 5
            && trend["layers"][2] == "findings",
        "{trend}"
    );
    let overview = team.get("/t/acme").await;
    assert!(
        overview.body.contains("Last 24 hours") && overview.body.contains("<svg class=\"trend\""),
        "{}",
        overview.body
    );
    // The overview as of a past instant: the services' answers for that instant, and a notice
    // saying what the projector replayed.
    assert!(
        overview.body.contains("name=\"as_of\""),
        "the overview offers an instant"
    );
    let at = aispm_schemas::Timestamp::now().minus(Duration::from_secs(30));
    let then = team.get(&format!("/t/acme?as_of={at}")).await;
    assert_eq!(then.status, 200, "{}", then.body);
    assert!(
        then.body.contains(&format!("As of <strong>{at}</strong>"))
            && then.body.contains("events that occurred by then, replayed")
            && then.body.contains("Back to now"),
        "{}",
        then.body
    );
    // A packet as of the same instant, through the reports form (the projector's replay of it
    // is shared): the list says what it is as of.
    let at = at.to_string();
    let form = csrf(&team.get("/t/acme/reports").await.body);
    let past = team
        .post(
            "/t/acme/reports",
            &[
                ("type", "production_readiness"),
                ("as_of", &at),
                ("csrf", &form),
            ],
        )
        .await;
    assert_eq!(past.status, 200, "{}", past.body);
    assert!(past.body.contains("generated"), "{}", past.body);
    assert!(
        past.body.contains(&at),
        "the list shows the instant: {}",
        past.body
    );
    // An instant in the future is the person's mistake: 400 and the reason, not a failure.
    let future = aispm_schemas::Timestamp::now()
        .plus(Duration::from_secs(3600))
        .to_string();
    let refused = team
        .post(
            "/t/acme/reports",
            &[
                ("type", "production_readiness"),
                ("as_of", &future),
                ("csrf", &form),
            ],
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("Not accepted") && refused.body.contains("in the future"),
        "{}",
        refused.body
    );
    statuses(
        &p.projector.http,
        &[
            ("/v1/tenants/acme/posture/trend?days=0", 400),
            ("/v1/tenants/acme/posture/trend?days=31", 400),
            ("/v1/tenants/globex/posture/trend", 403),
        ],
    )
    .await;

    // A stage's blockers a page at a time, counted; the gatekeeper bounds every answer.
    let blockers = team.get("/t/acme/blockers?stage=production").await;
    assert_eq!(blockers.status, 200, "{}", blockers.body);
    assert!(blockers.body.contains("Blockers of acme for production"));
    let two = p
        .get(
            &p.gatekeeper.http,
            "/v1/tenants/acme/readiness?stage=production&limit=2",
        )
        .await
        .unwrap();
    let count = two["blocker_count"].as_u64().unwrap();
    assert!(
        count > 2 && two["blockers"].as_array().unwrap().len() == 2,
        "{two}"
    );
    let next = two["next_cursor"].as_str().unwrap();
    let rest = p
        .get(
            &p.gatekeeper.http,
            &format!("/v1/tenants/acme/readiness?stage=production&after={next}"),
        )
        .await
        .unwrap();
    assert_eq!(
        rest["blockers"].as_array().unwrap().len() as u64,
        count - 2,
        "{rest}"
    );

    // The decision that raised the overdue finding names it among the rows it changed.
    let unapproved = aispm_tools::scenario::ids::unapproved_command_decision("acme");
    let d = p
        .get(
            &p.projector.http,
            &format!("/v1/tenants/acme/events/{unapproved}"),
        )
        .await
        .unwrap();
    let raised = format!(
        "findings/{}",
        aispm_tools::scenario::ids::unapproved_command_finding()
    );
    assert!(
        d["rows"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(raised)),
        "{d}"
    );
    let decision_page = team.get(&format!("/t/acme/event?id={unapproved}")).await;
    assert!(
        decision_page.body.contains("Rows it changed")
            && decision_page.body.contains("AISPM-APR-001"),
        "{}",
        decision_page.body
    );

    // Approvals: every approval event newest first, one kind by filter, one by id.
    let all = p
        .get(&p.projector.http, "/v1/tenants/acme/approvals?limit=1000")
        .await
        .unwrap();
    let list = all["approvals"].as_array().unwrap();
    let kinds: std::collections::BTreeSet<&str> =
        list.iter().filter_map(|a| a["kind"].as_str()).collect();
    for k in [
        "approval_granted",
        "break_glass_invoked",
        "exception_granted",
        "finding_assigned",
    ] {
        assert!(kinds.contains(k), "{k} in {kinds:?}");
    }
    let times: Vec<&str> = list
        .iter()
        .filter_map(|a| a["occurred_at"].as_str())
        .collect();
    assert!(
        times.len() == list.len() && times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let granted = p
        .get(
            &p.projector.http,
            "/v1/tenants/acme/approvals?kind=approval_granted&limit=2",
        )
        .await
        .unwrap();
    let granted_rows = granted["approvals"].as_array().unwrap();
    assert!(
        !granted_rows.is_empty() && granted_rows.iter().all(|a| a["kind"] == "approval_granted"),
        "{granted}"
    );
    let one_id = granted_rows[0]["event_id"].as_str().unwrap();
    let one = p
        .get(
            &p.projector.http,
            &format!("/v1/tenants/acme/approvals/{one_id}"),
        )
        .await
        .unwrap();
    assert_eq!(one["kind"], "approval_granted", "{one}");
    assert!(one["asserted_by"].is_string(), "{one}");
    statuses(
        &p.projector.http,
        &[
            ("/v1/tenants/acme/approvals?kind=approved".to_owned(), 400),
            (format!("/v1/tenants/acme/approvals/{unapproved}"), 404),
            ("/v1/tenants/globex/approvals".to_owned(), 403),
            (
                "/v1/tenants/acme/agents/coder-agent/links?relation=friend".to_owned(),
                400,
            ),
        ],
    )
    .await;
    let approvals_page = team.get("/t/acme/approvals?kind=break_glass_invoked").await;
    assert_eq!(approvals_page.status, 200, "{}", approvals_page.body);
    assert!(
        approvals_page.body.contains("break_glass_invoked")
            && !approvals_page.body.contains("<td>approval_granted</td>"),
        "{}",
        approvals_page.body
    );

    // A control's requests for approval by month on its page (the demo's coder-agent asked
    // under ctl-shell-exec), and its requests per agent one link away.
    let (_, shell) = team.follow("/t/acme/go?id=ctl-shell-exec").await;
    assert!(
        shell.body.contains("Requests for approval by month")
            && shell
                .body
                .contains("/t/acme/approval-stats?control=ctl-shell-exec"),
        "{}",
        shell.body
    );
    let per_agent = team
        .get("/t/acme/approval-stats?control=ctl-shell-exec")
        .await;
    assert_eq!(per_agent.status, 200, "{}", per_agent.body);
    assert!(
        per_agent.body.contains("under <code>ctl-shell-exec</code>")
            && per_agent.body.contains("coder-agent"),
        "{}",
        per_agent.body
    );

    // What an agent acted for and with, counted from its decisions; the asset page shows it,
    // and the findings about it are one filter away.
    let links = p
        .get(
            &p.projector.http,
            "/v1/tenants/acme/agents/coder-agent/links",
        )
        .await
        .unwrap();
    let link = |relation: &str, target: &str| {
        links["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == relation && l["target"] == target)
            .cloned()
    };
    let workflow = link("workflow", "deploy-prod").unwrap_or_else(|| panic!("{links}"));
    assert!(workflow["decisions"].as_i64().unwrap() >= 2, "{workflow}");
    assert!(
        links["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["relation"] == "actor"),
        "{links}"
    );
    let actors = p
        .get(
            &p.projector.http,
            "/v1/tenants/acme/agents/coder-agent/links?relation=actor",
        )
        .await
        .unwrap();
    assert!(
        actors["links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["relation"] == "actor"),
        "{actors}"
    );
    let (at, asset_page) = team.follow("/t/acme/go?id=coder-agent").await;
    assert!(
        at.starts_with("/t/acme/asset?key=agent%2Fcoder-agent"),
        "{at}"
    );
    assert!(
        asset_page.body.contains("What it acted for and with")
            && asset_page.body.contains("deploy-prod"),
        "{}",
        asset_page.body
    );
    // Its identity and access: the key it pushes with, the scope it uses, the two it does not
    // (granted 40 days ago, unused since), and the over-privilege finding, linked.
    let key = aispm_tools::scenario::ids::CODER_KEY;
    for shown in [
        "Identity and access",
        "Owner: <strong>platform-team</strong>",
        key,
        "repo:write",
        "repo:read, actions:write",
        &format!("AISPM-KEY-002:{key}"),
    ] {
        assert!(
            asset_page.body.contains(shown),
            "{shown} not on the agent's page: {}",
            asset_page.body
        );
    }
    let about = p
        .get(
            &p.projector.http,
            "/v1/tenants/acme/findings?about=coder-agent",
        )
        .await
        .unwrap();
    let about_ids: Vec<&str> = about["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["finding_id"].as_str())
        .collect();
    assert!(
        about_ids.contains(&aispm_tools::scenario::ids::unapproved_command_finding().as_str())
            && about_ids.iter().all(|id| id.contains("coder-agent")),
        "{about_ids:?}"
    );

    // The projector's lists are pages: every finding exactly once through the cursor, and a
    // page size outside 1..=1000 or a cursor it never gave is a 400. The reporter keeps
    // delivering while the test pages (each packet may raise a finding of its own), so the
    // pages must hold every finding there was before and nothing that is not there after.
    let ids = |list: &serde_json::Value| -> Vec<String> {
        assert!(list["next_cursor"].is_null(), "{list}");
        list["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["finding_id"].to_string())
            .collect()
    };
    let before = ids(&p
        .get(&p.projector.http, "/v1/tenants/acme/findings")
        .await
        .unwrap());
    assert!(before.len() > 2, "{before:?}");
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/tenants/acme/findings?limit=2&after={a}"),
            None => "/v1/tenants/acme/findings?limit=2".to_owned(),
        };
        let page = p.get(&p.projector.http, &path).await.unwrap();
        let rows = page["findings"].as_array().unwrap();
        assert!(rows.len() <= 2);
        seen.extend(rows.iter().map(|f| f["finding_id"].to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => after = Some(c.to_owned()),
            None => break,
        }
    }
    let after_paging = ids(&p
        .get(&p.projector.http, "/v1/tenants/acme/findings")
        .await
        .unwrap());
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), unique.len(), "a finding on two pages: {seen:?}");
    assert!(
        before.iter().all(|id| seen.contains(id))
            && seen.iter().all(|id| after_paging.contains(id)),
        "before {before:?}, paged {seen:?}, after {after_paging:?}"
    );
    for bad in ["limit=0", "limit=1001", "after=zz"] {
        let r = reqwest::Client::new()
            .get(format!(
                "{}/v1/tenants/acme/findings?{bad}",
                p.projector.http
            ))
            .bearer_auth(TENANT_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{bad}");
    }

    // An operator token sees every tenant's verdict per stage.
    let mut ops = Browser::new(&p.console.http);
    assert_eq!(ops.sign_in(OPERATOR_TOKEN).await.status, 303);
    let tenants = ops.get("/").await;
    assert_eq!(tenants.status, 200);
    assert!(
        tenants.body.contains("href=\"/t/acme\""),
        "{}",
        tenants.body
    );
    assert!(tenants.body.contains("not ready"));
}

/// The console in chromium, driven through chromium-driver by selenium
/// (scripts/console_browser.py): sign in on the form, follow the critical finding's blocker to
/// the finding and on to the decision behind it and check its fields, open every page, be
/// refused another tenant; axe-core on every page (no serious or critical violation), and a
/// screenshot of each kept in `$CARGO_TARGET_DIR/artifacts/console/`.
#[tokio::test(flavor = "multi_thread")]
async fn in_chromium_a_person_reaches_the_decision_behind_a_blocker_and_every_page_passes_axe() {
    let work = tempfile::tempdir().unwrap();
    let p = opened(work.path()).await;
    let out = aispm_tests::process::artifacts_dir("console");
    let _ = std::fs::remove_dir_all(&out);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/console_browser.py");
    let run = std::process::Command::new(aispm_tests::process::venv_python())
        .arg(&script)
        .args(["--console", &p.console.http])
        .args([
            "--token",
            TENANT_TOKEN,
            "--tenant",
            "acme",
            "--other-tenant",
            "globex",
        ])
        .args(["--finding", aispm_tools::scenario::ids::CRITICAL_FINDING])
        .args(["--expect", "agent_id=slack-summarizer"])
        .args(["--expect", "model_endpoint=openai-gpt-4o"])
        .args(["--expect", "control_id=ctl-model-egress"])
        .args(["--expect", "data_classes=pii"])
        .args(["--shadow-agent", "notebook-agent"])
        .arg("--axe")
        .arg(aispm_tests::process::axe_js())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("the venv's python (scripts/setup.sh)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "{stdout}\n{}\nconsole:\n{}",
        String::from_utf8_lossy(&run.stderr),
        p.console.log_tail()
    );
    let shots = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert!(shots >= 14, "{shots} screenshots in {}", out.display());
}
