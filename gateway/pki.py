"""Development PKI: a federation CA, node TLS certificates, participant certificates.

For development and the demo only. Private keys are written readable by the owner
only (0600) and never committed (``certs/`` documents the layout). Production
deployments bring certificates from the federation's real CA.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .ids import ParticipantId

_VALIDITY = timedelta(days=825)


@dataclass(frozen=True)
class IssuedIdentity:
    certificate: Path
    private_key: Path


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # SECURITY: create the file with 0600 from the start, never world-readable for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _write_certificate(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an EC private key")
    return key


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


class DevelopmentCA:
    """A federation CA kept in one directory (``ca.pem`` + ``ca-key.pem``)."""

    def __init__(self, directory: Path, now: datetime | None = None) -> None:
        self.directory = Path(directory)
        self.now = now or datetime.now(timezone.utc)
        self.cert_path = self.directory / "ca.pem"
        self.key_path = self.directory / "ca-key.pem"
        if self.cert_path.exists():
            self.certificate = load_certificate(self.cert_path)
            self.key = load_private_key(self.key_path)
        else:
            self.key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Drehscheibe development federation"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "Drehscheibe Development CA"),
                ]
            )
            self.certificate = (
                self._builder(name, self.key.public_key(), issuer=name, days=3650)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256())
            )
            _write_private_key(self.key_path, self.key)
            _write_certificate(self.cert_path, self.certificate)

    def _builder(self, subject: x509.Name, public_key, *, issuer: x509.Name | None = None, days: int | None = None):
        validity = timedelta(days=days) if days else _VALIDITY
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer or self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - timedelta(minutes=5))
            .not_valid_after(self.now + validity)
        )

    def _issue(self, subject: x509.Name, key: ec.EllipticCurvePrivateKey, usage: x509.KeyUsage, extra=()) -> x509.Certificate:
        builder = (
            self._builder(subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        for extension, critical in extra:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(self.key, hashes.SHA256())

    def issue_node(self, node_id: str, out_dir: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> IssuedIdentity:
        """A node's TLS identity, usable as server and client (mutual TLS) and to sign receipts."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        names.append(x509.UniformResourceIdentifier(f"urn:drehscheibe:node:{node_id}"))
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Drehscheibe node"), x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
        cert = self._issue(
            subject,
            key,
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            extra=[
                (x509.SubjectAlternativeName(names), False),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            ],
        )
        out = IssuedIdentity(Path(out_dir) / f"{node_id}.pem", Path(out_dir) / f"{node_id}-key.pem")
        _write_certificate(out.certificate, cert)
        _write_private_key(out.private_key, key)
        return out

    def issue_participant(self, participant: ParticipantId, out_dir: Path) -> tuple[IssuedIdentity, IssuedIdentity]:
        """Signing (digitalSignature) and encryption (keyAgreement) identities of a participant."""
        directory = Path(out_dir) / str(participant)
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sedex participant"), x509.NameAttribute(NameOID.COMMON_NAME, str(participant))]
        )
        san = (x509.SubjectAlternativeName([x509.UniformResourceIdentifier(participant.uri)]), False)
        identities = []
        for role, usage in (
            ("signing", x509.KeyUsage(True, True, False, False, False, False, False, False, False)),
            ("encryption", x509.KeyUsage(False, False, False, False, True, False, False, False, False)),
        ):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = self._issue(subject, key, usage, extra=[san])
            identity = IssuedIdentity(directory / f"{role}.pem", directory / f"{role}-key.pem")
            _write_certificate(identity.certificate, cert)
            _write_private_key(identity.private_key, key)
            identities.append(identity)
        return identities[0], identities[1]
