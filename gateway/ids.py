"""eCH value types that refuse bad input on construction.

Participant IDs follow the eCH-0090 pattern; sedex status codes carry their class
(permanent, temporary, info, warning) so the rest of the gateway never parses numbers.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_PARTICIPANT = re.compile(r"T?[1-9]-[0-9A-Z]+-[0-9]+|T?0-sedex-[0-9]")
_MESSAGE_ID = re.compile(r"[a-zA-Z0-9-]{1,36}")


class InvalidIdentifier(ValueError):
    """A participant ID or message ID that does not match the eCH-0090 pattern."""


@dataclass(frozen=True, order=True, slots=True)
class ParticipantId:
    """A sedex participant ID such as ``1-1061-1``; ``T`` marks test participants.

    The eCH-0058 URI form ``sedex://1-1061-1`` is accepted and normalised.
    """

    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.value, str) or not _PARTICIPANT.fullmatch(self.value):
            raise InvalidIdentifier(f"not a sedex participant ID: {self.value!r}")

    @classmethod
    def parse(cls, text: str) -> ParticipantId:
        text = text.strip()
        if text.lower().startswith("sedex://"):
            text = text[len("sedex://") :]
        return cls(text)

    @property
    def is_test(self) -> bool:
        return self.value.startswith("T")

    @property
    def uri(self) -> str:
        return f"sedex://{self.value}"

    def __str__(self) -> str:
        return self.value


def check_message_id(value: str) -> str:
    """Return ``value`` if it is a valid eCH-0090 messageId, raise otherwise."""
    if not isinstance(value, str) or not _MESSAGE_ID.fullmatch(value):
        raise InvalidIdentifier(f"not an eCH-0090 messageId: {value!r}")
    return value


class StatusClass(enum.Enum):
    SUCCESS = "success"
    PERMANENT = "permanent"  # 2xx message errors, 3xx authorisation errors
    TEMPORARY = "temporary"  # 4xx transport/infrastructure, 5xx internal
    INFO = "info"  # 6xx
    WARNING = "warning"  # 7xx


class StatusCode(enum.IntEnum):
    """sedex receipt status codes (eCH-0090 receipt ``statusCode``)."""

    DELIVERED = 100
    INVALID_ENVELOPE = 200
    DUPLICATE_MESSAGE_ID = 201
    NO_PAYLOAD = 202
    MESSAGE_TOO_OLD = 203
    MESSAGE_EXPIRED = 204
    UNKNOWN_SENDER = 300
    UNKNOWN_RECIPIENT = 301
    UNKNOWN_PHYSICAL_SENDER = 302
    INVALID_MESSAGE_TYPE = 303
    INVALID_MESSAGE_CLASS = 304
    NOT_ALLOWED_TO_SEND = 310
    NOT_ALLOWED_TO_RECEIVE = 311
    CERTIFICATE_NOT_VALID = 312
    RECIPIENT_NOT_ALLOWED = 313
    MESSAGE_TOO_LARGE = 330
    NETWORK_ERROR = 400
    HUB_NOT_REACHABLE = 401
    DIRECTORY_NOT_REACHABLE = 402
    LOGGING_NOT_REACHABLE = 403
    AUTHORIZATION_NOT_REACHABLE = 404
    INTERNAL_ERROR = 500
    HANDED_OVER = 601
    EXPIRES_SOON = 701

    @property
    def status_class(self) -> StatusClass:
        hundred = self.value // 100
        return {
            1: StatusClass.SUCCESS,
            2: StatusClass.PERMANENT,
            3: StatusClass.PERMANENT,
            4: StatusClass.TEMPORARY,
            5: StatusClass.TEMPORARY,
            6: StatusClass.INFO,
            7: StatusClass.WARNING,
        }[hundred]

    @property
    def is_permanent_failure(self) -> bool:
        return self.status_class is StatusClass.PERMANENT

    @property
    def is_temporary_failure(self) -> bool:
        return self.status_class is StatusClass.TEMPORARY

    @property
    def default_info(self) -> str:
        return _DEFAULT_INFO[self]


_DEFAULT_INFO = {
    StatusCode.DELIVERED: "Message correct transmitted",
    StatusCode.INVALID_ENVELOPE: "Invalid envelope syntax",
    StatusCode.DUPLICATE_MESSAGE_ID: "Duplicate message ID",
    StatusCode.NO_PAYLOAD: "No payload found",
    StatusCode.MESSAGE_TOO_OLD: "Message too old to send",
    StatusCode.MESSAGE_EXPIRED: "Message expired",
    StatusCode.UNKNOWN_SENDER: "Unknown sender ID",
    StatusCode.UNKNOWN_RECIPIENT: "Unknown recipient ID",
    StatusCode.UNKNOWN_PHYSICAL_SENDER: "Unknown physical sender ID",
    StatusCode.INVALID_MESSAGE_TYPE: "Invalid message type",
    StatusCode.INVALID_MESSAGE_CLASS: "Invalid message class",
    StatusCode.NOT_ALLOWED_TO_SEND: "Not allowed to send",
    StatusCode.NOT_ALLOWED_TO_RECEIVE: "Not allowed to receive",
    StatusCode.CERTIFICATE_NOT_VALID: "User certificate not valid",
    StatusCode.RECIPIENT_NOT_ALLOWED: "Not allowed to send to one of the recipients",
    StatusCode.MESSAGE_TOO_LARGE: "Message size exceeds limit",
    StatusCode.NETWORK_ERROR: "Network error",
    StatusCode.HUB_NOT_REACHABLE: "Hub not reachable",
    StatusCode.DIRECTORY_NOT_REACHABLE: "Directory not reachable",
    StatusCode.LOGGING_NOT_REACHABLE: "Logging service not reachable",
    StatusCode.AUTHORIZATION_NOT_REACHABLE: "Authorization service not reachable",
    StatusCode.INTERNAL_ERROR: "Internal error",
    StatusCode.HANDED_OVER: "Message handed over",
    StatusCode.EXPIRES_SOON: "Message will expire soon",
}


class GatewayError(Exception):
    """Base of the errors that end a message's journey with a sedex receipt.

    Each subclass knows its status code, so the edge maps errors to receipts
    without ``if`` chains. The message must never contain personal data.
    """

    status: StatusCode = StatusCode.INTERNAL_ERROR

    def __init__(self, info: str, *, status: StatusCode | None = None) -> None:
        super().__init__(info)
        if status is not None:
            self.status = status

    @property
    def info(self) -> str:
        return str(self)
