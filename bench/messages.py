"""Benchmark messages: a generated, schema-valid ~20 KB eCH-0020 3.0 baseDelivery.

No public eCH-0020 3.0 message exists and the real samples in ../shared/ech/samples are
4–10 KB eCH-0020 2.x documents, so B1 uses ``gateway.generated``'s fictitious person
repeated as several distinct persons (different names, local IDs, AHV-like numbers and
birth dates) inside one ``baseDelivery``. Nothing is padded: every byte is eCH-0020 3.0
content, and the document is validated against eCH-0020-3-0.xsd before it is used.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from lxml import etree

from gateway.envelope import Envelope
from gateway.generated import generated_ech0020_v3_bytes
from gateway.ids import ParticipantId
from gateway.schemas import SchemaCatalog

ECH0020_V3 = "http://www.ech.ch/xmlns/eCH-0020/3"
MESSAGE_ID_PLACEHOLDER = "BENCHMESSAGEIDPLACEHOLDER0"  # 26 characters, replaced per message

_FIRST = ["Anna", "Beat", "Carla", "Dario", "Elena", "Fabian", "Gina", "Hans", "Iris", "Jonas", "Karin", "Luca"]
_LAST = ["Muster", "Beispiel", "Probst", "Zeugin", "Fiktiv", "Demo", "Vorlage", "Platzhalter"]


def ech0020_delivery(target_bytes: int = 20 * 1024, message_id: str = "bench-1", now: datetime | None = None) -> bytes:
    """A baseDelivery with as many distinct fictitious persons as bring it closest to ``target_bytes``."""
    text = generated_ech0020_v3_bytes(message_id, now or datetime.now(timezone.utc)).decode("utf-8")
    start = text.index("<e20:messages>")
    end = text.index("</e20:messages>") + len("</e20:messages>")
    head, block, tail = text[:start], text[start:end], text[end:]
    # Production participants exchange production data: the eCH-0058 header must not claim a
    # test delivery (the node refuses that combination with 200).
    head = head.replace("<e58:testDeliveryFlag>true</e58:testDeliveryFlag>", "<e58:testDeliveryFlag>false</e58:testDeliveryFlag>")

    def person(i: int) -> str:
        first, last = _FIRST[i % len(_FIRST)], _LAST[(i // len(_FIRST)) % len(_LAST)]
        out = block.replace("<e44:personId>1</e44:personId>", f"<e44:personId>{1000 + i}</e44:personId>")
        out = out.replace("7560000000002", f"{7560000000002 + 7919 * i}")
        out = re.sub(r"(officialName>)Muster(<)", rf"\g<1>{last}\g<2>", out)
        out = re.sub(r"(firstName>)Anna(<)", rf"\g<1>{first}\g<2>", out)
        out = out.replace("1990-01-01", f"{1950 + i % 60}-{1 + i % 12:02d}-{1 + i % 28:02d}")
        out = out.replace("<e11:householdID>1</e11:householdID>", f"<e11:householdID>{1 + i}</e11:householdID>")
        return out

    best = None
    for count in range(1, 200):
        document = head + "".join(person(i) for i in range(count)) + tail
        size = len(document.encode("utf-8"))
        if best is None or abs(size - target_bytes) < abs(len(best) - target_bytes):
            best = document.encode("utf-8")
        if size > target_bytes:
            break
    assert best is not None
    return best


def check_valid(payload: bytes, catalog: SchemaCatalog) -> int:
    """Validate against eCH-0020-3-0.xsd (raises otherwise); returns the number of persons."""
    tree = etree.fromstring(payload, etree.XMLParser(resolve_entities=False, no_network=True)).getroottree()
    catalog.validate(tree)
    return len(tree.getroot().findall(f".//{{{ECH0020_V3}}}baseDeliveryPerson"))


def envelope_template(sender: str, recipient: str, now: datetime | None = None) -> bytes:
    """An eCH-0090 v2 envelope whose messageId is :data:`MESSAGE_ID_PLACEHOLDER`.

    The load generator replaces the placeholder per message (a bytes replace, so building
    envelopes costs the generator almost nothing and the node sees ordinary envelopes).
    """
    now = now or datetime.now(timezone.utc)
    envelope = Envelope(
        message_id=MESSAGE_ID_PLACEHOLDER,
        message_type=20001,
        message_class=0,
        sender=ParticipantId(sender),
        recipients=(ParticipantId(recipient),),
        event_date=now,
        message_date=now,
        version="2.0",
    )
    return envelope.to_xml()


def envelope_for(template: bytes, message_id: str) -> bytes:
    if len(message_id) > 36:
        raise ValueError("messageId too long for a sedex file name")
    return template.replace(MESSAGE_ID_PLACEHOLDER.encode(), message_id.encode())


def write_message_files(directory: Path, sender: str, recipient: str, catalog: SchemaCatalog) -> dict:
    """Write the B1 payload and envelope template into ``directory``; describe them."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = ech0020_delivery()
    persons = check_valid(payload, catalog)
    (directory / "payload.xml").write_bytes(payload)
    (directory / "envelope.xml").write_bytes(envelope_template(sender, recipient))
    return {
        "payload": str(directory / "payload.xml"),
        "envelope_template": str(directory / "envelope.xml"),
        "payload_bytes": len(payload),
        "persons": persons,
        "envelope_bytes": len(envelope_template(sender, recipient)),
    }
