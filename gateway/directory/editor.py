"""The hub's side: edit the directory source, sign a new version, keep a record of each change.

The source is a TOML or JSON file (by suffix) with the shape of the signed document
minus the times (docs/directory.md §5). An editor is opened for one admin
(``actor``); each change returns a :class:`DirectoryChange` — who, what, which
version it goes out in, digests of the entry before and after — which
:meth:`DirectoryChange.audit_record` turns into an audit record. Nothing is written
until :meth:`DirectoryEditor.save` / :meth:`DirectoryEditor.publish`, so a caller can
append the audit record first (no audit record, no change).
"""

from __future__ import annotations

import enum
import json
import re
import tomllib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from ..audit import Action, Actor, AuditRecord, Role
from ..clock import Clock
from ..crypto.seal import SigningIdentity, TrustStore, canonical_json
from ..ids import InvalidIdentifier, ParticipantId
from .errors import DirectoryRefused, DirectorySourceError
from .files import atomic_write
from .model import (
    CertificateEntry,
    CertificateUse,
    Directory,
    DirectorySource,
    Environment,
    MalformedDocument,
    NodeEntry,
    ParticipantEntry,
    format_time,
    sha256_hex,
)
from .verify import VerifiedDirectory, sign_directory, verify_directory

DEFAULT_VALIDITY = timedelta(days=7)
_SUFFIXES = (".toml", ".json")
_FOREVER = timedelta(days=365 * 100)
_PEM_TEXT = re.compile(r"[A-Za-z0-9+/= \n-]+")


class Operation(enum.Enum):
    CREATE = "create"
    SET_NODE = "set_node"
    ADD_PARTICIPANT = "add_participant"
    RETIRE_PARTICIPANT = "retire_participant"
    ADD_CERTIFICATE = "add_certificate"
    RETIRE_CERTIFICATE = "retire_certificate"
    PUBLISH = "publish"


@dataclass(frozen=True)
class DirectoryChange:
    """One admin change: who, when, what, and the directory versions before and after.

    For edits ``old_version`` is the last published version and ``new_version`` the one
    that will carry the change; for a publication they are the versions replaced and
    written. Digests are SHA-256 of the canonical JSON of the changed entry (node or
    participant), or of the signed claims for a publication; ``None`` where there is none.
    """

    time: datetime
    actor: Actor
    operation: Operation
    subject: str
    old_version: int
    new_version: int
    old_digest: str | None = None
    new_digest: str | None = None
    certificate: str | None = None  # fingerprint, for certificate changes

    def to_json(self) -> dict[str, Any]:
        return {
            "time": format_time(self.time),
            "actor": self.actor.to_json(),
            "operation": self.operation.value,
            "subject": self.subject,
            "oldVersion": self.old_version,
            "newVersion": self.new_version,
            "oldDigest": self.old_digest,
            "newDigest": self.new_digest,
            "certificate": self.certificate,
        }

    def audit_record(self, node: str) -> AuditRecord:
        """The record for ``node``'s audit log (``config_change``, details name the directory change)."""
        details = {
            "change": "directory",
            "operation": self.operation.value,
            "subject": self.subject,
            "old_version": str(self.old_version),
            "new_version": str(self.new_version),
            "old_digest": self.old_digest or "-",
            "new_digest": self.new_digest or "-",
        }
        if self.certificate:
            details["certificate"] = self.certificate
        return AuditRecord(time=self.time, node=node, role=Role.NONE, action=Action.CONFIG_CHANGE, actor=self.actor, details=details)


@dataclass(frozen=True)
class Publication:
    """A signed, self-verified directory that :meth:`DirectoryEditor.publish` will write."""

    directory: VerifiedDirectory
    change: DirectoryChange


def load_source(path: Path) -> DirectorySource:
    """Read a directory source (``.toml`` or ``.json``); errors name the file, key and value."""
    path = Path(path)
    if path.suffix not in _SUFFIXES:
        raise DirectorySourceError(f"{path}: a directory source is a .toml or .json file")
    try:
        text = path.read_text("utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DirectorySourceError(f"{path}: {exc}") from None
    try:
        return DirectorySource.from_json(data)
    except MalformedDocument as exc:
        raise DirectorySourceError(f"{path}: {exc}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if "\n" in value and _PEM_TEXT.fullmatch(value):
            # A PEM block stays readable as a multi-line literal string (no escapes in it).
            return f"'''\n{value}'''"
        # A JSON string is a valid TOML basic string for the characters JSON escapes;
        # the round trip in render_source() catches anything else.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_table(header: str, table: dict[str, Any]) -> list[str]:
    lines = ["", header] if header else []
    lines += [f"{key} = {_toml_value(value)}" for key, value in table.items() if not isinstance(value, list) or not value or not isinstance(value[0], dict)]
    return lines


def render_source(source: DirectorySource, suffix: str) -> bytes:
    """The source file's bytes. TOML is written here because the project has a TOML reader
    (tomllib) but no writer; the shape needs only strings, integers, booleans, integer
    arrays and arrays of tables, and the result is re-read and compared before use."""
    data = source.to_json()
    if suffix == ".json":
        return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    lines = ["# Federation directory source, maintained with `drehscheibe directory` (docs/directory.md)."]
    lines += _toml_table("", {k: v for k, v in data.items() if k not in ("nodes", "participants")})
    for node in data["nodes"]:
        lines += _toml_table("[[nodes]]", node)
    for participant in data["participants"]:
        lines += _toml_table("[[participants]]", participant)
        for certificate in participant["certificates"]:
            lines += _toml_table("[[participants.certificates]]", certificate)
    text = "\n".join(lines) + "\n"
    if DirectorySource.from_json(tomllib.loads(text)) != source:
        raise DirectorySourceError("the directory source cannot be written as TOML; use a .json source")
    return text.encode("utf-8")


class DirectoryEditor:
    """Edits one directory source on behalf of one admin. Not thread-safe; one editor per command."""

    def __init__(self, path: Path, source: DirectorySource, *, actor: Actor, clock: Clock | None = None) -> None:
        self.path = Path(path)
        self.actor = actor
        self.clock = clock or Clock()
        self._source = source

    @classmethod
    def load(cls, path: Path | str, *, actor: Actor, clock: Clock | None = None) -> DirectoryEditor:
        return cls(Path(path), load_source(Path(path)), actor=actor, clock=clock)

    @classmethod
    def create(cls, path: Path | str, *, issuer: str, actor: Actor, clock: Clock | None = None) -> tuple[DirectoryEditor, DirectoryChange]:
        """A new, empty source for ``issuer`` (the hub's node ID); refuses to overwrite a file."""
        path = Path(path)
        if path.exists():
            raise DirectorySourceError(f"{path}: already exists")
        if path.suffix not in _SUFFIXES:
            raise DirectorySourceError(f"{path}: a directory source is a .toml or .json file")
        try:
            source = DirectorySource(issuer)
        except ValueError as exc:
            raise DirectorySourceError(f"issuer: {exc}") from None
        editor = cls(path, source, actor=actor, clock=clock)
        return editor, editor._change(Operation.CREATE, issuer, None, sha256_hex(canonical_json(source.to_json())))

    @property
    def source(self) -> DirectorySource:
        return self._source

    # -- changes -----------------------------------------------------------------

    def _change(self, operation: Operation, subject: str, old: str | None, new: str | None, certificate: str | None = None) -> DirectoryChange:
        version = self._source.version
        return DirectoryChange(
            time=self.clock.now(), actor=self.actor, operation=operation, subject=subject,
            old_version=version, new_version=version + 1, old_digest=old, new_digest=new, certificate=certificate,
        )

    def _replace(self, **tables: Any) -> None:
        try:
            self._source = replace(self._source, **tables)
        except ValueError as exc:
            raise DirectorySourceError(str(exc)) from None

    def _participant(self, participant: ParticipantId | str) -> ParticipantEntry:
        pid = _pid(participant)
        entry = self._source.participant(pid)
        if entry is None:
            raise DirectorySourceError(f"{pid} is not in the directory")
        return entry

    def _put(self, entry: ParticipantEntry) -> None:
        others = tuple(p for p in self._source.participants if p.id != entry.id)
        self._replace(participants=(*others, entry))

    def set_node(self, node_id: str, url: str) -> DirectoryChange:
        """Add a node or change its URL."""
        try:
            node = NodeEntry(node_id, url)
        except ValueError as exc:
            raise DirectorySourceError(str(exc)) from None
        old = self._source.node(node_id)
        if old == node:
            raise DirectorySourceError(f"node {node_id} already has URL {url}")
        self._replace(nodes=(*(n for n in self._source.nodes if n.id != node_id), node))
        return self._change(Operation.SET_NODE, node_id, _digest(old), _digest(node))

    def add_participant(
        self, participant: ParticipantId | str, *, node: str, environment: Environment | None = None, message_types: tuple[int, ...] = ()
    ) -> DirectoryChange:
        """List a new participant (certificates are added with :meth:`add_certificate`)."""
        pid = _pid(participant)
        if self._source.participant(pid) is not None:
            raise DirectorySourceError(f"{pid} is already in the directory")
        if self._source.node(node) is None:
            raise DirectorySourceError(f"node {node!r} is not in the directory; add it with set-node first")
        if environment is None:
            environment = Environment.TEST if pid.is_test else Environment.PRODUCTION
        try:
            entry = ParticipantEntry(pid, node, environment, tuple(message_types))
        except ValueError as exc:
            raise DirectorySourceError(str(exc)) from None
        self._put(entry)
        return self._change(Operation.ADD_PARTICIPANT, str(pid), None, entry.digest())

    def retire_participant(self, participant: ParticipantId | str) -> DirectoryChange:
        """Mark a participant retired: it stays listed (so nodes learn it is gone) but no lookup finds it."""
        old = self._participant(participant)
        if old.retired:
            raise DirectorySourceError(f"{old.id} is already retired")
        new = replace(old, retired=True)
        self._put(new)
        return self._change(Operation.RETIRE_PARTICIPANT, str(old.id), old.digest(), new.digest())

    def add_certificate(
        self, participant: ParticipantId | str, pem: str, *, use: CertificateUse,
        not_before: datetime | None = None, not_after: datetime | None = None,
    ) -> DirectoryChange:
        """Add a signing or encryption certificate; its CN must be the participant ID and its
        key usage must fit ``use`` (the chain to the federation CA is checked at publication)."""
        old = self._participant(participant)
        if old.retired:
            raise DirectorySourceError(f"{old.id} is retired")
        try:
            certificate = CertificateEntry(use, pem, not_before, not_after)
        except ValueError as exc:
            raise DirectorySourceError(str(exc)) from None
        _check_usage(certificate)
        if any(c.fingerprint == certificate.fingerprint for c in old.certificates):
            raise DirectorySourceError(f"certificate {certificate.fingerprint} is already listed for {old.id}")
        try:
            new = replace(old, certificates=(*old.certificates, certificate))
        except ValueError as exc:
            raise DirectorySourceError(str(exc)) from None
        self._put(new)
        return self._change(Operation.ADD_CERTIFICATE, str(old.id), old.digest(), new.digest(), certificate.fingerprint)

    def retire_certificate(self, participant: ParticipantId | str, fingerprint: str) -> DirectoryChange:
        """Mark a certificate retired (by its SHA-256 fingerprint or a unique prefix of 16+ hex digits)."""
        old = self._participant(participant)
        try:
            certificate = old.certificate(fingerprint)
        except KeyError as exc:
            raise DirectorySourceError(str(exc.args[0])) from None
        if certificate.retired:
            raise DirectorySourceError(f"certificate {certificate.fingerprint} of {old.id} is already retired")
        others = tuple(c for c in old.certificates if c is not certificate)
        new = replace(old, certificates=(*others, replace(certificate, retired=True)))
        self._put(new)
        return self._change(Operation.RETIRE_CERTIFICATE, str(old.id), old.digest(), new.digest(), certificate.fingerprint)

    def save(self) -> None:
        """Write the source atomically, in the format of its suffix."""
        atomic_write(self.path, render_source(self._source, self.path.suffix))

    # -- publication --------------------------------------------------------------

    def sign(
        self, signer: SigningIdentity, trust: TrustStore, *, validity: timedelta = DEFAULT_VALIDITY,
        published: Path | None = None,
    ) -> Publication:
        """Sign the next version, valid for ``validity`` from now, and verify it as a node would.

        The version is one more than both the source's and (if it verifies) the one at
        ``published``, so a restored or hand-edited source cannot publish a version that
        nodes would refuse as a rollback. Nothing is written yet.
        """
        if validity <= timedelta(0):
            raise DirectorySourceError("validity must be positive")
        now = self.clock.now().replace(microsecond=0)
        previous = _previous(published, trust, self._source.issuer, now)
        old_version = max(self._source.version, previous.version if previous else 0)
        directory = Directory.from_source(self._source, version=old_version + 1, issued_at=now, expires_at=now + validity)
        token = sign_directory(directory, signer)
        # SECURITY: publish only what every node will accept: same checks, same trust store.
        try:
            verified = verify_directory(token, trust=trust, issuer=self._source.issuer, now=now, previous=previous)
        except DirectoryRefused as exc:
            raise DirectorySourceError(f"the signed directory would be refused by nodes: {exc}") from None
        change = DirectoryChange(
            time=self.clock.now(), actor=self.actor, operation=Operation.PUBLISH, subject=self._source.issuer,
            old_version=old_version, new_version=directory.version,
            old_digest=previous.digest if previous else None, new_digest=verified.digest,
        )
        return Publication(verified, change)

    def publish(self, publication: Publication, published: Path) -> None:
        """Write the signed directory atomically (what the hub serves), then the source with its new version."""
        atomic_write(Path(published), publication.directory.token.encode("ascii"))
        self._source = replace(self._source, version=publication.directory.version)
        self.save()


def _pid(participant: ParticipantId | str) -> ParticipantId:
    if isinstance(participant, ParticipantId):
        return participant
    try:
        return ParticipantId.parse(participant)
    except InvalidIdentifier as exc:
        raise DirectorySourceError(str(exc)) from None


def _digest(node: NodeEntry | None) -> str | None:
    return sha256_hex(canonical_json(node.to_json())) if node else None


def _check_usage(certificate: CertificateEntry) -> None:
    try:
        usage = certificate.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise DirectorySourceError(f"certificate {certificate.fingerprint} has no key usage") from None
    if not getattr(usage, certificate.use.key_usage):
        raise DirectorySourceError(
            f"certificate {certificate.fingerprint} does not allow {certificate.use.key_usage}, needed for {certificate.use.value}"
        )


def _previous(published: Path | None, trust: TrustStore, issuer: str, now: datetime) -> VerifiedDirectory | None:
    if published is None or not Path(published).exists():
        return None
    try:
        token = Path(published).read_text("ascii").strip()
        return verify_directory(token, trust=trust, issuer=issuer, now=now, grace=_FOREVER)
    except (OSError, UnicodeDecodeError) as exc:
        raise DirectorySourceError(f"{published}: cannot be read: {exc}") from None
    except DirectoryRefused as exc:
        raise DirectorySourceError(f"{published}: the directory published before does not verify ({exc}); move it away to start over") from None
