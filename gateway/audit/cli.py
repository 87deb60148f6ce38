"""``drehscheibe audit …``: the auditor's command line.

Exit codes: 0 valid / done, 1 verification failed or chain broken, 3 the audit log
could not record the auditor's own read (fail closed). Reads and exports are audited,
so those commands need the node's checkpoint key (``--signing-key``).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..ids import InvalidIdentifier, check_message_id
from .checkpoint import load_public_key
from .errors import AuditUnavailable, AuditVerificationError
from .export import FORMATS, BrokenTrace, claimed_origin, export_log, trace_message, verify_export
from .log import AuditLog, connect
from .persons import InvalidPersonIdentifier, person_ref
from .query import AuditQuery, query, subject_access_report
from .record import Action, Actor, ActorKind, Outcome
from .verify import verify_log

SECRET_ENV = "DREHSCHEIBE_AUDIT_SECRET_FILE"


def _time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"time without timezone: {text!r}")
    return moment


def _message_id(text: str) -> str:
    try:
        return check_message_id(text)
    except InvalidIdentifier:
        raise argparse.ArgumentTypeError("not an eCH-0090 messageId") from None


def _public_key(path: Path):
    try:
        return load_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot load verification key {path}: {exc}") from None


def _signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SystemExit("the checkpoint key must be an EC P-256 private key")
    return key


def _pg_dsn(args: argparse.Namespace) -> str:
    from ..store_pg import _dsn_has_password

    # SECURITY: a command line is visible to every user of the machine (ps); libpq reads the
    # password from PGPASSWORD or PGPASSFILE instead.
    if _dsn_has_password(args.pg_dsn):
        raise SystemExit("--pg-dsn must not contain a password (use PGPASSFILE or PGPASSWORD)")
    return args.pg_dsn


def _source(args: argparse.Namespace):
    """What verify_log reads: the SQLite file, or the log's PostgreSQL schema."""
    if args.log is not None:
        return args.log
    from .log_pg import PgLogSource

    return PgLogSource(_pg_dsn(args), args.pg_schema)


def _open(args: argparse.Namespace) -> AuditLog:
    if args.log is None:
        from .log_pg import PgAuditLog, PgLogSource

        try:
            conn = PgLogSource(_pg_dsn(args), args.pg_schema).connect()
            try:
                row = conn.execute("SELECT value FROM meta WHERE key='node'").fetchone()
            finally:
                conn.close()
        except Exception as exc:  # noqa: BLE001 - a driver, server or schema problem: say which, never the DSN
            raise SystemExit(f"cannot read the audit log schema {args.pg_schema} ({type(exc).__name__})") from None
        if row is None:
            raise SystemExit(f"not an audit log schema: {args.pg_schema}")
        return PgAuditLog.open(_pg_dsn(args), schema=args.pg_schema, node=row[0],
                               signing_key=lambda: _signing_key(args.signing_key))  # fmt: skip
    try:
        conn = connect(args.log, read_only=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='node'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        row = None
    if row is None:
        raise SystemExit(f"not an audit log file: {args.log}")
    return AuditLog.open(args.log, node=row[0], signing_key=lambda: _signing_key(args.signing_key))


def _secret(args: argparse.Namespace) -> bytes:
    path = args.secret_file or os.environ.get(SECRET_ENV)
    if not path:
        raise SystemExit(f"person search needs --secret-file or {SECRET_ENV}")
    return Path(path).read_bytes().rstrip(b"\r\n")


def _actor(args: argparse.Namespace) -> Actor:
    return Actor(ActorKind.AUDITOR, args.actor)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        result = verify_log(_source(args), _public_key(args.key), origin=args.origin)
    except AuditVerificationError as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    latest = result.latest
    print(
        f"valid: {result.size} records, {result.checkpoints} checkpoints, "
        f"signed size {latest.size if latest else 0}, unsigned tail {result.unsigned_tail}, pruned {result.pruned}"
    )
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    try:
        ref = person_ref(args.person, _secret(args)) if args.person else None
    except InvalidPersonIdentifier as exc:
        raise SystemExit(str(exc)) from None
    q = AuditQuery(
        participant=args.participant, message_type=args.message_type, since=args.since, until=args.until,
        message_id=args.message_id, action=Action(args.action) if args.action else None,
        outcome=Outcome(args.outcome) if args.outcome else None, person_ref=ref,
    )
    with _open(args) as log:
        for index, record in query(log, q, actor=_actor(args), now=_now()):
            print(f"{index}\t{record.canonical_bytes().decode('utf-8')}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _open(args) as log:
        if args.output:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                signed = export_log(log, out, actor=_actor(args), now=_now(), since=args.since, until=args.until,
                                    fmt=args.format, message_id=args.message_id)
        else:
            signed = export_log(log, sys.stdout, actor=_actor(args), now=_now(), since=args.since, until=args.until,
                                fmt=args.format, message_id=args.message_id)
    print(f"exported against checkpoint size {signed.checkpoint.size}", file=sys.stderr)
    return 0


def cmd_verify_export(args: argparse.Namespace) -> int:
    try:
        result = verify_export(Path(args.file).read_text("utf-8"), _public_key(args.key), origin=args.origin)
    except AuditVerificationError as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    print(f"valid: {len(result.records)} records of node {result.checkpoint.origin} at size {result.checkpoint.size}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    keys = {}
    for item in args.key:
        node, _, pem = item.partition("=")
        keys[node] = _public_key(Path(pem))
    verified = []
    try:
        for name in args.exports:
            text = Path(name).read_text("utf-8")
            # The claimed origin only picks the key; verify_export then binds it.
            claimed = claimed_origin(text)
            if claimed not in keys:
                print(f"INVALID: no --key for node {claimed}", file=sys.stderr)
                return 1
            verified.append(verify_export(text, keys[claimed], origin=claimed))
        trace = trace_message(args.message_id, verified)
    except BrokenTrace as exc:
        print("\n".join(exc.trace.timeline()))
        print(f"BROKEN: {exc}", file=sys.stderr)
        return 1
    except AuditVerificationError as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    print("\n".join(trace.timeline()))
    print("chain complete: every hop received what the previous hop sent")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    try:
        ref = person_ref(args.person, _secret(args))
    except InvalidPersonIdentifier as exc:
        raise SystemExit(str(exc)) from None
    with _open(args) as log:
        report = subject_access_report(log, ref, actor=_actor(args), now=_now())
    print(report.to_json() if args.format == "json" else report.to_text(), end="" if args.format == "text" else "\n")
    return 0


def _guard(handler):
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except AuditUnavailable as exc:
            print(f"audit log unavailable: {exc}", file=sys.stderr)
            return 3

    return run


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``audit`` command group; each leaf sets ``func(args) -> exit code``."""
    audit = subparsers.add_parser("audit", help="verify, query, export and trace the audit trail")
    sub = audit.add_subparsers(dest="audit_command", required=True)

    def location(p: argparse.ArgumentParser) -> None:
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--log", type=Path, help="the node's audit log SQLite file")
        where.add_argument("--pg-schema", help='the audit log schema in PostgreSQL (a node with [store] backend = "postgresql": <schema>_audit)')
        p.add_argument("--pg-dsn", default="", help="libpq connection string without password (default: the PG* environment)")

    def writer(p: argparse.ArgumentParser) -> None:
        location(p)
        p.add_argument("--signing-key", type=Path, required=True, help="node checkpoint key (PEM); the read itself is audited")
        p.add_argument("--actor", required=True, help="auditor id recorded in the audit_read/audit_export record")

    p = sub.add_parser("verify", help="check the whole log against its signed checkpoints")
    location(p)
    p.add_argument("--key", type=Path, required=True, help="node certificate or public key (PEM)")
    p.add_argument("--origin", help="expected node id (default: the one stored in the log)")
    p.set_defaults(func=_guard(cmd_verify))

    p = sub.add_parser("query", help="search records (the search is audited)")
    writer(p)
    p.add_argument("--participant")
    p.add_argument("--message-type")
    p.add_argument("--since", type=_time)
    p.add_argument("--until", type=_time)
    p.add_argument("--message-id")
    p.add_argument("--action", choices=[a.value for a in Action])
    p.add_argument("--outcome", choices=[o.value for o in Outcome])
    p.add_argument("--person", help="AHV number 756… or local:CATEGORY:ID; hashed before searching")
    p.add_argument("--secret-file", help=f"person-ref secret (default: ${SECRET_ENV})")
    p.set_defaults(func=_guard(cmd_query))

    p = sub.add_parser("export", help="export records with a signed checkpoint and inclusion proofs")
    writer(p)
    p.add_argument("--from", dest="since", type=_time)
    p.add_argument("--to", dest="until", type=_time)
    p.add_argument("--message-id", type=_message_id, help="only the records of this message (what a trace needs)")
    p.add_argument("--format", choices=FORMATS, default="jsonl")
    p.add_argument("--output")
    p.set_defaults(func=_guard(cmd_export))

    p = sub.add_parser("verify-export", help="verify an export without access to the node")
    p.add_argument("file")
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--origin")
    p.set_defaults(func=_guard(cmd_verify_export))

    p = sub.add_parser("trace", help="rebuild one message's path from several nodes' exports")
    p.add_argument("message_id")
    p.add_argument("exports", nargs="+")
    p.add_argument("--key", action="append", required=True, metavar="NODE=PEM", help="one per node")
    p.set_defaults(func=_guard(cmd_trace))

    p = sub.add_parser("report", help="data-subject access report for one person")
    writer(p)
    p.add_argument("--person", required=True)
    p.add_argument("--secret-file")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=_guard(cmd_report))
    return audit


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m gateway.audit.cli audit …``) until the lead wires it."""
    parser = argparse.ArgumentParser(prog="drehscheibe")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
