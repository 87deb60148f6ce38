"""eCH value types refuse bad input on construction."""

from __future__ import annotations

import pytest

from gateway.ids import InvalidIdentifier, ParticipantId, StatusClass, StatusCode, check_message_id


@pytest.mark.parametrize("value", ["1-1061-1", "2-LU-1", "3-CH-1", "T1-2196-1", "T3-CH-4", "0-sedex-0"])
def test_valid_participant_ids_are_accepted(value):
    """IDs matching the eCH-0090 pattern construct."""
    assert str(ParticipantId(value)) == value


@pytest.mark.parametrize("value", ["", "17-4-12", "1-lu-1", "1-1061", "X1-1-1", "1-1061-1 ", "../1-1-1"])
def test_invalid_participant_ids_are_refused(value):
    """Anything else raises."""
    with pytest.raises(InvalidIdentifier):
        ParticipantId(value)


def test_sedex_uris_are_normalised():
    """The eCH-0058 URI form names the same participant."""
    assert ParticipantId.parse("sedex://1-1061-1") == ParticipantId("1-1061-1")
    assert ParticipantId.parse("T1-2196-1").is_test and not ParticipantId("1-1061-1").is_test


@pytest.mark.parametrize(
    ("code", "kind"),
    [(100, StatusClass.SUCCESS), (201, StatusClass.PERMANENT), (311, StatusClass.PERMANENT),
     (403, StatusClass.TEMPORARY), (500, StatusClass.TEMPORARY), (601, StatusClass.INFO), (701, StatusClass.WARNING)],
)  # fmt: skip
def test_status_codes_know_their_class(code, kind):
    """Permanent 2xx/3xx, temporary 4xx/5xx, info 6xx, warning 7xx."""
    assert StatusCode(code).status_class is kind


def test_message_ids_follow_the_ech0090_pattern():
    """Up to 36 letters, digits or hyphens."""
    assert check_message_id("f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
    for bad in ("", "a" * 37, "a/b", "a b"):
        with pytest.raises(InvalidIdentifier):
            check_message_id(bad)
