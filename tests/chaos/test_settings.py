"""Campaign settings: CHAOS_* variables override size, duration and seed; a bad value fails naming it."""

from __future__ import annotations

import pytest

from .settings import Settings


def test_the_environment_overrides_size_duration_and_seed():
    settings = Settings.campaign(seed=1).from_env({"CHAOS_MESSAGES": "5000", "CHAOS_SECONDS": "600", "CHAOS_SEED": "42"})
    assert (settings.messages, settings.seconds, settings.seed) == (5000, 600.0, 42)
    assert settings.chaos_timeout >= 1800 and settings.settle_timeout >= 500, "a bigger campaign gets time in proportion"


def test_unset_or_empty_variables_keep_the_defaults():
    assert Settings.campaign(seed=1).from_env({"CHAOS_MESSAGES": ""}) == Settings.campaign(seed=1)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CHAOS_MESSAGES": "lots"}, "CHAOS_MESSAGES='lots': expected a whole number"),
        ({"CHAOS_MESSAGES": "0"}, "CHAOS_MESSAGES='0': must be at least 1"),
        ({"CHAOS_SECONDS": "-5"}, "CHAOS_SECONDS='-5': must be zero or more"),
        ({"CHAOS_SEED": "0x1f"}, "CHAOS_SEED='0x1f': expected a whole number"),
    ],
)
def test_a_bad_value_fails_naming_the_variable_and_the_value(environ, message):
    with pytest.raises(ValueError) as raised:
        Settings.campaign(seed=1).from_env(environ)
    assert str(raised.value) == message
