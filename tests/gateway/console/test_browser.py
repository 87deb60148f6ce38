"""End to end in Debian's chromium against the four-node demo federation: what auditors, admins and systems do.

One federation for the whole module (started once, ~30 s on two cores); every test opens its
own browser context, so cookies never leak from one test to the next. The tests FAIL (they do
not skip) when chromium or axe-core is missing, with the command that installs it.
"""

from __future__ import annotations

import http.server
import threading

import pytest

from gateway.console.i18n import catalogue
from gateway.demo import BFS

from .browser import AXE, EMMEN, HUB, LUZERN, launch, login, require_browser_tools, start_demo

DE = catalogue("de")
PAGES = {
    "auditor": ["/console/audit", "/console/audit/search", "/console/audit/report", "/console/audit/export"],
    "admin": ["/console/admin", "/console/admin/policies", "/console/admin/explain", "/console/admin/policies/diff"],
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    require_browser_tools()
    running = start_demo(tmp_path_factory.mktemp("console") / "demo")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser(demo):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(ignore_https_errors=True, accept_downloads=True)
    yield context.new_page()
    context.close()


def test_without_chromium_or_axe_the_browser_tests_fail_saying_how_to_install_them(monkeypatch, tmp_path):
    """The harness reports a missing browser or axe-core with the install commands (CI fails on it; elsewhere the tests skip with it)."""
    from . import browser as harness

    monkeypatch.setattr(harness, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setattr(harness, "AXE", harness.ROOT / "tests" / "no-axe.min.js")
    problem = harness.missing_tools()
    assert "no-chromium not found" in problem and "no-axe.min.js not found" in problem
    assert "apt-get install -y chromium" in problem and "npm ci --prefix tests/gateway/console/node" in problem


def test_the_login_works_from_the_keyboard_alone_starting_with_the_skip_link(demo, page):
    """Tab reaches the skip link first, then (after the language links) name, secret and the button; Enter signs in."""
    page.goto(demo.url("node-luzern"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "name":
            break
    assert page.evaluate("document.activeElement.id") == "name"
    name, secret = demo.operator("node-luzern", "auditor")
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "secret"
    page.keyboard.type(secret)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "BUTTON"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/console/login" not in url)
    assert page.url.endswith("/console/audit")


def test_an_auditor_finds_a_message_by_person_sees_its_trace_and_downloads_the_report(demo, page, tmp_path):
    """Search by AHV number → the message → its trace over three nodes → the report, printable and as CSV."""
    login(page, demo, "node-luzern", demo.operator("node-luzern", "auditor"))
    assert page.url.endswith("/console/audit")
    page.get_by_role("link", name=DE["nav.audit.search"]).click()
    page.get_by_label(DE["field.person"]).fill(demo.sent.ahv)
    page.get_by_role("button", name=DE["audit.search.submit"]).click()
    page.get_by_role("link", name=demo.sent.move).first.click()
    assert page.locator("#trace-message-id").inner_text() == demo.sent.move
    assert page.locator("#trace-hops").inner_text() == "node-luzern → node-hub → node-register"
    assert page.locator("ol.timeline li").count() >= 5
    page.get_by_role("link", name=DE["nav.audit.report"]).click()
    page.get_by_label(DE["field.person"]).fill(demo.sent.ahv)
    page.get_by_role("button", name=DE["audit.report.submit"]).click()
    assert page.locator("#report-count").inner_text() == "1"
    assert demo.sent.ahv not in page.content()
    with page.expect_download() as download:
        page.get_by_role("link", name=DE["audit.report.csv"]).click()
    saved = tmp_path / "report.csv"
    download.value.save_as(saved)
    text = saved.read_text(encoding="utf-8-sig")
    assert text.splitlines()[0].startswith("message_id,") and demo.sent.move in text and demo.sent.ahv not in text
    page.emulate_media(media="print")
    assert page.locator("nav.main-nav").is_hidden() and page.locator("table.results").is_visible()


def test_an_admin_explains_a_message_and_previews_a_policy_diff(demo, page):
    """Explain shows the sent move allowed and the direct statistics denied; a renamed rule shows in the diff, unapplied."""
    login(page, demo, "node-luzern", demo.operator("node-luzern", "admin"))
    assert page.url.endswith("/console/admin")
    page.get_by_role("link", name=DE["nav.admin.explain"]).click()
    page.get_by_label(DE["field.sender"], exact=True).fill(LUZERN)
    page.get_by_label(DE["field.message_id"], exact=True).fill(demo.sent.move)
    page.get_by_role("button", name=DE["admin.explain.submit"]).click()
    assert page.locator("article.decision .verdict").first.inner_text() == DE["admin.explain.allowed"]
    page.get_by_label(DE["field.message_id"], exact=True).fill("")
    page.get_by_label(DE["field.recipient"], exact=True).fill(BFS)
    page.get_by_label(DE["field.message_type"], exact=True).fill("94")
    page.get_by_role("button", name=DE["admin.explain.submit"]).click()
    assert page.locator("article.decision .verdict").first.inner_text() == DE["admin.explain.denied"]
    rules = demo.policies / "einwohnerregister.toml"
    original = rules.read_text()
    try:
        rules.write_text(original.replace('id = "lu-gemeinden-zuzugsmeldung"', 'id = "lu-zuzug-neu"'))
        page.get_by_role("link", name=DE["nav.admin.diff"]).click()
        assert "lu-zuzug-neu" in page.locator("#rules-added").inner_text()
        assert "lu-gemeinden-zuzugsmeldung" in page.locator("#rules-removed").inner_text()
        assert page.get_by_label(DE["admin.apply.confirm"].split("{")[0].strip(), exact=False).is_visible()
    finally:
        rules.write_text(original)


def test_a_system_user_sees_only_its_own_participants_messages(demo, page):
    """Emmen's system on the hub sees Emmen's message, not the BFS's statistics on the same node; the BFS path is 404."""
    login(page, demo, HUB, demo.system(EMMEN))
    assert page.url.endswith("/console/messages")
    content = page.content()
    assert demo.sent.emmen in content and demo.sent.statistics not in content
    page.get_by_role("link", name=demo.sent.emmen).click()
    assert page.locator("#message-id").inner_text() == demo.sent.emmen
    response = page.goto(demo.url(HUB, f"/console/messages/{BFS}/{demo.sent.statistics}"))
    assert response.status == 404


def test_an_auditor_cannot_reach_admin_pages_and_an_admin_cannot_reach_auditor_pages(demo, browser):
    """Each role gets 403 with the console's error page on every page of the other role."""
    for role, other in (("auditor", "admin"), ("admin", "auditor")):
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        login(page, demo, "node-luzern", demo.operator("node-luzern", role))
        for path in PAGES[other]:
            response = page.goto(demo.url("node-luzern", path))
            assert response.status == 403, (role, path)
            assert page.locator("h1").inner_text() == DE["error.forbidden.title"]
        context.close()


class _Evil(http.server.BaseHTTPRequestHandler):
    """A page on another site with a form aimed at the console's policy apply."""

    target = ""
    revision = ""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = (f'<!doctype html><html lang="en"><title>win</title><form method="post" action="{self.target}">'
                '<input type="hidden" name="confirm" value="yes"><input type="hidden" name="revision" value="{self.revision}">'
                '<button type="submit">claim prize</button></form></html>').encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_csrf_and_session_fixation_attempts_fail(demo, browser):
    """A forged token and a cross-site form are refused; an id planted before login is dead after it."""
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    login(page, demo, "node-luzern", demo.operator("node-luzern", "admin"))
    page.goto(demo.url("node-luzern", "/console/admin/explain"))
    page.evaluate("document.querySelector('main form input[name=csrf]').value = 'forged'")
    page.get_by_label(DE["field.sender"], exact=True).fill(LUZERN)
    page.get_by_label(DE["field.message_id"], exact=True).fill(demo.sent.move)
    page.get_by_role("button", name=DE["admin.explain.submit"]).click()
    assert page.locator("h1").inner_text() == DE["error.csrf.title"]
    rules = demo.policies / "einwohnerregister.toml"
    original = rules.read_text()
    rules.write_text(original.replace('id = "lu-gemeinden-zuzugsmeldung"', 'id = "lu-zuzug-neu"'))
    server = http.server.HTTPServer(("localhost", 0), _Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page.goto(demo.url("node-luzern", "/console/admin/policies/diff"))
        _Evil.revision = page.locator("input[name=revision]").get_attribute("value")
        _Evil.target = demo.url("node-luzern", "/console/admin/policies/apply")
        page.goto(f"http://localhost:{server.server_address[1]}/")
        with page.expect_navigation() as navigation:
            page.get_by_role("button", name="claim prize").click()
        # SameSite=Strict keeps the cookie home (401); were it sent, Origin and the missing token would refuse it (403).
        assert navigation.value.status in (401, 403)
        page.goto(demo.url("node-luzern", "/console/admin/policies/diff"))
        assert "lu-zuzug-neu" in page.locator("#rules-added").inner_text()  # still pending: nothing was applied
    finally:
        server.shutdown()
        rules.write_text(original)
    context.close()

    attacker = browser.new_context(ignore_https_errors=True)
    attacker_page = attacker.new_page()
    attacker_page.goto(demo.url("node-luzern"))
    (planted,) = [c for c in attacker.cookies() if c["name"] == "__Host-drehscheibe-console"]
    victim = browser.new_context(ignore_https_errors=True)
    victim.add_cookies([{k: planted[k] for k in ("name", "value", "domain", "path", "secure", "httpOnly", "sameSite")}])
    victim_page = victim.new_page()
    login(victim_page, demo, "node-luzern", demo.operator("node-luzern", "auditor"))
    assert victim_page.url.endswith("/console/audit")
    (after,) = [c for c in victim.cookies() if c["name"] == "__Host-drehscheibe-console"]
    assert after["value"] != planted["value"]
    attacker_page.goto(demo.url("node-luzern", "/console/audit"))
    assert attacker_page.url.endswith("/console/login")
    attacker.close()
    victim.close()


def _serious(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("""async () => await axe.run(document, {runOnly: {type: 'tag',
        values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})""")
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]  # fmt: skip


def test_axe_core_finds_no_serious_or_critical_violations_on_the_main_pages(demo, browser):
    """WCAG 2.1 A/AA and best-practice rules on the login page and every auditor, admin and system page."""
    found = {}
    # The console's CSP forbids every script; axe is injected by the test only (bypass_csp).
    context = browser.new_context(ignore_https_errors=True, bypass_csp=True)
    page = context.new_page()
    page.goto(demo.url("node-luzern"))
    found["/console/login"] = _serious(page)
    for role in ("auditor", "admin"):
        context.close()
        context = browser.new_context(ignore_https_errors=True, bypass_csp=True)
        page = context.new_page()
        login(page, demo, "node-luzern", demo.operator("node-luzern", role))
        for path in PAGES[role] + ([f"/console/audit/messages/{demo.sent.move}"] if role == "auditor" else []):
            page.goto(demo.url("node-luzern", path))
            found[f"{role} {path}"] = _serious(page)
        if role == "auditor":
            page.goto(demo.url("node-luzern", "/console/audit/report"))
            page.get_by_label(DE["field.person"]).fill(demo.sent.ahv)
            page.get_by_role("button", name=DE["audit.report.submit"]).click()
            found["auditor report"] = _serious(page)
    context.close()
    context = browser.new_context(ignore_https_errors=True, bypass_csp=True)
    page = context.new_page()
    login(page, demo, HUB, demo.system(EMMEN))
    found["system /console/messages"] = _serious(page)
    context.close()
    assert len(found) >= 12
    assert {page: problems for page, problems in found.items() if problems} == {}
