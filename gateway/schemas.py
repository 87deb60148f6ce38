"""Schema catalog: eCH namespaces mapped to XSD files in one local directory.

``xs:import`` and ``xs:include`` resolve to local files only (by basename); nothing is
ever fetched from the network. Each schema is compiled once and cached.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from .ids import GatewayError, StatusCode

_VERSION = re.compile(r"-(\d+)-(\d+)f?\.xsd$")


class SchemaError(GatewayError):
    """A payload has no schema, or does not validate against it."""

    status = StatusCode.INVALID_ENVELOPE


class _LocalOnlyResolver(etree.Resolver):
    """Resolves every schema location to a file of the same basename in one folder."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self._directory = directory

    def resolve(self, system_url, public_id, context):  # noqa: D401 - lxml API
        name = Path(str(system_url).rsplit("/", 1)[-1]).name
        candidate = self._directory / name
        # SECURITY: only files inside the catalog directory; never the network.
        if name.endswith(".xsd") and candidate.is_file():
            return self.resolve_filename(str(candidate), context)
        raise SchemaError(f"schema import outside the catalog refused: {name}")


@dataclass(frozen=True, slots=True)
class SchemaEntry:
    namespace: str
    path: Path
    version: tuple[int, int]


class SchemaCatalog:
    """Maps a namespace to the highest-version XSD found for it and validates documents."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"schema directory not found: {self.directory}")
        self._entries: dict[str, SchemaEntry] = {}
        self._by_name: dict[str, SchemaEntry] = {}
        for path in sorted(self.directory.glob("*.xsd")):
            entry = self._read_entry(path)
            if entry is None:
                continue
            self._by_name[path.name] = entry
            known = self._entries.get(entry.namespace)
            if known is None or entry.version > known.version:
                self._entries[entry.namespace] = entry
        self._compiled: dict[Path, etree.XMLSchema] = {}
        # Compiled lazily from the event loop's thread and the node's inspection thread;
        # libxml2 must not compile two schemas that import the same files at once (a
        # concurrent compile was seen to fail with "does not resolve to a type definition").
        self._compiling = threading.Lock()

    @staticmethod
    def _read_entry(path: Path) -> SchemaEntry | None:
        try:
            root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
        except etree.XMLSyntaxError:
            return None
        namespace = root.get("targetNamespace")
        if not namespace:
            return None
        match = _VERSION.search(path.name)
        version = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        return SchemaEntry(namespace, path, version)

    @property
    def namespaces(self) -> frozenset[str]:
        return frozenset(self._entries)

    def has(self, namespace: str) -> bool:
        return namespace in self._entries

    def schema_for(self, namespace: str) -> etree.XMLSchema:
        entry = self._entries.get(namespace)
        if entry is None:
            raise SchemaError(f"no schema known for namespace {namespace or '(none)'}")
        return self._compile(entry.path)

    def schema_named(self, filename: str) -> etree.XMLSchema:
        entry = self._by_name.get(filename)
        if entry is None:
            raise SchemaError(f"no schema file {filename} in the catalog")
        return self._compile(entry.path)

    def _compile(self, path: Path) -> etree.XMLSchema:
        schema = self._compiled.get(path)
        if schema is not None:
            return schema
        with self._compiling:
            return self._compile_locked(path)

    def _compile_locked(self, path: Path) -> etree.XMLSchema:
        schema = self._compiled.get(path)
        if schema is None:
            parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
            parser.resolvers.add(_LocalOnlyResolver(self.directory))
            try:
                schema = etree.XMLSchema(etree.parse(str(path), parser))
            except (etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
                raise SchemaError(f"schema {path.name} does not compile: {exc}") from None
            self._compiled[path] = schema
        return schema

    def validate(self, tree: etree._ElementTree) -> str:
        """Validate a parsed document against the schema of its root namespace.

        Returns the namespace; raises :class:`SchemaError` naming the first violation
        (line and reason only, never element content).
        """
        namespace = etree.QName(tree.getroot()).namespace or ""
        schema = self.schema_for(namespace)
        if not schema.validate(tree):
            error = schema.error_log.last_error
            raise SchemaError(f"payload does not validate against {self._entries[namespace].path.name}: line {error.line}: {redact_quoted(error.message)}")
        return namespace

    def compile_all(self) -> int:
        """Compile every namespace's schema (readiness check); returns the count."""
        for entry in self._entries.values():
            self._compile(entry.path)
        return len(self._entries)


def redact_quoted(message: str) -> str:
    # SECURITY: libxml2 quotes offending values ("The value 'Muster' is not ..."), which
    # can be personal data. Keep the structural part of the message only.
    return re.sub(r"'[^']*'", "'…'", message)[:200]
