"""The audit trail's small exception family.

Messages name indices, sizes and reasons only: never record content, never personal data.
"""

from __future__ import annotations

from ..ids import GatewayError, StatusCode


class AuditUnavailable(GatewayError):
    """The audit log cannot write durably; the hop must refuse with a temporary error.

    SECURITY: no audit record, no processing (fail closed, like X-Road's message log).
    """

    status = StatusCode.LOGGING_NOT_REACHABLE


class AuditVerificationError(Exception):
    """A log, proof, checkpoint or export does not verify.

    ``index`` is the first record index known to be bad, or ``None`` when the failure
    is not tied to one record (a forged checkpoint signature, a malformed file).
    """

    def __init__(self, reason: str, *, index: int | None = None) -> None:
        where = f" at index {index}" if index is not None else ""
        super().__init__(f"{reason}{where}")
        self.reason = reason
        self.index = index
