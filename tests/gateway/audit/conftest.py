"""Shared fixtures: a fixed node key, a clock, record builders and the real eCH samples."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

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
    return tmp_path / "audit.sqlite"


@pytest.fixture
def log(log_path: Path, key: ec.EllipticCurvePrivateKey) -> Iterator[AuditLog]:
    with AuditLog.open(log_path, node=NODE, signing_key=key) as opened:
        yield opened
