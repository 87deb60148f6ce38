"""Shared fixtures: a fixed node key, a clock, record builders and the real eCH samples."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.gateway.storage.conftest import PgSchemas, pg_dsn, pg_schemas  # noqa: F401 - shared fixtures
from gateway.audit import (
    Action, Actor, ActorKind, AuditLog, AuditRecord, EnvelopeMeta, Outcome, PolicyRecord, Role,
)

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
SAMPLES = SHARED / "ech" / "samples"
SECRET = b"test-deployment-secret-0123456789abcdef"
T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=timezone.utc)
# A fixed private scalar, so the public key and signature vectors in docs/audit.md are stable.
TEST_KEY_SCALAR = 0x0C0FFEE15D34DBEEF00112233445566778899AABBCCDDEEFF010203040506070
NODE = "node-lu-hub"
AUDITOR = Actor(ActorKind.AUDITOR, "dpo-lu")


def test_key() -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(TEST_KEY_SCALAR, ec.SECP256R1())


test_key.__test__ = False  # a helper, not a test


def digest(n: int) -> str:
    return f"{n:064x}"


def message_record(
    n: int, *, node: str = NODE, action: Action = Action.FORWARDED, role: Role = Role.ORIGIN,
    message_id: str | None = None, person_refs: tuple[str, ...] = (), when: datetime | None = None,
    sender: str = "1-1061-1", recipients: tuple[str, ...] = ("2-LU-1",),
    received: str | None = None, sent: str | None = None,
) -> AuditRecord:
    return AuditRecord(
        time=when or T0 + timedelta(seconds=n),
        node=node,
        role=role,
        action=action,
        actor=Actor(ActorKind.LOCAL_SYSTEM, "einwohnerregister"),
        outcome=Outcome.OK,
        message_id=message_id or f"msg-{n}",
        envelope=EnvelopeMeta(sender=sender, recipients=recipients, message_type="20201", message_class="0",
                              message_date="2026-03-01T08:00:00"),
        received_digest=received if received is not None else digest(n),
        sent_digest=sent if sent is not None else digest(n + 1000),
        policy=PolicyRecord(rule_ids=("lu-move-in",), purpose="Einwohnerkontrolle", legal_basis="RHG Art. 2",
                            redactions=("religion",), revision="r7"),
        receipt_code=None,
        person_refs=person_refs,
    )


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return test_key()


@pytest.fixture
def public_pem(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "node-pub.pem"
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.fixture
def private_pem(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "node-key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """A SQLite log file (tests of the file itself: WAL, chattr, the offline CLI)."""
    return tmp_path / "audit.sqlite"


class SqliteLog:
    """Where a log lives on SQLite: a file."""

    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def source(self) -> Path:
        return self.path

    def open(self, *, node: str = NODE, signing_key=None, **options) -> AuditLog:
        return AuditLog.open(self.path, node=node, signing_key=signing_key, **options)

    def connect(self) -> sqlite3.Connection:
        """A raw connection, as someone with access to the file would have (to tamper, to look)."""
        return sqlite3.connect(self.path, isolation_level=None)

    def stored_bytes(self) -> bytes:
        """Every byte on disk: database, WAL and shared-memory files."""
        return b"".join(p.read_bytes() for p in sorted(self.path.parent.glob(self.path.name + "*")))


class PgLog:
    """Where a log lives on PostgreSQL: a schema of the test database."""

    backend = "postgresql"

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema

    @property
    def source(self):
        from gateway.audit.log_pg import PgLogSource

        return PgLogSource(self.dsn, self.schema)

    def open(self, *, node: str = NODE, signing_key=None, **options) -> AuditLog:
        from gateway.audit.log_pg import PgAuditLog

        return PgAuditLog.open(self.dsn, schema=self.schema, node=node, signing_key=signing_key, **options)

    def connect(self):
        """A raw connection to the schema that takes the same ``?`` statements as sqlite3."""
        from gateway.audit.log_pg import _connect

        return _connect(self.dsn, self.schema, lock_timeout=5.0, connect_timeout=5)

    def stored_bytes(self) -> bytes:
        """Every value a database user can read from the log's tables."""
        conn = self.connect()
        try:
            rows = [*conn.execute("SELECT leaf_hash, body FROM records ORDER BY idx"),
                    *conn.execute("SELECT note, signature FROM checkpoints ORDER BY id"),
                    *conn.execute("SELECT key, value FROM meta ORDER BY key")]  # fmt: skip
        finally:
            conn.close()
        return b"".join(v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row if v is not None)


@dataclass
class AuditBackend:
    """Hands out fresh log locations on one backend; each test gets its own file or schema."""

    name: str
    directory: Path
    schemas: PgSchemas | None = None

    def new(self, name: str = "audit") -> SqliteLog | PgLog:
        if self.schemas is None:
            return SqliteLog(self.directory / f"{name}.sqlite")
        return PgLog(self.schemas.dsn, self.schemas.new())


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_backend(request, tmp_path: Path) -> AuditBackend:
    """Both backends: SQLite always, PostgreSQL when DREHSCHEIBE_TEST_PG_DSN names a server."""
    if request.param == "sqlite":
        return AuditBackend("sqlite", tmp_path)
    return AuditBackend("postgresql", tmp_path, request.getfixturevalue("pg_schemas"))


@pytest.fixture
def where(audit_backend: AuditBackend) -> SqliteLog | PgLog:
    """The location of this test's log, on each backend in turn."""
    return audit_backend.new()


@pytest.fixture
def log(where, key: ec.EllipticCurvePrivateKey) -> Iterator[AuditLog]:
    with where.open(signing_key=key) as opened:
        yield opened
