"""Shared fixtures: real eCH files from ../shared/ech and development federations on loopback."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from gateway.federation import NodeSpec, build_federation

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared").resolve()
ECH = SHARED / "ech"
XSD = ECH / "xsd"
SAMPLES = ECH / "samples"

LUZERN = "1-1061-1"
KANTON = "2-LU-1"


@pytest.fixture(scope="session")
def catalog():
    from gateway.schemas import SchemaCatalog

    return SchemaCatalog(XSD)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime.now(timezone.utc).replace(microsecond=0))


@pytest.fixture
def federation(tmp_path):
    """Two nodes: Stadt Luzern on node-luzern, the cantonal register office on node-kanton."""
    return build_federation(
        tmp_path / "federation",
        [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])],
        schemas=XSD,
        delivery_toml="retry_base_seconds = 0.2\nretry_max_seconds = 2.0\npoll_seconds = 0.05",
    )
