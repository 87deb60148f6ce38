"""Certificates and keys: each certificate state gives its outcome, revocation stops a participant, rotation loses nothing."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest

from gateway.config import load_config
from gateway.directory import DirectoryState
from gateway.crypto.seal import CertificateError
from gateway.federation import NodeSpec
from gateway.ids import ParticipantId
from gateway.node import Node
from gateway.ocsp_responder import DevelopmentOcspResponder, serving
from gateway.pki import DevelopmentCA, load_certificate, load_private_key
from gateway.samples import discover
from gateway.store import OutgoingState

from ..conftest import KANTON, LUZERN, SAMPLES
from .nodes import client, running, sample_envelope

MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


def ca_of(federation) -> DevelopmentCA:
    return DevelopmentCA(federation.directory / "pki")


def use_crl(federation, ca: DevelopmentCA) -> None:
    """Configure every node with the CA's revocation list."""
    if not ca.crl_path.exists():
        ca.write_crl({})
    for node in federation.nodes:
        path = federation.config_path(node.id)
        text = path.read_text()
        if "crls = " not in text:
            text = text.replace("trust_anchors = [", f'crls = ["{ca.crl_path}"]\ntrust_anchors = [', 1)
            path.write_text(text)


def participant_certificate(federation, participant: str, role: str):
    return federation.directory / "pki" / "participants" / participant / f"{role}.pem"


async def submit(federation, clock, sender=LUZERN, recipient=KANTON):
    message_id, envelope, payload = sample_envelope(MOVE, sender, recipient, clock.now())
    async with client(federation, sender) as api:
        status, body = await api.submit(envelope, payload, "data.xml")
    return message_id, status, body, payload


async def test_a_valid_certificate_sends(federation, clock):
    async with running(federation, clock) as nodes:
        message_id, status, body, _ = await submit(federation, clock)
        assert status == 202, body
        await nodes["node-luzern"].forward_due()
        assert nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)[0].receipt_status == 100


@pytest.mark.parametrize("shift", [timedelta(days=826), timedelta(days=-1)], ids=["expired", "not-yet-valid"])
async def test_a_sender_certificate_outside_its_validity_stops_sending_with_312(federation, clock, shift):
    async with running(federation, clock, "node-luzern") as nodes:
        clock.advance(seconds=shift.total_seconds())
        _, status, body, _ = await submit(federation, clock)
        assert (status, body["statusCode"]) == (403, 312), body
        assert "not valid at" in body["statusInfo"]
        assert nodes["node-luzern"].store.queued() == []


async def test_a_revoked_sender_certificate_stops_sending_with_312(federation, clock):
    ca = ca_of(federation)
    use_crl(federation, ca)
    ca.revoke(load_certificate(participant_certificate(federation, LUZERN, "signing")))
    async with running(federation, clock, "node-luzern") as nodes:
        _, status, body, _ = await submit(federation, clock)
        assert (status, body["statusCode"]) == (403, 312) and "revoked" in body["statusInfo"], body
        assert nodes["node-luzern"].store.queued() == []


async def test_a_revoked_recipient_certificate_stops_sealing_for_it_with_312(federation, clock):
    ca = ca_of(federation)
    use_crl(federation, ca)
    ca.revoke(load_certificate(participant_certificate(federation, KANTON, "encryption")))
    async with running(federation, clock, "node-luzern"):
        _, status, body, _ = await submit(federation, clock)
        assert (status, body["statusCode"]) == (403, 312) and KANTON in body["statusInfo"], body


async def test_a_revocation_learned_by_the_destination_refuses_what_was_queued_before_it(federation, clock):
    """Sealed and queued while valid; the destination's CRL then lists the sender: 312 there, nothing delivered."""
    ca = ca_of(federation)
    use_crl(federation, ca)
    async with running(federation, clock) as nodes:
        message_id, status, _, _ = await submit(federation, clock)
        assert status == 202
        ca.revoke(load_certificate(participant_certificate(federation, LUZERN, "signing")))
        nodes["node-kanton"].reload_trust()
        await nodes["node-luzern"].forward_due()
        (row,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.FAILED and row.receipt_status == 312
        assert nodes["node-kanton"].store.inbox(KANTON) == []


async def test_an_out_of_date_revocation_list_fails_closed(federation, clock):
    ca = ca_of(federation)
    ca.write_crl({}, next_update_days=1)
    use_crl(federation, ca)
    async with running(federation, clock, "node-luzern"):
        clock.advance(days=2)
        _, status, body, _ = await submit(federation, clock)
        assert (status, body["statusCode"]) == (403, 312) and "out of date" in body["statusInfo"], body


def test_a_certificate_from_another_ca_or_with_the_wrong_key_usage_stops_the_node_at_start(federation, tmp_path):
    other = DevelopmentCA(tmp_path / "other-ca")
    foreign_signing, _ = other.issue_participant(ParticipantId(LUZERN), tmp_path / "foreign")
    path = federation.config_path("node-luzern")
    original = path.read_text()
    path.write_text(original.replace(str(participant_certificate(federation, LUZERN, "signing")), str(foreign_signing.certificate)))
    with pytest.raises(CertificateError, match="not issued by the federation CA"):
        Node(load_config(path))
    path.write_text(original.replace(str(participant_certificate(federation, LUZERN, "signing")), str(participant_certificate(federation, LUZERN, "encryption"))))
    with pytest.raises(CertificateError, match="does not allow digital_signature"):
        Node(load_config(path))


async def test_key_rotation_delivers_messages_queued_for_the_old_key_and_new_ones_for_the_new_key(federation, clock):
    """The canton rotates its encryption key while Luzern holds messages sealed for the old one: all arrive and open."""
    async with running(federation, clock, "node-luzern") as nodes:
        old = [await submit(federation, clock) for _ in range(3)]
        assert all(status == 202 for _, status, _, _ in old)
    ca = ca_of(federation)
    new = ca.rotate_encryption(ParticipantId(KANTON), federation.directory / "pki" / "participants")
    kanton_file = federation.config_path("node-kanton")
    old_key = participant_certificate(federation, KANTON, "encryption")
    text = kanton_file.read_text()
    text = text.replace(f'encryption_key = "{old_key.with_name("encryption-key.pem")}"', f'encryption_key = "{new.private_key}"')
    text = text.replace(f'encryption_certificate = "{old_key}"', f'encryption_certificate = "{new.certificate}"')
    text = text.replace("[[local_systems]]", f'[[participants.previous_encryption]]\nkey = "{old_key.with_name("encryption-key.pem")}"\ncertificate = "{old_key}"\n\n[[local_systems]]', 1)
    kanton_file.write_text(text)
    luzern_file = federation.config_path("node-luzern")
    luzern_file.write_text(luzern_file.read_text().replace(f'encryption_certificate = "{old_key}"', f'encryption_certificate = "{new.certificate}"'))
    async with running(federation, clock) as nodes:
        assert nodes["node-kanton"].hosted[ParticipantId(KANTON)].previous, "the old key is kept"
        fresh = [await submit(federation, clock) for _ in range(2)]
        await nodes["node-luzern"].forward_due()
        async with client(federation, KANTON) as api:
            for message_id, _, _, payload in old + fresh:
                assert await api.payload(KANTON, LUZERN, message_id) == payload
        rows = [nodes["node-luzern"].store.outgoing_for(LUZERN, m)[0] for m, _, _, _ in old + fresh]
        assert {r.receipt_status for r in rows} == {100}


async def test_private_keys_at_rest_are_encrypted_and_need_the_passphrase(tmp_path, monkeypatch, clock):
    from gateway.federation import NodeSpec, build_federation

    from ..conftest import XSD

    monkeypatch.setenv("DREHSCHEIBE_KEY_PASSPHRASE", "correct horse battery staple")
    federation = build_federation(tmp_path / "enc", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])], schemas=XSD)
    key_file = federation.directory / "pki" / "participants" / LUZERN / "signing-key.pem"
    assert key_file.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    async with running(federation, clock) as nodes:
        message_id, status, body, _ = await submit(federation, clock)
        assert status == 202, body
        await nodes["node-luzern"].forward_due()
    monkeypatch.delenv("DREHSCHEIBE_KEY_PASSPHRASE")
    with pytest.raises(ValueError, match="encrypted; set DREHSCHEIBE_KEY_PASSPHRASE"):
        load_private_key(key_file)
    monkeypatch.setenv("DREHSCHEIBE_KEY_PASSPHRASE", "wrong")
    with pytest.raises(ValueError) as wrong:
        load_private_key(key_file)
    assert "wrong passphrase" in str(wrong.value) and "correct horse" not in str(wrong.value)
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text("correct horse battery staple\n")
    monkeypatch.delenv("DREHSCHEIBE_KEY_PASSPHRASE")
    monkeypatch.setenv("DREHSCHEIBE_KEY_PASSPHRASE_FILE", str(passphrase_file))
    assert load_private_key(key_file) is not None


def test_certificates_close_to_their_end_are_warned_about(federation, clock):
    node = Node(load_config(federation.config_path("node-luzern")), clock=clock)
    try:
        assert node.warn_expiring_certificates() == []
        clock.advance(days=800)
        warnings = node.warn_expiring_certificates()
        assert any(w.startswith("signing certificate of 1-1061-1 expires") for w in warnings)
        assert any(w.startswith("node certificate of node-luzern expires") for w in warnings)
    finally:
        node.store.close()
        node.audit.close()


def test_the_cli_revokes_into_the_crl_and_rotates_a_participant_key(tmp_path, capsys):
    from gateway.cli import main
    from gateway.pki import load_crl

    assert main(["pki", "init", "--dir", str(tmp_path)]) == 0
    assert main(["pki", "participant", "--dir", str(tmp_path), "--id", LUZERN]) == 0
    signing = tmp_path / "participants" / LUZERN / "signing.pem"
    assert main(["pki", "revoke", "--dir", str(tmp_path), "--cert", str(signing)]) == 0
    crl = load_crl(tmp_path / "crl.pem")
    assert crl.get_revoked_certificate_by_serial_number(load_certificate(signing).serial_number) is not None
    assert main(["keys", "rotate", "--pki", str(tmp_path), "--participant", LUZERN]) == 0
    out = capsys.readouterr().out
    rotated = [p for p in (tmp_path / "participants" / LUZERN).glob("encryption-*.pem") if not p.name.endswith("-key.pem")]
    assert len(rotated) == 1 and str(rotated[0]) in out and "previous_encryption" in out
    assert load_certificate(rotated[0]).public_key() != load_certificate(tmp_path / "participants" / LUZERN / "encryption.pem").public_key()


def use_ocsp(federation, mode: str, url: str) -> None:
    """Configure every node to check certificates with the OCSP responder at ``url`` (no CRL)."""
    for node in federation.nodes:
        path = federation.config_path(node.id)
        path.write_text(path.read_text().replace("trust_anchors = [", f'ocsp = "{mode}"\nocsp_responder = "{url}"\ntrust_anchors = [', 1))


@contextlib.asynccontextmanager
async def ocsp_responder(federation, clock):
    """The development PKI's OCSP responder (delegated certificate) on loopback, answering from the CA's revocation list."""
    ca = ca_of(federation)
    async with serving(DevelopmentOcspResponder(ca, responder=ca.issue_ocsp_responder(), clock=clock.now)) as url:
        yield ca, url


async def test_a_sender_certificate_revoked_at_the_ocsp_responder_stops_the_next_message_with_312(federation, clock):
    """Revoked only at the OCSP responder (no node has a CRL): once the nodes refresh, the next message is refused with 312."""
    async with ocsp_responder(federation, clock) as (ca, url):
        use_ocsp(federation, "require", url)
        async with running(federation, clock) as nodes:
            assert [await node.refresh_revocation() for node in nodes.values()] == [4, 4]
            message_id, status, body, _ = await submit(federation, clock)
            assert status == 202, body
            await nodes["node-luzern"].forward_due()
            assert nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)[0].receipt_status == 100
            ca.revoke(load_certificate(participant_certificate(federation, LUZERN, "signing")))
            clock.advance(minutes=31)  # the housekeeping round after half the answers' life
            for node in nodes.values():
                await node.refresh_revocation()
            _, status, body, _ = await submit(federation, clock)
            assert (status, body["statusCode"]) == (403, 312) and "revoked (OCSP)" in body["statusInfo"], body


async def test_a_revocation_learned_by_the_destination_over_ocsp_refuses_what_was_queued_before_it(federation, clock):
    """Queued while good; the destination's OCSP answer then says revoked: 312 there, nothing delivered."""
    async with ocsp_responder(federation, clock) as (ca, url):
        use_ocsp(federation, "prefer", url)
        async with running(federation, clock) as nodes:
            for node in nodes.values():
                await node.refresh_revocation()
            message_id, status, _, _ = await submit(federation, clock)
            assert status == 202
            ca.revoke(load_certificate(participant_certificate(federation, LUZERN, "signing")))
            clock.advance(minutes=31)
            await nodes["node-kanton"].refresh_revocation()
            await nodes["node-luzern"].forward_due()
            (row,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
            assert row.state is OutgoingState.FAILED and row.receipt_status == 312
            assert nodes["node-kanton"].store.inbox(KANTON) == []


async def test_require_with_the_ocsp_responder_unreachable_refuses_with_312(federation, clock):
    """ocsp = require and no answer can be fetched: the node fails closed, every message is refused with 312."""
    async with ocsp_responder(federation, clock) as (_, url):
        pass  # the responder is gone: its port is closed
    use_ocsp(federation, "require", url)
    async with running(federation, clock, "node-luzern") as nodes:
        assert await nodes["node-luzern"].refresh_revocation() == 0
        _, status, body, _ = await submit(federation, clock)
        assert (status, body["statusCode"]) == (403, 312) and "no fresh OCSP response" in body["statusInfo"], body
        assert nodes["node-luzern"].store.queued() == []


async def test_under_require_certificates_first_met_in_transfers_and_returned_receipts_are_fetched_before_verification(tmp_path, clock):
    """Through the hub with ocsp = require, each node meets other nodes' certificates for the first time and still delivers: answers are fetched before the synchronous checks."""
    from .test_relay import KRIENS, hub_federation, run_forwarders

    hub = hub_federation(tmp_path)
    async with ocsp_responder(hub, clock) as (_, url):
        use_ocsp(hub, "require", url)
        async with running(hub, clock) as nodes:
            for node in nodes.values():
                await node.refresh_revocation()
            message_id, status, body, payload = await submit(hub, clock, LUZERN, KRIENS)
            assert status == 202, body
            await run_forwarders(nodes)
            async with client(hub, KRIENS) as api:
                assert await api.payload(KRIENS, LUZERN, message_id) == payload
            (row,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
            assert row.state is OutgoingState.DELIVERED and row.receipt_status == 100


async def test_under_require_a_node_that_knows_recipients_only_from_the_directory_delivers_on_first_contact(tmp_path, clock):
    """ocsp = require with the hub's directory: the directory signer's and the recipient's certificates are fetched before they are checked."""
    from .test_node_directory import KRIENS, federation_with_directory

    federation = federation_with_directory(
        tmp_path, [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-hub", [KANTON]), NodeSpec("node-kriens", [KRIENS])],
        via={"node-luzern": {KRIENS: "node-hub"}},
    )  # fmt: skip
    async with ocsp_responder(federation, clock) as (_, url):
        use_ocsp(federation, "require", url)
        async with running(federation, clock) as nodes:
            for node in nodes.values():
                await node.refresh_revocation()
                assert (await node.directory.refresh()).state is DirectoryState.CURRENT
            message_id, status, body, payload = await submit(federation, clock, LUZERN, KRIENS)
            assert status == 202, body
            for _ in range(4):
                for node in nodes.values():
                    await node.forward_due()
            (row,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
            assert row.state is OutgoingState.DELIVERED and row.receipt_status == 100
            async with client(federation, KRIENS) as api:
                assert await api.payload(KRIENS, LUZERN, message_id) == payload
