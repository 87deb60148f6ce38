"""What a chaos campaign runs: the federation's shape, its traffic, its faults and its size."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, replace
from typing import Mapping

from gateway.config import Delivery

from ..conftest import KANTON, LUZERN
from .proxy import Fault, FaultPlan

KRIENS = "1-1059-1"
HUB = "node-hub"
NODES = {"node-luzern": [LUZERN], HUB: [KANTON], "node-kriens": [KRIENS]}
VIA = {"node-luzern": {KRIENS: HUB}, "node-kriens": {LUZERN: HUB}}
KILL_AFTER_DELIVER = "kill-after-deliver"  # the gateway's test-only fault point (docs/operations.md)


def delivery_toml() -> str:
    """Retry timing compressed as in the other process tests; the circuit breaker (if this gateway has one) to match.

    With the production default (open 30 s after 5 failures) every kill would hold a link for
    30 s or more; here a breaker opens for ``retry_max_seconds``, the longest a single retry waits.
    """
    lines = ["retry_base_seconds = 0.2", "retry_max_seconds = 2.0", "poll_seconds = 0.05"]
    if "breaker_seconds" in {f.name for f in dataclasses.fields(Delivery)}:
        lines.append("breaker_seconds = 2.0")
    return "\n".join(lines)


@dataclass(frozen=True)
class Flow:
    """One kind of traffic and its share of the load."""

    sender: str
    recipient: str
    share: float
    label: str


FLOWS = (
    Flow(LUZERN, KRIENS, 0.5, "Luzern → hub → Kriens (relayed)"),
    Flow(LUZERN, KANTON, 0.25, "Luzern → canton on the hub (direct)"),
    Flow(KRIENS, LUZERN, 0.25, "Kriens → hub → Luzern (relayed)"),
)

# The share of each fault among new connections while the chaos runs.
CHAOS_PLAN = FaultPlan(
    {Fault.PASS: 0.55, Fault.DELAY: 0.15, Fault.CUT: 0.12, Fault.DROP: 0.08, Fault.REFUSE: 0.10},
    delay=(0.005, 0.15), hold=(0.2, 2.0), cut_after=(0, 24 * 1024),
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """How big and how rough a campaign is."""

    messages: int
    seconds: float  # the chaos lasts at least this long (and until every node was killed and every fault injected once); the load is spread evenly over it
    seed: int
    kill_every: tuple[float, float] = (2.0, 5.0)  # seconds between SIGKILLs
    downtime: tuple[float, float] = (0.2, 2.5)  # seconds a killed node stays down
    armed_share: float = 0.2  # restarts armed with the kill-after-deliver fault point
    command_every: tuple[float, float] = (0.5, 2.0)  # seconds between faults on command
    plan: FaultPlan = CHAOS_PLAN
    submitters: int = 8  # submissions in flight at once
    chaos_timeout: float = 600.0  # the load must be accepted within this
    settle_timeout: float = 180.0  # after recovery, everything must be settled within this

    def __post_init__(self) -> None:
        if self.messages < 1 or self.seconds < 0 or self.submitters < 1:
            raise ValueError(f"bad campaign size: messages={self.messages}, seconds={self.seconds}, submitters={self.submitters}")
        if not 0 <= self.armed_share <= 1:
            raise ValueError(f"armed_share: expected 0..1, got {self.armed_share}")

    @classmethod
    def short(cls, seed: int) -> Settings:
        """Bounded for ``make test`` on two cores (under 90 s in all): 150 messages over 15 s, a kill every 2–4 s."""
        return cls(messages=150, seconds=15.0, seed=seed, kill_every=(2.0, 4.0), downtime=(0.2, 1.0),
                   chaos_timeout=30.0, settle_timeout=30.0)  # fmt: skip

    @classmethod
    def campaign(cls, seed: int) -> Settings:
        """The long run: 1,000 messages over 150 s."""
        return cls(messages=1000, seconds=150.0, seed=seed)

    def from_env(self, environ: Mapping[str, str]) -> Settings:
        """Override size, duration and seed with ``CHAOS_MESSAGES``, ``CHAOS_SECONDS``, ``CHAOS_SEED``."""
        changes: dict = {}
        for name, key, kind in (("CHAOS_MESSAGES", "messages", int), ("CHAOS_SECONDS", "seconds", float), ("CHAOS_SEED", "seed", int)):
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r}: expected a {'whole ' if kind is int else ''}number") from None
            if value < 0 or (key == "messages" and value < 1):
                raise ValueError(f"{name}={raw!r}: must be {'at least 1' if key == 'messages' else 'zero or more'}")
            changes[key] = value
        settings = replace(self, **changes)
        # A bigger or longer campaign gets time in proportion (a 2-core machine under chaos
        # accepts some 10–20 messages a second).
        return replace(
            settings,
            chaos_timeout=max(self.chaos_timeout, settings.seconds * 3, settings.messages * 0.5),
            settle_timeout=max(self.settle_timeout, settings.messages * 0.1),
        )


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "big")
