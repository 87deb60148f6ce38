"""The local REST API under attack: tokens, another participant's data, malformed requests; never a 500, nothing stored."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest

from gateway.federation import NodeSpec, build_federation

from ..conftest import XSD
from ..gateway.nodes import client, running
from .hostile import (
    DELIVERY, KANTON, KRIENS, LUZERN, api_session, api_url, assert_nothing_stored, counts, message, still_serving, submit,
)  # fmt: skip

SYSTEM_ROUTES = [
    ("POST", "/api/v1/messages"),
    ("GET", "/api/v1/messages/{p}/m-1"),
    ("GET", "/api/v1/participants/{p}/receipts"),
    ("GET", "/api/v1/participants/{p}/inbox"),
    ("GET", "/api/v1/participants/{p}/inbox/1-1061-1/m-1/envelope"),
    ("GET", "/api/v1/participants/{p}/inbox/1-1061-1/m-1/payload"),
    ("POST", "/api/v1/participants/{p}/inbox/1-1061-1/m-1/ack"),
]
OPERATOR_ROUTES = [("GET", "/admin/v1/policies"), ("POST", "/admin/v1/policies/reload"), ("GET", "/admin/v1/routes"),
                   ("POST", "/admin/v1/routes/reload"), ("GET", "/audit/v1/records")]  # fmt: skip


def bad_tokens(federation) -> dict[str, str | None]:
    good = federation.tokens[KANTON]
    return {
        "none": None, "empty": "", "garbage": "x" * 40, "prefix-of-a-valid-token": good[:-1],
        "valid-token-with-a-suffix": good + "x", "admin-token": federation.operator_tokens["node-kanton"]["admin"],
        "auditor-token": federation.operator_tokens["node-kanton"]["auditor"], "other-nodes-token": federation.tokens[LUZERN],
    }  # fmt: skip


async def _call(session: aiohttp.ClientSession, method: str, url: str, **kwargs) -> int:
    async with session.request(method, url, **kwargs) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize(("token", "expected"), [
    ("none", 401), ("empty", 401), ("garbage", 401), ("prefix-of-a-valid-token", 401), ("valid-token-with-a-suffix", 401),
    ("other-nodes-token", 401), ("admin-token", 403), ("auditor-token", 403),
])  # fmt: skip
async def test_every_local_system_route_refuses_a_missing_or_wrong_token(pair, clock, token, expected):
    """Deny by default: without the system's own token every /api/v1 route answers 401 (unknown credentials) or 403
    (an operator's credentials, the wrong role), and nothing changes."""
    async with running(pair, clock) as nodes:
        value = bad_tokens(pair)[token]
        async with api_session(pair, value) as session:
            for method, path in SYSTEM_ROUTES:
                status = await _call(session, method, api_url(pair, KANTON, path.format(p=KANTON)))
                assert status == expected, (method, path, status)
        assert_nothing_stored(*nodes.values())


async def test_a_local_systems_token_opens_no_admin_or_auditor_route(pair, clock):
    """Roles are separate: a register's token gets 403 on every admin and auditor route."""
    async with running(pair, clock):
        async with api_session(pair, pair.tokens[KANTON]) as session:
            for method, path in OPERATOR_ROUTES:
                assert await _call(session, method, api_url(pair, KANTON, path)) == 403, path


async def test_kriens_system_can_never_see_or_touch_the_cantons_messages_on_the_shared_node(pair, clock):
    """Two participants on one node: Kriens' token reads nothing of the canton's inbox, receipts, envelopes or payloads,
    and cannot acknowledge its messages; every such route answers 404 as if the message did not exist."""
    async with running(pair, clock) as nodes:
        message_id, envelope, payload = message(clock, LUZERN, KANTON)
        assert (await submit(pair, LUZERN, envelope, payload))[0] == 202
        await nodes["node-luzern"].forward_due()
        paths = [f"/api/v1/participants/{KANTON}/inbox", f"/api/v1/participants/{KANTON}/receipts",
                 f"/api/v1/participants/{KANTON}/inbox/{LUZERN}/{message_id}/envelope",
                 f"/api/v1/participants/{KANTON}/inbox/{LUZERN}/{message_id}/payload",
                 f"/api/v1/messages/{KANTON}/{message_id}",
                 f"/api/v1/participants/{KRIENS}/inbox/{LUZERN}/{message_id}/payload",
                 f"/api/v1/participants/{KRIENS}/inbox/{LUZERN}/{message_id}/envelope"]  # fmt: skip
        async with api_session(pair, pair.tokens[KRIENS]) as session:
            for path in paths:
                assert await _call(session, "GET", api_url(pair, KANTON, path)) == 404, path
            ack = f"/api/v1/participants/{KANTON}/inbox/{LUZERN}/{message_id}/ack"
            assert await _call(session, "POST", api_url(pair, KANTON, ack)) == 404
        (entry,) = nodes["node-kanton"].store.inbox(KANTON)
        assert entry.state == "delivered", "Kriens could not acknowledge the canton's message"
        async with client(pair, KANTON) as api:
            assert await api.payload(KANTON, LUZERN, message_id) == payload


@pytest.mark.parametrize("path", [
    "/api/v1/participants/..%2F..%2Fetc/inbox", "/api/v1/participants/1-1061-1%00/inbox", "/api/v1/participants/%2e%2e/inbox",
    "/api/v1/participants/2-LU-1/inbox/1-1061-1/..%2F..%2Fstore/payload", "/api/v1/participants/2-LU-1/inbox/x/m-1/payload",
    "/api/v1/participants/2-LU-1/inbox/1-1061-1/" + "a" * 37 + "/envelope", "/api/v1/messages/2-LU-1/%3Cscript%3E",
])  # fmt: skip
async def test_path_segments_that_are_not_ids_are_refused_with_4xx(pair, clock, path):
    """Participant IDs and messageIds in paths are checked against their patterns: 400 or 404 (403 for a path that
    normalises to no route at all), never a file, never a 500."""
    async with running(pair, clock):
        async with api_session(pair, pair.tokens[KANTON]) as session:
            status = await _call(session, "GET", api_url(pair, KANTON, path))
        assert status in (400, 403, 404), status


@pytest.mark.parametrize("after", [
    pytest.param("-1", id="negative"),
    pytest.param("abc", id="not-a-number"),
    pytest.param("9" * 5000, id="5000-digits"),
])  # fmt: skip
async def test_a_bad_receipts_cursor_is_a_client_error(pair, clock, after):
    """?after= that is not a small integer is answered 200 (empty) or 400, never 500."""
    async with running(pair, clock):
        async with api_session(pair, pair.tokens[KANTON]) as session:
            status = await _call(session, "GET", api_url(pair, KANTON, f"/api/v1/participants/{KANTON}/receipts?after={after}"))
        assert status in (200, 400), status


async def test_a_bearer_token_with_bytes_that_are_not_utf8_is_a_401(pair, clock):
    """Raw bytes 0xff 0xfe in the Authorization header are refused with 401 like any other wrong token."""
    async with running(pair, clock):
        context = ssl.create_default_context(cafile=str(pair.ca_file))
        reader, writer = await asyncio.open_connection("127.0.0.1", pair.node("node-kanton").api_port, ssl=context,
                                                       server_hostname="localhost")  # fmt: skip
        writer.write(b"GET /api/v1/participants/2-LU-1/inbox HTTP/1.1\r\nHost: localhost\r\n"
                     b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n")  # fmt: skip
        await writer.drain()
        status_line = (await reader.read()).split(b"\r\n", 1)[0]
        writer.close()
        assert status_line.split()[1] == b"401", status_line


# ------------------------------------------------------------------------------------ malformed submissions


def _multipart(parts: list[tuple[str, bytes]]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, data in parts:
        form.add_field(name, data, filename=f"{name}.xml", content_type="application/octet-stream")
    return form


async def _post(pair, data, headers=None) -> tuple[int, str]:
    async with api_session(pair, pair.tokens[LUZERN]) as session:
        async with session.post(api_url(pair, LUZERN, "/api/v1/messages"), data=data, headers=headers) as response:
            return response.status, await response.text()


@pytest.mark.parametrize("case", ["json-body", "form-urlencoded", "bogus-boundary", "payload-first", "only-payload", "no-parts",
                                  "envelope-part-named-twice"])  # fmt: skip
async def test_a_malformed_multipart_submission_is_a_400_or_422_and_stores_nothing(pair, clock, case):
    """Bodies that are not multipart, lack or misorder the envelope and payload parts are refused; nothing is stored."""
    async with running(pair, clock) as nodes:
        _, envelope, payload = message(clock)
        if case == "json-body":
            status, text = await _post(pair, b'{"envelope": 1}', {"Content-Type": "application/json"})
        elif case == "form-urlencoded":
            status, text = await _post(pair, {"envelope": envelope.decode(), "payload": "x"})
        elif case == "bogus-boundary":
            status, text = await _post(pair, b"--nope\r\n\r\n" + envelope, {"Content-Type": "multipart/form-data; boundary=other"})
        elif case == "payload-first":
            status, text = await _post(pair, _multipart([("payload", payload), ("envelope", envelope)]))
        elif case == "only-payload":
            status, text = await _post(pair, _multipart([("payload", payload)]))
        elif case == "no-parts":
            status, text = await _post(pair, b"--b--\r\n", {"Content-Type": "multipart/form-data; boundary=b"})
        else:
            status, text = await _post(pair, _multipart([("envelope", envelope), ("envelope", envelope)]))
        assert status in (400, 422), (status, text)
        assert_nothing_stored(*nodes.values())
        await still_serving(pair, clock)


async def test_a_submission_without_payload_is_refused_with_202(pair, clock):
    """An envelope without a payload part is sedex 202 'no payload' (HTTP 422)."""
    async with running(pair, clock) as nodes:
        _, envelope, _ = message(clock)
        status, body = await submit(pair, LUZERN, envelope, None)
        assert (status, body["statusCode"]) == (422, 202), body
        assert_nothing_stored(*nodes.values())


async def test_an_oversized_envelope_is_refused_before_it_is_read_whole(pair, clock):
    """An envelope part above max_envelope_bytes (1 MiB) is cut off by the server (413) and nothing is stored.

    docs/wire-format.md §10.2 says 422 with sedex 200; aiohttp's client_max_size answers first with a plain-text 413
    (reported as a documentation mismatch, see docs/security-tests.md)."""
    async with running(pair, clock) as nodes:
        _, envelope, payload = message(clock)
        huge = envelope.replace(b"</eCH-0090:envelope>", b"<!--" + b"x" * (4 * 1024 * 1024) + b"--></eCH-0090:envelope>")
        try:
            status, body = await submit(pair, LUZERN, huge, payload)
        except (aiohttp.ClientError, ConnectionError):
            # The server may close the connection while the client is still sending the body.
            status, body = "connection cut by the server", None
        assert status in (413, 422, "connection cut by the server"), (status, body)
        assert_nothing_stored(*nodes.values())
        await still_serving(pair, clock)


async def test_a_payload_above_max_payload_bytes_is_refused_with_330_and_nothing_is_stored(tmp_path, clock):
    """A payload one byte above the node's limit is refused with 330 (HTTP 413); no ciphertext blob is left behind."""
    limits = "[limits]\nmax_payload_bytes = 65536\nin_memory_payload_bytes = 32768"
    federation = build_federation(tmp_path / "limited", [NodeSpec("node-luzern", [LUZERN], extra_toml=limits),
                                                         NodeSpec("node-kanton", [KANTON])],
                                  schemas=XSD, route_payload={KANTON: "any"}, delivery_toml=DELIVERY)  # fmt: skip
    async with running(federation, clock) as nodes:
        _, envelope, _ = message(clock)
        status, body = await submit(federation, LUZERN, envelope, b"x" * 65537, name="data.bin")
        assert (status, body["statusCode"]) == (413, 330), body
        assert counts(nodes["node-luzern"]) == {"outgoing": 0, "inbox": 0, "blobs": 0}


async def test_a_hostile_payload_file_name_cannot_inject_headers_or_paths_on_fetch(pair, clock):
    """The payload's file name comes back in Content-Disposition stripped to [A-Za-z0-9._-]: no quote, no path.
    (CR/LF cannot even be sent: aiohttp refuses them in multipart headers on both sides.)"""
    async with running(pair, clock) as nodes:
        message_id, envelope, payload = message(clock)
        name = 'x"; filename="../../etc/passwd'
        status, body = await submit(pair, LUZERN, envelope, payload, name=name)
        assert status == 202, body
        await nodes["node-luzern"].forward_due()
        async with api_session(pair, pair.tokens[KANTON]) as session:
            url = api_url(pair, KANTON, f"/api/v1/participants/{KANTON}/inbox/{LUZERN}/{message_id}/payload")
            async with session.get(url) as response:
                assert response.status == 200 and await response.read() == payload
                disposition = response.headers["Content-Disposition"]
                assert "/" not in disposition and "passwd" in disposition
                assert disposition.count('"') == 2, disposition
