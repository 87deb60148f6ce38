"""Hostile-input-safe XML parsing.

XML that reaches the gateway is hostile until proven otherwise. Every parse in the
gateway goes through :func:`parse_xml` (or :func:`iter_validate` for large streams):
no DTD, no entity expansion, no network, and limits on size, depth and element count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from .ids import GatewayError, StatusCode


class UnsafeXml(GatewayError):
    """The document is not well-formed or breaks a parsing limit."""

    status = StatusCode.INVALID_ENVELOPE


@dataclass(frozen=True, slots=True)
class XmlLimits:
    """Limits applied to every parsed document; configurable per node."""

    max_bytes: int = 64 * 1024 * 1024
    max_depth: int = 64
    max_elements: int = 2_000_000


DEFAULT_LIMITS = XmlLimits()

# SECURITY: the document encodings a parse accepts (eCH documents are UTF-8). Anything else is
# refused before it reaches a recipient: UTF-7 spells markup without '<' bytes, UTF-32 and
# EBCDIC hide it from byte-level checks, and every extra decoder is attack surface in the
# recipient's parser too (threat model F3).
ACCEPTED_ENCODINGS = ("utf-8", "utf-16", "utf-16le", "utf-16be", "us-ascii", "iso-8859-1")
_ENCODING_ALIASES = {"utf8": "utf-8", "utf16": "utf-16", "ascii": "us-ascii", "latin1": "iso-8859-1", "iso_8859-1": "iso-8859-1"}
_DECLARATION = re.compile(r"""<\?xml\s[^>]{0,400}?\bencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")
_BYTE_ORDER = (  # what a parser infers from the first bytes (XML 1.0 Appendix F), longest first
    (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\x00<", "utf-32"), (b"<\x00\x00\x00", "utf-32"),
    (b"\x4c\x6f\xa7\x94", "ebcdic"), (b"\xef\xbb\xbf", "utf-8"), (b"\xfe\xff", "utf-16"), (b"\xff\xfe", "utf-16"),
    (b"\x00<\x00?", "utf-16be"), (b"<\x00?\x00", "utf-16le"),
)  # fmt: skip
_TEXT_CODEC = {"utf-16": "utf-16", "utf-16be": "utf-16-be", "utf-16le": "utf-16-le"}


# Refused encodings an error message may name; any other declared name is payload content and
# is not repeated (it could carry anything the charset [A-Za-z0-9._-] allows).
_NAMED_REFUSALS = frozenset({"utf-7", "utf-32", "utf-32le", "utf-32be", "ucs-2", "ucs-4", "ebcdic", "ibm037", "cp037",
                             "windows-1252", "iso-8859-15", "iso-2022-jp", "shift_jis", "euc-jp", "gb2312", "big5"})  # fmt: skip


def _encoding_name(name: str) -> str:
    name = name.lower()
    return _ENCODING_ALIASES.get(name, name)


def _refused_encoding(name: str) -> str:
    shown = name.upper() if _encoding_name(name) in _NAMED_REFUSALS else "of the document"
    return f"document encoding {shown} is not accepted (only {', '.join(e.upper() for e in ACCEPTED_ENCODINGS)})"


def encoding_problem(head: bytes) -> str | None:
    """Why a document starting with ``head`` is in an encoding we refuse, or None when it is accepted.

    ``head`` must reach past the XML declaration (any head that holds the root element's
    start tag does). Both the encoding the first bytes imply and the declared one are checked,
    so a declaration cannot switch a parser to a refused decoder. ``docinfo.encoding`` after a
    parse gives lxml's own view (:func:`document_problem`).
    """
    family = next((name for mark, name in _BYTE_ORDER if head.startswith(mark)), "utf-8")
    if family not in ACCEPTED_ENCODINGS:
        return _refused_encoding(family)
    text = head[:1024].decode(_TEXT_CODEC.get(family, "latin-1"), errors="replace").lstrip("\ufeff")
    declared = _DECLARATION.match(text)
    if declared is not None and _encoding_name(declared.group(1)) not in ACCEPTED_ENCODINGS:
        return _refused_encoding(declared.group(1))
    return None


def document_problem(tree: etree._ElementTree) -> str | None:
    """Why a parsed (or partly parsed) document is refused: a DTD of any kind, or an encoding we refuse."""
    docinfo = tree.docinfo
    # SECURITY: a DOCTYPE is how entity and DTD-fetch attacks start; eCH documents never carry
    # one. The parser saw it whatever the encoding or chunking (a byte test alone did not, F3).
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.system_url:
        return "document type declarations are not allowed"
    encoding = docinfo.encoding  # set once the document is complete
    if encoding and _encoding_name(encoding) not in ACCEPTED_ENCODINGS:
        return _refused_encoding(encoding)
    return None


def element_namespace(element: etree._Element) -> str | None:
    """The namespace URI of a parsed element ('' for none), or None when its prefix is undeclared.

    ``etree.QName`` raises ValueError ('Invalid tag name') for such an element: lxml reports
    the namespace error only when the document is closed (threat model F17).
    """
    tag = element.tag
    if not isinstance(tag, str):
        return None
    if tag.startswith("{"):
        return tag[1 : tag.index("}")]
    return None if ":" in tag else ""


def _parser() -> etree.XMLParser:
    # SECURITY: no DTD loading, no entity resolution, no network, no huge-tree mode
    # (which would lift libxml2's own protections against quadratic blow-up).
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        # SECURITY: comments and processing instructions are dropped, so a value such as
        # "1-1061-1<!---->0" is read whole ("1-1061-10"), as the XSD and recipients read it,
        # not cut at the comment (threat model F1).
        remove_comments=True,
        remove_pis=True,
    )


def _refuse_doctype(tree: etree._ElementTree) -> None:
    problem = document_problem(tree)
    if problem is not None:
        raise UnsafeXml(problem)


def _check_shape(root: etree._Element, limits: XmlLimits) -> None:
    count = 0
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        count += 1
        if depth > limits.max_depth:
            raise UnsafeXml(f"nesting deeper than {limits.max_depth} levels")
        if count > limits.max_elements:
            raise UnsafeXml(f"more than {limits.max_elements} elements")
        stack.extend((child, depth + 1) for child in element)


def parse_xml(data: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> etree._ElementTree:
    """Parse ``data`` safely and return the tree; raise :class:`UnsafeXml` otherwise."""
    if len(data) > limits.max_bytes:
        raise UnsafeXml(f"document larger than {limits.max_bytes} bytes")
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data:
        raise UnsafeXml("document type declarations are not allowed")
    problem = encoding_problem(data)
    if problem is not None:
        raise UnsafeXml(problem)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"not well-formed XML: {_first_line(exc)}") from None
    tree = root.getroottree()
    _refuse_doctype(tree)
    _check_shape(root, limits)
    return tree


def iter_validate(
    chunks: Iterable[bytes],
    schema: etree.XMLSchema | None,
    limits: XmlLimits = DEFAULT_LIMITS,
) -> str:
    """Parse a stream chunk by chunk (bounded memory), validating against ``schema``.

    Returns the namespace of the root element. Elements are discarded as soon as
    they are complete, so a 1 GB document needs only a few MB.
    """
    parser = etree.XMLPullParser(
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        schema=schema,
    )
    total = 0
    depth = 0
    elements = 0
    root_ns = None
    head = b""  # the bytes up to the root element, for the encoding check
    tail = b""  # the end of the previous chunk: a DOCTYPE cut in two is still seen
    try:
        for chunk in chunks:
            total += len(chunk)
            if total > limits.max_bytes:
                raise UnsafeXml(f"document larger than {limits.max_bytes} bytes")
            window = tail + chunk
            if b"<!DOCTYPE" in window or b"<!ENTITY" in window:
                raise UnsafeXml("document type declarations are not allowed")
            tail = window[-8:]
            if root_ns is None and len(head) < 4096:
                head += chunk[: 4096 - len(head)]
            parser.feed(chunk)
            for event, element in parser.read_events():
                if event == "start":
                    depth += 1
                    elements += 1
                    if root_ns is None:
                        problem = encoding_problem(head) or document_problem(element.getroottree())
                        if problem is not None:
                            raise UnsafeXml(problem)
                        root_ns = element_namespace(element)
                        if root_ns is None:
                            raise UnsafeXml("not well-formed XML: the root element's namespace prefix is not declared")
                    if depth > limits.max_depth:
                        raise UnsafeXml(f"nesting deeper than {limits.max_depth} levels")
                    if elements > limits.max_elements:
                        raise UnsafeXml(f"more than {limits.max_elements} elements")
                else:
                    depth -= 1
                    if depth > 0:
                        element.clear(keep_tail=True)
                        previous = element.getprevious()
                        while previous is not None:
                            parent = previous.getparent()
                            if parent is None:
                                break
                            parent.remove(previous)
                            previous = element.getprevious()
        root = parser.close()
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"not well-formed XML: {_first_line(exc)}") from None
    _refuse_doctype(root.getroottree())
    if root_ns is None:
        # A short document's start event may come only with close(): check it here.
        problem = encoding_problem(head)
        if problem is not None:
            raise UnsafeXml(problem)
        root_ns = element_namespace(root)
        if root_ns is None:
            raise UnsafeXml("not well-formed XML: the root element's namespace prefix is not declared")
    return root_ns


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
