"""The policy holder: reloads are audited and a bad reload keeps the previous set."""

from __future__ import annotations

import pytest

from gateway.ids import ParticipantId
from gateway.policy import PolicyRequest, PolicyStore, load_policy_set

from .conftest import NOW, permit

BASIC = 'senders = ["1-1061-1"]\nrecipients = ["2-LU-1"]\n'


def test_bad_reload_keeps_the_previous_set_and_reports_the_error(write_policy):
    """A reload with a bad file keeps deciding on the old set and returns the error for the audit."""
    good = write_policy(permit("good", BASIC))
    store = PolicyStore(load_policy_set([good]), clock=lambda: NOW)
    before = store.revision
    bad = write_policy(permit("broken", BASIC + "max_payload_size = 0"))
    result = store.reload([bad], actor="admin:anna")
    assert not result.accepted
    assert (result.actor, result.at, result.old_revision, result.new_revision) == ("admin:anna", NOW, before, None)
    assert "rule 'broken'" in result.error and "max_payload_size" in result.error
    assert store.revision == before
    request = PolicyRequest(ParticipantId("1-1061-1"), ParticipantId("2-LU-1"), 1, 0, 1)
    assert store.engine.decide(request, NOW, "origin").rule_ids == ("good",)


def test_good_reload_swaps_the_set_and_summarises_the_change(write_policy):
    """A good reload returns who, when, both revisions and which rules were added, removed or changed."""
    store = PolicyStore(load_policy_set([write_policy(permit("kept", BASIC) + permit("gone", BASIC))]), clock=lambda: NOW)
    old = store.revision
    new_file = write_policy(permit("kept", BASIC + "message_types = [94]") + permit("new", BASIC))
    result = store.reload([new_file], actor="admin:beat")
    assert result.accepted and result.old_revision == old and result.new_revision == store.revision != old
    assert (result.changes.added, result.changes.removed, result.changes.changed) == (("new",), ("gone",), ("kept",))
    assert result.to_json()["changes"]["summary"] == "1 added, 1 removed, 1 changed"


def test_store_without_policies_refuses_to_decide():
    """A node without a loaded policy set has no engine, so nothing is allowed by accident."""
    with pytest.raises(LookupError):
        PolicyStore().engine
