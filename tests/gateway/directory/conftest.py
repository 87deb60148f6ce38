"""A development federation PKI in a temporary directory, and builders for directories.

Everything is real: certificates from :class:`DevelopmentCA`, ES256 signatures, and a
second, unrelated CA ("rogue") for keys the federation must not trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.crypto.seal import SigningIdentity, TrustStore
from gateway.directory import (
    CertificateEntry,
    CertificateUse,
    Directory,
    Environment,
    NodeEntry,
    ParticipantEntry,
    sign_directory,
)
from gateway.ids import ParticipantId
from gateway.pki import DevelopmentCA, IssuedIdentity, load_certificate, load_private_key

T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=timezone.utc)
HUB = "node-hub"
LUZERN_NODE = "node-luzern"
KANTON_NODE = "node-kanton"
LUZERN = ParticipantId("1-1061-1")
KRIENS = ParticipantId("1-1059-1")
KANTON = ParticipantId("2-LU-1")


@dataclass
class Pki:
    """The federation CA, node identities and participant certificates, all issued at ``now``."""

    root: Path
    now: datetime
    ca: DevelopmentCA
    rogue: DevelopmentCA
    nodes: dict[str, IssuedIdentity]
    rogue_hub: IssuedIdentity
    participants: dict[ParticipantId, tuple[IssuedIdentity, IssuedIdentity]]
    # A second key pair for Luzern, for rotation tests.
    luzern_next: tuple[IssuedIdentity, IssuedIdentity]
    rogue_luzern: tuple[IssuedIdentity, IssuedIdentity]

    @property
    def trust(self) -> TrustStore:
        return TrustStore([self.ca.certificate])

    def signer(self, node: str = HUB) -> SigningIdentity:
        issued = self.nodes[node]
        return SigningIdentity.from_key(node, load_private_key(issued.private_key), load_certificate(issued.certificate))

    def rogue_signer(self) -> SigningIdentity:
        return SigningIdentity.from_key(HUB, load_private_key(self.rogue_hub.private_key), load_certificate(self.rogue_hub.certificate))

    def pem(self, participant: ParticipantId, use: CertificateUse) -> str:
        signing, encryption = self.participants[participant]
        return (signing if use is CertificateUse.SIGNING else encryption).certificate.read_text("ascii")

    def entry(self, participant: ParticipantId, node: str, **changes) -> ParticipantEntry:
        certificates = (
            CertificateEntry(CertificateUse.SIGNING, self.pem(participant, CertificateUse.SIGNING)),
            CertificateEntry(CertificateUse.ENCRYPTION, self.pem(participant, CertificateUse.ENCRYPTION)),
        )
        values = dict(id=participant, node=node, environment=Environment.PRODUCTION, message_types=(10301, 2011),
                      certificates=certificates)
        values.update(changes)
        return ParticipantEntry(**values)

    def directory(self, *, version: int = 1, issued_at: datetime | None = None, validity: timedelta = timedelta(days=7),
                  participants: tuple[ParticipantEntry, ...] | None = None, issuer: str = HUB) -> Directory:
        issued_at = issued_at or self.now
        return Directory(
            version=version,
            issued_at=issued_at,
            expires_at=issued_at + validity,
            issuer=issuer,
            nodes=(
                NodeEntry(HUB, "https://hub.example.ch:8443"),
                NodeEntry(LUZERN_NODE, "https://luzern.example.ch:8443"),
                NodeEntry(KANTON_NODE, "https://kanton.example.ch:8443"),
            ),
            participants=participants if participants is not None else (
                self.entry(LUZERN, LUZERN_NODE),
                self.entry(KANTON, KANTON_NODE, message_types=(2011,)),
            ),
        )

    def signed(self, **options) -> str:
        return sign_directory(self.directory(**options), self.signer())


def make_pki(root: Path, now: datetime) -> Pki:
    ca = DevelopmentCA(root / "ca", now=now)
    rogue = DevelopmentCA(root / "rogue", now=now)
    nodes = {node: ca.issue_node(node, root / "nodes") for node in (HUB, LUZERN_NODE, KANTON_NODE)}
    participants = {p: ca.issue_participant(p, root / "participants") for p in (LUZERN, KRIENS, KANTON)}
    return Pki(
        root=root, now=now, ca=ca, rogue=rogue, nodes=nodes,
        rogue_hub=rogue.issue_node(HUB, root / "rogue-nodes"),
        participants=participants,
        luzern_next=ca.issue_participant(LUZERN, root / "participants-next"),
        rogue_luzern=rogue.issue_participant(LUZERN, root / "rogue-participants"),
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """A federation issued at the fixed time T0 (for tests that run on a FixedClock)."""
    return make_pki(tmp_path_factory.mktemp("pki"), T0)


@pytest.fixture(scope="session")
def live_pki(tmp_path_factory) -> Pki:
    """A federation issued now, for real TLS handshakes (which check validity on the wall clock)."""
    return make_pki(tmp_path_factory.mktemp("live-pki"), datetime.now(timezone.utc).replace(microsecond=0))
