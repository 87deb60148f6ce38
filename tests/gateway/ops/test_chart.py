"""The Helm chart: values validate against their schema, helm lints and renders every scenario, the manifests are
valid Kubernetes objects, hardened, and the rendered node.toml starts a real node."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from prometheus_client.parser import text_string_to_metric_families
from types import SimpleNamespace

from gateway.audit.log_pg import PgAuditLog, audit_schema
from gateway.config import load_config
from gateway.directory.cache import DirectoryState
from gateway.federation import NodeSpec, build_federation
from gateway.metrics import NodeMetrics, Stage, StageOutcome
from gateway.node import Node
from gateway.policy.model import PolicyDecision
from gateway.store_pg import PgStore
from tests.gateway.storage.conftest import pg_dsn, pg_schemas  # noqa: F401 - the PostgreSQL test server's fixtures

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
        ({"node": {"id": "node-kanton", "workers": 0}}, "node"),
        ({"node": {"id": "node-kanton", "workers": 65}}, "node"),
        ({"localSystems": [{"name": "x", "tokenSha256": "not-a-hash", "participants": ["1-1061-1"]}]}, "localSystems"),
        ({"peers": [{"id": "node-kanton", "url": "http://plain.example"}]}, "peers"),
        ({"audit": {"retentionDays": 90}}, "audit"),
        ({"unknownKey": True}, ""),
    ],
)
def test_the_values_schema_refuses_unsafe_or_malformed_values(change, path):
    """Writable root filesystem, root user, bad worker counts, a bad token hash, plain http peers, short retention, unknown keys."""
    values = merged({**load_values(SCENARIOS[0]), **change})
    with pytest.raises(jsonschema.ValidationError) as refused:
        jsonschema.validate(values, SCHEMA)
    assert path in "/".join(str(p) for p in refused.value.absolute_path) or not path


POSTGRESQL = CHART / "ci" / "postgresql-replicas-values.yaml"
SQLITE = CHART / "ci" / "sqlite-values.yaml"


def with_store(scenario: Path, **changes) -> dict:
    """A scenario's values with top-level keys replaced (a whole ``store`` or ``persistence``, say)."""
    return {**load_values(scenario), **changes}


PG_STORE = load_values(POSTGRESQL)["store"]


@pytest.mark.parametrize(
    ("values", "path"),
    [
        (with_store(SQLITE, replicaCount=2), "store/backend"),
        (with_store(POSTGRESQL, store={**PG_STORE, "backend": "sqlite"}), "store/backend"),
        (with_store(POSTGRESQL, persistence={"size": "1Gi"}), "persistence"),
        (with_store(POSTGRESQL, persistence={"existingSharedClaim": ""}), "persistence/existingSharedClaim"),
        (with_store(POSTGRESQL, participants=[{"id": "2-LU-1", "existingSecret": "k", "folder": True}]), "participants/0/folder"),
        (with_store(SQLITE, persistence={"existingSharedClaim": "blobs"}), "store"),
        (with_store(POSTGRESQL, replicaCount=1, store={**PG_STORE, "postgresql": {**PG_STORE["postgresql"], "dsn": ""}}),
         "store/postgresql/dsn"),
        (with_store(POSTGRESQL, store={"backend": "postgresql", "postgresql": {"existingSecret": "pg"}}), "store/postgresql"),
        (with_store(POSTGRESQL, store={"backend": "postgresql", "postgresql": {"dsn": "host=pg user=d"}}), "store/postgresql"),
        (with_store(POSTGRESQL, store={**PG_STORE, "postgresql": {**PG_STORE["postgresql"], "dsn": "host=pg password=s3cret"}}),
         "store/postgresql/dsn"),
        (with_store(POSTGRESQL, store={**PG_STORE, "postgresql": {**PG_STORE["postgresql"], "dsn": "postgresql://d:s3cret@pg/db"}}),
         "store/postgresql/dsn"),
        (with_store(POSTGRESQL, store={**PG_STORE, "postgresql": {**PG_STORE["postgresql"], "schema": "pg_catalog"}}),
         "store/postgresql/schema"),
    ],
    ids=["2-sqlite-replicas", "3-sqlite-replicas", "replicas-without-shared-claim", "replicas-with-empty-shared-claim",
         "replicas-with-folder", "shared-claim-with-sqlite", "postgresql-without-dsn", "postgresql-without-dsn-key",
         "postgresql-without-password-secret", "dsn-with-password", "dsn-uri-with-password", "reserved-schema"],
)  # fmt: skip
def test_the_values_schema_refuses_replicas_or_a_database_the_node_cannot_use_safely(values, path):
    """Replicas only on PostgreSQL with a shared blob claim and no folder interface; PostgreSQL only with a dsn (no password in it) and a password Secret."""
    with pytest.raises(jsonschema.ValidationError) as refused:
        jsonschema.validate(merged(values), SCHEMA)
    assert "/".join(str(p) for p in refused.value.absolute_path).startswith(path), refused.value
    with pytest.raises(helm.HelmError, match="schema"):
        render(values)


def test_one_postgresql_node_without_replicas_or_a_shared_claim_is_accepted():
    """replicaCount 1 on PostgreSQL needs no shared claim: the per-pod volume holds the blobs."""
    values = with_store(POSTGRESQL, replicaCount=1, persistence={"size": "5Gi"})
    jsonschema.validate(merged(values), SCHEMA)
    pod = one(render(values), "StatefulSet")["spec"]["template"]["spec"]
    assert "shared-store" not in {v["name"] for v in pod["volumes"]}


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


def test_node_workers_reach_the_node_toml():
    """node.workers becomes [node] workers: one process by default, two in the hardened scenario."""
    plain = tomllib.loads(node_toml(render(load_values(CHART / "ci" / "sqlite-values.yaml"))))
    hardened = tomllib.loads(node_toml(render(load_values(CHART / "ci" / "hardened-values.yaml"))))
    assert (plain["node"]["workers"], hardened["node"]["workers"]) == (1, 2)


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


def mounted_node_toml(
    tmp_path: Path, scenario: Path, node_id: str, hosted: str, known: tuple[str, ...] = ()
) -> tuple[Path, Path, str]:
    """The scenario's rendered node.toml with its mounts (/etc/drehscheibe, /var/lib/drehscheibe) mapped onto a development PKI.

    Returns the file, the data directory standing for the pod's volume, and the rendered text as Kubernetes would mount it.
    """
    build_federation(tmp_path / "pki", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])], schemas=XSD)
    pki = tmp_path / "pki" / "pki"
    etc, data = tmp_path / "etc", tmp_path / "data"
    files = {
        "tls/tls.crt": pki / "nodes" / f"{node_id}.pem", "tls/tls.key": pki / "nodes" / f"{node_id}-key.pem",
        "tls/ca.crt": pki / "ca.pem", "audit/audit-secret": tmp_path / "pki" / "audit-secret",
        **{f"known/{other}.pem": pki / "participants" / other / "encryption.pem" for other in known},
        **{f"participants/{hosted}/{mine}": pki / "participants" / hosted / theirs for mine, theirs in
           (("signing.key", "signing-key.pem"), ("signing.crt", "signing.pem"), ("encryption.key", "encryption-key.pem"),
            ("encryption.crt", "encryption.pem"))},
    }  # fmt: skip
    for mounted, source in files.items():
        (etc / mounted).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, etc / mounted)
    rendered = node_toml(render(load_values(scenario)))
    text = rendered.replace("/etc/drehscheibe", str(etc)).replace("/var/lib/drehscheibe", str(data))
    text = text.replace("/usr/share/drehscheibe/ech/xsd", str(XSD))
    (etc / "node.toml").write_text(text)
    return etc / "node.toml", data, rendered


async def test_the_rendered_node_toml_starts_a_real_node(tmp_path):
    """Mapped onto a development PKI, the sqlite scenario's node.toml loads and opens a node with its keys, store and audit log."""
    path, data, text = mounted_node_toml(tmp_path, SQLITE, "node-luzern", LUZERN, known=(KANTON,))
    config = load_config(path)
    assert config.node_id == "node-luzern" and config.delivery.shutdown_seconds == 10.0
    assert config.audit_log == data / "audit" / "audit.db" and config.store == data / "store"
    assert config.store_backend.backend == "sqlite"
    assert [str(r.recipient) for r in config.routes] == [LUZERN, KANTON]
    assert tomllib.loads(text)["node"]["ops"] == {"host": "0.0.0.0", "port": 9100}
    node = Node(config)
    try:
        assert list(map(str, node.hosted)) == [LUZERN] and node.audit.size == 0
        assert (data / "audit" / "audit.db").is_file()
    finally:
        await node.close()


def test_the_postgresql_scenario_node_toml_selects_postgresql_with_its_dsn(tmp_path):
    """The replicas scenario's node.toml loads with backend postgresql, the values' dsn, schema and lease, and no audit_log file."""
    path, data, text = mounted_node_toml(tmp_path, POSTGRESQL, "node-kanton", KANTON)
    pg = load_values(POSTGRESQL)["store"]["postgresql"]
    config = load_config(path)
    settings = config.store_backend
    dsn = pg["dsn"].replace("/etc/drehscheibe", str(path.parent))  # sslrootcert, mapped like every mount
    assert (settings.backend, settings.dsn, settings.schema) == ("postgresql", dsn, pg["schema"])
    assert (settings.lease_seconds, settings.orphan_grace_seconds, settings.replica) == (float(pg["leaseSeconds"]), 3600.0, None)
    assert config.store == data / "store" and [str(p.id) for p in config.participants] == [KANTON]
    assert all(p.folder is None for p in config.participants)
    # The audit log lives in <schema>_audit of the database: node.toml names no audit file that replicas would not share.
    assert "audit_log" not in tomllib.loads(text)["node"]


def test_the_store_path_of_node_toml_is_the_shared_claim_in_every_replica():
    """With replicas, the ReadWriteMany claim is mounted exactly at [node] store, so blob paths agree across pods; SQLite keeps its per-pod volume."""
    objects = render(load_values(POSTGRESQL))
    store = tomllib.loads(node_toml(objects))["node"]["store"]
    statefulset = one(objects, "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert statefulset["spec"]["replicas"] == 3
    assert claims == {"shared-store": load_values(POSTGRESQL)["persistence"]["existingSharedClaim"]}
    assert mounts["shared-store"] == store
    sqlite = one(render(load_values(SQLITE)), "StatefulSet")
    sqlite_mounts = {m["name"]: m["mountPath"] for m in sqlite["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert "shared-store" not in sqlite_mounts and [t["metadata"]["name"] for t in sqlite["spec"]["volumeClaimTemplates"]] == ["data"]
    assert tomllib.loads(node_toml(render(load_values(SQLITE))))["node"]["store"].startswith(sqlite_mounts["data"] + "/")


def test_the_database_password_comes_from_its_secret_and_no_configmap_holds_one():
    """PGPASSWORD is a secretKeyRef to store.postgresql.existingSecret; no ConfigMap holds a password; the chart renders no Secret."""
    pg = load_values(POSTGRESQL)["store"]["postgresql"]
    objects = render(load_values(POSTGRESQL))
    (container,) = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    secret = {"secretKeyRef": {"name": pg["existingSecret"], "key": pg["passwordKey"]}}
    assert env["PGPASSWORD"] == {"name": "PGPASSWORD", "valueFrom": secret}
    assert "Secret" not in {o["kind"] for o in objects}
    for configmap in (o for o in objects if o["kind"] == "ConfigMap"):
        for key, content in configmap.get("data", {}).items():
            assert not re.search(r"password\s*=|://[^/@\s]*:[^/@\s]*@", content), (configmap["metadata"]["name"], key)
    sqlite_env = one(render(load_values(SQLITE)), "StatefulSet")["spec"]["template"]["spec"]["containers"][0].get("env", [])
    assert "PGPASSWORD" not in {e["name"] for e in sqlite_env}


def test_a_restricted_egress_lets_the_node_reach_its_database():
    """With egress rules and backend postgresql, the NetworkPolicy adds the database's port and destinations; SQLite scenarios get no such rule."""
    values = load_values(POSTGRESQL)
    policy = one(render(values), "NetworkPolicy")
    database = [rule for rule in policy["spec"]["egress"] if {"port": 5432, "protocol": "TCP"} in rule.get("ports", [])]
    assert database == [{"ports": [{"port": 5432, "protocol": "TCP"}], "to": values["networkPolicy"]["database"]["to"]}]
    hardened = one(render(load_values(CHART / "ci" / "hardened-values.yaml")), "NetworkPolicy")
    assert all({"port": 5432, "protocol": "TCP"} not in rule.get("ports", []) for rule in hardened["spec"]["egress"])


async def test_the_postgresql_scenario_node_toml_starts_a_real_node_on_postgresql(tmp_path, pg_schemas, monkeypatch):
    """With the test server's dsn in [store], the rendered node.toml opens a node whose store and audit log are in PostgreSQL."""
    path, data, text = mounted_node_toml(tmp_path, POSTGRESQL, "node-kanton", KANTON)
    parts = urlsplit(pg_schemas.dsn)
    dsn = f"host={parts.hostname} port={parts.port or 5432} dbname={parts.path.lstrip('/')} user={unquote(parts.username or '')}"
    monkeypatch.setenv("PGPASSWORD", unquote(parts.password or ""))  # as the pod gets it from its Secret
    schema = pg_schemas.new()
    pg_schemas.names.append(audit_schema(schema))
    pg = load_values(POSTGRESQL)["store"]["postgresql"]
    rendered, production = path.read_text(), json.dumps(pg["dsn"].replace("/etc/drehscheibe", str(path.parent)))
    assert rendered.count(production) == 1 and rendered.count(json.dumps(pg["schema"])) == 1
    path.write_text(rendered.replace(production, json.dumps(dsn)).replace(json.dumps(pg["schema"]), json.dumps(schema)))
    node = Node(load_config(path))
    try:
        assert isinstance(node.store, PgStore) and isinstance(node.audit, PgAuditLog)
        assert list(map(str, node.hosted)) == [KANTON] and node.audit.size == 0
        assert not (data / "audit").exists()
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
