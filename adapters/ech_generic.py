"""Any other eCH document (eCH-0045, eCH-0099, eCH-0093, …): detect and validate only.

The document's own namespace selects the XSD in the schema catalog; no conversion is
offered, because none is defined for these formats here.
"""

from __future__ import annotations

from lxml import etree

from gateway.schemas import SchemaCatalog

from .base import ECH_NAMESPACE, DetectedFormat, ValidationResult, components_of, copy_tree, no_conversion


class EchGenericAdapter:
    name = "ech-generic"
    standard = None
    converts_to: tuple[str, ...] = ()

    def detect(self, tree: etree._ElementTree) -> DetectedFormat | None:
        namespace = etree.QName(tree.getroot()).namespace or ""
        match = ECH_NAMESPACE.match(namespace)
        if match is None:
            return None
        return DetectedFormat(self.name, match.group(1), int(match.group(2)), namespace,
                              components_of(tree, namespace))

    def validate(self, tree: etree._ElementTree, catalog: SchemaCatalog, *,
                 well_formed_only: bool = False) -> ValidationResult:
        namespace = catalog.validate(tree)
        return ValidationResult(namespace, False, f"{namespace.rsplit('/', 2)[-2]} valid")

    def convert(self, tree: etree._ElementTree, target: str) -> etree._ElementTree:
        if target == self.name:
            return copy_tree(tree)
        raise no_conversion(self.name, target)
