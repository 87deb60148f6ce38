"""The development PKI writes private keys readable by the owner only and usable certificates."""

from __future__ import annotations

import stat
from datetime import datetime, timezone

from gateway.crypto.seal import TrustStore
from gateway.ids import ParticipantId
from gateway.pki import DevelopmentCA, load_certificate


def test_private_keys_are_owner_only_and_certificates_fit_their_purpose(tmp_path):
    """Keys are mode 0600; a participant's signing and encryption certificates carry distinct key usages."""
    ca = DevelopmentCA(tmp_path)
    signing, encryption = ca.issue_participant(ParticipantId("1-1061-1"), tmp_path / "p")
    node = ca.issue_node("node-luzern", tmp_path / "n")
    for key in (ca.key_path, signing.private_key, encryption.private_key, node.private_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    trust = TrustStore([ca.certificate])
    now = datetime.now(timezone.utc)
    trust.check(load_certificate(signing.certificate), name="1-1061-1", usage="digital_signature", now=now)
    trust.check(load_certificate(encryption.certificate), name="1-1061-1", usage="key_agreement", now=now)
    import pytest

    from gateway.crypto.seal import CertificateError

    with pytest.raises(CertificateError, match="does not allow"):
        trust.check(load_certificate(encryption.certificate), name="1-1061-1", usage="digital_signature", now=now)


def test_an_existing_ca_is_reused(tmp_path):
    """Running pki init twice keeps the same federation CA."""
    first = DevelopmentCA(tmp_path).certificate
    assert DevelopmentCA(tmp_path).certificate == first
