"""Real eCH sample messages (../shared/ech/samples) prepared for a test federation.

The samples keep their payload bytes; their envelopes are rewritten to the test
federation's participants, a fresh messageId and today's messageDate, because the
original participants and 2008 dates would (rightly) be refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from lxml import etree

from .envelope import Envelope, parse_envelope
from .ids import GatewayError, ParticipantId
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


def envelope_for(sample: Sample, sender: ParticipantId, recipient: ParticipantId, message_id: str, now: datetime) -> bytes:
    """The sample's own envelope rewritten for the test federation, or a new eCH-0090 v2 one."""
    if sample.envelope is not None:
        original = parse_envelope(sample.envelope.read_bytes(), None)
        envelope = replace(original, message_id=message_id, sender=sender, recipients=(recipient,), message_date=now, event_date=now)
    else:
        envelope = Envelope(
            message_id=message_id,
            message_type=MESSAGE_TYPE_BY_NAMESPACE.get(sample.namespace or "", 99),
            message_class=0,
            sender=sender,
            recipients=(recipient,),
            event_date=now,
            message_date=now,
            version="2.0",
        )
    return envelope.to_xml()
