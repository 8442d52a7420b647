#!/usr/bin/env python3
"""The console in a real browser: chromium driven through chromium-driver (WebDriver) by selenium.

usage: console_browser.py --console URL --token TOKEN --tenant T --other-tenant O
                          --finding ID --expect FIELD=VALUE ... --axe axe.min.js --out DIR

As a person would, it signs in with TOKEN on the sign-in form, lands on T's overview, clicks the
blocker link of finding ID, and on the finding's page the first event behind it, which must open
the decision with every FIELD showing VALUE. It opens every page of the tenant's navigation and a
shadow agent's row, then O's overview, which must be a refusal page showing none of O's data.
On every page it runs axe-core (the page as rendered, CSP and all) and fails on any serious or
critical violation, and saves a screenshot into DIR (<n>-<page>.png) with axe's findings beside it
(<n>-<page>.axe.json). Prints a line per page and a summary line; exits 1 on any failure.
"""
import argparse
import json
import os
import re
import sys
from urllib.parse import quote

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

SERIOUS = {"serious", "critical"}


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--console", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--other-tenant", required=True)
    p.add_argument("--finding", required=True)
    p.add_argument("--expect", action="append", default=[], help="FIELD=VALUE on the decision page")
    p.add_argument("--shadow-agent", required=True)
    p.add_argument("--axe", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    return p.parse_args()


class Run:
    def __init__(self, args):
        self.args = args
        self.base = args.console.rstrip("/")
        self.axe = open(args.axe, encoding="utf-8").read()
        self.failures = []
        self.pages = 0
        self.violations = 0
        self.marks = 0
        os.makedirs(args.out, exist_ok=True)
        options = webdriver.ChromeOptions()
        options.binary_location = args.chromium
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1280,1000", "--lang=en-US"):
            options.add_argument(a)
        self.driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver),
                                       options=options)
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(60)

    def fail(self, what):
        self.failures.append(what)
        print(f"FAIL {what}", flush=True)

    def check(self, ok, what):
        if not ok:
            self.fail(what)
        return ok

    def path(self):
        url = self.driver.current_url
        return url[len(self.base):] if url.startswith(self.base) else url

    def follow(self, element):
        """Clicks element and waits until the browser has loaded another document: a click
        returns before the navigation it starts, so reading the URL at once can race it.

        The page it was on is marked with a fresh value on its window object; a new document
        has a new window object without it. This does not hold an element reference across
        the navigation: asking a node of the old document whether it is stale races
        chromium's own teardown, which answers "Node with given id does not belong to the
        document" (an unknown error) instead of a stale element some of the time."""
        self.marks += 1
        mark = f"aispm-{self.marks}"
        self.driver.execute_script("window.aispmDocument = arguments[0];", mark)
        what = f"<{element.tag_name}> {element.text.strip()!r}"
        element.click()
        # A script run while the old document is torn down can fail on the way (its context
        # gone); the wait asks again until the 30 s are out, then fails with the timeout.
        try:
            WebDriverWait(self.driver, 30, ignored_exceptions=(WebDriverException,)).until(
                lambda d: d.execute_script(
                    "return window.aispmDocument !== arguments[0]"
                    " && document.readyState === 'complete';", mark))
        except WebDriverException as e:
            self.fail(f"the click on {what} did not load a page in 30 s: {e.msg}")

    def text(self):
        return self.driver.find_element(By.TAG_NAME, "body").text

    def audit(self, name):
        """A screenshot and axe-core's verdict on the page as it stands."""
        self.pages += 1
        stem = os.path.join(self.args.out, f"{self.pages:02d}-{name}")
        self.driver.save_screenshot(stem + ".png")
        self.driver.execute_script(self.axe)
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then(r => done({violations: r.violations, passes: r.passes.map(p => p.id),"
            " incomplete: r.incomplete.map(p => p.id)}))"
            ".catch(e => done({error: String(e)}));")
        with open(stem + ".axe.json", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        if "error" in result:
            self.fail(f"{name}: axe-core did not run: {result['error']}")
            return
        bad = [v for v in result["violations"] if v.get("impact") in SERIOUS]
        self.violations += len(result["violations"])
        for v in bad:
            nodes = "; ".join(n["target"][0] if n.get("target") else "?" for n in v["nodes"][:3])
            self.fail(f"{name}: axe {v['impact']} {v['id']}: {v['help']} ({nodes})")
        if not result["passes"]:
            self.fail(f"{name}: axe-core checked no rule")
        print(f"page {self.pages:02d} {name} {self.path()}: axe passed {len(result['passes'])} "
              f"rules, {len(result['violations'])} violations, {len(bad)} serious or critical",
              flush=True)

    def open(self, path, name):
        self.driver.get(self.base + path)
        self.audit(name)

    def dd(self, field):
        """The text of a field's value on a definition-list page."""
        for dt in self.driver.find_elements(By.CSS_SELECTOR, "dl.fields dt"):
            if dt.text.strip() == field:
                return dt.find_element(By.XPATH, "following-sibling::dd[1]").text
        return None

    def run(self):
        a = self.args
        d = self.driver
        t = quote(a.tenant, safe="")
        # Signed out, every page is the sign-in form.
        self.driver.get(self.base + f"/t/{t}")
        self.check(self.path() == "/sign-in", f"signed out, /t/{t} led to {self.path()}")
        self.audit("sign-in")
        d.find_element(By.ID, "token").send_keys(a.token)
        self.follow(d.find_element(By.CSS_SELECTOR,
                                    "form[action='/sign-in'] button[type=submit]"))
        self.check(self.path() == f"/t/{t}", f"signed in, landed on {self.path()}")
        self.check(f"Tenant {a.tenant}" in self.text(), "the overview names the tenant")
        self.check(a.token not in d.page_source, "the token is not on the page")
        cookies = {c["name"]: c for c in d.get_cookies()}
        session = cookies.get("aispm_session")
        if self.check(session is not None, f"a session cookie: {sorted(cookies)}"):
            self.check(session.get("httpOnly") and session.get("sameSite") == "Strict",
                       f"the session cookie is HttpOnly and SameSite=Strict: {session}")
        self.audit("overview")

        # A blocker's link to the finding, and on to the decision behind it.
        link = d.find_elements(By.CSS_SELECTOR,
                               f"ol.blockers a[href*='{quote(a.finding, safe='')}']")
        if self.check(link, f"a blocker links to {a.finding}"):
            self.follow(link[0])
            self.check(self.path().startswith(f"/t/{t}/finding?id="), f"on {self.path()}")
            self.check(a.finding in self.text(), "the finding page names the finding")
            factors = d.find_elements(By.CSS_SELECTOR, "table.risk tbody tr")
            self.check(len(factors) == 7 and "Why its risk is" in self.text(),
                       f"the finding page explains its risk score with 7 factors, not {len(factors)}")
            self.audit("finding")
            events = d.find_elements(By.CSS_SELECTOR, "ol.events a")
            if self.check(events, "the finding lists the events behind it"):
                event_id = events[0].text.strip()
                self.follow(events[0])
                self.check(self.path().startswith(f"/t/{t}/event?id="),
                           f"the event {event_id} opens its decision: {self.path()}")
                self.check(event_id in self.text(), "the decision page names the decision")
                for e in a.expect:
                    field, want = e.split("=", 1)
                    got = self.dd(field)
                    self.check(got is not None and want in got,
                               f"decision field {field}: want {want!r}, got {got!r}")
                self.audit("decision")

        # Every page of the tenant's navigation, and a shadow agent's row.
        for href, name in [("/findings?status=open", "findings"),
                           ("/coverage?shadow_ai=true", "coverage-shadow-ai"),
                           ("/controls", "controls"), ("/exceptions", "exceptions"),
                           ("/approvals", "approvals"),
                           ("/approval-stats", "approval-stats"),
                           ("/data-flows", "data-flows"),
                           ("/blockers?stage=production", "blockers"),
                           ("/evidence?within=30d", "evidence"),
                           ("/validations", "validations"), ("/reports", "reports")]:
            self.open(f"/t/{t}{href}", name)
            self.check(d.find_elements(By.TAG_NAME, "h1"), f"{name} has a heading")
        self.driver.get(self.base + f"/t/{t}/coverage?shadow_ai=true")
        agent = d.find_elements(By.XPATH, "//td/a[normalize-space(.)='%s']" % a.shadow_agent)
        if self.check(agent, f"the shadow agent {a.shadow_agent} is listed"):
            self.follow(agent[0])
            self.check("shadow_ai" in self.text(), "the asset row shows shadow_ai")
            self.check("What it acted for and with" in self.text(),
                       "the agent's page shows what it acted for and with")
            self.audit("asset")
        # A registered agent's identity and access: its key, and the scopes it never uses.
        self.open(f"/t/{t}/asset?key=agent%2Fcoder-agent", "agent-identity")
        body = self.text()
        self.check("Identity and access" in body and "coder-agent-ci-key" in body,
                   "coder-agent's page shows its API key")
        self.check("AISPM-KEY-002:coder-agent-ci-key" in body,
                   "coder-agent's page links the over-privilege finding")

        # Another tenant: a refusal page, and none of its data.
        o = quote(a.other_tenant, safe="")
        self.open(f"/t/{o}", "other-tenant")
        body = self.text()
        self.check("Refused" in body, "another tenant's page is a refusal")
        self.check(not re.search(r"blocker|Posture|Findings of", body),
                   "the refusal shows none of the other tenant's data")

    def close(self):
        try:
            self.driver.quit()
        except WebDriverException:
            pass


def main():
    args = parse()
    run = Run(args)
    try:
        run.run()
    except (NoSuchElementException, WebDriverException) as e:
        run.fail(f"the browser stopped at {run.path()}: {e.msg if hasattr(e, 'msg') else e}")
    finally:
        run.close()
    print(f"console in chromium: {run.pages} pages, {run.violations} axe violations in all, "
          f"{len(run.failures)} failures; screenshots in {args.out}", flush=True)
    sys.exit(1 if run.failures else 0)


if __name__ == "__main__":
    main()
