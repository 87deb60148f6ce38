"""The ``drehscheibe policy`` command group: check, explain, diff (each with ``--json``).

Exit codes: 0 clean / allowed, 1 findings / denied, 2 unusable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from ..envelope import parse_envelope
from ..ids import GatewayError, InvalidIdentifier, ParticipantId
from ..safexml import parse_xml
from ..schemas import SchemaCatalog
from .diff import diff_policy_sets
from .engine import PolicyEngine
from .facts import payload_facts
from .lint import check_files
from .loader import PolicyLoadError, load_policy_set
from .model import PolicyRequest, Stage
from .redact import RedactionError, redact

DEFAULT_SCHEMAS = Path("../shared/ech/xsd")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``policy`` command group to an argparse subparsers object."""
    policy = subparsers.add_parser("policy", help="check, explain and compare data-protection policies")
    commands = policy.add_subparsers(dest="policy_command", required=True)

    def common(parser: argparse.ArgumentParser, schemas: bool = True) -> None:
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.add_argument("--now", type=_instant, default=None, help="evaluate at this ISO date-time (default: now)")
        if schemas:
            parser.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS, help="folder of official eCH XSDs")

    check = commands.add_parser("check", help="lint policy files")
    check.add_argument("files", nargs="+", type=Path)
    check.add_argument("--participants", type=Path, help="file with one known participant ID per line")
    common(check)
    check.set_defaults(func=cmd_check)

    explain = commands.add_parser("explain", help="explain the decision for one message")
    explain.add_argument("envelope", type=Path)
    explain.add_argument("payload", type=Path, nargs="?")
    explain.add_argument("--policies", type=Path, required=True, action="append")
    explain.add_argument("--stage", choices=[s.value for s in Stage], default=Stage.ORIGIN.value)
    common(explain)
    explain.set_defaults(func=cmd_explain)

    diff = commands.add_parser("diff", help="who gains or loses access between two policy sets")
    diff.add_argument("old", type=Path)
    diff.add_argument("new", type=Path)
    common(diff, schemas=False)
    diff.set_defaults(func=cmd_diff)
    return policy


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("--now needs an offset, e.g. 2026-01-01T00:00:00+01:00")
    return value


def _now(args) -> datetime:
    return args.now or datetime.now(timezone.utc)


def _emit(args, data: dict, text: list[str]) -> None:
    if args.json:
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(text) + "\n")


def cmd_check(args) -> int:
    known = None
    if args.participants:
        known = set()
        for line in args.participants.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                try:
                    known.add(ParticipantId.parse(line).value)
                except InvalidIdentifier as exc:
                    sys.stderr.write(f"{args.participants}: {exc}\n")
                    return 2
    findings = check_files(args.files, known, args.schemas, _now(args))
    lines = [f"{f.file}: {f.rule or '-'}: {f.kind}: {f.message}" for f in findings] or ["no findings"]
    _emit(args, {"ok": not findings, "findings": [f.to_json() for f in findings]}, lines)
    return 1 if findings else 0


def cmd_explain(args) -> int:
    try:
        policy_set = load_policy_set(args.policies)
        catalog = SchemaCatalog(args.schemas)
        envelope = parse_envelope(args.envelope.read_bytes(), catalog)
        payload = args.payload.read_bytes() if args.payload else None
        facts = payload_facts(parse_xml(payload)) if payload is not None else None
    except (PolicyLoadError, GatewayError, OSError) as exc:
        sys.stderr.write(f"policy explain: {exc}\n")
        return 2
    engine = PolicyEngine(policy_set)
    stage = Stage(args.stage)
    now = _now(args)
    size = len(payload) if payload is not None else 0
    requests = [
        PolicyRequest(envelope.sender, r, envelope.message_type, envelope.message_class, size, facts)
        for r in envelope.recipients
    ]
    decisions = engine.decide_all(requests, now, stage)
    results, lines = [], [f"policy revision {policy_set.revision}"]
    for request, decision in zip(requests, decisions):
        forbids, permits = engine.matching(request, now, stage)
        entry = {"recipient": str(request.recipient), **decision.to_json(),
                 "matched_permits": sorted(r.id for r in permits), "matched_forbids": sorted(r.id for r in forbids),
                 "removed": []}
        if decision.allowed and decision.redactions and payload is not None:
            try:
                result = redact(payload, decision.redactions, catalog)
                entry["removed"] = [{"path": p, "count": n} for p, n in result.removed]
            except RedactionError as exc:
                entry["redaction_error"] = str(exc)
        results.append(entry)
        verdict = "ALLOWED" if decision.allowed else "DENIED"
        lines.append(f"{envelope.sender} -> {request.recipient} type {envelope.message_type}: {verdict}, receipt {entry['receipt_code']} ({decision.reason})")
        lines.append(f"  deciding rules: {', '.join(decision.rule_ids) or '-'}")
        lines.append(f"  matched permits: {', '.join(entry['matched_permits']) or '-'}; matched forbids: {', '.join(entry['matched_forbids']) or '-'}")
        lines.append(f"  purpose: {'; '.join(decision.purpose) or '-'}")
        lines.append(f"  legal basis: {'; '.join(decision.legal_basis) or '-'}")
        if decision.redactions:
            counts = {r["path"]: r["count"] for r in entry["removed"]}
            removes = [f"{path} ({counts[path]} removed)" if path in counts else path for path in decision.redactions]
            lines.append(f"  removes: {', '.join(removes)}")
        if "redaction_error" in entry:
            lines.append(f"  redaction error: {entry['redaction_error']}")
    data = {
        "revision": policy_set.revision,
        "message_id": envelope.message_id,
        "sender": str(envelope.sender),
        "message_type": envelope.message_type,
        "message_class": envelope.message_class,
        "stage": stage.value,
        "facts": None if facts is None else {"action": facts.action, "event": facts.event, "test_delivery": facts.test_delivery, "data_lock": facts.data_lock, "namespace": facts.namespace},
        "decisions": results,
    }
    _emit(args, data, lines)
    return 0 if all(d.allowed for d in decisions) else 1


def cmd_diff(args) -> int:
    try:
        old, new = load_policy_set([args.old]), load_policy_set([args.new])
    except PolicyLoadError as exc:
        sys.stderr.write(f"policy diff: {exc}\n")
        return 2
    result = diff_policy_sets(old, new, _now(args))
    lines = [f"{old.revision} -> {new.revision}: rules {result.rules.summary}"]
    for kind in ("added", "removed", "changed"):
        if getattr(result.rules, kind):
            lines.append(f"  rules {kind}: {', '.join(getattr(result.rules, kind))}")
    counts = result.counts()
    lines.append(f"access: {counts['gained']} gained, {counts['lost']} lost, {counts['redactions']} with other redactions")
    lines.extend(f"  {change.line()}" for change in result.access)
    _emit(args, result.to_json(), lines)
    return 0
