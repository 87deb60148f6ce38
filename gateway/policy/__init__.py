"""Data-protection policy engine: who may send what to whom, on which legal basis.

Policy is data (TOML files under ``policies/``), loaded once into frozen objects; the
engine denies by default, a forbid beats any permit, and order never matters.
"""

from .engine import PolicyEngine
from .facts import payload_facts
from .loader import PolicyLoadError, load_policy_set
from .model import Effect, PayloadFacts, PolicyDecision, PolicyRequest, PolicySet, Rule, Stage
from .redact import RedactionError, RedactionResult, redact
from .store import AccessSummary, LoadFailure, PolicyStore, ReloadResult

__all__ = [
    "AccessSummary", "Effect", "LoadFailure", "PayloadFacts", "PolicyDecision", "PolicyEngine", "PolicyLoadError",
    "PolicyRequest", "PolicySet", "PolicyStore", "RedactionError", "RedactionResult", "ReloadResult", "Rule", "Stage",
    "load_policy_set", "payload_facts", "redact",
]
