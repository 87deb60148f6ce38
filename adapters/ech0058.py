"""eCH-0058 message headers inside eCH payloads, and their consistency with the envelope.

An eCH payload carries its own header (``deliveryHeader`` or ``header``, a child of the
payload root) with sender, recipients, message type and a ``testDeliveryFlag``. sedex
never compared it with the eCH-0090 envelope; a gateway that applies policies per sender
and message type must, or a local system could route data under one identity while the
payload claims another.

Header versions 2 to 5 (namespaces ``eCH-0058/2`` … ``/5``) are read, and the eCH-0078
headers that extend them (``eCH-0078/2`` extends ``eCH-0058/2``, ``eCH-0078/4`` extends
``/4``), which the open-eCH eCH-0020 2.x deliveries use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from gateway.envelope import Envelope
from gateway.ids import GatewayError, InvalidIdentifier, ParticipantId, StatusCode

_HEADER_NS = re.compile(r"^http://www\.ech\.ch/xmlns/eCH-(0058|0078)/(\d+)$")
# eCH-0078 version -> the eCH-0058 version its headerType extends.
_ECH0078_BASE = {2: 2, 4: 4}
_HEADER_NAMES = ("deliveryHeader", "header")


class HeaderMismatch(GatewayError):
    """The payload's eCH-0058 header contradicts the envelope (receipt 200)."""

    status = StatusCode.INVALID_ENVELOPE


class InvalidHeader(GatewayError):
    """The payload has no readable eCH-0058 header."""

    status = StatusCode.INVALID_ENVELOPE


class UnsupportedHeaderVersion(InvalidHeader):
    """The header is not eCH-0058 version 2 to 5 (eCH-0020 v1 documents carry version 1)."""


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """The routing-relevant part of an eCH-0058 header (no personal data)."""

    sender: ParticipantId | None
    recipients: tuple[ParticipantId, ...]
    message_type: str
    message_id: str
    action: str
    test_delivery_flag: bool | None
    version: int


def find_header(tree: etree._ElementTree) -> etree._Element | None:
    """The header element of an eCH payload, or None."""
    for child in tree.getroot():
        if isinstance(child.tag, str) and etree.QName(child).localname in _HEADER_NAMES:
            return child
    return None


def _participant(text: str | None) -> ParticipantId | None:
    if text is None:
        return None
    try:
        return ParticipantId.parse(text)
    except InvalidIdentifier:
        # eCH-0058 allows any URI as senderId (e.g. "ABX-VOTING" in eCH-0045 exports); such a
        # header names no sedex participant and is only compared when it does.
        return None


def extract_header(tree: etree._ElementTree) -> MessageHeader:
    """Read the eCH-0058 header of ``tree``; raise :class:`InvalidHeader` when absent."""
    header = find_header(tree)
    if header is None:
        raise InvalidHeader("payload has no eCH-0058 deliveryHeader/header")
    version: int | None = None
    values: dict[str, list[str]] = {}
    for child in header:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        match = _HEADER_NS.match(qname.namespace or "")
        if match is None:
            continue  # extensions of the payload's own schema (e.g. eCH-0020 dataLock)
        number = int(match.group(2))
        if match.group(1) == "0078":
            number = _ECH0078_BASE.get(number, number)
        if version is None:
            version = number
        values.setdefault(qname.localname, []).append((child.text or "").strip())
    if version is None or not 2 <= version <= 5:
        raise UnsupportedHeaderVersion("payload header is not eCH-0058 version 2 to 5")

    def first(name: str) -> str | None:
        found = values.get(name)
        return found[0] if found else None

    for required in ("senderId", "messageId", "messageType", "action"):
        if first(required) is None:
            raise InvalidHeader(f"eCH-0058 header lacks {required}")
    flag_text = first("testDeliveryFlag")
    flag = None if flag_text is None else flag_text.lower() in ("true", "1")
    recipients = tuple(r for r in (_participant(t) for t in values.get("recipientId", [])) if r)
    return MessageHeader(
        sender=_participant(first("senderId")),
        recipients=recipients,
        message_type=first("messageType") or "",
        message_id=first("messageId") or "",
        action=first("action") or "",
        test_delivery_flag=flag,
        version=version,
    )


def check_header_against_envelope(header: MessageHeader, envelope: Envelope) -> None:
    """Raise :class:`HeaderMismatch` (status 200) when header and envelope disagree.

    Rules (only what both sides state is compared):

    * a header sender that is a sedex participant must equal the envelope's senderId;
    * header recipients, when present, must all be envelope recipients;
    * the header messageType must equal the envelope's messageType when it is numeric (the
      eCH-0058 messageType is a free token, a non-numeric one names no sedex type);
    * testDeliveryFlag and participants must agree: a flag ``true`` between production
      participants only (no ``T`` participant) is refused, because a test message must never
      reach a production register as if real; a flag ``false`` with any test participant is
      refused, because a test system must never emit what claims to be production data.

    Messages name fields, never values beyond participant IDs (which are not personal data).
    """
    if header.sender is not None and header.sender != envelope.sender:
        raise HeaderMismatch(
            f"eCH-0058 senderId {header.sender} differs from envelope senderId {envelope.sender}"
        )
    extra = [str(r) for r in header.recipients if r not in envelope.recipients]
    if extra:
        raise HeaderMismatch(f"eCH-0058 recipientId {', '.join(extra)} is not an envelope recipient")
    if header.message_type.isdigit() and int(header.message_type) != envelope.message_type:
        raise HeaderMismatch(
            f"eCH-0058 messageType {header.message_type} differs from envelope messageType {envelope.message_type}"
        )
    participants = (envelope.sender, *envelope.recipients)
    any_test = any(p.is_test for p in participants)
    if header.test_delivery_flag is True and not any_test:
        raise HeaderMismatch("testDeliveryFlag is true but sender and recipients are production participants")
    if header.test_delivery_flag is False and any_test:
        raise HeaderMismatch("testDeliveryFlag is false but a test participant (T prefix) takes part")
