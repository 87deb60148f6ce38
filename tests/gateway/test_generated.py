"""The demo's fallback message is a schema-valid eCH-0020 3.0 document."""

from gateway.generated import generated_ech0020_v3_bytes
from gateway.safexml import parse_xml


def test_the_generated_message_validates_against_ech0020_3_0(catalog):
    """Without samples, the demo still sends a real, schema-valid eCH-0020 v3 message."""
    assert catalog.validate(parse_xml(generated_ech0020_v3_bytes())) == "http://www.ech.ch/xmlns/eCH-0020/3"


def test_the_demo_falls_back_to_it_when_samples_are_absent(tmp_path):
    """An absent samples folder: the scenario sends the generated message (REST, folder, and a denial)."""
    from gateway.demo import scenario

    steps = scenario(tmp_path / "nowhere", tmp_path)
    assert {s.sample.namespace for s in steps} == {"http://www.ech.ch/xmlns/eCH-0020/3"}
    assert any(s.via_folder for s in steps) and any(s.refused for s in steps)
