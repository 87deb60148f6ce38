"""Shared fixtures: the official XSDs and real samples in ../shared/ech (never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.schemas import SchemaCatalog

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "ech"
XSD = SHARED / "xsd"
SAMPLES = SHARED / "samples"


@pytest.fixture(scope="session")
def catalog() -> SchemaCatalog:
    return SchemaCatalog(XSD)
