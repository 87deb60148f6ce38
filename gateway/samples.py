"""Real eCH sample messages (../shared/ech/samples) prepared for a test federation.

Their envelopes are rewritten to the test federation's participants, a fresh messageId
and today's messageDate, because the original participants and 2008 dates would (rightly)
be refused. Payloads that carry an eCH-0058 header naming sedex participants get the same
rewrite inside the header (:func:`payload_for`): the origin node compares header and
envelope (issue 5), and a header still naming the original ``3-CH-6`` sender, or a
``testDeliveryFlag`` that disagrees with the participants, is refused with 200. Everything
outside the header keeps its bytes' meaning (only the header's text values change).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from lxml import etree

from .envelope import Envelope, parse_envelope
from .ids import GatewayError, InvalidIdentifier, ParticipantId
from .safexml import parse_xml

# sedex message types used for payloads that come without an envelope.
MESSAGE_TYPE_BY_NAMESPACE = {
    "http://www.ech.ch/xmlns/eCH-0020/2": 20001,
    "http://www.ech.ch/xmlns/eCH-0020/3": 20001,
    "http://www.ech.ch/xmlns/eCH-0045/6": 45,
    "http://www.ech.ch/xmlns/eCH-0099/1": 94,
}


@dataclass(frozen=True)
class Sample:
    name: str
    data: Path
    envelope: Path | None
    namespace: str | None

    def payload(self) -> bytes:
        return self.data.read_bytes()


def discover(root: Path) -> list[Sample]:
    """Every payload under ``root``: sedex pairs (``envl_X`` + ``data_X``) and lone eCH documents."""
    samples = []
    for path in sorted(Path(root).rglob("*.xml")):
        if path.name.startswith(("envl_", "receipt", "envelope-")):
            continue
        envelope = path.with_name("envl_" + path.name[5:]) if path.name.startswith("data_") else None
        try:
            root_ns = etree.QName(parse_xml(path.read_bytes()).getroot()).namespace
        except GatewayError:
            root_ns = None
        samples.append(Sample(str(path.relative_to(root)), path, envelope if envelope and envelope.exists() else None, root_ns))
    return samples


def envelope_for(
    sample: Sample, sender: ParticipantId, recipient: ParticipantId, message_id: str, now: datetime, message_type: int | None = None
) -> bytes:
    """The sample's own envelope rewritten for the test federation, or a new eCH-0090 v2 one."""
    if sample.envelope is not None:
        original = parse_envelope(sample.envelope.read_bytes(), None)
        envelope = replace(original, message_id=message_id, sender=sender, recipients=(recipient,), message_date=now, event_date=now)
        if message_type is not None:
            envelope = replace(envelope, message_type=message_type)
    else:
        envelope = Envelope(
            message_id=message_id,
            message_type=message_type or MESSAGE_TYPE_BY_NAMESPACE.get(sample.namespace or "", 99),
            message_class=0,
            sender=sender,
            recipients=(recipient,),
            event_date=now,
            message_date=now,
            version="2.0",
        )
    return envelope.to_xml()


_HEADER_FIELDS = re.compile(r"^http://www\.ech\.ch/xmlns/eCH-(0058|0078)/\d+$")


def payload_for(
    sample: Sample, sender: ParticipantId, recipients: tuple[ParticipantId, ...] | ParticipantId, message_type: int
) -> bytes:
    """The sample's payload with its eCH-0058 header speaking for ``sender`` → ``recipients``.

    Only sender and recipient IDs that name sedex participants are rewritten (a header naming
    a software product, as the eCH-0045 exports do, names no participant); a numeric
    ``messageType`` becomes the envelope's (the open-eCH samples carry a placeholder ``1``);
    ``testDeliveryFlag`` is set to what the participants are (test or production). Payloads
    without such a header are returned unchanged, byte for byte.
    """
    if isinstance(recipients, ParticipantId):
        recipients = (recipients,)
    data = sample.payload()
    try:
        tree = parse_xml(data)
    except GatewayError:
        return data
    root = tree.getroot()
    header = next((c for c in root if isinstance(c.tag, str) and etree.QName(c).localname in ("deliveryHeader", "header")), None)
    if header is None:
        return data
    changed = False
    for child in header:
        if not isinstance(child.tag, str) or not _HEADER_FIELDS.match(etree.QName(child).namespace or ""):
            continue
        name = etree.QName(child).localname
        text = (child.text or "").strip()
        wanted = text
        if name == "senderId" and _names_participant(text):
            wanted = str(sender)
        elif name == "recipientId" and _names_participant(text):
            wanted = str(recipients[0])
        elif name == "messageType" and text.isdigit():
            wanted = str(message_type)
        elif name == "testDeliveryFlag":
            wanted = "true" if any(p.is_test for p in (sender, *recipients)) else "false"
        if wanted != text:
            child.text = wanted
            changed = True
    if not changed:
        return data
    return etree.tostring(tree, xml_declaration=True, encoding=tree.docinfo.encoding or "UTF-8")


def _names_participant(text: str) -> bool:
    try:
        ParticipantId.parse(text)
    except InvalidIdentifier:
        return False
    return True
