"""The Helm chart: values validate against their schema, helm lints and renders every scenario, the manifests are
valid Kubernetes objects, hardened, and the rendered node.toml starts a real node."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from prometheus_client.parser import text_string_to_metric_families
from types import SimpleNamespace

from gateway.config import load_config
from gateway.directory.cache import DirectoryState
from gateway.federation import NodeSpec, build_federation
from gateway.metrics import NodeMetrics, Stage, StageOutcome
from gateway.node import Node
from gateway.policy.model import PolicyDecision

from ...conftest import KANTON, LUZERN, XSD
from ..nodes import running

CHART = Path(__file__).resolve().parents[3] / "helm" / "drehscheibe"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
KUBERNETES = "1.30.0"  # oldest version the chart's kubeVersion (>=1.25) is tested against here
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def merged(values: dict) -> dict:
    """The chart's defaults with ``values`` on top, as an install computes them."""
    return helm.Chart.load(str(CHART)).merge_values(values)


def render(values: dict) -> list[dict]:
    """Every Kubernetes object the chart renders for ``values``."""
    manifests = helm.Chart.load(str(CHART)).render(values, name="lu", namespace="drehscheibe", is_install=True)
    objects = []
    for name, text in sorted(manifests.items()):
        if name.endswith(".txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def one(objects: list[dict], kind: str, suffix: str = "") -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix or o["metadata"]["name"])]
    return found


def node_toml(objects: list[dict]) -> str:
    return next(o for o in objects if o["kind"] == "ConfigMap" and "node.toml" in o.get("data", {}))["data"]["node.toml"]


def test_chart_yaml_and_values_yaml_parse_and_name_the_chart():
    """Chart.yaml is apiVersion v2 named drehscheibe; values.yaml is a mapping with every documented section."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["name"], chart["type"]) == ("v2", "drehscheibe", "application")
    values = load_values(CHART / "values.yaml")
    assert {"node", "tls", "participants", "delivery", "securityContext", "networkPolicy", "serviceMonitor"} <= set(values)


def test_the_values_schema_is_valid_and_accepts_the_defaults_and_every_scenario():
    """values.schema.json is a draft-07 schema; values.yaml and each ci/*-values.yaml (merged) satisfy it."""
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert len(SCENARIOS) >= 2
    jsonschema.validate(load_values(CHART / "values.yaml"), SCHEMA)
    for scenario in SCENARIOS:
        jsonschema.validate(merged(load_values(scenario)), SCHEMA)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "securityContext"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "podSecurityContext"),
        ({"replicaCount": 2}, "replicaCount"),
        ({"localSystems": [{"name": "x", "tokenSha256": "not-a-hash", "participants": ["1-1061-1"]}]}, "localSystems"),
        ({"peers": [{"id": "node-kanton", "url": "http://plain.example"}]}, "peers"),
        ({"audit": {"retentionDays": 90}}, "audit"),
        ({"unknownKey": True}, ""),
    ],
)
def test_the_values_schema_refuses_unsafe_or_malformed_values(change, path):
    """Writable root filesystem, root user, several SQLite writers, a bad token hash, plain http peers, short retention, unknown keys."""
    values = merged({**load_values(SCENARIOS[0]), **change})
    with pytest.raises(jsonschema.ValidationError) as refused:
        jsonschema.validate(values, SCHEMA)
    assert path in "/".join(str(p) for p in refused.value.absolute_path) or not path


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_helm_lint_passes_strict_for_every_scenario(scenario):
    """helm lint --strict (Helm's own linter, through its Go SDK) reports no warning and no error."""
    report = helm.lint(str(CHART), load_values(scenario), strict=True, kube_version=f"v{KUBERNETES}")
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_every_rendered_object_is_a_valid_kubernetes_object(scenario):
    """helm template output validates strictly against the Kubernetes OpenAPI schemas (the ServiceMonitor CRD by shape)."""
    objects = render(load_values(scenario))
    kinds = {o["kind"] for o in objects}
    assert {"StatefulSet", "Service", "ConfigMap", "ServiceAccount"} <= kinds
    for manifest in objects:
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            (endpoint,) = manifest["spec"]["endpoints"]
            assert (endpoint["port"], endpoint["path"]) == ("ops", "/metrics")
            continue
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_the_pod_is_hardened_and_outlives_its_shutdown(scenario):
    """Non-root, read-only root FS, no escalation, no capabilities; secrets read-only 0400; grace > shutdown_seconds; probes on /healthz and /readyz."""
    objects = render(load_values(scenario))
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"] and "add" not in context["capabilities"]
    secrets = [v for v in pod["volumes"] if "secret" in v]
    assert len(secrets) >= 2 and all(v["secret"]["defaultMode"] == 0o400 for v in secrets)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert all(mounts[v["name"]].get("readOnly") is True for v in secrets)
    shutdown = tomllib.loads(node_toml(objects))["delivery"]["shutdown_seconds"]
    assert pod["terminationGracePeriodSeconds"] > shutdown
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert "resources" not in container or scenario.name != "sqlite-values.yaml"


def test_optional_features_are_off_by_default_and_on_in_the_hardened_scenario():
    """NetworkPolicy, ServiceMonitor, PodDisruptionBudget and the dashboard render only when enabled."""
    optional = {"NetworkPolicy", "ServiceMonitor", "PodDisruptionBudget"}
    plain = {o["kind"] for o in render(load_values(CHART / "ci" / "sqlite-values.yaml"))}
    hardened = render(load_values(CHART / "ci" / "hardened-values.yaml"))
    assert not optional & plain
    assert optional <= {o["kind"] for o in hardened}
    dashboard = next(o for o in hardened if o["kind"] == "ConfigMap" and "drehscheibe.json" in o["data"])
    assert json.loads(dashboard["data"]["drehscheibe.json"])["uid"] == "drehscheibe-node"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "node.id is required"),
        ({"node": {"id": "node-luzern"}}, "tls.existingSecret is required"),
        ({"node": {"id": "node-luzern"}, "tls": {"existingSecret": "t"}, "terminationGracePeriodSeconds": 10},
         "terminationGracePeriodSeconds (10) must be greater than delivery.shutdownSeconds (10)"),
    ],
)  # fmt: skip
def test_a_render_without_what_a_node_needs_fails_naming_the_value(values, message):
    """No node ID, no TLS secret, or a grace period not longer than the shutdown: the render stops with the reason."""
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


async def test_the_rendered_node_toml_starts_a_real_node(tmp_path):
    """Mapped onto a development PKI, the sqlite scenario's node.toml loads and opens a node with its keys, store and audit log."""
    build_federation(tmp_path / "pki", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])], schemas=XSD)
    pki = tmp_path / "pki" / "pki"
    etc, data = tmp_path / "etc", tmp_path / "data"
    files = {
        "tls/tls.crt": pki / "nodes" / "node-luzern.pem", "tls/tls.key": pki / "nodes" / "node-luzern-key.pem",
        "tls/ca.crt": pki / "ca.pem", "known/2-LU-1.pem": pki / "participants" / KANTON / "encryption.pem",
        "audit/audit-secret": tmp_path / "pki" / "audit-secret",
        **{f"participants/{LUZERN}/{mine}": pki / "participants" / LUZERN / theirs for mine, theirs in
           (("signing.key", "signing-key.pem"), ("signing.crt", "signing.pem"), ("encryption.key", "encryption-key.pem"),
            ("encryption.crt", "encryption.pem"))},
    }  # fmt: skip
    for mounted, source in files.items():
        (etc / mounted).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, etc / mounted)
    text = node_toml(render(load_values(CHART / "ci" / "sqlite-values.yaml")))
    text = text.replace("/etc/drehscheibe", str(etc)).replace("/var/lib/drehscheibe", str(data))
    text = text.replace("/usr/share/drehscheibe/ech/xsd", str(XSD))
    (etc / "node.toml").write_text(text)
    config = load_config(etc / "node.toml")
    assert config.node_id == "node-luzern" and config.delivery.shutdown_seconds == 10.0
    assert config.audit_log == data / "audit" / "audit.db" and config.store == data / "store"
    assert [str(r.recipient) for r in config.routes] == [LUZERN, KANTON]
    assert tomllib.loads(text)["node"]["ops"] == {"host": "0.0.0.0", "port": 9100}
    node = Node(config)
    try:
        assert list(map(str, node.hosted)) == [LUZERN] and node.audit.size == 0
    finally:
        await node.close()


async def test_every_metric_the_dashboard_queries_is_one_the_node_exports(federation, clock):
    """No panel of the Grafana dashboard asks for a metric name that /metrics does not have."""
    dashboard = json.loads((CHART / "dashboards" / "drehscheibe.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queried = {re.sub(r"_(bucket|count|sum)$", "", n) for e in expressions for n in re.findall(r"drehscheibe_[a-z_]+", e)}
    assert len(queried) > 15
    async with running(federation, clock, "node-luzern") as nodes:
        node = nodes["node-luzern"]
        node.audit.checkpoint(clock.now())
        node.directory = SimpleNamespace(status=SimpleNamespace(state=DirectoryState.CURRENT, version=1, expires_at=clock.now(),
                                                                usable_until=clock.now(), last_refresh=clock.now()))  # fmt: skip
        metrics = NodeMetrics(node)
        metrics.observe_stage(Stage.SUBMIT, StageOutcome.PASSED, 0.1)
        metrics.receipt(100)
        metrics.retry("node-kanton", "network")
        metrics.policy_decision("origin", PolicyDecision(True, None, "ok", ("r",), (), (), (), "rev"))
        text = metrics.exposition().decode()
    exported = set()
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        exported |= {re.sub(r"_(bucket|count|sum)$", "", s.name) for s in family.samples}
    assert queried - exported == set()
