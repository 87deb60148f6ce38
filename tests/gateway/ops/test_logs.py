"""Structured logs: one JSON object per line, bound message fields, and no personal data or payload content, ever."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from lxml import etree

from gateway.ids import StatusCode
from gateway.logs import INVALID, JsonFormatter, ScrubbingFilter, allow_identifiers, bound, bound_fields, config_identifiers, scrub_text
from gateway.node import Refused
from gateway.samples import discover

from ...conftest import KANTON, LUZERN, SAMPLES
from ..nodes import client, running, sample_envelope

PERSONAL = ("vn", "officialName", "firstName", "callName", "originalName", "allianceName", "yearMonthDay", "street")


def personal_data() -> set[str]:
    """Names, AHV numbers, birth dates and streets of every real sample in ../shared/ech/samples."""
    found = set()
    for sample in discover(SAMPLES):
        try:
            root = etree.fromstring(sample.payload())
        except etree.XMLSyntaxError:
            continue
        found |= {e.text.strip() for e in root.iter() if isinstance(e.tag, str) and e.text and e.text.strip()
                  and etree.QName(e).localname in PERSONAL}  # fmt: skip
    return found


SECRETS = personal_data()
AHV = sorted(s for s in SECRETS if re.fullmatch(r"756\d{10}", s))
DATES = sorted(s for s in SECRETS if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s))
NAMES = sorted(SECRETS - set(AHV) - set(DATES))
MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


def formatted_ahv(number: str) -> list[str]:
    """One AHV number as people and systems write it."""
    return [number, f"{number[:3]}.{number[3:7]}.{number[7:11]}.{number[11:]}", f"{number[:3]} {number[3:7]} {number[7:11]} {number[11:]}",
            f"{number[:3]}-{number[3:7]}-{number[7:11]}-{number[11:]}"]  # fmt: skip


def formatted_date(iso: str) -> list[str]:
    year, month, day = iso.split("-")
    return [iso, f"{day}.{month}.{year}", f"{int(day)}.{int(month)}.{year}", f"{day}/{month}/{year}"]


def leaks(text: str) -> list[str]:
    """Every piece of the samples' personal data that occurs in ``text`` (in any usual formatting)."""
    found = [s for s in NAMES if s in text]
    found += [f for n in AHV for f in formatted_ahv(n) if f in text]
    found += [f for d in DATES for f in formatted_date(d) if f in text]
    return found


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything logged anywhere (DEBUG and up) as scrubbed JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ScrubbingFilter())
    handler.setFormatter(JsonFormatter("node-luzern"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_samples_hold_the_personal_data_these_tests_look_for():
    """The vectors are real: names, AHV numbers and birth dates from the shared samples."""
    assert len(NAMES) > 20 and len(AHV) > 5 and len(DATES) > 5


def test_each_line_is_one_json_object_with_the_bound_message_fields(captured):
    """time, level, logger, message and node on every line; messageId, sender, recipient and stage while bound."""
    log = logging.getLogger("drehscheibe.node")
    with bound(message_id="3f2a9b8c7d6e5f4a3b2c1d0e", sender=LUZERN, recipient=KANTON):
        with bound(stage="seal"):
            log.warning("transfer refused: status %s: %s", 312, "certificate not valid")
        log.info("shutting down: listeners closed, finishing transfers in flight")
    log.info("shutting down: listeners closed, finishing transfers in flight")
    first, second, third = lines(captured)
    assert first["level"] == "WARNING" and first["logger"] == "drehscheibe.node" and first["node"] == "node-luzern"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["message"] == "transfer refused: status 312: certificate not valid"
    assert (first["messageId"], first["sender"], first["recipient"], first["stage"]) == ("3f2a9b8c7d6e5f4a3b2c1d0e", LUZERN, KANTON, "seal")
    assert "stage" not in second and second["messageId"] == "3f2a9b8c7d6e5f4a3b2c1d0e"
    assert not {"messageId", "sender", "recipient", "stage"} & set(third)


async def test_concurrent_messages_never_see_each_others_fields():
    """Fields bound in one asyncio task are invisible to another running at the same time."""

    async def handle(message_id: str) -> str:
        with bound(message_id=message_id):
            await asyncio.sleep(0.01)
            return bound_fields()["messageId"]

    assert await asyncio.gather(handle("aaaa1111"), handle("bbbb2222")) == ["aaaa1111", "bbbb2222"]
    assert dict(bound_fields()) == {}


def test_personal_data_pushed_through_every_kind_of_log_call_never_reaches_the_output(captured):
    """Sample names, AHV numbers (any formatting) and birth dates as arguments, messages, XML, exceptions and extras are scrubbed."""
    log = logging.getLogger("drehscheibe.node")
    for name in NAMES:
        log.warning("transfer refused: status %s: %s", 200, f"payload does not validate: {name}")
        log.warning(name)
        log.warning(f"receipt from {name} rejected")
        log.info("receipt from %s rejected: %s", name, {"name": name})
        log.info("person <e44:officialName>%s</e44:officialName> moved", name)
        log.info("sedex message refused", extra={"message_id": name, "status": 200, "person": name})
        with bound(message_id=name, sender=name):
            log.error("folder delivery for %s failed", LUZERN)
    for number in AHV:
        for written in formatted_ahv(number):
            log.warning("%s", f"vn {written} not unique")
            log.warning("payload %s", f"<vn>{written}</vn>")
            log.warning("count %d", int(number))
    for date in DATES:
        for written in formatted_date(date):
            log.warning("%s", f"dateOfBirth {written}")
    for secret in sorted(SECRETS):
        try:
            raise ValueError(f"bad value {secret!r} in <firstName>{secret}</firstName>")
        except ValueError:
            log.exception("forwarder round failed")
    text = captured.getvalue()
    assert len(text.splitlines()) > 3 * len(SECRETS)
    assert leaks(text) == []
    assert "‹ahv›" in text and "‹date›" in text and "‹xml›" in text


def test_a_format_string_of_ours_passes_as_written_and_its_values_by_shape(captured):
    """Literal format strings of the code pass verbatim; participant IDs, numbers and configured peers in its arguments too."""
    allow_identifiers(["node-kanton"])
    log = logging.getLogger("drehscheibe.node")
    log.warning("circuit breaker for peer %s open for %.0fs after %d failures; %d message(s) held", "node-kanton", 30.0, 5, 3)
    log.warning("receipt from %s rejected: %s", "node-kanton", f"sender {LUZERN} is not hosted on node node-kanton")
    first, second = lines(captured)
    assert first["message"] == "circuit breaker for peer node-kanton open for 30s after 5 failures; 3 message(s) held"
    assert second["message"] == f"receipt from node-kanton rejected: sender {LUZERN} is not hosted on node node-kanton"


def test_a_message_that_is_not_a_literal_of_the_code_is_scrubbed_word_by_word(captured):
    """A library's message or a variable: words of the code stay, unknown words and quoted values go."""
    logging.getLogger("aiohttp.client").warning("Cannot connect to host %s ssl:%s [%s]", "127.0.0.1:9", "default", "Connect call failed ('127.0.0.1', 9)")
    logging.getLogger("drehscheibe.test").warning("Hans Muster wohnt an der Seestrasse")
    first, second = lines(captured)
    assert first["message"] == "Cannot connect to host 127.0.0.1:9 ssl:default [Connect call failed (‹…›, 9)]"
    assert "Hans" not in second["message"] and "Muster" not in second["message"] and "Seestrasse" not in second["message"]


def test_an_exception_is_reduced_to_its_type_code_and_location(captured):
    """No message and no traceback text: the type, the sedex code of a GatewayError, and where it was raised."""
    try:
        raise Refused("payload mentions Anna Muster 756.1234.5678.97", status=StatusCode.INVALID_ENVELOPE)
    except Refused:
        logging.getLogger("drehscheibe.node").exception("forwarder round failed")
    (line,) = lines(captured)
    assert line["message"] == "forwarder round failed"
    assert line["exception"]["type"] == "gateway.node.Refused" and line["exception"]["status"] == 200
    assert re.fullmatch(r"ops/test_logs\.py:\d+ in test_an_exception_is_reduced_to_its_type_code_and_location", line["exception"]["at"])
    assert "Muster" not in captured.getvalue() and "Traceback" not in captured.getvalue()


def test_only_known_extra_fields_pass_and_each_must_have_its_shape(captured):
    """Unknown extra= keys are dropped (and named), a malformed messageId or participant is replaced, status must be an integer."""
    log = logging.getLogger("adapters.sedex_folder")
    log.info("sedex message refused", extra={"message_id": "not a message id!", "status": "200", "participant": LUZERN, "payload": "<x/>"})
    (line,) = lines(captured)
    assert line["messageId"] == INVALID and line["status"] == INVALID and line["participant"] == LUZERN
    assert "payload" not in line and line["droppedFields"] == ["payload"]


def test_only_the_documented_fields_can_be_bound():
    """Binding anything else is a programming error, refused at once."""
    with pytest.raises(TypeError), bound(person="Muster"):
        pass


def test_config_identifiers_are_the_node_peers_and_local_systems(federation):
    """The names free text may keep come from the configuration; operators (people) are not among them."""
    from gateway.config import load_config

    config = load_config(federation.config_path("node-luzern"))
    names = config_identifiers(config)
    assert "node-luzern" in names and "node-kanton" in names
    assert not {o.name for o in config.operators} & set(names)


def test_scrub_text_keeps_structure_and_removes_content():
    """XML, quoted values, AHV numbers and dates go; codes, participant IDs, digests and timestamps stay."""
    text = scrub_text("status 301 for 1-1061-1 at 2025-03-01T10:00:00Z digest 9f86d081884c7d65 <a>x</a> 'Muster' 17.05.1980 7561234567897")
    assert text == "status 301 for 1-1061-1 at 2025-03-01T10:00:00Z digest 9f86d081884c7d65 ‹xml› ‹…› ‹date› ‹ahv›"


async def test_a_real_two_node_run_logs_nothing_of_the_samples_personal_data(federation, clock, captured):
    """Submit, forward, deliver, fetch, and refusals at both ends, at DEBUG level: the log holds none of the payload's personal data."""
    payload_secrets = [s for s in SECRETS if s.encode() in MOVE.payload()]
    assert payload_secrets
    async with running(federation, clock) as nodes:
        luzern = nodes["node-luzern"]
        message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
        async with client(federation, LUZERN) as api:
            assert (await api.submit(envelope, payload, "data.xml"))[0] == 202
            # refused at the origin: schema-invalid payload that quotes a name where a number belongs
            bad_id, bad_envelope, bad_payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
            name = next(n for n in NAMES if n.encode() in bad_payload)
            broken = re.sub(rb"<([\w:]*)vn>\d+</", lambda m: b"<" + m.group(1) + b"vn>" + name.encode() + b"</", bad_payload, count=1)
            assert (await api.submit(bad_envelope, broken, "data.xml"))[0] == 422
        assert await luzern.forward_due() == 1
        async with client(federation, KANTON) as api:
            assert await api.payload(KANTON, LUZERN, message_id) == payload
        # refused at the destination: a transfer whose recipient is not in its sealed envelope
        from gateway.transport import TransferHeader

        item = luzern.store.find_outgoing(LUZERN, message_id, KANTON)
        header = TransferHeader(LUZERN, "1-1059-1", message_id, item.envelope, item.seal, ())

        async def nothing():
            yield b""

        refused = await nodes["node-kanton"].receive(header, nothing(), "node-luzern")
        assert refused.status != 100
    records = lines(captured)
    assert any(r["message"].startswith("transfer refused") for r in records)
    assert leaks(captured.getvalue()) == []
