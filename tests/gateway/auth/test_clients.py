"""The [oauth2], [[oauth_clients]] and [oidc] sections: parsed once, every bad value named with file, key and value."""

from __future__ import annotations

import tomllib

import pytest

from gateway.auth import AuthConfigError, PrincipalKind, Scope, parse_clients, parse_oauth2, parse_oidc
from gateway.ids import ParticipantId

from .conftest import EMMEN, KRIENS

SOURCE = "/etc/drehscheibe/node-luzern.toml"
HOSTED = {ParticipantId(KRIENS), ParticipantId(EMMEN)}
HASH = "$scrypt$ln=15,r=8,p=1$ThJ5JfMfWtKuATSBNzo5/g$YGeYED/OR5nE3djlFtV/WoqzGDNzmTDB3WbbaR4t0TA"
FINGERPRINT = "AB:" * 31 + "AB"

DOCUMENTED = f'''
[oauth2]
token_lifetime_seconds = 120

[[oauth_clients]]
client_id = "kriens-einwohnerregister"
role = "system"
participants = ["{KRIENS}"]
secret_hash = "{HASH}"

[[oauth_clients]]
client_id = "emmen-einwohnerregister"
role = "system"
participants = ["{EMMEN}"]
scopes = ["messages:read"]
certificate_sha256 = "{FINGERPRINT}"

[[oauth_clients]]
client_id = "betrieb"
role = "admin"
secret_hash = "{HASH}"

[oidc]
issuer = "https://idp.lu.example/realms/verwaltung"
jwks_uri = "https://idp.lu.example/realms/verwaltung/protocol/openid-connect/certs"
audience = "drehscheibe-node-luzern"
role_claim = "realm_access.roles"
name_claim = "preferred_username"

[[oidc.roles]]
value = "drehscheibe-auditor"
role = "auditor"

[[oidc.roles]]
value = "kriens-einwohnerkontrolle"
role = "system"
participants = ["{KRIENS}"]
'''


def test_the_documented_example_parses():
    """The TOML of docs/authentication.md loads into clients, token settings and an OIDC provider."""
    data = tomllib.loads(DOCUMENTED)
    clients = parse_clients(data["oauth_clients"], source=SOURCE, hosted=HOSTED)
    kriens, emmen, admin = clients
    assert (kriens.kind, kriens.scopes, kriens.participants) == (
        PrincipalKind.SYSTEM, {Scope.MESSAGES_SEND, Scope.MESSAGES_READ}, {ParticipantId(KRIENS)})
    assert str(kriens.secret_hash) == HASH
    assert (emmen.scopes, emmen.secret_hash, emmen.certificate_sha256) == ({Scope.MESSAGES_READ}, None, "ab" * 32)
    assert (admin.kind, admin.scopes, admin.participants) == (PrincipalKind.ADMIN, {Scope.ADMIN}, frozenset())
    settings = parse_oauth2(data["oauth2"], source=SOURCE, node_id="node-luzern")
    assert (settings.lifetime_seconds, settings.audience) == (120, "urn:drehscheibe:node:node-luzern:local-api")
    oidc = parse_oidc(data["oidc"], source=SOURCE, hosted=HOSTED)
    assert oidc.role_claim == "realm_access.roles" and oidc.algorithms == ("RS256", "ES256")
    assert [(r.value, r.kind, r.participants) for r in oidc.roles] == [
        ("drehscheibe-auditor", PrincipalKind.AUDITOR, frozenset()),
        ("kriens-einwohnerkontrolle", PrincipalKind.SYSTEM, {ParticipantId(KRIENS)})]


def test_absent_sections_mean_defaults_and_no_provider():
    """No [oauth2]: 300-second tokens for the node's default audience; no [oidc]: None; no clients: ()."""
    assert parse_oauth2(None, source=SOURCE, node_id="n1").lifetime_seconds == 300
    assert parse_oidc(None, source=SOURCE) is None
    assert parse_clients(None, source=SOURCE) == ()


def client(**fields) -> dict:
    return {"client_id": "kriens", "role": "system", "participants": [KRIENS], "secret_hash": HASH} | fields


@pytest.mark.parametrize("table, names", [
    (client(role="superuser"), ["oauth_clients[0].role = 'superuser'", "system, admin, auditor"]),
    (client(client_id="kriens register"), ["client_id = 'kriens register'"]),
    (client(participants=[]), ["participants = []", "non-empty"]),
    (client(participants=["1-1061-1"]), ["participants = '1-1061-1'", "not a participant hosted"]),
    (client(participants=["Kriens"]), ["participants = 'Kriens'", "not a sedex participant ID"]),
    (client(role="admin"), ["participants = ['1-1059-1']", "only systems"]),
    (client(scopes=["admin"]), ["scopes = ['admin']", "may hold only messages:read, messages:send"]),
    (client(scopes=["messages:delete"]), ["scopes = ['messages:delete']", "unknown scope"]),
    (client(secret_hash="5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"),
     ["secret_hash = '…'", "expected $scrypt$"]),
    (client(secret_hash="$scrypt$ln=10,r=8,p=1$ThJ5JfMfWtKuATSBNzo5/g$YGeYED/OR5nE3djlFtV/WoqzGDNzmTDB3WbbaR4t0TA"),
     ["secret_hash", "outside 14..20"]),
    ({k: v for k, v in client().items() if k != "secret_hash"}, ["secret_hash = None", "missing"]),
    (client(certificate_sha256="abc"), ["certificate_sha256 = 'abc'", "64 hex digits"]),
    (client(role="admin", participants=None, certificate_sha256="ab" * 32), ["certificate_sha256", "only systems"]),
    (client(secret_hsah=HASH), ["secret_hsah", "unknown key"]),
], ids=["role", "client-id", "no-participants", "not-hosted", "bad-participant", "admin-with-participants",
        "scope-beyond-role", "unknown-scope", "plain-sha256", "weak-scrypt", "no-credential", "bad-fingerprint",
        "admin-certificate", "typo"])  # fmt: skip
def test_a_bad_client_entry_names_file_key_and_value(table, names):
    """Every refusal quotes the file, the key path and the value (a secret hash is never echoed)."""
    table = {k: v for k, v in table.items() if v is not None}
    with pytest.raises(AuthConfigError) as refused:
        parse_clients([table], source=SOURCE, hosted=HOSTED)
    message = str(refused.value)
    assert message.startswith(f"{SOURCE}: oauth_clients[0].")
    for name in names:
        assert name in message
    assert "YGeYED" not in message


def test_two_clients_may_not_share_an_id_or_a_certificate():
    """Duplicate client_id and duplicate certificate pins are refused."""
    with pytest.raises(AuthConfigError, match=r"oauth_clients\[1\]\.client_id = 'kriens': defined twice"):
        parse_clients([client(), client()], source=SOURCE)
    pinned = {"certificate_sha256": "ab" * 32}
    with pytest.raises(AuthConfigError, match="pinned by two clients"):
        parse_clients([client(**pinned), client(client_id="emmen", **pinned)], source=SOURCE)


@pytest.mark.parametrize("table, names", [
    ({"token_lifetime_seconds": 86400}, ["oauth2.token_lifetime_seconds = 86400", "at most 3600"]),
    ({"token_lifetime_seconds": 0}, ["oauth2.token_lifetime_seconds = 0", "positive"]),
    ({"token_lifetime_seconds": True}, ["oauth2.token_lifetime_seconds = True", "expected int"]),
    ({"audiences": "x"}, ["oauth2.audiences", "unknown key"]),
])  # fmt: skip
def test_bad_token_settings_are_named(table, names):
    with pytest.raises(AuthConfigError) as refused:
        parse_oauth2(table, source=SOURCE, node_id="n1")
    for name in names:
        assert name in str(refused.value)


def oidc(**fields) -> dict:
    return {"issuer": "https://idp.example/", "jwks_uri": "https://idp.example/certs", "audience": "node",
            "roles": [{"value": "admins", "role": "admin"}]} | fields  # fmt: skip


@pytest.mark.parametrize("table, names", [
    (oidc(issuer="http://idp.example/"), ["oidc.issuer = 'http://idp.example/'", "https://"]),
    (oidc(jwks_uri="file:///etc/jwks.json"), ["oidc.jwks_uri = 'file:///etc/jwks.json'", "https://"]),
    (oidc(algorithms=["HS256"]), ["oidc.algorithms = ['HS256']"]),
    (oidc(algorithms=["none"]), ["oidc.algorithms = ['none']"]),
    (oidc(roles=[]), ["oidc.roles = []", "at least one"]),
    (oidc(roles=[{"value": "x", "role": "system"}]), ["oidc.roles[0].participants = None", "non-empty"]),
    (oidc(roles=[{"value": "x", "role": "admin"}, {"value": "x", "role": "auditor"}]), ["oidc.roles[1].value = 'x'", "twice"]),
    (oidc(ca_file="no-such-ca.pem"), ["oidc.ca_file = 'no-such-ca.pem'", "file not found"]),
    (oidc(leeway_seconds=3600), ["oidc.leeway_seconds = 3600", "0..300"]),
    ({k: v for k, v in oidc().items() if k != "audience"}, ["oidc.audience = None", "missing"]),
], ids=["http-issuer", "file-jwks", "hs256", "none", "no-roles", "system-without-participants", "duplicate-role",
        "missing-ca", "huge-leeway", "no-audience"])  # fmt: skip
def test_a_bad_oidc_section_names_file_key_and_value(table, names):
    with pytest.raises(AuthConfigError) as refused:
        parse_oidc(table, source=SOURCE)
    for name in names:
        assert name in str(refused.value)


def console(tmp_path, **fields) -> dict:
    """An [oidc] table with an [oidc.console] whose secret is in a file next to the node file."""
    (tmp_path / "console-secret").write_text("s3cret\n", encoding="utf-8")
    table = {"client_id": "drehscheibe-console", "client_secret_file": "console-secret",
             "redirect_uri": "https://node-luzern.lu.example:8443/console/oidc/callback"} | fields  # fmt: skip
    return oidc(console={k: v for k, v in table.items() if v is not None})


def test_the_console_login_reads_its_secret_from_a_file_or_the_environment(tmp_path, monkeypatch):
    """client_secret_file is read relative to the node file (trailing newline dropped); client_secret_env from the environment."""
    source = tmp_path / "node.toml"
    settings = parse_oidc(console(tmp_path, scopes=["openid", "profile"], display_name="LU-IAM"), source=source).console
    assert (settings.client_id, settings.client_secret, settings.scopes, settings.display_name) == (
        "drehscheibe-console", "s3cret", ("openid", "profile"), "LU-IAM")
    assert "s3cret" not in repr(settings)
    monkeypatch.setenv("DREHSCHEIBE_CONSOLE_SECRET", "from-env")
    table = console(tmp_path, client_secret_file=None, client_secret_env="DREHSCHEIBE_CONSOLE_SECRET")
    assert parse_oidc(table, source=source).console.client_secret == "from-env"
    assert parse_oidc(oidc(), source=source).console is None


@pytest.mark.parametrize("fields, names", [
    ({"client_secret": "s3cret"}, ["oidc.console.client_secret = '…'", "never in the node file"]),
    ({"client_secret_file": None}, ["oidc.console.client_secret_file = None", "exactly one"]),
    ({"client_secret_env": "X"}, ["oidc.console.client_secret_file = None", "exactly one"]),
    ({"client_secret_file": "missing-secret"}, ["oidc.console.client_secret_file = 'missing-secret'", "cannot be read"]),
    ({"client_secret_file": None, "client_secret_env": "DREHSCHEIBE_UNSET_VARIABLE"},
     ["oidc.console.client_secret_env = 'DREHSCHEIBE_UNSET_VARIABLE'", "not set"]),
    ({"redirect_uri": "http://node/console/oidc/callback"}, ["oidc.console.redirect_uri = 'http://node/console/oidc/callback'", "https://"]),
    ({"redirect_uri": "https://node/elsewhere"}, ["oidc.console.redirect_uri = 'https://node/elsewhere'", "/console/oidc/callback"]),
    ({"scopes": ["profile"]}, ["oidc.console.scopes = ['profile']", "openid"]),
    ({"client_id": None}, ["oidc.console.client_id = None", "missing"]),
    ({"client_ID": "typo"}, ["oidc.console.client_ID", "unknown key"]),
    ({"client_id": "node"}, ["oidc.console.client_id = 'node'", "must differ from oidc.audience"]),
], ids=["secret-in-file", "no-secret", "two-secrets", "missing-file", "unset-env", "http-redirect", "other-path",
        "no-openid", "no-client-id", "unknown-key", "client-id-is-the-api-audience"])  # fmt: skip
def test_a_bad_console_login_section_names_file_key_and_value(tmp_path, fields, names):
    """Every problem of [oidc.console] is refused at load with the file, the key and the value (never the secret)."""
    with pytest.raises(AuthConfigError) as refused:
        parse_oidc(console(tmp_path, **fields), source=tmp_path / "node.toml")
    assert str(tmp_path / "node.toml") in str(refused.value)
    for name in names:
        assert name in str(refused.value)
    assert "s3cret" not in str(refused.value)
