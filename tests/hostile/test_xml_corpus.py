"""Hostile XML, as an envelope and as a payload, against real nodes: refused (or inert), nothing fetched, nothing stored."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import pytest

from gateway.audit import Action
from gateway.config import PayloadAcceptance
from gateway.ids import GatewayError
from gateway.payload import PayloadCheck
from gateway.safexml import XmlLimits, parse_xml

from ..gateway.nodes import client, running
from .hostile import KANTON, LUZERN, NetworkCanary, assert_nothing_stored, audit_actions, message, still_serving, store_bytes, submit
from .xml_bombs import CASES, EMPTY, INERT, REFUSED, Canaries

ENVELOPE_LIMIT = 1024 * 1024  # [limits] max_envelope_bytes default
SECONDS = 10.0  # a refusal that takes longer than this is a denial of service of its own


def secret_file(tmp_path) -> tuple[str, str]:
    secret = f"SECRET-{uuid.uuid4().hex}"
    path = tmp_path / "secret.txt"
    path.write_text(secret)
    return str(path), secret


def as_payload(case):
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.id, marks=marks)


def as_envelope(case):
    marks = [pytest.mark.xfail(strict=True, reason=case.envelope_bug)] if case.envelope_bug else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [as_envelope(c) for c in CASES])
async def test_hostile_xml_as_envelope_is_refused_with_200_and_nothing_is_stored(pair, clock, tmp_path, case):
    """Every hostile document submitted as the eCH-0090 envelope is refused (422/200, or 413 above the size limit)
    quickly, without a network fetch or a file read, and leaves nothing in either node."""
    path, secret = secret_file(tmp_path)
    async with running(pair, clock) as nodes, NetworkCanary() as canary:
        document = case.build(Canaries(canary.url, path))
        _, _, payload = message(clock)
        started = time.monotonic()
        status, body = await submit(pair, LUZERN, document, payload)
        elapsed = time.monotonic() - started
        if len(document) > ENVELOPE_LIMIT:
            assert status == 413, body
        else:
            assert status == 422 and body["statusCode"] == 200, body
            assert re.search(case.reason or ".", body["statusInfo"]), body["statusInfo"]
        assert elapsed < SECONDS, f"refusal took {elapsed:.1f} s"
        assert canary.connections == 0, "the parser fetched a URL"
        assert secret not in str(body)
        await nodes["node-luzern"].forward_due()
        assert_nothing_stored(*nodes.values())
        assert secret.encode() not in store_bytes(nodes["node-luzern"])
        await still_serving(pair, clock)


@pytest.mark.parametrize("case", [as_payload(c) for c in CASES])
async def test_hostile_xml_as_payload_is_refused_or_passes_inert(pair, clock, tmp_path, case):
    """As a payload on a well-formed route, a hostile document is refused with 200 (202 when empty) and audited, or,
    if it is harmless to a safe parser (XInclude, a stylesheet PI, many namespaces), delivered byte for byte,
    unexpanded; never is anything fetched, read or stored for a refused one."""
    path, secret = secret_file(tmp_path)
    async with running(pair, clock) as nodes, NetworkCanary() as canary:
        document = case.build(Canaries(canary.url, path))
        message_id, envelope, _ = message(clock)
        started = time.monotonic()
        status, body = await submit(pair, LUZERN, envelope, document)
        elapsed = time.monotonic() - started
        assert elapsed < SECONDS, f"answer took {elapsed:.1f} s"
        origin, destination = nodes["node-luzern"], nodes["node-kanton"]
        if case.payload == INERT:
            assert status == 202, body
            await origin.forward_due()
            async with client(pair, KANTON) as api:
                delivered = await api.payload(KANTON, LUZERN, message_id)
            assert delivered == document, "the payload is forwarded exactly as sent, nothing expanded"
        else:
            expected = 202 if case.payload == EMPTY else 200
            assert status == 422 and body["statusCode"] == expected, body
            assert re.search(case.reason or ".", body["statusInfo"]), body["statusInfo"]
            assert (Action.REFUSED, expected) in audit_actions(origin, message_id), "the refusal is audited"
            await origin.forward_due()
            assert_nothing_stored(origin, destination)
        assert canary.connections == 0, "the parser fetched a URL"
        assert secret not in str(body)
        assert secret.encode() not in store_bytes(origin) + store_bytes(destination)
        await still_serving(pair, clock)


def test_every_case_names_what_it_attacks_and_where_the_idea_comes_from():
    """The corpus documents itself: unique ids, an attack and a source for each case."""
    assert len({c.id for c in CASES}) == len(CASES)
    assert all(c.attacks and c.source and c.payload in (REFUSED, INERT, EMPTY) for c in CASES)


# ------------------------------------------------------------------------- the streaming payload check


def test_a_doctype_split_across_two_chunks_is_refused():
    """The payload check refuses a DTD however the stream happens to be cut."""
    check = PayloadCheck(PayloadAcceptance.WELL_FORMED, None, XmlLimits())
    with pytest.raises(GatewayError, match="document type"):
        check.feed(b'<?xml version="1.0"?>\n<!DOC')
        check.feed(b'TYPE r SYSTEM "http://127.0.0.1:9/x.dtd"><r/>')
        check.finish()


@pytest.mark.parametrize(("document", "limits", "reason"), [
    (b"<r>" + b"<e/>" * 1001 + b"</r>", XmlLimits(max_elements=1000), "more than 1000 elements"),
    (b"<a>" * 33 + b"</a>" * 33, XmlLimits(max_depth=32), "deeper than 32"),
    (b"<r>" + b"x" * 2000 + b"</r>", XmlLimits(max_bytes=1000), "larger than 1000"),
], ids=["elements", "depth", "bytes"])  # fmt: skip
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_the_payload_check_enforces_every_limit_whatever_the_chunking(document, limits, reason, chunk):
    """Element count, depth and size limits hold for a payload fed in chunks of any size, as they do for parse_xml."""
    with pytest.raises(GatewayError, match=reason.split()[0]):
        parse_xml(document, limits)
    check = PayloadCheck(PayloadAcceptance.WELL_FORMED, None, limits)
    with pytest.raises(GatewayError, match=reason):
        for start in range(0, len(document), chunk):
            check.feed(document[start : start + chunk])
        check.finish()


# --------------------------------------------------------------------- amplification in a node process


def _memory(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmHWM", "VmRSS")):
                key, value = line.split(":")
                values[key] = int(value.split()[0]) // 1024
    return values


# Regression (F4, fixed): the in-memory inspection runs in the node's inspection thread, and a payload with more
# elements than [limits] in_memory_max_elements is streamed instead of held as a tree.
async def test_a_payload_of_many_tiny_elements_neither_stalls_the_node_nor_multiplies_its_memory(tmp_path, clock):
    """Half a million empty elements (2 MiB, under every limit) cost the node less than 64 MB and never block another
    local system for more than a second."""
    from gateway.demo import start_node, wait_ready

    from .hostile import pair_federation

    federation = pair_federation(tmp_path / "wide", route_payload={KANTON: "well-formed"})
    process = start_node(federation, "node-luzern", tmp_path / "logs")
    try:
        await wait_ready(federation, "node-luzern", process=process)
        before = _memory(process.pid)["VmHWM"]
        _, envelope, _ = message(clock)
        wide = b"<r>" + b"<e/>" * 500_000 + b"</r>"
        submission = asyncio.create_task(submit(federation, LUZERN, envelope, wide))
        await asyncio.sleep(0.3)  # the upload is done; the node is now inspecting the payload
        stalls = []
        while not submission.done():
            started = time.monotonic()
            async with client(federation, LUZERN) as api:
                await api.receipts(LUZERN)
            stalls.append(time.monotonic() - started)
        status, body = await submission
        grown = _memory(process.pid)["VmHWM"] - before
        print(f"2 MiB of tiny elements: HTTP {status}, peak RSS +{grown} MB, longest stall {max(stalls, default=0):.2f} s")
        assert grown < 64, f"peak RSS grew by {grown} MB"
        assert max(stalls, default=0) < 1.0, f"another local system waited {max(stalls):.1f} s"
    finally:
        process.terminate()
        process.wait(timeout=10)
