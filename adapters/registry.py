"""The explicit list of format adapters a node can use, looked up by name.

A node's configuration lists adapter names per participant (e.g. ``["ech0020-v2",
"ech-generic"]``); :meth:`AdapterRegistry.select` turns that list into adapters and fails
at load time on an unknown name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from lxml import etree

from gateway.ids import GatewayError, StatusCode
from gateway.schemas import SchemaCatalog

from .base import ECH_NAMESPACE, DetectedFormat, EchAdapter
from .ech0020_v1 import Ech0020V1Adapter
from .ech0020_v2 import Ech0020V2Adapter
from .ech0020_v3 import Ech0020V3Adapter
from .ech_generic import EchGenericAdapter


class UnknownAdapter(LookupError):
    """A configuration names an adapter that is not registered."""


class UnknownFormat(GatewayError):
    """No adapter in use recognises the document."""

    status = StatusCode.INVALID_MESSAGE_TYPE


class AdapterRegistry:
    """Adapters in detection order: specific formats first, generic last."""

    def __init__(self, adapters: Iterable[EchAdapter]) -> None:
        self._adapters: dict[str, EchAdapter] = {}
        for adapter in adapters:
            if adapter.name in self._adapters:
                raise ValueError(f"adapter registered twice: {adapter.name}")
            self._adapters[adapter.name] = adapter

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._adapters)

    def __iter__(self) -> Iterator[EchAdapter]:
        """The adapters in detection order."""
        return iter(self._adapters.values())

    def get(self, name: str) -> EchAdapter:
        try:
            return self._adapters[name]
        except KeyError:
            raise UnknownAdapter(f"unknown adapter {name!r}; known: {', '.join(self._adapters)}") from None

    def select(self, names: Iterable[str]) -> AdapterRegistry:
        """The sub-registry for one participant's configured adapter names (order kept)."""
        wanted = list(names)
        for name in wanted:
            self.get(name)
        return AdapterRegistry(a for n, a in self._adapters.items() if n in wanted)

    def detect(self, tree: etree._ElementTree) -> tuple[EchAdapter, DetectedFormat]:
        for adapter in self._adapters.values():
            detected = adapter.detect(tree)
            if detected is not None:
                return adapter, detected
        namespace = etree.QName(tree.getroot()).namespace or ""
        # SECURITY: a namespace outside eCH is free text from the document and is not quoted.
        shown = namespace if ECH_NAMESPACE.match(namespace) else ("(none)" if not namespace else "outside eCH")
        raise UnknownFormat(f"no adapter in use recognises namespace {shown}")


def default_registry(catalog: SchemaCatalog, *, local_id_category: str | None = None) -> AdapterRegistry:
    """Every adapter Drehscheibe ships, in detection order."""
    return AdapterRegistry([
        Ech0020V1Adapter(),
        Ech0020V2Adapter(catalog, local_id_category=local_id_category),
        Ech0020V3Adapter(),
        EchGenericAdapter(),
    ])
