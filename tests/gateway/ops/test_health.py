"""/healthz and /readyz of a real node: ready only while store, keys, policies, schemas, audit log and directory work."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.directory.cache import DirectoryState
from gateway.federation import NodeSpec, build_federation
from gateway.health import readiness
from gateway.schemas import SchemaCatalog

from ...conftest import KANTON, LUZERN, XSD
from ..nodes import running
from .helpers import get, ops_listener

POLICIES = Path(__file__).resolve().parents[3] / "policies" / "demo"


async def ready(base: str) -> tuple[int, dict]:
    status, content_type, text = await get(base + "/readyz")
    assert content_type.startswith("application/json")
    return status, json.loads(text)


async def test_a_started_node_is_alive_and_ready_and_names_every_check(federation, clock):
    """/healthz answers 200; /readyz answers 200 with store, keys, policies, schemas, audit and directory all ok."""
    async with running(federation, clock, "node-luzern") as nodes, ops_listener(nodes["node-luzern"]) as base:
        assert (await get(base + "/healthz"))[0] == 200
        status, body = await ready(base)
    assert status == 200 and body["ready"] is True, body
    assert set(body["checks"]) == {"store", "keys", "policies", "schemas", "audit", "directory"}
    assert all(check["ok"] for check in body["checks"].values())
    assert "schemas compiled" in body["checks"]["schemas"]["detail"]


async def test_readiness_turns_false_when_the_store_is_unreachable_while_liveness_stays(federation, clock):
    """With the store's database gone, /readyz answers 503 naming the store; /healthz still answers 200."""
    async with running(federation, clock, "node-luzern") as nodes, ops_listener(nodes["node-luzern"]) as base:
        nodes["node-luzern"].store.db.close()
        status, body = await ready(base)
        alive = (await get(base + "/healthz"))[0]
    assert status == 503 and body["ready"] is False
    assert body["checks"]["store"] == {"ok": False, "detail": "store query failed (ProgrammingError)"}
    assert body["checks"]["keys"]["ok"] is True
    assert alive == 200


async def test_readiness_turns_false_while_the_audit_log_cannot_take_a_write(federation, clock):
    """Another writer holding the audit log's lock makes the node unready (it would refuse everything with 403)."""
    async with running(federation, clock, "node-luzern") as nodes, ops_listener(nodes["node-luzern"]) as base:
        blocker = sqlite3.connect(nodes["node-luzern"].config.audit_log, timeout=0.1)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            status, body = await ready(base)
        finally:
            blocker.rollback()
            blocker.close()
        assert (await ready(base))[0] == 200
    assert status == 503 and body["checks"]["audit"]["ok"] is False


async def test_readiness_turns_false_when_a_schema_does_not_compile(federation, clock, tmp_path):
    """A catalog holding an XSD that does not compile (a type it never defines) is not ready, naming the file."""
    broken = tmp_path / "xsd"
    broken.mkdir()
    (broken / "broken-1-0.xsd").write_text(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:broken" xmlns:b="urn:broken">'
        '<xs:element name="x" type="b:missing"/></xs:schema>'
    )
    async with running(federation, clock, "node-luzern") as nodes:
        nodes["node-luzern"].catalog = SchemaCatalog(broken)
        checks = {c.name: c for c in readiness(nodes["node-luzern"])}
    assert checks["schemas"].ok is False and "broken-1-0.xsd" in checks["schemas"].detail


async def test_configured_policies_must_be_loaded_and_are_reported_with_their_revision(tmp_path, clock):
    """A node with a policy directory is ready with the active revision, and unready if no set is loaded."""
    governed = build_federation(tmp_path / "governed", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])],
                                schemas=XSD, policies=POLICIES)  # fmt: skip
    async with running(governed, clock, "node-luzern") as nodes:
        node = nodes["node-luzern"]
        checks = {c.name: c for c in readiness(node)}
        assert checks["policies"].ok and checks["policies"].detail == f"revision {node.policies.revision}"
        node.policies = None
        checks = {c.name: c for c in readiness(node)}
    assert checks["policies"].ok is False and checks["policies"].detail == "configured but not loaded"


@pytest.mark.parametrize(("state", "ok"), [(DirectoryState.CURRENT, True), (DirectoryState.STALE, True), (DirectoryState.UNUSABLE, False)])
async def test_a_configured_directory_must_be_usable(federation, clock, state, ok):
    """Current or stale (inside its grace) is ready; unusable (lookups fail closed) is not."""
    async with running(federation, clock, "node-luzern") as nodes:
        node = nodes["node-luzern"]
        node.directory = SimpleNamespace(status=SimpleNamespace(state=state, version=3))
        checks = {c.name: c for c in readiness(node)}
    assert checks["directory"].ok is ok and checks["directory"].detail == f"{state.value}, version 3"


async def test_a_check_that_raises_counts_as_failed(federation, clock):
    """A broken check never passes: its exception makes it fail, named by type."""
    async with running(federation, clock, "node-luzern") as nodes:
        node = nodes["node-luzern"]
        node.hosted = None  # keys check cannot even iterate
        checks = {c.name: c for c in readiness(node)}
    assert checks["keys"].ok is False and checks["keys"].detail == "check failed (TypeError)"
