"""Shared helpers: paths to the real eCH files, the demo policies, and policy-file writers."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO / ".." / "shared" / "ech"
XSD = SHARED / "xsd"
SAMPLES = SHARED / "samples"
OPENECH = SAMPLES / "openech-ech0020-v2.2"
MOVE_IN = OPENECH / "movein-personsecondaryresidence" / "personSecondaryResidence.xml"
DEMO = REPO / "policies" / "demo"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

HEADER = """
[participants]
"1-1061-1" = "Stadt Luzern"
"1-1059-1" = "Kriens"
"1-1024-1" = "Emmen"
"2-LU-1" = "Registerstelle"
"3-CH-1" = "BFS"

[groups]
gemeinden-lu = ["1-1061-1", "1-1059-1", "1-1024-1"]

[namespaces]
e20 = "http://www.ech.ch/xmlns/eCH-0020/2"
e11 = "http://www.ech.ch/xmlns/eCH-0011/4"
"""

PERMIT_BASIS = 'purpose = "test purpose"\nlegal_basis = "test law"\nlegal_reference = "SRL 25, Art. 8"\n'


def permit(rule_id: str, body: str) -> str:
    """A [[rule]] permit table with purpose and legal basis filled in."""
    return f'[[rule]]\nid = "{rule_id}"\neffect = "permit"\n{PERMIT_BASIS}{textwrap.dedent(body)}\n'


def forbid(rule_id: str, body: str) -> str:
    return f'[[rule]]\nid = "{rule_id}"\neffect = "forbid"\n{textwrap.dedent(body)}\n'


@pytest.fixture
def write_policy(tmp_path):
    """Write TOML text to a file in a fresh folder and return the file path."""
    counter = iter(range(1000))

    def write(text: str, name: str | None = None, header: bool = True) -> Path:
        path = tmp_path / (name or f"policy{next(counter)}.toml")
        path.write_text((HEADER if header else "") + text, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def catalog():
    from gateway.schemas import SchemaCatalog

    return SchemaCatalog(XSD)
