"""``drehscheibe directory …``: the hub admins' commands for the federation directory.

Changes (``init``, ``set-node``, ``add-participant``, ``retire-participant``,
``add-certificate``, ``retire-certificate``, ``publish``) print their change record as
one JSON line and append it to the hub's audit log (``--audit-log`` with
``--audit-key``) *before* writing anything; ``--no-audit`` must be said explicitly.

Exit codes: 0 done / valid, 1 the directory does not verify, 2 unusable input,
3 the audit log could not record the change (nothing was written).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..audit import Actor, ActorKind, AuditLog, AuditUnavailable
from ..audit.log import connect
from ..clock import Clock, FixedClock
from ..crypto.seal import SigningIdentity, TrustStore, common_name
from ..pki import load_certificate, load_private_key
from .editor import DEFAULT_VALIDITY, DirectoryChange, DirectoryEditor, load_source
from .errors import DirectoryRefused, DirectorySourceError
from .model import CertificateUse, Directory, DirectorySource, Environment, format_time
from .verify import DirectoryTooLarge, verify_directory

_FOREVER = timedelta(days=365 * 100)


def _time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"time without offset: {text!r}")
    return moment.astimezone(timezone.utc)


def _clock(args: argparse.Namespace) -> Clock:
    return FixedClock(args.now) if args.now else Clock()


def _trust(paths: Sequence[Path]) -> TrustStore:
    try:
        return TrustStore(load_certificate(path) for path in paths)
    except (OSError, ValueError) as exc:
        raise DirectorySourceError(f"trust anchors: {exc}") from None


def _audit_node(path: Path, default: str) -> str:
    """The node an existing audit log belongs to (records must carry it), else ``default``."""
    if not path.exists():
        return default
    try:
        conn = connect(path, read_only=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='node'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        row = None
    if row is None:
        raise DirectorySourceError(f"not an audit log file: {path}")
    return row[0]


def _record(args: argparse.Namespace, change: DirectoryChange, issuer: str) -> None:
    """Print the change and append it to the audit log; raises AuditUnavailable if it cannot."""
    if not args.no_audit and args.audit_key is None:
        raise DirectorySourceError("--audit-log needs --audit-key (the node's checkpoint key)")
    print(json.dumps(change.to_json(), sort_keys=True, ensure_ascii=False))
    if args.no_audit:
        print("not audited (--no-audit)", file=sys.stderr)
        return
    node = _audit_node(args.audit_log, issuer)
    with AuditLog.open(args.audit_log, node=node, signing_key=lambda: load_private_key(args.audit_key)) as log:
        (index,) = log.append([change.audit_record(node)])
    print(f"audited in {args.audit_log} at index {index}", file=sys.stderr)


def _editor(args: argparse.Namespace) -> DirectoryEditor:
    return DirectoryEditor.load(args.source, actor=Actor(ActorKind.ADMIN, args.actor), clock=_clock(args))


def _edit(change: Callable[[DirectoryEditor, argparse.Namespace], DirectoryChange]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        editor = _editor(args)
        recorded = change(editor, args)
        _record(args, recorded, editor.source.issuer)
        editor.save()
        return 0

    return run


def cmd_init(args: argparse.Namespace) -> int:
    editor, change = DirectoryEditor.create(args.source, issuer=args.issuer, actor=Actor(ActorKind.ADMIN, args.actor), clock=_clock(args))
    _record(args, change, args.issuer)
    editor.save()
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    editor = _editor(args)
    trust = _trust(args.ca)
    try:
        certificate = load_certificate(args.cert)
        signer = SigningIdentity.from_key(common_name(certificate), load_private_key(args.key), certificate)
    except (OSError, ValueError) as exc:
        raise DirectorySourceError(f"signing identity: {exc}") from None
    try:
        publication = editor.sign(signer, trust, validity=timedelta(hours=args.validity_hours), published=args.out)
    except (DirectoryTooLarge, ValueError) as exc:
        raise DirectorySourceError(str(exc)) from None
    _record(args, publication.change, editor.source.issuer)
    editor.publish(publication, args.out)
    print(f"published version {publication.directory.version} to {args.out}, expires {format_time(publication.directory.expires_at)}", file=sys.stderr)
    return 0


def _describe(directory: Directory | DirectorySource, now: datetime) -> list[str]:
    lines = [f"node {n.id} {n.url}" for n in directory.nodes]
    for p in directory.participants:
        types = ",".join(str(t) for t in p.message_types) or "-"
        lines.append(f"participant {p.id} on {p.node}, {p.environment.value}, message types {types}{' [retired]' if p.retired else ''}")
        for c in p.certificates:
            flag = " [retired]" if c.retired else ("" if c.current_at(now) else " [not current]")
            lines.append(f"  {c.use.value:<10} {c.fingerprint} {format_time(c.valid_from)} .. {format_time(c.valid_until)}{flag}")
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    now = args.now or datetime.now(timezone.utc)
    if args.file.suffix in (".toml", ".json"):
        source = load_source(args.file)
        if args.json:
            print(json.dumps(source.to_json(), indent=2, ensure_ascii=False))
        else:
            print("\n".join([f"directory source for issuer {source.issuer}, last published version {source.version}", *_describe(source, now)]))
        return 0
    if not args.ca or not args.issuer:
        raise DirectorySourceError("a signed directory is shown only verified: give --ca and --issuer")
    verified = verify_directory(_read_token(args.file), trust=_trust(args.ca), issuer=args.issuer, now=now, grace=_FOREVER)
    if args.json:
        print(json.dumps(verified.directory.to_claims(), indent=2, ensure_ascii=False))
        return 0
    expired = " [EXPIRED]" if now >= verified.expires_at else ""
    header = (f"directory version {verified.version} by {verified.issuer}, issued {format_time(verified.issued_at)}, "
              f"expires {format_time(verified.expires_at)}{expired}")
    print("\n".join([header, *_describe(verified.directory, now)]))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    now = args.now or datetime.now(timezone.utc)
    try:
        verified = verify_directory(
            _read_token(args.file), trust=_trust(args.ca), issuer=args.issuer, now=now,
            grace=timedelta(hours=args.grace_hours), min_version=args.min_version,
        )
    except DirectoryRefused as exc:
        print(f"INVALID ({exc.reason.value}): {exc.info}", file=sys.stderr)
        return 1
    directory = verified.directory
    print(f"valid: version {directory.version} by {directory.issuer}, issued {format_time(directory.issued_at)}, "
          f"expires {format_time(directory.expires_at)}, {len(directory.participants)} participants on {len(directory.nodes)} nodes")
    return 0


def _read_token(path: Path) -> str:
    try:
        return Path(path).read_text("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DirectorySourceError(f"{path}: {exc}") from None


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except AuditUnavailable as exc:
            print(f"audit log unavailable, nothing changed: {exc}", file=sys.stderr)
            return 3
        except DirectoryRefused as exc:
            print(f"INVALID ({exc.reason.value}): {exc.info}", file=sys.stderr)
            return 1
        except DirectorySourceError as exc:
            print(f"directory: {exc}", file=sys.stderr)
            return 2

    return run


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``directory`` command group; each leaf sets ``func(args) -> exit code``."""
    group = subparsers.add_parser("directory", help="edit, publish, show and verify the federation directory")
    sub = group.add_subparsers(dest="directory_command", required=True)

    def change(name: str, help: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--source", type=Path, required=True, help="directory source file (.toml or .json)")
        p.add_argument("--actor", required=True, help="admin id recorded with the change")
        audit = p.add_mutually_exclusive_group(required=True)
        audit.add_argument("--audit-log", type=Path, help="the hub's audit log (SQLite); the change is recorded before it is written")
        audit.add_argument("--no-audit", action="store_true", help="print the change record only")
        p.add_argument("--audit-key", type=Path, help="the audit log's checkpoint key (the node's TLS key, PEM)")
        p.add_argument("--now", type=_time, help=argparse.SUPPRESS)
        p.set_defaults(func=_guard(handler))
        return p

    p = change("init", "create an empty directory source", cmd_init)
    p.add_argument("--issuer", required=True, help="node ID of the hub that signs the directory")

    p = change("set-node", "add a node or change its URL", _edit(lambda e, a: e.set_node(a.node, a.url)))
    p.add_argument("--node", required=True)
    p.add_argument("--url", required=True, help="https://host:port of the node-to-node API")

    p = change("add-participant", "list a participant on a node", _edit(lambda e, a: e.add_participant(
        a.id, node=a.node, environment=Environment(a.environment) if a.environment else None, message_types=tuple(a.message_type))))
    p.add_argument("--id", required=True, help="sedex participant ID")
    p.add_argument("--node", required=True)
    p.add_argument("--environment", choices=[e.value for e in Environment], help="default: test for a T… ID, else production")
    p.add_argument("--message-type", type=int, action="append", default=[], help="eCH-0090 messageType; repeat for several")

    p = change("retire-participant", "retire a participant (kept listed, never resolved)", _edit(lambda e, a: e.retire_participant(a.id)))
    p.add_argument("--id", required=True)

    p = change("add-certificate", "add a signing or encryption certificate", _edit(lambda e, a: e.add_certificate(
        a.id, _read_pem(a.file), use=CertificateUse(a.use), not_before=a.not_before, not_after=a.not_after)))
    p.add_argument("--id", required=True)
    p.add_argument("--use", required=True, choices=[u.value for u in CertificateUse])
    p.add_argument("--file", type=Path, required=True, help="certificate (PEM)")
    p.add_argument("--not-before", type=_time, help="listed as usable from (default: the certificate's start)")
    p.add_argument("--not-after", type=_time, help="listed as usable until (default: the certificate's end)")

    p = change("retire-certificate", "retire a certificate by fingerprint", _edit(lambda e, a: e.retire_certificate(a.id, a.fingerprint)))
    p.add_argument("--id", required=True)
    p.add_argument("--fingerprint", required=True, help="SHA-256 of the DER certificate (or a unique prefix of 16+ hex digits)")

    p = change("publish", "sign the next version and write it where the hub serves it", cmd_publish)
    p.add_argument("--out", type=Path, required=True, help="signed directory file (served by the hub)")
    p.add_argument("--cert", type=Path, required=True, help="hub node certificate (PEM); its CN must be the issuer")
    p.add_argument("--key", type=Path, required=True, help="hub node private key (PEM)")
    p.add_argument("--ca", type=Path, action="append", required=True, help="federation trust anchor (PEM); repeatable")
    p.add_argument("--validity-hours", type=float, default=DEFAULT_VALIDITY.total_seconds() / 3600)

    p = sub.add_parser("show", help="show a directory source, or a signed directory after verifying it")
    p.add_argument("file", type=Path)
    p.add_argument("--ca", type=Path, action="append", help="federation trust anchor (PEM), for a signed directory")
    p.add_argument("--issuer", help="expected issuer node ID, for a signed directory")
    p.add_argument("--json", action="store_true")
    p.add_argument("--now", type=_time, help="judge validity at this time (ISO 8601 with offset)")
    p.set_defaults(func=_guard(cmd_show))

    p = sub.add_parser("verify", help="verify a signed directory against the federation CA")
    p.add_argument("file", type=Path)
    p.add_argument("--ca", type=Path, action="append", required=True)
    p.add_argument("--issuer", required=True, help="node ID that must have signed it")
    p.add_argument("--grace-hours", type=float, default=0.0, help="accept this long past expiry")
    p.add_argument("--min-version", type=int, default=0, help="refuse anything older (rollback)")
    p.add_argument("--now", type=_time, help="verify at this time (ISO 8601 with offset)")
    p.set_defaults(func=_guard(cmd_verify))
    return group


def _read_pem(path: Path) -> str:
    try:
        return Path(path).read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DirectorySourceError(f"{path}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m gateway.directory.cli directory …``) until the lead wires it."""
    parser = argparse.ArgumentParser(prog="drehscheibe")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
