"""Records of policy reloads and configuration changes."""

from __future__ import annotations

from gateway.audit import Action, Actor, ActorKind, AuditLog, ChangeKind, Role, config_change, policy_reload

from .conftest import NODE, T0

ADMIN = Actor(ActorKind.ADMIN, "admin-lu")


def test_a_policy_reload_records_revision_and_digest(log: AuditLog):
    """A policy reload is logged with the admin, the revision and the digest of the policy files."""
    record = policy_reload(NODE, ADMIN, revision="r8", digest="ab" * 32, now=T0)
    (index,) = log.append([record])
    stored = list(log.iter_records())[index][2]
    assert (stored.action, stored.role, stored.actor) == (Action.POLICY_RELOAD, Role.NONE, ADMIN)
    assert stored.details == {"revision": "r8", "digest": "ab" * 32}


def test_config_changes_record_kind_subject_and_both_digests(log: AuditLog):
    """Adding a route and removing a key are logged with '-' for the missing side."""
    added = config_change(NODE, ADMIN, kind=ChangeKind.ROUTE, subject="1-1061-1->2-LU-1",
                          old_digest=None, new_digest="cd" * 32, now=T0)
    removed = config_change(NODE, ADMIN, kind=ChangeKind.KEY, subject="key-2025",
                            old_digest="ef" * 32, new_digest=None, now=T0)
    log.append([added, removed])
    details = [r.details for _, _, r in log.iter_records()]
    assert details == [
        {"change": "route", "subject": "1-1061-1->2-LU-1", "old_digest": "-", "new_digest": "cd" * 32},
        {"change": "key", "subject": "key-2025", "old_digest": "ef" * 32, "new_digest": "-"},
    ]
