"""Tamper-evident audit trail of a node, and the auditor's tools (see docs/audit.md).

Integration: open one :class:`AuditLog` per node, build :class:`AuditRecord` objects
in the pipeline, and ``append`` a batch per group commit; acknowledge only afterwards.
"""

from .checkpoint import Checkpoint, SignedCheckpoint, load_public_key, sign_checkpoint, verify_checkpoint
from .errors import AuditUnavailable, AuditVerificationError
from .events import ChangeKind, config_change, policy_reload
from .export import BrokenTrace, Trace, VerifiedExport, export_log, trace_message, verify_export
from .log import DEFAULT_RETENTION, MIN_RETENTION, AuditLog
from .merkle import MerkleTree, leaf_hash, node_hash, root_of, verify_consistency, verify_inclusion
from .persons import person_ref, person_refs
from .query import AuditQuery, SubjectAccessReport, query, subject_access_report
from .record import Action, Actor, ActorKind, AuditRecord, EnvelopeMeta, Outcome, PolicyRecord, Role, canonical_json
from .verify import VerifiedLog, verify_log

__all__ = [
    "DEFAULT_RETENTION", "MIN_RETENTION", "Action", "Actor", "ActorKind", "AuditLog", "AuditQuery", "AuditRecord",
    "AuditUnavailable", "AuditVerificationError", "BrokenTrace", "ChangeKind", "Checkpoint",
    "EnvelopeMeta", "MerkleTree", "Outcome", "PolicyRecord", "Role", "SignedCheckpoint",
    "SubjectAccessReport", "Trace", "VerifiedExport", "VerifiedLog", "canonical_json",
    "config_change", "export_log", "leaf_hash", "load_public_key", "node_hash", "person_ref",
    "person_refs", "policy_reload", "query", "root_of", "sign_checkpoint", "subject_access_report",
    "trace_message", "verify_checkpoint", "verify_consistency", "verify_export", "verify_inclusion",
    "verify_log",
]
