"""Console pages on a real node: roles from the one route table, audited auditor views, search, report, export, admin, systems."""

from __future__ import annotations

import csv
import io
import re

from lxml import etree

from gateway.audit import Action, load_public_key, verify_export
from gateway.config import load_config
from gateway.samples import discover

from ...conftest import KANTON, LUZERN, SAMPLES
from ..nodes import client, running, sample_envelope
from .conftest import EMMEN, Browser, operator, system

MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))
ECH_0044 = "http://www.ech.ch/xmlns/eCH-0044/"


def ahv_numbers(payload: bytes) -> list[str]:
    """The AHV numbers (eCH-0044 vn) in a payload, read from the sample itself."""
    root = etree.fromstring(payload)
    return [e.text.strip() for e in root.iter("{*}vn") if e.tag.startswith("{" + ECH_0044) and re.fullmatch(r"756\d{10}", (e.text or "").strip())]


async def send_move(federation, nodes, clock) -> tuple[str, bytes]:
    """Stadt Luzern sends the real move sample to the cantonal register; returns its messageId and payload."""
    message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now(), message_type=20201)
    async with client(federation, LUZERN) as api:
        status, body = await api.submit(envelope, payload, "data.xml")
    assert status == 202, body
    await nodes["node-luzern"].forward_due()
    return message_id, payload


def console_reads(node) -> list:
    return [r for _, _, r in node.audit.iter_records() if r.action is Action.AUDIT_READ and r.details.get("read", "").startswith("console:")]


async def test_each_role_reaches_its_own_pages_and_no_other(governed, clock):
    """Auditor, admin and system each get 200 on their pages and 403 on the others' (the route table decides)."""
    pages = {"auditor": ["/console/audit", "/console/audit/search", "/console/audit/report", "/console/audit/export"],
             "admin": ["/console/admin", "/console/admin/policies", "/console/admin/explain", "/console/admin/policies/diff"],
             "system": ["/console/messages"]}  # fmt: skip
    credentials = {"auditor": operator(governed, "node-luzern", "auditor"), "admin": operator(governed, "node-luzern", "admin"),
                   "system": system(governed, LUZERN)}  # fmt: skip
    async with running(governed, clock, "node-luzern"):
        for role, credential in credentials.items():
            async with Browser(governed) as browser:
                assert await browser.login(*credential) == 303
                for owner, paths in pages.items():
                    for path in paths:
                        status, page, _ = await browser.get(path)
                        assert status == (200 if owner == role else 403), (role, path, status)
                        if status == 403:
                            assert 'lang="de"' in page and "<main" in page


async def test_without_a_session_every_page_redirects_to_the_login_and_every_post_is_refused(governed, clock):
    """No cookie: GET pages answer 303 to /console/login; a POST gets 401 or 403 and changes nothing."""
    async with running(governed, clock, "node-luzern"), Browser(governed) as browser:
        for path in ("/console/audit", "/console/admin", "/console/messages", "/console/audit/report.csv"):
            status, _, headers = await browser.get(path)
            assert (status, headers["Location"]) == (303, "/console/login")
        status, _, _ = await browser.post("/console/admin/policies/apply", {"confirm": "yes"}, csrf=False)
        assert status in (401, 403)


async def test_bearer_tokens_do_not_open_console_pages_and_the_cookie_does_not_open_the_apis(governed, clock):
    """Each credential opens only its own door: an auditor token gets the login redirect, a console cookie gets 401 on /audit/v1."""
    async with running(governed, clock, "node-luzern"), Browser(governed) as browser:
        name, token = operator(governed, "node-luzern", "auditor")
        status, _, _ = await browser.get("/console/audit", headers={"Authorization": f"Bearer {token}"})
        assert status == 303
        await browser.login(name, token)
        assert (await browser.get("/console/audit"))[0] == 200
        assert (await browser.get("/audit/v1/status"))[0] == 401


async def test_every_auditor_page_view_is_an_audit_record_naming_the_auditor(governed, clock):
    """Status, search, report, export and trace pages each append an audit_read record with the auditor as actor."""
    async with running(governed, clock) as nodes, Browser(governed) as browser:
        message_id, _ = await send_move(governed, nodes, clock)
        node = nodes["node-luzern"]
        name, token = operator(governed, "node-luzern", "auditor")
        await browser.login(name, token)
        before = len(console_reads(node))
        for path in ("/console/audit", "/console/audit/search", "/console/audit/report", "/console/audit/export",
                     f"/console/audit/messages/{message_id}"):  # fmt: skip
            assert (await browser.get(path))[0] == 200
        reads = console_reads(node)[before:]
        assert [r.details["read"] for r in reads][-4:] == ["console:search_form", "console:report_form", "console:export_form", "console:trace"]
        assert {r.actor.id for r in reads} == {name}
        assert message_id in reads[-1].details["query"]


async def test_a_person_search_finds_the_message_and_the_ahv_number_appears_nowhere(governed, clock):
    """The AHV number from the sample finds the message; the page, the audit log file and the read record never hold it."""
    async with running(governed, clock) as nodes, Browser(governed) as browser:
        message_id, payload = await send_move(governed, nodes, clock)
        ahv = ahv_numbers(payload)[0]
        await browser.login(*operator(governed, "node-luzern", "auditor"))
        await browser.get("/console/audit/search")
        status, page, _ = await browser.post("/console/audit/search", {"person": ahv[:3] + "." + ahv[3:7] + "." + ahv[7:11] + "." + ahv[11:]})
        assert status == 200
        assert f"/console/audit/messages/{message_id}" in page
        assert ahv not in page and ahv[3:] not in page
        node = nodes["node-luzern"]
        assert ahv.encode() not in node.config.audit_log.read_bytes()
        record = console_reads(node)[-1]
        assert record.details["read"] == "console:search" and "person_ref" in record.details["query"]
        status, page, _ = await browser.post("/console/audit/search", {"person": "756123"})
        assert status == 400 and "756123" not in page


async def test_the_trace_shows_the_messages_hops_in_time_order(governed, clock):
    """The trace page lists this node's records and the events every hop reported, the canton's included, as a timeline."""
    async with running(governed, clock) as nodes, Browser(governed) as browser:
        message_id, _ = await send_move(governed, nodes, clock)
        await browser.login(*operator(governed, "node-luzern", "auditor"))
        status, page, _ = await browser.get(f"/console/audit/messages/{message_id}")
        assert status == 200
        hops = re.search(r'id="trace-hops">([^<]*)<', page).group(1)
        assert hops.split(" → ")[:2] == ["node-luzern", "node-kanton"]
        assert page.count('class="step ') >= 3


async def test_the_report_is_printable_and_its_csv_lists_the_message_without_the_person(governed, clock):
    """The report page has the message; the CSV download (same session) has one row for it and no AHV number."""
    async with running(governed, clock) as nodes, Browser(governed) as browser:
        message_id, payload = await send_move(governed, nodes, clock)
        ahv = ahv_numbers(payload)[0]
        await browser.login(*operator(governed, "node-luzern", "auditor"))
        await browser.get("/console/audit/report")
        status, page, _ = await browser.post("/console/audit/report", {"person": ahv})
        assert status == 200 and message_id in page and ahv not in page
        assert 'id="report-count">1<' in page
        policy = next(r.policy for _, _, r in nodes["node-luzern"].audit.iter_records() if r.message_id == message_id and r.policy)
        assert policy.purpose and policy.purpose in page and policy.legal_basis in page
        status, body, headers = await browser.get("/console/audit/report.csv")
        assert status == 200 and headers["Content-Type"].startswith("text/csv")
        assert headers["Content-Disposition"].startswith("attachment;")
        rows = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))
        assert rows[0][0] == "message_id" and [r[0] for r in rows[1:]] == [message_id]
        assert re.fullmatch(r"\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d", rows[1][1])
        assert ahv not in body


async def test_the_export_download_carries_a_signed_checkpoint_and_proofs_that_verify(governed, clock):
    """The JSONL export from the console verifies offline with the node's certificate."""
    async with running(governed, clock) as nodes, Browser(governed) as browser:
        message_id, _ = await send_move(governed, nodes, clock)
        await browser.login(*operator(governed, "node-luzern", "auditor"))
        await browser.get("/console/audit/export")
        status, body, headers = await browser.post("/console/audit/export", {"format": "jsonl", "message_id": message_id})
        assert status == 200 and "attachment" in headers["Content-Disposition"]
        key = load_public_key(load_config(governed.config_path("node-luzern")).tls.certificate.read_bytes())
        verified = verify_export(body, key)
        assert {r.message_id for _, r in verified.records} == {message_id}


async def test_an_admin_explains_a_stored_message_and_a_denied_combination(governed, clock):
    """Explain names the deciding permit of the sent message and the forbid of a Gemeinde writing to the BFS."""
    async with running(governed, clock) as nodes, Browser(governed) as browser:
        message_id, _ = await send_move(governed, nodes, clock)
        await browser.login(*operator(governed, "node-luzern", "admin"))
        await browser.get("/console/admin/explain")
        status, page, _ = await browser.post("/console/admin/explain", {"sender": LUZERN, "message_id": message_id})
        assert status == 200 and 'decision allowed' in page
        policy = nodes["node-luzern"].policies.engine
        permitting = {r.id for r in policy.policy_set.rules if r.effect.value == "permit" and r.recipients.matches(KANTON) and r.senders.matches(LUZERN)}
        assert any(rule in page for rule in permitting)
        status, page, _ = await browser.post("/console/admin/explain", {"sender": LUZERN, "recipient": "3-CH-1", "message_type": "94"})
        assert status == 200 and 'decision denied' in page


async def test_an_admin_previews_the_diff_and_applies_it_only_confirmed_and_unchanged(governed, clock):
    """The diff names the renamed rule; apply needs the checkbox and the previewed revision, and is audited with the admin."""
    async with running(governed, clock, "node-luzern") as nodes, Browser(governed) as browser:
        node = nodes["node-luzern"]
        name, token = operator(governed, "node-luzern", "admin")
        await browser.login(name, token)
        status, page, _ = await browser.get("/console/admin/policies/diff")
        assert 'id="no-change"' in page
        rules = governed.policies / "einwohnerregister.toml"
        rules.write_text(rules.read_text().replace('id = "lu-gemeinden-zuzugsmeldung"', 'id = "lu-zuzug-neu"'))
        status, page, _ = await browser.get("/console/admin/policies/diff")
        assert re.search(r'id="rules-added">[^<]*lu-zuzug-neu', page)
        assert re.search(r'id="rules-removed">[^<]*lu-gemeinden-zuzugsmeldung', page)
        revision = re.search(r'name="revision" value="([^"]+)"', page).group(1)
        before = node.policies.revision
        assert (await browser.post("/console/admin/policies/apply", {"revision": revision}))[0] == 400
        assert (await browser.post("/console/admin/policies/apply", {"revision": "0" * 64, "confirm": "yes"}))[0] == 409
        assert node.policies.revision == before
        status, page, _ = await browser.post("/console/admin/policies/apply", {"revision": revision, "confirm": "yes"})
        assert status == 200 and 'id="apply-result"' in page
        assert node.policies.revision == revision
        (reload,) = [r for _, _, r in node.audit.iter_records() if r.action is Action.POLICY_RELOAD]
        assert reload.actor.id == name


async def test_a_system_sees_only_its_own_participants_messages(governed, clock):
    """Luzern's system lists and follows Luzern's message; Emmen's system (same node) neither lists nor opens it (404)."""
    async with running(governed, clock) as nodes:
        message_id, _ = await send_move(governed, nodes, clock)
        async with Browser(governed) as luzern:
            await luzern.login(*system(governed, LUZERN))
            status, page, _ = await luzern.get("/console/messages")
            assert message_id in page
            status, page, _ = await luzern.get(f"/console/messages/{LUZERN}/{message_id}")
            assert status == 200 and "node-kanton" in page
        async with Browser(governed) as emmen:
            await emmen.login(*system(governed, EMMEN))
            status, page, _ = await emmen.get("/console/messages")
            assert status == 200 and message_id not in page and EMMEN in page
            assert (await emmen.get(f"/console/messages/{LUZERN}/{message_id}"))[0] == 404
            assert (await emmen.post("/console/messages", {"participant": LUZERN, "message_id": message_id}))[0] == 404


async def test_pages_carry_a_strict_content_security_policy_and_are_not_cached(governed, clock):
    """Every console response forbids scripts and framing and is marked no-store."""
    async with running(governed, clock, "node-luzern"), Browser(governed) as browser:
        _, _, headers = await browser.get("/console/login")
        assert "default-src 'none'" in headers["Content-Security-Policy"] and "script-src" not in headers["Content-Security-Policy"]
        assert headers["Cache-Control"] == "no-store" and headers["X-Frame-Options"] == "DENY"


async def test_the_admin_overview_shows_certificates_peers_queues_and_the_queue_chart(governed, clock):
    """Certificates with their expiry date (dd.mm.yyyy), the peer with its breaker state and an SVG chart with a title."""
    async with running(governed, clock, "node-luzern") as nodes, Browser(governed) as browser:
        await browser.login(*operator(governed, "node-luzern", "admin"))
        status, page, _ = await browser.get("/console/admin")
        assert status == 200
        expiry = nodes["node-luzern"].node_signer.certificate.not_valid_after_utc
        from gateway.console.i18n import swiss_date

        assert swiss_date(expiry) in page
        assert "node-kanton" in page and '<svg' in page and 'role="img"' in page


async def test_the_log_status_page_verifies_the_whole_log_on_request(governed, clock):
    """With verify=1 the page reports the log valid, with its size."""
    async with running(governed, clock) as nodes, Browser(governed) as browser:
        await send_move(governed, nodes, clock)
        await browser.login(*operator(governed, "node-luzern", "auditor"))
        status, page, _ = await browser.get("/console/audit?verify=1")
        assert status == 200 and 'class="ok" id="verified"' in page


async def test_every_console_route_of_the_table_answers_by_session_and_scope_only(governed, clock):
    """Matrix over every protected /console route of ROUTE_SCOPES: no session → login (GET) or 401 (POST), even with a
    bearer token of the right role; a session without the route's scope → 403; with it → past the middleware."""
    from gateway.auth import PUBLIC, ROUTE_SCOPES, Scope

    concrete = {"{message_id}": "0123456789abcdef0123", "{participant}": LUZERN}
    routes = {key: rule for key, rule in ROUTE_SCOPES.items() if key[1].startswith("/console/") and rule is not PUBLIC}
    assert len(routes) >= 15
    roles = {Scope.AUDIT_READ: operator(governed, "node-luzern", "auditor"), Scope.ADMIN: operator(governed, "node-luzern", "admin"),
             Scope.MESSAGES_READ: system(governed, LUZERN)}  # fmt: skip
    async with running(governed, clock, "node-luzern"):
        browsers = {}
        for scope, credential in roles.items():
            browsers[scope] = Browser(governed)
            assert await browsers[scope].login(*credential) == 303
        try:
            async with Browser(governed) as anonymous:
                for (method, pattern), rule in routes.items():
                    path = pattern
                    for placeholder, value in concrete.items():
                        path = path.replace(placeholder, value)
                    token = roles[rule][1]
                    status, _, headers = await anonymous.request(method, path, headers={"Authorization": f"Bearer {token}"},
                                                                 data={} if method == "POST" else None)  # fmt: skip
                    assert (status, headers.get("Location")) == ((303, "/console/login") if method == "GET" else (401, None)), path
                    for scope, browser in browsers.items():
                        if method == "POST":
                            status, _, headers = await browser.post(path, {})
                        else:
                            status, _, headers = await browser.get(path)
                        if scope is rule:
                            assert status not in (401, 403) and headers.get("Location") != "/console/login", (path, scope, status)
                        else:
                            assert status == 403, (path, scope, status)
        finally:
            for browser in browsers.values():
                await browser.__aexit__(None, None, None)


def test_a_report_cell_a_spreadsheet_would_run_as_a_formula_is_written_as_text():
    """Purposes and legal bases come from policy files: one starting with =, +, - or @ gets a leading quote in the CSV."""
    from gateway.console.app import _cell

    assert [_cell(v) for v in ("=HYPERLINK(1)", "+41", "-x", "@SUM", "RHG Art. 2", "")] == [
        "'=HYPERLINK(1)", "'+41", "'-x", "'@SUM", "RHG Art. 2", ""]
