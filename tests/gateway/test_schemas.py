"""The schema catalog maps eCH namespaces to local XSDs and never reaches the network."""

from __future__ import annotations

import pytest
from lxml import etree

from gateway.schemas import SchemaCatalog, SchemaError


def test_namespaces_map_to_the_highest_local_version(catalog):
    """eCH-0020/2 resolves to eCH-0020-2-3.xsd; eCH-0090 v1 and v2 are both known."""
    assert catalog._entries["http://www.ech.ch/xmlns/eCH-0020/2"].path.name == "eCH-0020-2-3.xsd"
    assert {"http://www.ech.ch/xmlns/eCH-0090/1", "http://www.ech.ch/xmlns/eCH-0090/2"} <= catalog.namespaces


def test_every_schema_compiles_with_imports_resolved_locally(catalog):
    """All catalogued schemas compile without network access."""
    assert catalog.compile_all() == len(catalog.namespaces)


def test_an_import_outside_the_catalog_is_refused(tmp_path):
    """A schema that imports a file the catalog does not hold fails to compile instead of fetching it."""
    (tmp_path / "evil-1-0.xsd").write_text(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:evil">'
        '<xs:import namespace="urn:x" schemaLocation="http://127.0.0.1:9/remote.xsd"/>'
        '<xs:element name="r" type="xs:string"/></xs:schema>'
    )
    with pytest.raises(SchemaError):
        SchemaCatalog(tmp_path).schema_for("urn:evil")


def test_an_unknown_namespace_is_refused(catalog):
    """A document whose namespace has no schema raises SchemaError (receipt 200)."""
    with pytest.raises(SchemaError, match="no schema"):
        catalog.validate(etree.fromstring(b'<r xmlns="urn:unknown"/>').getroottree())
