"""The eCH-0090 envelope (v1.0 and v2.0): parse, validate, build.

An :class:`Envelope` is only ever built from a document that passed the safe parser
and the official eCH-0090 XSD, or from values that already passed their own checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from lxml import etree

from .ids import GatewayError, InvalidIdentifier, ParticipantId, StatusCode, check_message_id
from .safexml import DEFAULT_LIMITS, UnsafeXml, XmlLimits, parse_xml
from .schemas import SchemaCatalog, SchemaError

NS_V1 = "http://www.ech.ch/xmlns/eCH-0090/1"
NS_V2 = "http://www.ech.ch/xmlns/eCH-0090/2"
_VERSION_OF = {NS_V1: "1.0", NS_V2: "2.0"}
_NS_OF = {"1.0": NS_V1, "2.0": NS_V2}

# sedex writes local Swiss time without an offset; we read it as such.
SWISS_TIME = ZoneInfo("Europe/Zurich")


class InvalidEnvelope(GatewayError):
    """The envelope is not well-formed, not schema-valid, or inconsistent."""

    status = StatusCode.INVALID_ENVELOPE


def parse_datetime(text: str) -> datetime:
    """Parse an xs:dateTime; a value without offset is Swiss local time."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=SWISS_TIME)
    return value


def format_datetime(value: datetime) -> str:
    """xs:dateTime in Swiss time with offset; sub-second precision is kept when present."""
    return value.astimezone(SWISS_TIME).isoformat(timespec="microseconds" if value.microsecond else "seconds")


@dataclass(frozen=True, slots=True)
class Envelope:
    """An eCH-0090 envelope: who sends which message type to whom, and when."""

    message_id: str
    message_type: int
    message_class: int
    sender: ParticipantId
    recipients: tuple[ParticipantId, ...]
    event_date: datetime
    message_date: datetime
    version: str = "2.0"
    reference_message_id: str | None = None
    test_data: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        check_message_id(self.message_id)
        if self.reference_message_id is not None:
            check_message_id(self.reference_message_id)
        if not self.recipients:
            raise InvalidIdentifier("an envelope needs at least one recipient")
        if self.version not in _NS_OF:
            raise InvalidIdentifier(f"unknown eCH-0090 version {self.version!r}")
        if not 0 <= self.message_type <= 2699999:
            raise InvalidIdentifier(f"messageType out of range: {self.message_type}")

    @property
    def is_test(self) -> bool:
        """True for test traffic: a test sender or recipient, or envelope test data."""
        return self.sender.is_test or any(r.is_test for r in self.recipients)

    def for_recipient(self, recipient: ParticipantId) -> Envelope:
        return replace(self, recipients=(recipient,))

    def to_xml(self) -> bytes:
        """Serialise as an eCH-0090 envelope of this envelope's version."""
        ns = _NS_OF[self.version]
        q = lambda name: f"{{{ns}}}{name}"  # noqa: E731
        root = etree.Element(q("envelope"), nsmap={"eCH-0090": ns})
        root.set("version", self.version)
        etree.SubElement(root, q("messageId")).text = self.message_id
        etree.SubElement(root, q("messageType")).text = str(self.message_type)
        etree.SubElement(root, q("messageClass")).text = str(self.message_class)
        if self.reference_message_id:
            etree.SubElement(root, q("referenceMessageId")).text = self.reference_message_id
        etree.SubElement(root, q("senderId")).text = str(self.sender)
        for recipient in self.recipients:
            etree.SubElement(root, q("recipientId")).text = str(recipient)
        etree.SubElement(root, q("eventDate")).text = format_datetime(self.event_date)
        etree.SubElement(root, q("messageDate")).text = format_datetime(self.message_date)
        for name, value in self.test_data:
            pair = etree.SubElement(root, q("testData"))
            etree.SubElement(pair, q("name")).text = name
            etree.SubElement(pair, q("value")).text = value
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def parse_envelope(
    data: bytes, catalog: SchemaCatalog | None, limits: XmlLimits = DEFAULT_LIMITS
) -> Envelope:
    """Parse and validate an eCH-0090 v1.0 or v2.0 envelope.

    With a catalog the envelope is validated against the official XSD first; every
    failure raises :class:`InvalidEnvelope` (receipt 200).
    """
    try:
        tree = parse_xml(data, limits)
    except UnsafeXml as exc:
        raise InvalidEnvelope(f"envelope: {exc}") from None
    root = tree.getroot()
    qname = etree.QName(root)
    if qname.namespace not in _VERSION_OF or qname.localname != "envelope":
        raise InvalidEnvelope(f"not an eCH-0090 envelope: root element {{{qname.namespace or ''}}}{qname.localname}")
    if catalog is not None:
        try:
            catalog.validate(tree)
        except SchemaError as exc:
            raise InvalidEnvelope(f"envelope: {exc}") from None
    ns = qname.namespace

    def texts(name: str) -> list[str]:
        return [(e.text or "").strip() for e in root.findall(f"{{{ns}}}{name}")]

    def text(name: str) -> str | None:
        values = texts(name)
        return values[0] if values else None

    try:
        pairs = tuple(
            ((p.findtext(f"{{{ns}}}name") or ""), (p.findtext(f"{{{ns}}}value") or ""))
            for p in root.findall(f"{{{ns}}}testData")
        )
        envelope = Envelope(
            message_id=text("messageId") or "",
            message_type=int(text("messageType") or "-1"),
            message_class=int(text("messageClass") or "-1"),
            reference_message_id=text("referenceMessageId"),
            sender=ParticipantId.parse(text("senderId") or ""),
            recipients=tuple(ParticipantId.parse(r) for r in texts("recipientId")),
            event_date=parse_datetime(text("eventDate") or ""),
            message_date=parse_datetime(text("messageDate") or ""),
            version=_VERSION_OF[ns],
            test_data=pairs,
        )
    except (ValueError, InvalidIdentifier) as exc:
        raise InvalidEnvelope(f"envelope: {exc}") from None
    if len(set(envelope.recipients)) != len(envelope.recipients):
        # SECURITY: one message, one row and one receipt per recipient; a recipient named
        # twice is refused here (200), before any stage records or stores anything (F15).
        raise InvalidEnvelope("envelope: a recipientId is listed more than once")
    return envelope


def read_message_id(data: bytes) -> str:
    """Best-effort messageId of an envelope that failed to parse ('0' if unreadable),
    for the receipt that reports the failure, as sedex does."""
    try:
        root = parse_xml(data).getroot()
        for element in root:
            if etree.QName(element).localname == "messageId":
                return check_message_id((element.text or "").strip())
    except (GatewayError, ValueError, TypeError):
        pass
    return "0"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
