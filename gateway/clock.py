"""Injected time and randomness: behaviour that depends on them is tested without sleeping."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone


class Clock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def timestamp(self) -> float:
        return self.now().timestamp()


class FixedClock(Clock):
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, **delta: float) -> None:
        self._now += timedelta(**delta)

    def set(self, value: datetime) -> None:
        self._now = value


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": between half and all of min(cap, base·2^n)."""
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return ceiling / 2 + rng.random() * ceiling / 2
