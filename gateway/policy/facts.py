"""Read the policy-relevant facts from an eCH payload: action, event, test flag, data lock.

Only structural facts are read, never a person's data: the event is an element name, the
lock is a yes/no, and nothing read here is logged with its value.
"""

from __future__ import annotations

import re

from lxml import etree

from .model import PayloadFacts

# eCH-0058 v2–v5 headers, and the eCH-0078 header that eCH-0020 v2 uses (it carries the same
# action/testDeliveryFlag elements and, in its extension, the eCH-0021 dataLock).
_HEADER_NS = re.compile(r"http://www\.ech\.ch/xmlns/eCH-00(58|78)/\d+")
# Any eCH namespace, including the "f" variants (eCH-0020-f/3 carries eCH-0021-f/7 lockData).
_ECH_NS = re.compile(r"http://www\.ech\.ch/xmlns/eCH-\d{4}(-f)?/\d+")
# eCH-0021 v8 split the old dataLock value 1 (address lock) into its own addressLock.
_LOCK_NAMES = frozenset({"dataLock", "paperLock", "addressLock"})


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


def _header(root: etree._Element) -> etree._Element | None:
    for child in root:
        if isinstance(child.tag, str) and _local(child) in ("deliveryHeader", "header"):
            return child
    return None


def payload_facts(tree: etree._ElementTree) -> PayloadFacts:
    """Facts of a safely parsed eCH delivery (see gateway.safexml.parse_xml)."""
    root = tree.getroot()
    namespace = etree.QName(root).namespace
    header = _header(root)
    action = None
    test_delivery = False
    if header is not None:
        for child in header:
            if not isinstance(child.tag, str) or not _HEADER_NS.fullmatch(etree.QName(child).namespace or ""):
                continue
            name = _local(child)
            if name == "action":
                action = (child.text or "").strip() or None
            elif name == "testDeliveryFlag":
                test_delivery = (child.text or "").strip() in ("true", "1")
    event = None
    for child in root:
        if isinstance(child.tag, str) and child is not header:
            event = _local(child)
            break
    return PayloadFacts(
        action=action,
        event=event,
        test_delivery=test_delivery,
        data_lock=_has_lock(root),
        namespace=namespace,
    )


def _has_lock(root: etree._Element) -> bool:
    # SECURITY: any lock anywhere in the document counts (the header's eCH-0078 extension,
    # a person's eCH-0021 dataLock/paperLock, eCH-0020 v3 lockData, eCH-0021 v8 addressLock,
    # the eCH-0045 voter's dataLock), in any eCH namespace. "0" means no lock.
    # lxml filters the lock elements by local name in C ("{*}" matches any namespace); only
    # those few are then checked for an eCH namespace.
    for element in root.iter(*(f"{{*}}{name}" for name in _LOCK_NAMES)):
        if not _ECH_NS.fullmatch(etree.QName(element).namespace or ""):
            continue
        # eCH-0021 v7 lockData wraps dataLock/paperLock children, which this walk visits too.
        if (element.text or "").strip() not in ("", "0", "false"):
            return True
    return False
