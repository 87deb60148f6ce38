"""The policy file schema travels with the package: an installed node (the container image) loads policies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from gateway.policy import fileschema

REPO = Path(__file__).resolve().parents[3]
PUBLISHED = REPO / "schemas" / "policy.schema.json"
# What the Dockerfile's build stage copies into the image before `pip install .` (tests/gateway/ops/test_dockerfile.py).
BUILD_CONTEXT = ("pyproject.toml", "README.md", "gateway", "adapters")


def test_the_packaged_schema_is_the_published_one():
    """The schema the loader reads (package data) is byte for byte the published schemas/policy.schema.json."""
    assert fileschema.SCHEMA_PATH.read_bytes() == PUBLISHED.read_bytes()
    assert Path(str(fileschema.SCHEMA_PATH)).resolve() == (REPO / "gateway" / "policy" / "policy.schema.json").resolve()


def test_a_non_editable_install_loads_a_policy_file(tmp_path: Path):
    """`pip install .` of what the Dockerfile copies gives a package that finds its schema and loads the demo policies."""
    source, target, elsewhere = tmp_path / "source", tmp_path / "site", tmp_path / "run"
    source.mkdir()
    elsewhere.mkdir()
    for name in BUILD_CONTEXT:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--quiet", "--target", str(target), "."],
                   cwd=source, check=True, capture_output=True, timeout=300)  # fmt: skip
    assert (target / "gateway" / "policy" / "policy.schema.json").read_bytes() == PUBLISHED.read_bytes()
    program = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "import gateway\n"
        "from gateway.policy import load_policy_set\n"
        f"policies = load_policy_set([Path({str(REPO / 'policies' / 'demo')!r})])\n"
        "print(json.dumps({'gateway': gateway.__file__, 'rules': len(policies.rules)}))\n"
    )
    # The installed copy comes first on the path; the working directory holds no sources.
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", program], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert Path(answer["gateway"]).is_relative_to(target), answer
    assert answer["rules"] > 0
