"""The admin API: policy status and reload, admin tokens only, every reload audited before it takes effect."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import aiohttp
import pytest

from gateway.audit import Action, ActorKind
from gateway.audit import Outcome as AuditOutcome
from gateway.federation import NodeSpec, build_federation

from ..conftest import KANTON, LUZERN, XSD
from .nodes import running

POLICIES = Path(__file__).resolve().parents[2] / "policies" / "demo"


@pytest.fixture
def governed(tmp_path):
    """Two nodes sharing a copy of the demo policies that the tests may edit."""
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    federation = build_federation(
        tmp_path / "governed", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])],
        schemas=XSD, policies=policies,
    )  # fmt: skip
    federation.policies = policies
    return federation


async def call(federation, node_id, method, path, token):
    context = ssl.create_default_context(cafile=str(federation.ca_file))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.request(method, federation.api_url(node_id) + path, headers=headers) as response:
            return response.status, await response.json(content_type=None)


def reloads(node):
    return [r for _, _, r in node.audit.iter_records() if r.action is Action.POLICY_RELOAD]


async def test_policy_status_shows_the_revision_and_each_rules_purpose_and_legal_basis(governed, clock):
    async with running(governed, clock, "node-luzern") as nodes:
        admin = governed.operator_tokens["node-luzern"]["admin"]
        status, body = await call(governed, "node-luzern", "GET", "/admin/v1/policies", admin)
        assert status == 200
        assert body["revision"] == nodes["node-luzern"].policies.revision
        rule = next(r for r in body["rules"] if r["id"] == "lu-gemeinden-an-kantonsregister")
        assert rule["purpose"] and rule["legalBasis"] and rule["legalReference"]


@pytest.mark.parametrize(("who", "expected"), [("none", 401), ("system", 403), ("auditor", 403), ("other-node-admin", 401)])
async def test_only_this_nodes_admin_may_use_the_admin_api(governed, clock, who, expected):
    """Deny by default: no token or an unknown one (another node's) → 401; a local system's or an auditor's → 403."""
    token = {
        "none": None,
        "system": governed.tokens[LUZERN],
        "auditor": governed.operator_tokens["node-luzern"]["auditor"],
        "other-node-admin": governed.operator_tokens["node-kanton"]["admin"],
    }[who]
    async with running(governed, clock, "node-luzern") as nodes:
        before = nodes["node-luzern"].policies.revision
        for method, path in (("GET", "/admin/v1/policies"), ("POST", "/admin/v1/policies/reload")):
            status, _ = await call(governed, "node-luzern", method, path, token)
            assert status == expected
        assert nodes["node-luzern"].policies.revision == before
        assert reloads(nodes["node-luzern"]) == []


async def test_a_reload_swaps_the_set_and_records_who_old_and_new_revision_and_the_change(governed, clock):
    async with running(governed, clock, "node-luzern") as nodes:
        node = nodes["node-luzern"]
        before = node.policies.revision
        rules = governed.policies / "einwohnerregister.toml"
        rules.write_text(rules.read_text().replace('id = "lu-gemeinden-zuzugsmeldung"', 'id = "lu-zuzug-neu"'))
        status, body = await call(governed, "node-luzern", "POST", "/admin/v1/policies/reload", governed.operator_tokens["node-luzern"]["admin"])
        assert status == 200 and body["accepted"] is True
        assert body["old_revision"] == before and body["new_revision"] == node.policies.revision != before
        assert {r.id for r in node.policies.engine.policy_set.rules} >= {"lu-zuzug-neu"}
        (record,) = reloads(node)
        assert record.actor.kind is ActorKind.ADMIN and record.actor.id == "admin-node-luzern"
        assert record.details["old_revision"] == before and record.details["new_revision"] == node.policies.revision
        assert record.details["rules_added"] == "lu-zuzug-neu" and record.details["rules_removed"] == "lu-gemeinden-zuzugsmeldung"


async def test_a_bad_policy_file_is_refused_the_old_set_stays_and_the_refusal_is_audited(governed, clock):
    async with running(governed, clock, "node-luzern") as nodes:
        node = nodes["node-luzern"]
        before = node.policies.revision
        rules = governed.policies / "einwohnerregister.toml"
        rules.write_text(rules.read_text().replace('recipients = ["2-LU-1"]', 'recipients = ["unknown-group"]'))
        status, body = await call(governed, "node-luzern", "POST", "/admin/v1/policies/reload", governed.operator_tokens["node-luzern"]["admin"])
        assert status == 422 and body["accepted"] is False
        assert body["failure"]["file"].endswith("einwohnerregister.toml")
        assert (body["failure"]["rule"], body["failure"]["field"]) == ("lu-gemeinden-an-kantonsregister", "recipients")
        assert node.policies.revision == before
        (record,) = reloads(node)
        assert record.outcome is AuditOutcome.REFUSED and record.details["accepted"] == "false"
        assert record.details["error_rule"] == "lu-gemeinden-an-kantonsregister" and record.details["error_field"] == "recipients"


async def test_no_audit_record_no_reload(governed, clock):
    """While the audit log cannot be written, a reload answers 403 and the running set stays."""
    import sqlite3

    async with running(governed, clock, "node-luzern") as nodes:
        node = nodes["node-luzern"]
        before = node.policies.revision
        rules = governed.policies / "einwohnerregister.toml"
        rules.write_text(rules.read_text().replace('id = "lu-gemeinden-zuzugsmeldung"', 'id = "lu-zuzug-neu"'))
        blocker = sqlite3.connect(node.config.audit_log, timeout=0.1)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            status, body = await call(governed, "node-luzern", "POST", "/admin/v1/policies/reload", governed.operator_tokens["node-luzern"]["admin"])
        finally:
            blocker.rollback()
            blocker.close()
        assert status == 503 and body["statusCode"] == 403
        assert node.policies.revision == before


async def test_sighup_reloads_the_policies_of_a_running_node_process(governed, tmp_path):
    """An operator's `kill -HUP` reloads the files; the admin API then shows the new revision."""
    import asyncio
    import signal

    from gateway.demo import start_node, wait_ready

    process = start_node(governed, "node-luzern", tmp_path / "logs")
    try:
        await wait_ready(governed, "node-luzern", process=process)
        admin = governed.operator_tokens["node-luzern"]["admin"]
        _, before = await call(governed, "node-luzern", "GET", "/admin/v1/policies", admin)
        rules = governed.policies / "einwohnerregister.toml"
        rules.write_text(rules.read_text().replace('id = "lu-gemeinden-zuzugsmeldung"', 'id = "lu-zuzug-neu"'))
        process.send_signal(signal.SIGHUP)
        for _ in range(100):
            _, after = await call(governed, "node-luzern", "GET", "/admin/v1/policies", admin)
            if after["revision"] != before["revision"]:
                break
            await asyncio.sleep(0.05)
        assert after["revision"] != before["revision"]
        assert "lu-zuzug-neu" in {r["id"] for r in after["rules"]}
        assert process.poll() is None, "SIGHUP must not stop the node"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize(("who", "expected"), [("none", 401), ("system", 403), ("admin", 403)])
async def test_the_audit_api_takes_only_this_nodes_auditor(governed, clock, who, expected):
    token = {"none": None, "system": governed.tokens[LUZERN], "admin": governed.operator_tokens["node-luzern"]["admin"]}[who]
    async with running(governed, clock, "node-luzern") as nodes:
        status, _ = await call(governed, "node-luzern", "GET", "/audit/v1/status", token)
        assert status == expected
        assert [r for _, _, r in nodes["node-luzern"].audit.iter_records() if r.action is Action.AUDIT_READ] == []


async def test_an_auditors_read_through_the_node_is_itself_recorded_with_the_auditors_name(governed, clock):
    async with running(governed, clock, "node-luzern") as nodes:
        status, body = await call(governed, "node-luzern", "GET", "/audit/v1/verify", governed.operator_tokens["node-luzern"]["auditor"])
        assert status == 200 and body["valid"] is True
        reads = [r for _, _, r in nodes["node-luzern"].audit.iter_records() if r.action is Action.AUDIT_READ]
        assert [(r.actor.kind, r.actor.id) for r in reads] == [(ActorKind.AUDITOR, "auditor-node-luzern")]


@pytest.fixture
def three(tmp_path):
    return build_federation(
        tmp_path / "three",
        [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-hub", [KANTON]), NodeSpec("node-kriens", ["1-1059-1"])],
        schemas=XSD,
    )  # fmt: skip


def route_kriens_via_hub_as_group(federation):
    """Edit Luzern's file: the Gemeinden group goes through the hub (instead of Kriens' own node)."""
    path = federation.config_path("node-luzern")
    text = path.read_text().replace('recipient = "1-1059-1"\nvia = "node-kriens"', 'recipient = "@gemeinden"\nvia = "node-hub"')
    path.write_text(text + '\n[route_groups]\ngemeinden = ["1-1059-1", "1-1024-*"]\n')


async def test_a_routes_reload_sends_the_next_message_the_new_way_and_is_audited(three, clock):
    from .nodes import client, sample_envelope
    from gateway.samples import discover

    from ..conftest import SAMPLES

    move = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))
    async with running(three, clock) as nodes:
        luzern = nodes["node-luzern"]
        route_kriens_via_hub_as_group(three)
        status, body = await call(three, "node-luzern", "POST", "/admin/v1/routes/reload", three.operator_tokens["node-luzern"]["admin"])
        assert status == 200 and body["accepted"] is True and body["restartNeeded"] == []
        assert body["oldRoutes"] != body["newRoutes"]
        _, routes = await call(three, "node-luzern", "GET", "/admin/v1/routes", three.operator_tokens["node-luzern"]["admin"])
        assert {"recipient": "@gemeinden", "members": ["1-1059-1", "1-1024-*"], "via": "node-hub", "payload": "schema-valid"} in routes["routes"]
        message_id, envelope, payload = sample_envelope(move, LUZERN, "1-1059-1", clock.now())
        async with client(three, LUZERN) as api:
            assert (await api.submit(envelope, payload, "data.xml"))[0] == 202
        (row,) = luzern.store.outgoing_for(LUZERN, message_id)
        assert row.via == "node-hub"
        (record,) = [r for _, _, r in luzern.audit.iter_records() if r.details.get("change") == "routes_reload"]
        assert record.actor.id == "admin-node-luzern" and record.details["new_routes"] == body["newRoutes"]


async def test_a_bad_routes_file_keeps_the_running_routes_and_names_the_error(three, clock):
    async with running(three, clock, "node-luzern") as nodes:
        before = nodes["node-luzern"].config.routes
        path = three.config_path("node-luzern")
        path.write_text(path.read_text().replace('via = "node-kriens"', 'via = "node-nowhere"'))
        status, body = await call(three, "node-luzern", "POST", "/admin/v1/routes/reload", three.operator_tokens["node-luzern"]["admin"])
        assert status == 422 and "node-nowhere" in body["error"] and "routes[" in body["error"]
        assert nodes["node-luzern"].config.routes == before


async def test_changes_outside_routes_are_reported_as_needing_a_restart(three, clock):
    async with running(three, clock, "node-luzern") as nodes:
        path = three.config_path("node-luzern")
        path.write_text(path.read_text() + "\n[delivery]\nexpiry_days = 20\n")
        status, body = await call(three, "node-luzern", "POST", "/admin/v1/routes/reload", three.operator_tokens["node-luzern"]["admin"])
        assert status == 200 and body["restartNeeded"] == ["delivery"]
        assert nodes["node-luzern"].config.delivery.expiry_days == 30, "not applied without a restart"
