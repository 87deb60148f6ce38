"""Format adapters: detection by namespace, validation against official XSDs, registry lookup."""

from __future__ import annotations

import pytest
from lxml import etree

from adapters.base import ConversionUnavailable, EchAdapter, ValidationRefused
from adapters.registry import AdapterRegistry, UnknownAdapter, UnknownFormat, default_registry
from gateway.ids import StatusCode
from gateway.safexml import parse_xml
from gateway.schemas import SchemaError

from .conftest import SAMPLES

V1 = SAMPLES / "ordipro-ech0020-v1/moveIn/ordipro-moveIn-21/data_ordipro-moveIn-21.xml"
V2 = SAMPLES / "openech-ech0020-v2.2/div-movetest/moveTest.xml"
E99 = next(SAMPLES.glob("ech0099-v1-sempach/*/data_*.xml"))
E45 = next(SAMPLES.glob("stimmregister-ech0045-v6/apiexport*/*.xml"))


@pytest.fixture(scope="module")
def registry(catalog):
    return default_registry(catalog, local_id_category="CH.VN")


def load(path) -> etree._ElementTree:
    return parse_xml(path.read_bytes())


def test_every_shipped_adapter_implements_the_interface(registry):
    """Each registered adapter satisfies the EchAdapter protocol and is found by its name."""
    assert registry.names == ("ech0020-v1", "ech0020-v2", "ech0020-v3", "ech-generic")
    for name in registry.names:
        adapter = registry.get(name)
        assert isinstance(adapter, EchAdapter) and adapter.name == name


@pytest.mark.parametrize("path, adapter, standard, version, component", [
    (V1, "ech0020-v1", "eCH-0020", 1, ("eCH-0058", 1)),
    (V2, "ech0020-v2", "eCH-0020", 2, ("eCH-0044", 1)),
    (E99, "ech-generic", "eCH-0099", 1, ("eCH-0011", 3)),
    (E45, "ech-generic", "eCH-0045", 6, ("eCH-0058", 5)),
])
def test_the_format_and_its_component_versions_are_detected(registry, path, adapter, standard, version, component):
    """The root namespace selects the adapter and version; the other eCH namespaces are listed with versions."""
    found, detected = registry.detect(load(path))
    assert (found.name, detected.adapter, detected.standard, detected.version) == (adapter, adapter, standard, version)
    assert component in detected.components


def test_a_converted_v3_document_is_detected_as_v3(registry):
    """An eCH-0020 3.0 document is detected by the v3 adapter with its 3.0 component versions."""
    v3 = registry.get("ech0020-v2").convert(load(V2), "ech0020-v3")
    found, detected = registry.detect(v3)
    assert found.name == "ech0020-v3" and ("eCH-0044", 4) in detected.components


def test_v1_validation_is_refused_without_the_well_formed_only_option(registry, catalog):
    """eCH-0020 v1 has no public XSD, so validate refuses it unless well_formed_only is asked for."""
    adapter = registry.get("ech0020-v1")
    with pytest.raises(ValidationRefused):
        adapter.validate(load(V1), catalog)
    result = adapter.validate(load(V1), catalog, well_formed_only=True)
    assert result.well_formed_only is True and "well-formedness only" in result.info


@pytest.mark.parametrize("path, name", [(V2, "ech0020-v2"), (E99, "ech-generic"), (E45, "ech-generic")])
def test_real_documents_validate_against_the_official_xsd(registry, catalog, path, name):
    """Real samples validate against their official XSD and the result says a schema was applied."""
    result = registry.get(name).validate(load(path), catalog, well_formed_only=True)
    assert result.well_formed_only is False


def test_an_invalid_document_fails_validation_without_quoting_values(registry, catalog):
    """A schema violation raises SchemaError (200) whose message quotes no element value."""
    tree = load(V2)
    vn = tree.getroot().find(".//{http://www.ech.ch/xmlns/eCH-0044/1}vn")
    vn.text = "756-not-a-number"
    with pytest.raises(SchemaError) as caught:
        registry.get("ech0020-v2").validate(tree, catalog)
    assert caught.value.status == StatusCode.INVALID_ENVELOPE and "756-not" not in caught.value.info


@pytest.mark.parametrize("source, path, target", [
    ("ech0020-v3", None, "ech0020-v2"), ("ech0020-v1", V1, "ech0020-v3"), ("ech-generic", E99, "ech0020-v3"),
    ("ech0020-v2", V2, "ech0020-v9"),
])
def test_a_conversion_without_mapping_is_refused_clearly(registry, source, path, target):
    """Converting to a format without a defined mapping raises ConversionUnavailable naming both formats."""
    tree = registry.get("ech0020-v2").convert(load(V2), "ech0020-v3") if path is None else load(path)
    with pytest.raises(ConversionUnavailable) as caught:
        registry.get(source).convert(tree, target)
    assert source in caught.value.info and target in caught.value.info


def test_conversion_to_the_own_format_is_a_copy(registry):
    """Converting a document to its own adapter returns an equal but independent tree."""
    tree = load(E99)
    copy = registry.get("ech-generic").convert(tree, "ech-generic")
    assert etree.tostring(copy) == etree.tostring(tree) and copy.getroot() is not tree.getroot()


def test_an_unknown_adapter_name_fails_with_the_known_names(registry):
    """Looking up an adapter name that is not registered raises UnknownAdapter listing the known ones."""
    with pytest.raises(UnknownAdapter, match="ech0020-v2"):
        registry.get("ech0020-v4")
    with pytest.raises(UnknownAdapter):
        registry.select(["ech0020-v3", "typo"])


def test_a_participant_only_uses_its_configured_adapters(registry):
    """A registry narrowed to a participant's adapters does not recognise other formats."""
    narrowed = registry.select(["ech0020-v3"])
    assert narrowed.names == ("ech0020-v3",)
    with pytest.raises(UnknownFormat, match="eCH-0020/2"):
        narrowed.detect(load(V2))


def test_a_non_ech_document_is_unknown(registry):
    """A document outside the eCH namespaces is recognised by no adapter."""
    with pytest.raises(UnknownFormat):
        registry.detect(parse_xml(b"<invoice xmlns='urn:example'/>"))


def test_an_adapter_name_is_registered_once(catalog):
    """Registering two adapters under one name is a configuration error."""
    adapter = default_registry(catalog).get("ech-generic")
    with pytest.raises(ValueError):
        AdapterRegistry([adapter, adapter])
