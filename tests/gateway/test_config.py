"""Node configuration: a bad file fails at start naming file, key and value."""

from __future__ import annotations

import re

import pytest

from gateway.config import ConfigError, PayloadAcceptance, load_config


def mutate(federation, node_id, old, new):
    path = federation.config_path(node_id)
    text = path.read_text()
    assert re.search(old, text), old
    path.write_text(re.sub(old, new, text, count=1))
    return path


def test_the_generated_configuration_loads_into_frozen_objects(federation):
    """A development federation's node file parses into frozen dataclasses."""
    config = load_config(federation.config_path("node-luzern"))
    assert config.node_id == "node-luzern"
    assert [str(p.id) for p in config.participants] == ["1-1061-1"]
    assert config.route_for(__import__("gateway.ids").ids.ParticipantId("2-LU-1")).via == "node-kanton"
    assert config.routes[0].payload is PayloadAcceptance.SCHEMA_VALID
    with pytest.raises(AttributeError):
        config.node_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (r'id = "1-1061-1"', 'id = "Luzern"', r"participants\[0\]\.id = 'Luzern'"),
        (r'via = "node-kanton"', 'via = "node-nowhere"', r"routes\[\d\]\.via = 'node-nowhere'"),
        (r'payload = "schema-valid"', 'payload = "maybe"', r"routes\[\d\]\.payload = 'maybe'"),
        (r"port = (\d+) \}\napi", r"port = 99999 }\napi", r"node\.listen\.port = 99999"),
        (r'url = "https://', 'url = "http://', r"peers\[0\]\.url = 'http://"),
        (r'signing_key = "[^"]+"', 'signing_key = "missing.pem"', r"participants\[0\]\.signing_key = 'missing.pem': file not found"),
        (r'token_sha256 = "[0-9a-f]+"', 'token_sha256 = "secret"', r"local_systems\[0\]\.token_sha256 = 'secret'"),
        (r'role = "admin"', 'role = "root"', r"operators\[0\]\.role = 'root'"),
        (r'recipient = "2-LU-1"', 'recipient = "@nogroup"', r"routes\[\d\]\.recipient = '@nogroup': no such group"),
        (r'audit_log = ', 'audit_retention_days = 30\naudit_log = ', r"node\.audit_retention_days = 30: .*at least one year"),
        (r'folder|encryption_certificate = "[^"]+"\n', '\\g<0>adapters = "ech0020-v3"\n', r"participants\[0\]\.adapters = 'ech0020-v3'"),
        (r"trust_anchors = \[", 'ocsp = "sometimes"\ntrust_anchors = [', r"tls\.ocsp = 'sometimes': expected off, prefer or require"),
        (r"trust_anchors = \[", 'ocsp_responder = "ldap://ocsp.example"\ntrust_anchors = [', r"tls\.ocsp_responder = 'ldap://ocsp\.example'"),
        (r"\Z", "\n[limits]\nsegment_size = 4194304\n", r"limits\.segment_size = 4194304: must be between 1024 and 1048576"),
        (r'audit_log = ', 'workers = 0\naudit_log = ', r"node\.workers = 0: must be positive"),
        (r'audit_log = ', 'workers = 65\naudit_log = ', r"node\.workers = 65: at most 64"),
        (r"port = (\d+) \}\napi", 'port = 0 }\nworkers = 2\napi', r"node\.workers = 2: .*fixed listen\.port"),
    ],
)
def test_a_bad_value_is_named_with_file_key_and_value(federation, old, new, expected):
    """Each bad value fails loading with a message naming the file, the key path and the value."""
    path = mutate(federation, "node-luzern", old, new)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value)
    assert re.search(expected, str(error.value)), str(error.value)


def test_workers_default_to_one_process(federation):
    """Without ``[node] workers`` a node runs as one process; a value up to 64 is taken as given."""
    assert load_config(federation.config_path("node-luzern")).workers == 1
    path = mutate(federation, "node-luzern", r"audit_log = ", "workers = 4\naudit_log = ")
    assert load_config(path).workers == 4


def test_invalid_toml_is_reported_with_the_file(federation):
    """A syntax error names the file."""
    path = federation.config_path("node-luzern")
    path.write_text(path.read_text() + "\n[node\n")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


def test_an_unknown_adapter_name_stops_the_node_at_start(federation):
    """A participant configured with an adapter that is not registered: the node refuses to start, naming it."""
    from gateway.node import Node

    path = mutate(federation, "node-luzern", r'encryption_certificate = "[^"]+"\n', '\\g<0>adapters = ["ech0020-v9"]\n')
    with pytest.raises(ConfigError, match=r"1-1061-1.*ech0020-v9"):
        Node(load_config(path))
