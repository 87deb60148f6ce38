"""Configuration of authentication: ``[oauth2]``, ``[[oauth_clients]]`` and ``[oidc]``, parsed once.

The node configuration loader passes the raw TOML tables in; every problem raises
:class:`AuthConfigError` naming the file, the key and the value (secret hashes are never
echoed). Unknown keys are refused too: a misspelt ``secret_hash`` must not silently leave a
client without its secret. See docs/authentication.md for the TOML.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..ids import InvalidIdentifier, ParticipantId
from .errors import AuthConfigError
from .hashing import SecretHash
from .principal import KIND_SCOPES, AuthMethod, Principal, PrincipalKind, Scope

DEFAULT_TOKEN_LIFETIME = 300
MAX_TOKEN_LIFETIME = 3600  # SECURITY: access tokens are not revocable one by one; keep them short
_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
# SECURITY: only asymmetric signatures from the OIDC provider; "none" and HS* can never be configured.
OIDC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})


def default_audience(node_id: str) -> str:
    """The ``aud`` of this node's own access tokens unless ``[oauth2] audience`` says otherwise."""
    return f"urn:drehscheibe:node:{node_id}:local-api"


@dataclass(frozen=True)
class OAuth2Settings:
    """The node's own token endpoint: who it names as audience and how long its tokens live."""

    audience: str
    lifetime_seconds: int = DEFAULT_TOKEN_LIFETIME


@dataclass(frozen=True)
class OAuthClient:
    """One ``[[oauth_clients]]`` entry: a local system, an admin or an auditor.

    ``scopes`` is what the client may ask for (by default everything its kind may hold).
    A system may also, or instead, authenticate with its TLS client certificate, pinned by
    ``certificate_sha256`` (SHA-256 of the DER certificate).
    """

    client_id: str
    kind: PrincipalKind
    scopes: frozenset[Scope]
    participants: frozenset[ParticipantId] = frozenset()
    secret_hash: SecretHash | None = None
    certificate_sha256: str | None = None

    def __post_init__(self) -> None:
        # Building the principal once checks kind, scopes and participants together.
        self.principal(self.scopes, AuthMethod.OAUTH2)
        if self.kind is PrincipalKind.SYSTEM and not self.participants:
            raise ValueError("a system client must be bound to at least one participant")
        if self.secret_hash is None and self.certificate_sha256 is None:
            raise ValueError("a client needs secret_hash or certificate_sha256")
        if self.certificate_sha256 is not None and self.kind is not PrincipalKind.SYSTEM:
            raise ValueError("only systems authenticate with client certificates")

    def principal(self, scopes: Collection[Scope], method: AuthMethod) -> Principal:
        """The principal this client is, holding ``scopes`` as far as its configuration allows."""
        return Principal(self.kind, self.client_id, frozenset(scopes) & self.scopes, method, self.participants)


@dataclass(frozen=True)
class OidcRole:
    """What one value of the provider's role claim makes its bearer on this node."""

    value: str
    kind: PrincipalKind
    scopes: frozenset[Scope]
    participants: frozenset[ParticipantId] = frozenset()

    def principal(self, name: str) -> Principal:
        return Principal(self.kind, name, self.scopes, AuthMethod.OIDC, self.participants)


@dataclass(frozen=True)
class OidcConsoleSettings:
    """Login of people to the web console through the provider (``[oidc.console]``): code flow with PKCE.

    The client secret is read at load from a file or an environment variable, never from the
    node file, and is kept out of ``repr`` (the node digests ``repr`` of its configuration).
    """

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    scopes: tuple[str, ...] = ("openid",)
    display_name: str = "OpenID Connect"  # the provider's name on the login button


@dataclass(frozen=True)
class OidcSettings:
    """An external OpenID Connect provider whose access tokens the node accepts (``[oidc]``)."""

    issuer: str
    jwks_uri: str
    audience: str
    roles: tuple[OidcRole, ...]
    role_claim: str = "roles"  # a claim name, or a dotted path such as realm_access.roles
    name_claim: str = "sub"
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    ca_file: Path | None = None  # trust anchor for the provider's HTTPS; None: the system store
    refresh_seconds: float = 3600.0  # the key set is fetched again after this long
    min_refresh_seconds: float = 60.0  # an unknown kid triggers a fetch at most this often
    max_stale_seconds: float = 86400.0  # while the provider is unreachable, older keys serve this long
    leeway_seconds: int = 60
    timeout_seconds: float = 5.0
    console: OidcConsoleSettings | None = None  # None: the console offers no login through the provider


# -- parsing ---------------------------------------------------------------------------


class _Table:
    """Typed reads from one TOML table; every error names file, key and value."""

    def __init__(self, source: str, data: Any, prefix: str) -> None:
        self.source = source
        self.prefix = prefix
        if not isinstance(data, dict):
            raise AuthConfigError(f"{source}: {prefix.rstrip('.')} = {data!r}: expected a table")
        self.data = data

    def fail(self, key: str, value: Any, why: str) -> AuthConfigError:
        return AuthConfigError(f"{self.source}: {self.prefix}{key} = {value!r}: {why}")

    def only(self, allowed: set[str]) -> None:
        for key in self.data:
            if key not in allowed:
                # The value is not echoed: a misspelt key may hold a secret hash.
                raise self.fail(key, "…", f"unknown key; expected one of {', '.join(sorted(allowed))}")

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.fail(key, None, "missing")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            raise self.fail(key, value, f"expected {kind.__name__}")
        return value

    def positive(self, key: str, kind: type, default: Any) -> Any:
        value = self.get(key, kind, default)
        if value <= 0:
            raise self.fail(key, value, "must be positive")
        return value

    def text(self, key: str, default: Any = ...) -> Any:
        value = self.get(key, str, default)
        if isinstance(value, str) and not value.strip():
            raise self.fail(key, value, "must not be empty")
        return value

    def https(self, key: str) -> str:
        url = self.text(key)
        parsed = urlparse(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise self.fail(key, url, "expected an https:// URL")
        return url

    def kind(self, key: str) -> PrincipalKind:
        raw = self.get(key, str)
        try:
            return PrincipalKind(raw)
        except ValueError:
            raise self.fail(key, raw, f"expected one of {', '.join(k.value for k in PrincipalKind)}") from None

    def scopes(self, key: str, kind: PrincipalKind) -> frozenset[Scope]:
        ceiling = KIND_SCOPES[kind]
        raw = self.get(key, list, None)
        if raw is None:
            return ceiling
        if not raw or not all(isinstance(s, str) for s in raw):
            raise self.fail(key, raw, "expected a non-empty list of scope names")
        try:
            scopes = frozenset(Scope(s) for s in raw)
        except ValueError:
            raise self.fail(key, raw, f"unknown scope; known: {', '.join(s.value for s in Scope)}") from None
        if not scopes <= ceiling:
            why = f"a {kind.value} may hold only {', '.join(sorted(s.value for s in ceiling))}"
            raise self.fail(key, raw, why)
        return scopes

    def participants(self, key: str, kind: PrincipalKind, hosted: Collection[ParticipantId] | None) -> frozenset[ParticipantId]:
        raw = self.get(key, list, None)
        if kind is not PrincipalKind.SYSTEM:
            if raw is not None:
                raise self.fail(key, raw, f"only systems are bound to participants, not a {kind.value}")
            return frozenset()
        if not raw or not all(isinstance(p, str) for p in raw):
            raise self.fail(key, raw, "a system needs a non-empty list of participant IDs")
        parsed = set()
        for item in raw:
            try:
                participant = ParticipantId.parse(item)
            except InvalidIdentifier:
                raise self.fail(key, item, "not a sedex participant ID (T?n-XXX-n)") from None
            if hosted is not None and participant not in hosted:
                raise self.fail(key, item, "not a participant hosted on this node")
            parsed.add(participant)
        return frozenset(parsed)


def _items(source: str, raw: Any, key: str) -> list[_Table]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise AuthConfigError(f"{source}: {key} = {raw!r}: expected an array of tables")
    return [_Table(source, item, f"{key}[{i}].") for i, item in enumerate(raw)]


def parse_oauth2(table: dict | None, *, source: str | Path, node_id: str) -> OAuth2Settings:
    """``[oauth2]`` (optional): ``audience`` and ``token_lifetime_seconds``."""
    reader = _Table(str(source), table or {}, "oauth2.")
    reader.only({"audience", "token_lifetime_seconds"})
    lifetime = reader.positive("token_lifetime_seconds", int, DEFAULT_TOKEN_LIFETIME)
    if lifetime > MAX_TOKEN_LIFETIME:
        raise reader.fail("token_lifetime_seconds", lifetime, f"access tokens live at most {MAX_TOKEN_LIFETIME} seconds")
    return OAuth2Settings(audience=reader.text("audience", default_audience(node_id)), lifetime_seconds=lifetime)


def parse_clients(
    tables: list[dict] | None, *, source: str | Path, hosted: Collection[ParticipantId] | None = None
) -> tuple[OAuthClient, ...]:
    """``[[oauth_clients]]``; with ``hosted``, a system's participants must be hosted on this node."""
    clients: list[OAuthClient] = []
    ids: set[str] = set()
    fingerprints: set[str] = set()
    for reader in _items(str(source), tables, "oauth_clients"):
        reader.only({"client_id", "role", "participants", "scopes", "secret_hash", "certificate_sha256"})
        client_id = reader.get("client_id", str)
        if not _CLIENT_ID.fullmatch(client_id):
            raise reader.fail("client_id", client_id, "expected 1-64 characters of A-Z a-z 0-9 . _ - (starting alphanumeric)")
        if client_id in ids:
            raise reader.fail("client_id", client_id, "defined twice")
        kind = reader.kind("role")
        secret = None
        if "secret_hash" in reader.data:
            raw = reader.get("secret_hash", str)
            try:
                secret = SecretHash.parse(raw)
            except ValueError as error:
                # SECURITY: the stored hash is not echoed, only what is wrong with it.
                raise reader.fail("secret_hash", "…", str(error)) from None
        fingerprint = None
        if "certificate_sha256" in reader.data:
            raw = reader.get("certificate_sha256", str)
            fingerprint = raw.replace(":", "").lower()
            if not _FINGERPRINT.fullmatch(fingerprint):
                raise reader.fail("certificate_sha256", raw, "expected the SHA-256 of the DER certificate, 64 hex digits")
            if kind is not PrincipalKind.SYSTEM:
                raise reader.fail("certificate_sha256", raw, "only systems authenticate with client certificates")
            if fingerprint in fingerprints:
                raise reader.fail("certificate_sha256", raw, "pinned by two clients")
        if secret is None and fingerprint is None:
            raise reader.fail("secret_hash", None, "missing (a client needs secret_hash, certificate_sha256 or both)")
        clients.append(
            OAuthClient(
                client_id=client_id,
                kind=kind,
                scopes=reader.scopes("scopes", kind),
                participants=reader.participants("participants", kind, hosted),
                secret_hash=secret,
                certificate_sha256=fingerprint,
            )
        )
        ids.add(client_id)
        if fingerprint:
            fingerprints.add(fingerprint)
    return tuple(clients)


def parse_oidc(
    table: dict | None, *, source: str | Path, hosted: Collection[ParticipantId] | None = None
) -> OidcSettings | None:
    """``[oidc]`` with its ``[[oidc.roles]]``; None when the section is absent."""
    if table is None:
        return None
    reader = _Table(str(source), table, "oidc.")
    reader.only({
        "issuer", "jwks_uri", "audience", "roles", "role_claim", "name_claim", "algorithms", "ca_file",
        "refresh_seconds", "min_refresh_seconds", "max_stale_seconds", "leeway_seconds", "timeout_seconds", "console",
    })  # fmt: skip
    algorithms = reader.get("algorithms", list, list(OidcSettings.algorithms))
    if not algorithms or not all(isinstance(a, str) and a in OIDC_ALGORITHMS for a in algorithms):
        raise reader.fail("algorithms", algorithms, f"expected a non-empty list of {', '.join(sorted(OIDC_ALGORITHMS))}")
    ca_file = None
    if "ca_file" in reader.data:
        raw = reader.text("ca_file")
        ca_file = (Path(source).parent / raw).resolve()
        if not ca_file.is_file():
            raise reader.fail("ca_file", raw, f"file not found ({ca_file})")
    roles: list[OidcRole] = []
    for role in _items(str(source), reader.data.get("roles"), "oidc.roles"):
        role.only({"value", "role", "participants", "scopes"})
        value = role.text("value")
        if any(r.value == value for r in roles):
            raise role.fail("value", value, "mapped twice")
        kind = role.kind("role")
        roles.append(OidcRole(value, kind, role.scopes("scopes", kind), role.participants("participants", kind, hosted)))
    if not roles:
        raise reader.fail("roles", reader.data.get("roles"), "map at least one role value ([[oidc.roles]])")
    settings = OidcSettings(
        issuer=reader.https("issuer"),
        jwks_uri=reader.https("jwks_uri"),
        audience=reader.text("audience"),
        roles=tuple(roles),
        role_claim=reader.text("role_claim", "roles"),
        name_claim=reader.text("name_claim", "sub"),
        algorithms=tuple(algorithms),
        ca_file=ca_file,
        refresh_seconds=reader.positive("refresh_seconds", float, 3600.0),
        min_refresh_seconds=reader.positive("min_refresh_seconds", float, 60.0),
        max_stale_seconds=reader.positive("max_stale_seconds", float, 86400.0),
        leeway_seconds=reader.get("leeway_seconds", int, 60),
        timeout_seconds=reader.positive("timeout_seconds", float, 5.0),
        console=_parse_oidc_console(reader.data.get("console"), source=str(source)),
    )
    if not 0 <= settings.leeway_seconds <= 300:
        raise reader.fail("leeway_seconds", settings.leeway_seconds, "expected 0..300")
    if settings.console is not None and settings.console.client_id == settings.audience:
        # SECURITY: an ID token for the console must never pass as a bearer token for the APIs.
        raise reader.fail("console.client_id", settings.console.client_id, "must differ from oidc.audience")
    return settings


CONSOLE_CALLBACK_PATH = "/console/oidc/callback"
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token


def _parse_oidc_console(table: Any, *, source: str) -> OidcConsoleSettings | None:
    """``[oidc.console]``: client_id, client_secret_file or client_secret_env, redirect_uri, scopes, display_name."""
    if table is None:
        return None
    reader = _Table(source, table, "oidc.console.")
    if "client_secret" in reader.data:
        raise reader.fail("client_secret", "…", "never in the node file; use client_secret_file or client_secret_env")
    reader.only({"client_id", "client_secret_file", "client_secret_env", "redirect_uri", "scopes", "display_name"})
    # SECURITY: the secret comes from a file (e.g. a mounted Kubernetes secret) or the environment.
    has_file, has_env = "client_secret_file" in reader.data, "client_secret_env" in reader.data
    if has_file == has_env:
        raise reader.fail("client_secret_file", None, "set exactly one of client_secret_file and client_secret_env")
    if has_file:
        raw = reader.text("client_secret_file")
        path = (Path(source).parent / raw).resolve()
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise reader.fail("client_secret_file", raw, f"cannot be read ({path}: {type(error).__name__})") from None
        if not secret:
            raise reader.fail("client_secret_file", raw, f"the file is empty ({path})")
    else:
        name = reader.text("client_secret_env")
        secret = os.environ.get(name, "").strip()
        if not secret:
            raise reader.fail("client_secret_env", name, "the environment variable is not set or empty")
    redirect_uri = reader.https("redirect_uri")
    if urlparse(redirect_uri).path != CONSOLE_CALLBACK_PATH or urlparse(redirect_uri).query or urlparse(redirect_uri).fragment:
        raise reader.fail("redirect_uri", redirect_uri, f"expected https://<this listener>{CONSOLE_CALLBACK_PATH}")
    scopes = reader.get("scopes", list, ["openid"])
    if not all(isinstance(s, str) and _SCOPE_TOKEN.fullmatch(s) for s in scopes) or "openid" not in scopes:
        raise reader.fail("scopes", scopes, "expected a list of scope names that includes openid")
    display_name = reader.text("display_name", "OpenID Connect")
    if len(display_name) > 64:
        raise reader.fail("display_name", display_name, "at most 64 characters")
    client_id = reader.text("client_id")
    if len(client_id) > 256 or not client_id.isprintable():
        raise reader.fail("client_id", client_id, "expected at most 256 printable characters")
    return OidcConsoleSettings(client_id, secret, redirect_uri, tuple(dict.fromkeys(scopes)), display_name)
