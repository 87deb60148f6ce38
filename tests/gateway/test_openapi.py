"""The OpenAPI document of the local listener: valid OpenAPI 3.1, exactly the mounted routes, true to a running node."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from gateway.api import local_api
from gateway.auth import PUBLIC, ROUTE_SCOPES
from gateway.config import load_config
from gateway.node import Node
from gateway.openapi import OPENAPI_PATH, openapi_document

from ..conftest import KANTON, LUZERN
from .nodes import running
from .auth.test_routes import mounted_routes
from .test_node import MOVE, submit

_METHODS = {"get", "post", "put", "patch", "delete"}


def documented_routes(document: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item if method in _METHODS}


def test_the_document_is_valid_openapi_3_1():
    """openapi-spec-validator accepts it, and it survives a JSON round trip (what the node serves)."""
    from openapi_spec_validator import validate

    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    validate(document)
    assert json.loads(json.dumps(document)) == document


def test_each_call_returns_a_fresh_copy():
    document = openapi_document()
    document["paths"].clear()
    assert openapi_document()["paths"]


async def test_every_mounted_route_is_documented_and_nothing_else(federation, clock):
    """The documented (method, path) pairs are exactly local_api's routes, plus GET /openapi.json (served or about to be);
    the web console's HTML pages under /console (docs/console.md) are not part of the API."""
    node = Node(load_config(federation.config_path("node-luzern")), clock=clock)
    try:
        routes = {route for route in mounted_routes(local_api(node)) if not route[1].startswith("/console/")}
    finally:
        await node.close()
    assert documented_routes(openapi_document()) == routes | {("GET", OPENAPI_PATH)}


def test_each_operation_names_the_scope_the_route_table_requires():
    """x-required-scope and the bearer scope agree with ROUTE_SCOPES; public routes carry an empty security option."""
    for path, item in openapi_document()["paths"].items():
        for method, operation in item.items():
            rule = ROUTE_SCOPES.get((method.upper(), path))
            if rule is PUBLIC or path == OPENAPI_PATH:
                assert {} in operation["security"], (method, path)
                continue
            assert rule is not None, (method, path)
            assert operation["x-required-scope"] == rule.value
            assert {"bearerAuth": [rule.value]} in operation["security"]
            assert {"401", "403", "503"} <= set(operation["responses"]), (method, path)
            if "{participant}" in path:
                assert "404" in operation["responses"], (method, path)


# -- schemathesis against real nodes ---------------------------------------------------

MAX_EXAMPLES = 8
SUBMIT = ("POST", "/api/v1/messages")


def _fuzz(base_url, ca_file, tokens, fixed, operations) -> tuple[list[str], dict[tuple[str, str], set[int]]]:
    """Run the given documented operations, random and with real path values; the failures and the statuses seen."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import (
        content_type_conformance, not_a_server_error, response_schema_conformance, status_code_conformance,
    )  # fmt: skip

    schema = schemathesis.openapi.from_dict(openapi_document())
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    session = requests.Session()
    failures: list[str] = []
    seen: dict[tuple[str, str], set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key not in operations:
            continue
        token = tokens.get(operation.path.split("/")[1])
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        names = {p.name for p in operation.path_parameters}
        strategies = [operation.as_strategy()]
        if names:
            strategies.append(operation.as_strategy(path_parameters={n: fixed[n] for n in names if n in fixed}))
        for strategy in strategies:

            @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(case=strategy)
            def run(case):
                response = case.call(base_url=base_url, session=session, headers=headers, timeout=30, verify=ca_file)
                seen.setdefault(key, set()).add(response.status_code)
                case.validate_response(response, checks=checks)

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - FailureGroup is a BaseExceptionGroup
                failures.append(f"{key[0]} {key[1]}: {type(exc).__name__}: {exc}"[:2000])
    session.close()
    return failures, seen


async def _fuzz_real_nodes(federation, clock, operations: set[tuple[str, str]]):
    """Both nodes running with real TLS and tokens, one message delivered Luzern → Kanton so the
    status, inbox, payload and audit routes have something to answer with; then schemathesis."""
    async with running(federation, clock) as nodes:
        message_id, status, _ = await submit(federation, MOVE, clock.now())
        assert status == 202
        assert await nodes["node-luzern"].forward_due() == 1
        served = mounted_routes(local_api(nodes["node-luzern"]))
        failures, seen = [], {}
        for node_id, participant, fixed in (
            ("node-luzern", LUZERN, {"participant": LUZERN, "message_id": message_id}),
            ("node-kanton", KANTON, {"participant": KANTON, "sender": LUZERN, "message_id": message_id}),
        ):
            operators = federation.operator_tokens[node_id]
            tokens = {"api": federation.tokens[participant], "admin": operators["admin"], "audit": operators["auditor"]}
            more, statuses = await asyncio.to_thread(
                _fuzz, federation.api_url(node_id), str(federation.ca_file), tokens, fixed, operations & served
            )
            failures += more
            for key, codes in statuses.items():
                seen.setdefault(key, set()).update(codes)
    return failures, seen


@pytest.mark.timeout(120)
async def test_schemathesis_finds_no_server_error_and_no_undocumented_status_on_real_nodes(federation, clock):
    """Every documented operation but the submission (see below): no 500, no undocumented status,
    content type and JSON body as documented; the GET routes answer 200 for real values."""
    started = time.monotonic()
    failures, seen = await _fuzz_real_nodes(federation, clock, documented_routes(openapi_document()) - {SUBMIT})
    assert not failures, "\n\n".join(failures)
    assert time.monotonic() - started < 60
    ok = {key for key, codes in seen.items() if 200 in codes}
    must_succeed = {("GET", p) for p in (
        "/api/v1/messages/{participant}/{message_id}", "/api/v1/participants/{participant}/receipts",
        "/api/v1/participants/{participant}/inbox", "/api/v1/participants/{participant}/inbox/{sender}/{message_id}/envelope",
        "/api/v1/participants/{participant}/inbox/{sender}/{message_id}/payload",
        "/admin/v1/policies", "/admin/v1/routes", "/audit/v1/status", "/audit/v1/verify", "/audit/v1/export",
    )}  # fmt: skip
    assert must_succeed <= ok, sorted(must_succeed - ok)


@pytest.mark.timeout(120)
async def test_schemathesis_on_message_submission(federation, clock):
    """Regression: an empty envelope part used to reach lxml as an empty bytearray and answer 500."""
    failures, _ = await _fuzz_real_nodes(federation, clock, {SUBMIT})
    assert not failures, "\n\n".join(failures)


async def _get(federation, node_id: str, path: str, token: str | None) -> tuple[int, str, bytes]:
    import ssl

    import aiohttp

    context = ssl.create_default_context(cafile=str(federation.ca_file))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.get(federation.api_url(node_id) + path, headers=headers) as response:
            return response.status, response.content_type, await response.read()


async def test_the_node_serves_the_document_without_a_token(federation, clock):
    """GET /openapi.json is public and answers this module's document."""
    async with running(federation, clock, "node-luzern") as nodes:
        assert ("GET", OPENAPI_PATH) in mounted_routes(local_api(nodes["node-luzern"]))
        status, content_type, body = await _get(federation, "node-luzern", OPENAPI_PATH, None)
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == openapi_document()


async def test_a_malformed_after_on_receipts_is_a_400_not_a_500(federation, clock):
    async with running(federation, clock, "node-luzern"):
        token = federation.tokens[LUZERN]
        statuses = [(await _get(federation, "node-luzern", f"/api/v1/participants/{LUZERN}/receipts?after={after}", token))[0]
                    for after in ("abc", str(2**64))]  # fmt: skip
    assert statuses == [400, 400]
