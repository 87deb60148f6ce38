"""eCH-0090 v2 receipts with sedex status codes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from .envelope import NS_V1, NS_V2, Envelope, format_datetime, parse_datetime
from .ids import GatewayError, ParticipantId, StatusCode
from .safexml import parse_xml
from .schemas import SchemaCatalog


class InvalidReceipt(GatewayError):
    status = StatusCode.INVALID_ENVELOPE


@dataclass(frozen=True, slots=True)
class Receipt:
    """What happened to one message for one recipient.

    ``sender`` is the message's sender (the receipt's addressee) and ``recipient`` the
    recipient the receipt speaks about, as in sedex.
    """

    status: StatusCode
    status_info: str
    message_id: str
    message_type: int
    message_class: int
    sender: ParticipantId
    recipient: ParticipantId
    event_date: datetime

    @classmethod
    def for_envelope(
        cls,
        envelope: Envelope,
        recipient: ParticipantId,
        status: StatusCode,
        info: str | None,
        now: datetime,
    ) -> Receipt:
        return cls(
            status=status,
            status_info=(info or status.default_info)[:255],
            message_id=envelope.message_id,
            message_type=envelope.message_type,
            message_class=envelope.message_class,
            sender=envelope.sender,
            recipient=recipient,
            event_date=now,
        )

    def to_xml(self) -> bytes:
        q = lambda name: f"{{{NS_V2}}}{name}"  # noqa: E731
        root = etree.Element(q("receipt"), nsmap={"eCH-0090": NS_V2})
        root.set("version", "2.0")
        etree.SubElement(root, q("eventDate")).text = format_datetime(self.event_date)
        etree.SubElement(root, q("statusCode")).text = str(int(self.status))
        etree.SubElement(root, q("statusInfo")).text = self.status_info
        etree.SubElement(root, q("messageId")).text = self.message_id
        etree.SubElement(root, q("messageType")).text = str(self.message_type)
        etree.SubElement(root, q("messageClass")).text = str(self.message_class)
        etree.SubElement(root, q("senderId")).text = str(self.sender)
        etree.SubElement(root, q("recipientId")).text = str(self.recipient)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    def as_dict(self) -> dict:
        return {
            "statusCode": int(self.status),
            "statusInfo": self.status_info,
            "messageId": self.message_id,
            "messageType": self.message_type,
            "messageClass": self.message_class,
            "senderId": str(self.sender),
            "recipientId": str(self.recipient),
            "eventDate": format_datetime(self.event_date),
        }


def parse_receipt(data: bytes, catalog: SchemaCatalog | None = None) -> Receipt:
    """Parse an eCH-0090 v1 or v2 receipt (validated against the XSD when a catalog is given)."""
    tree = parse_xml(data)
    root = tree.getroot()
    qname = etree.QName(root)
    if qname.namespace not in (NS_V1, NS_V2) or qname.localname != "receipt":
        raise InvalidReceipt("not an eCH-0090 receipt")
    if catalog is not None:
        catalog.validate(tree)
    ns = qname.namespace
    get = lambda name: (root.findtext(f"{{{ns}}}{name}") or "").strip()  # noqa: E731
    try:
        return Receipt(
            status=StatusCode(int(get("statusCode"))),
            status_info=get("statusInfo"),
            message_id=get("messageId"),
            message_type=int(get("messageType")),
            message_class=int(get("messageClass")),
            sender=ParticipantId.parse(get("senderId")),
            recipient=ParticipantId.parse(get("recipientId")),
            event_date=parse_datetime(get("eventDate")),
        )
    except ValueError as exc:
        raise InvalidReceipt(f"receipt: {exc}") from None
