"""Incremental payload checks while the payload streams through the origin hop.

The payload is never held whole in memory: XML is parsed with a pull parser (and
validated against its XSD when the route demands it) chunk by chunk.
"""

from __future__ import annotations

from lxml import etree

from .config import PayloadAcceptance
from .ids import GatewayError, StatusCode
from .safexml import XmlLimits, document_problem, element_namespace, encoding_problem
from .schemas import SchemaCatalog, redact_quoted

_ROOT_SNIFF_LIMIT = 256 * 1024
_DTD_MARKS = (b"<!DOCTYPE", b"<!ENTITY")


class PayloadRefused(GatewayError):
    status = StatusCode.INVALID_ENVELOPE


class PayloadCheck:
    """Feeds payload chunks to a safe pull parser; :meth:`finish` raises if the payload
    does not meet the route's :class:`PayloadAcceptance`."""

    def __init__(self, acceptance: PayloadAcceptance, catalog: SchemaCatalog, limits: XmlLimits) -> None:
        self.acceptance = acceptance
        self.catalog = catalog
        self.limits = limits
        self.namespace: str | None = None
        self.size = 0
        self._head = bytearray()
        self._parser: etree.XMLPullParser | None = None
        self._depth = 0
        self._elements = 0
        self._tail = b""

    def _new_parser(self, schema) -> etree.XMLPullParser:
        # SECURITY: same hardening as gateway.safexml: no DTD, no entities, no network.
        return etree.XMLPullParser(
            events=("start", "end"), resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, schema=schema
        )

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.acceptance is PayloadAcceptance.ANY:
            return
        if self.size > self.limits.max_bytes:
            raise PayloadRefused(f"XML payload larger than {self.limits.max_bytes} bytes")
        # A quick byte test for the common (ASCII-compatible) case, across chunk boundaries; the
        # parser's own view of the document (``_refuse_dtd``) decides for every encoding.
        window = self._tail + chunk
        if any(mark in window for mark in _DTD_MARKS):
            raise PayloadRefused("document type declarations are not allowed in payloads")
        self._tail = window[-8:]
        if self._parser is None:
            self._head += chunk
            namespace = self._sniff_root()
            if namespace is None:
                if len(self._head) > _ROOT_SNIFF_LIMIT:
                    raise PayloadRefused("payload has no XML root element in its first 256 KiB")
                return
            self._begin(namespace)
        else:
            self._push(chunk)

    def _begin(self, namespace: str) -> None:
        """The root element is known: parse (and validate) the whole document from its start."""
        self.namespace = namespace
        schema = None
        if self.acceptance is PayloadAcceptance.SCHEMA_VALID:
            if not self.catalog.has(namespace):
                raise PayloadRefused(
                    f"no schema for payload namespace {namespace or '(none)'}; the route accepts schema-valid payloads only"
                )
            schema = self.catalog.schema_for(namespace)
        self._parser = self._new_parser(schema)
        head, self._head = bytes(self._head), bytearray()
        self._push(head)

    def _sniff_root(self, final: bool = False) -> str | None:
        parser = self._new_parser(None)
        try:
            parser.feed(bytes(self._head))
            if final:  # a document as short as "<r/>" reports its root only when the parser is closed
                parser.close()
            for event, element in parser.read_events():
                if event == "start":
                    # SECURITY: the root element's start tag comes after the XML declaration and
                    # any DOCTYPE: both are known now, in whatever encoding or chunking (F3).
                    problem = encoding_problem(bytes(self._head))
                    if problem is not None:
                        raise PayloadRefused(f"payload {problem}")
                    self._refuse_dtd(element.getroottree())
                    namespace = element_namespace(element)
                    if namespace is None:
                        # lxml reports an undeclared prefix only at close; QName raised ValueError (F17).
                        raise PayloadRefused("payload is not well-formed XML: the root element's namespace prefix is not declared")
                    return namespace
        except etree.XMLSyntaxError as exc:
            raise PayloadRefused(f"payload is not well-formed XML: {_line(exc)}") from None
        return None

    @staticmethod
    def _refuse_dtd(tree: etree._ElementTree) -> None:
        problem = document_problem(tree)
        if problem is not None:
            raise PayloadRefused(f"{problem} in payloads" if problem.startswith("document type") else f"payload {problem}")

    def _push(self, data: bytes) -> None:
        assert self._parser is not None
        try:
            self._parser.feed(data)
            self._drain()
        except etree.XMLSyntaxError as exc:
            raise PayloadRefused(f"payload is not {self._expectation()}: {_line(exc)}") from None

    def _drain(self) -> None:
        assert self._parser is not None
        for event, element in self._parser.read_events():
            if event == "start":
                self._depth += 1
                self._elements += 1
                if self._elements == 1:
                    self._refuse_dtd(element.getroottree())
                if self._depth > self.limits.max_depth:
                    raise PayloadRefused(f"payload nesting deeper than {self.limits.max_depth}")
                if self._elements > self.limits.max_elements:
                    raise PayloadRefused(f"payload has more than {self.limits.max_elements} elements")
            else:
                self._depth -= 1
                # Completed subtrees are dropped so memory stays flat for large documents.
                if self._depth > 1:
                    element.clear(keep_tail=True)

    def finish(self) -> None:
        if self.acceptance is PayloadAcceptance.ANY:
            return
        if self._parser is None:
            if self.size == 0:
                raise PayloadRefused("payload is empty", status=StatusCode.NO_PAYLOAD)
            namespace = self._sniff_root(final=True)
            if namespace is None:
                raise PayloadRefused("payload is not well-formed XML")
            self._begin(namespace)
        assert self._parser is not None
        try:
            root = self._parser.close()
        except etree.XMLSyntaxError as exc:
            raise PayloadRefused(f"payload is not {self._expectation()}: {_line(exc)}") from None
        # SECURITY: the complete document once more, as the parser read it: no DTD, an accepted encoding.
        self._refuse_dtd(root.getroottree())

    def _expectation(self) -> str:
        if self.acceptance is PayloadAcceptance.SCHEMA_VALID:
            return f"valid against the schema of {self.namespace}"
        return "well-formed XML"


class CheckedPayload:
    """A payload already parsed (safely) and checked in memory: sealing only counts its bytes.

    The origin parses every payload up to ``in_memory_payload_bytes`` once, for the header,
    format, policy and person checks; validating that tree (:func:`check_tree`) instead of
    parsing the same bytes again while sealing halves the XML cost of a message.
    """

    def __init__(self, acceptance: PayloadAcceptance, namespace: str | None) -> None:
        self.acceptance = acceptance
        self.namespace = namespace
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)

    def finish(self) -> None:
        if self.size == 0:
            raise PayloadRefused("payload is empty", status=StatusCode.NO_PAYLOAD)


def check_tree(tree: etree._ElementTree, acceptance: PayloadAcceptance, catalog: SchemaCatalog) -> str:
    """What :class:`PayloadCheck` decides, for a payload already parsed by ``gateway.safexml``.

    Returns the root namespace; raises :class:`PayloadRefused` (200) with the same texts.
    """
    namespace = element_namespace(tree.getroot())
    if namespace is None:
        raise PayloadRefused("payload is not well-formed XML: the root element's namespace prefix is not declared")
    if acceptance is PayloadAcceptance.SCHEMA_VALID:
        if not catalog.has(namespace):
            raise PayloadRefused(f"no schema for payload namespace {namespace or '(none)'}; the route accepts schema-valid payloads only")
        schema = catalog.schema_for(namespace)
        if not schema.validate(tree):
            error = schema.error_log.last_error
            raise PayloadRefused(f"payload is not valid against the schema of {namespace}: line {error.line}: {redact_quoted(error.message)}")
    return namespace


def _line(exc: Exception) -> str:
    # SECURITY: libxml2 quotes offending values, which may be personal data.
    return redact_quoted(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
