"""eCH-0020 v3 (namespace eCH-0020/3, eCH-0020-3-0.xsd), the current release."""

from __future__ import annotations

from lxml import etree

from gateway.schemas import SchemaCatalog

from .base import DetectedFormat, ValidationResult, copy_tree, detect_namespace, no_conversion

NAMESPACE = "http://www.ech.ch/xmlns/eCH-0020/3"


class Ech0020V3Adapter:
    name = "ech0020-v3"
    standard = "eCH-0020"
    converts_to: tuple[str, ...] = ()

    def detect(self, tree: etree._ElementTree) -> DetectedFormat | None:
        return detect_namespace(tree, self.name, NAMESPACE)

    def validate(self, tree: etree._ElementTree, catalog: SchemaCatalog, *,
                 well_formed_only: bool = False) -> ValidationResult:
        # well_formed_only is ignored on purpose: a public XSD exists, so it always applies.
        catalog.validate(tree)
        return ValidationResult(NAMESPACE, False, "eCH-0020 v3 valid")

    def convert(self, tree: etree._ElementTree, target: str) -> etree._ElementTree:
        if target == self.name:
            return copy_tree(tree)
        # Down-conversion would drop 3.0 data a 2.x receiver cannot hold.
        raise no_conversion(self.name, target)
