"""What can go wrong with a federation directory, each error knowing its sedex status.

A node that cannot use its directory fails closed with :class:`DirectoryRefused`
(sedex 402, temporary: messages wait and are retried, nothing is sent to an
unverified address or key). Lookups that find no usable entry raise errors with the
permanent code a receipt carries (301 unknown recipient, 312 certificate not valid).
"""

from __future__ import annotations

import enum

from ..ids import GatewayError, StatusCode


class Refusal(enum.Enum):
    """Why a directory (or every copy of it) cannot be used."""

    UNAVAILABLE = "unavailable"  # no copy could be fetched or loaded
    BAD_SIGNATURE = "bad-signature"  # not a compact JWS, wrong typ or header, signature does not verify
    WRONG_SIGNER = "wrong-signer"  # not signed by the configured issuer with a valid federation certificate
    MALFORMED = "malformed"  # signed claims that are not a directory document
    BAD_CERTIFICATE = "bad-certificate"  # a listed certificate does not chain, names someone else or has the wrong usage
    NOT_YET_VALID = "not-yet-valid"  # issued in the future (beyond the allowed clock skew)
    EXPIRED = "expired"  # past its expiry (and the grace period, where one applies)
    ROLLBACK = "rollback"  # an older version than one already accepted, or the same version with other content


class DirectoryRefused(GatewayError):
    """The directory cannot be used; the node refuses to route rather than guess."""

    status = StatusCode.DIRECTORY_NOT_REACHABLE

    def __init__(self, reason: Refusal, info: str) -> None:
        super().__init__(f"directory refused ({reason.value}): {info}")
        self.reason = reason


class UnknownParticipant(GatewayError):
    """The participant is not in the directory, or it is retired."""

    status = StatusCode.UNKNOWN_RECIPIENT


class NoCurrentCertificate(GatewayError):
    """The participant has no certificate of the needed use that is valid now."""

    status = StatusCode.CERTIFICATE_NOT_VALID


class DirectorySourceError(ValueError):
    """An admin's directory source or change cannot be used; the message names file, key and value."""
