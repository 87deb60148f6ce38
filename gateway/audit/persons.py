"""Keyed hashes of person identifiers found in eCH payloads.

SECURITY: the audit log must answer "which messages concerned this person" without
holding any identifier in clear. HMAC-SHA256 with a deployment secret makes the refs
useless to anyone without the secret (a plain hash of a 13-digit AHV number would be
brute-forced in seconds).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from lxml import etree

_ECH_0044 = "http://www.ech.ch/xmlns/eCH-0044/"
_VN = re.compile(r"756\d{10}")
MIN_SECRET_BYTES = 32


class InvalidPersonIdentifier(ValueError):
    """An identifier that is neither an AHV number nor a local person ID."""


def _normalise(identifier: str) -> str:
    """``vn:<13 digits>`` for AHV numbers (dots and spaces dropped), else ``local:CAT:ID``."""
    text = identifier.strip()
    digits = re.sub(r"[.\s]", "", text)
    if _VN.fullmatch(digits):
        return f"vn:{digits}"
    if text.startswith("local:"):
        category, _, person_id = text[len("local:") :].partition(":")
        if category.strip() and person_id.strip():
            return f"local:{category.strip()}:{person_id.strip()}"
    # No value in the message: it may be personal data.
    raise InvalidPersonIdentifier("not an AHV number (756 + 10 digits) or local:CATEGORY:ID")


def local_person_identifier(category: str, person_id: str) -> str:
    return f"local:{category.strip()}:{person_id.strip()}"


def person_ref(identifier: str, secret: bytes) -> str:
    """HMAC-SHA256(secret, normalised identifier) as lowercase hex."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the person-ref secret must have at least {MIN_SECRET_BYTES} bytes")
    return hmac.new(secret, _normalise(identifier).encode("utf-8"), hashlib.sha256).hexdigest()


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


def person_refs(payload_tree: etree._ElementTree | etree._Element, secret: bytes) -> tuple[str, ...]:
    """Refs of every eCH-0044 ``vn`` and ``localPersonId`` in a safely parsed payload.

    Empty or malformed identifiers are skipped (the open-eCH samples carry empty
    ``localPersonId`` elements). The result is sorted and free of duplicates.
    """
    root = payload_tree.getroot() if hasattr(payload_tree, "getroot") else payload_tree
    found: set[str] = set()
    # Filtered by local name in C ("{*}" matches any namespace), then by the eCH-0044 namespace.
    for element in root.iter("{*}vn", "{*}localPersonId"):
        if not element.tag.startswith("{" + _ECH_0044):
            continue
        name = _local(element)
        if name == "vn":
            value = (element.text or "").strip()
            if _VN.fullmatch(value):
                found.add(person_ref(value, secret))
        elif name == "localPersonId":
            parts = {_local(child): (child.text or "").strip() for child in element}
            category, pid = parts.get("personIdCategory", ""), parts.get("personId", "")
            if category and pid:
                found.add(person_ref(local_person_identifier(category, pid), secret))
    return tuple(sorted(found))
