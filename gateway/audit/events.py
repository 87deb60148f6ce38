"""Records for what changes a node's behaviour: policy reloads and configuration changes.

They carry digests of the old and new configuration, never its content, so an auditor
can match a change to the file an admin reviewed.
"""

from __future__ import annotations

import enum
from datetime import datetime

from .record import Action, Actor, AuditRecord, Role


class ChangeKind(enum.Enum):
    PARTICIPANT = "participant"
    ROUTE = "route"
    KEY = "key"
    POLICY = "policy"
    NODE = "node"


def policy_reload(node: str, actor: Actor, *, revision: str, digest: str, now: datetime) -> AuditRecord:
    """A policy set was (re)loaded: its revision and the sha256 of its files."""
    return AuditRecord(
        time=now, node=node, role=Role.NONE, action=Action.POLICY_RELOAD, actor=actor,
        details={"revision": revision, "digest": digest},
    )


def config_change(
    node: str, actor: Actor, *, kind: ChangeKind, subject: str,
    old_digest: str | None, new_digest: str | None, now: datetime,
) -> AuditRecord:
    """A participant, route, key or node setting was added (old None), changed or removed (new None)."""
    return AuditRecord(
        time=now, node=node, role=Role.NONE, action=Action.CONFIG_CHANGE, actor=actor,
        details={"change": kind.value, "subject": subject,
                 "old_digest": old_digest or "-", "new_digest": new_digest or "-"},
    )
