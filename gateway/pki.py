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
    # SECURITY: with a passphrase in the environment, keys are written encrypted (PKCS#8,
    # the library's best available scheme) and never touch the disk in clear.
    passphrase = key_passphrase()
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    # SECURITY: create the file with 0600 from the start, never world-readable for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _write_certificate(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


PASSPHRASE_ENV = "DREHSCHEIBE_KEY_PASSPHRASE"  # the passphrase of encrypted private keys, or
PASSPHRASE_FILE_ENV = "DREHSCHEIBE_KEY_PASSPHRASE_FILE"  # a file holding it (a mounted secret)


def key_passphrase() -> bytes | None:
    """The passphrase for private keys at rest, from the environment (never from the config file)."""
    file = os.environ.get(PASSPHRASE_FILE_ENV)
    if file:
        return Path(file).read_bytes().strip()
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An EC private key, decrypted with the passphrase from the environment when it is encrypted.

    SECURITY: the error names the file, never the passphrase or key material.
    """
    data = Path(path).read_bytes()
    encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0]
    passphrase = key_passphrase() if encrypted else None
    if encrypted and passphrase is None:
        raise ValueError(f"{path}: the private key is encrypted; set {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV}")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError):
        raise ValueError(f"{path}: the private key cannot be read (wrong passphrase, or not a PEM key)") from None
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


    def issue_ocsp_responder(self) -> IssuedIdentity:
        """A delegated OCSP responder identity (``ocsp-responder.pem``) beside the CA.

        It signs OCSP responses for this CA (extended key usage OCSP signing) and carries
        id-pkix-ocsp-nocheck: clients do not ask about the responder's own status (RFC 6960
        4.2.2.2.1), so its validity is kept short (30 days; issue it anew to renew).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Drehscheibe development federation"),
                             x509.NameAttribute(NameOID.COMMON_NAME, "Drehscheibe Development OCSP responder")])  # fmt: skip
        builder = (
            self._builder(subject, key.public_key(), days=30)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
            .add_extension(x509.OCSPNoCheck(), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        identity = IssuedIdentity(self.directory / "ocsp-responder.pem", self.directory / "ocsp-responder-key.pem")
        _write_certificate(identity.certificate, builder.sign(self.key, hashes.SHA256()))
        _write_private_key(identity.private_key, key)
        return identity

    # -- revocation and rotation -------------------------------------------------------

    @property
    def crl_path(self) -> Path:
        return self.directory / "crl.pem"

    def revoke(self, certificate: x509.Certificate, *, next_update_days: int = 7) -> Path:
        """Add ``certificate`` to the CA's revocation list and write ``crl.pem`` anew (signed)."""
        revoked = self._revoked_serials()
        revoked[certificate.serial_number] = self.now
        return self.write_crl(revoked, next_update_days=next_update_days)

    def write_crl(self, revoked: dict[int, datetime] | None = None, *, next_update_days: int = 7) -> Path:
        revoked = self._revoked_serials() if revoked is None else revoked
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(self.now - timedelta(minutes=5))
            .next_update(self.now + timedelta(days=next_update_days))
        )
        for serial, when in sorted(revoked.items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        temporary = self.crl_path.with_suffix(".tmp")
        temporary.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        os.replace(temporary, self.crl_path)
        return self.crl_path

    def _revoked_serials(self) -> dict[int, datetime]:
        if not self.crl_path.exists():
            return {}
        crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        return {entry.serial_number: entry.revocation_date_utc for entry in crl}

    def rotate_encryption(self, participant: ParticipantId, out_dir: Path) -> IssuedIdentity:
        """A new encryption key and certificate for ``participant``, beside (not over) the current one."""
        directory = Path(out_dir) / str(participant)
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sedex participant"), x509.NameAttribute(NameOID.COMMON_NAME, str(participant))]
        )
        san = (x509.SubjectAlternativeName([x509.UniformResourceIdentifier(participant.uri)]), False)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._issue(subject, key, x509.KeyUsage(False, False, False, False, True, False, False, False, False), extra=[san])
        stamp = self.now.strftime("%Y%m%dT%H%M%S")
        identity = IssuedIdentity(directory / f"encryption-{stamp}.pem", directory / f"encryption-{stamp}-key.pem")
        _write_certificate(identity.certificate, cert)
        _write_private_key(identity.private_key, key)
        return identity


def load_crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(Path(path).read_bytes())
