"""The container image definition, checked by reading it (no Docker engine on this machine builds it)."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
IGNORED = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.MULTILINE)
            if not m.group(0).lstrip().startswith("#")]  # fmt: skip


def ignored(path: str) -> bool:
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) or path.startswith(p + "/") for p in IGNORED)


def test_the_image_is_python_3_11_slim_in_both_stages():
    """Build and runtime stages start from python:3.11-slim."""
    assert [v.split()[0] for k, v in instructions() if k == "FROM"] == ["python:3.11-slim", "python:3.11-slim"]


def test_the_node_runs_as_an_unprivileged_numeric_user():
    """The last USER is a numeric non-root UID:GID (what the chart's runAsUser and fsGroup expect)."""
    user = [v for k, v in instructions() if k == "USER"][-1]
    uid, gid = user.split(":")
    assert uid == gid == "10001"


def test_the_entrypoint_runs_the_node_with_the_mounted_configuration():
    """ENTRYPOINT is exactly `drehscheibe node run --config /etc/drehscheibe/node.toml`, in exec form."""
    (entrypoint,) = [v for k, v in instructions() if k == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["drehscheibe", "node", "run", "--config", "/etc/drehscheibe/node.toml"]


def test_what_the_image_copies_exists_and_keys_never_go_in():
    """Every COPY from the build context exists and is not ignored; keys, certificates and the venv are ignored."""
    sources = []
    for kind, value in instructions():
        if kind == "COPY" and "--from=" not in value:
            sources += value.split()[:-1]
    assert set(sources) == {"pyproject.toml", "README.md", "gateway", "adapters"}
    for source in sources:
        assert (ROOT / source).exists() and not ignored(source), source
    for secret in ("certs/dev/ca.pem", "gateway/x.key", ".venv/bin/python", "tests/conftest.py", "audit-secret"):
        assert ignored(secret), secret


def test_the_schemas_come_from_the_named_ech_build_context():
    """The XSDs live outside the repository and are copied from the `ech` build context to the chart's schemas path."""
    assert "COPY --from=ech xsd /usr/share/drehscheibe/ech/xsd" in DOCKERFILE
    values = (ROOT / "helm" / "drehscheibe" / "values.yaml").read_text()
    assert "schemas: /usr/share/drehscheibe/ech/xsd" in values
