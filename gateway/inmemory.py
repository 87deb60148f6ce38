"""Which payloads the origin may hold and inspect in memory, decided before a tree is built.

A payload up to ``in_memory_payload_bytes`` is parsed into a tree for the eCH-0058 header
check, the policy's payload facts, person references and redaction. A tree costs about
250 bytes per element whatever the bytes were, so 2 MiB of ``<e/>`` would cost 130 MB:
the element count is checked first, by a parse that builds nothing (threat model F4).
Both checks here are blocking and run in the node's inspection thread, never on the event loop.
"""

from __future__ import annotations

from lxml import etree

# A byte-order mark and the encoding a parser reads behind it (XML 1.0 Appendix F).
_MARKS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"),
)  # fmt: skip
# '<' (or '<?xm' in EBCDIC) in an encoding without a byte-order mark.
_BARE_STARTS = (b"\x00\x00\x00<", b"<\x00\x00\x00", b"\x00<", b"<\x00", b"\x4c\x6f\xa7\x94")


def claims_xml(payload: bytes) -> bool:
    """True when ``payload`` starts as markup (after a byte-order mark and white space), in any encoding.

    SECURITY: such a payload is read as XML by its recipient; if the gateway cannot read it
    safely it must be refused, never passed on as opaque bytes with the header check and the
    policy's payload facts skipped (threat model F2). A zip or PDF does not start with '<'.
    """
    sample = payload[:256]
    for mark, codec in _MARKS:
        if sample.startswith(mark):
            text = sample[len(mark) :].decode(codec, errors="ignore")
            break
    else:
        if sample.startswith(_BARE_STARTS):
            return True
        text = sample.decode("latin-1")
    return text.lstrip(" \t\r\n").startswith("<")


_SLICE = 64 * 1024


class _OverBudget(Exception):
    pass


class _ElementCounter:
    """An lxml parser target that counts start tags and builds nothing (no tree, no Python proxies)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def start(self, tag, attrib, nsmap=None) -> None:  # noqa: ARG002 - the target interface
        self.count += 1
        if self.count > self.limit:
            raise _OverBudget

    def end(self, tag) -> None:  # noqa: ARG002
        pass

    def data(self, data) -> None:  # noqa: ARG002
        pass

    def close(self) -> int:
        return self.count


def within_element_budget(payload: bytes, limit: int) -> bool:
    """False when ``payload`` holds more than ``limit`` elements; stops reading at ``limit`` + 1.

    A payload that is not well-formed counts as within: the full, safe parse that follows
    refuses it with its own reason. The parser has the hardening of :mod:`gateway.safexml`
    (no DTD, no entities, no network), and with a target it keeps no tree at all.
    """
    # Every element starts with "<", a 0x3C byte in each encoding gateway.safexml accepts (UTF-8,
    # UTF-16, US-ASCII, ISO-8859-1; it refuses the others before any tree is built): a payload with
    # no more "<" bytes than the limit cannot hold more elements, and costs no counting parse.
    if payload.count(b"<") <= limit:
        return True
    counter = _ElementCounter(limit)
    parser = etree.XMLParser(target=counter, resolve_entities=False, no_network=True,
                             load_dtd=False, dtd_validation=False, huge_tree=False)  # fmt: skip
    try:
        # Fed in slices: libxml2 goes on reading a string after the target raised, a slice stops it.
        for start in range(0, len(payload), _SLICE):
            parser.feed(payload[start : start + _SLICE])
            if counter.count > limit:
                return False
        parser.close()
    except _OverBudget:
        return False
    except (etree.LxmlError, ValueError):
        return True  # not readable here: gateway.safexml.parse_xml decides, with its reason
    return counter.count <= limit
