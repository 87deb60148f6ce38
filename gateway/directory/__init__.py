"""The federation directory (docs/directory.md): who is hosted where, with which keys.

The hub edits a source and publishes signed versions (:class:`DirectoryEditor`,
:func:`directory_handler`, ``drehscheibe directory …``); every node keeps a verified
copy (:class:`DirectoryCache`) and resolves participants from it
(:meth:`DirectoryCache.lookup` → :class:`ResolvedParticipant`), failing closed with
:class:`DirectoryRefused` (sedex 402) when no verified, unexpired copy is at hand.
"""

from .cache import (
    DEFAULT_GRACE,
    DEFAULT_REFRESH_SECONDS,
    DEFAULT_RETRY_SECONDS,
    DirectoryCache,
    DirectoryState,
    DirectoryStatus,
    Fetch,
    https_fetcher,
)
from .editor import DEFAULT_VALIDITY, DirectoryChange, DirectoryEditor, Operation, Publication, load_source
from .errors import DirectoryRefused, DirectorySourceError, NoCurrentCertificate, Refusal, UnknownParticipant
from .model import CertificateEntry, CertificateUse, Directory, DirectorySource, Environment, NodeEntry, ParticipantEntry
from .serve import CONTENT_TYPE, DIRECTORY_PATH, directory_handler, directory_routes
from .verify import (
    DIRECTORY_TYPE,
    DirectoryTooLarge,
    ResolvedParticipant,
    VerifiedDirectory,
    sign_directory,
    verify_directory,
)

__all__ = [
    "CONTENT_TYPE", "DEFAULT_GRACE", "DEFAULT_REFRESH_SECONDS", "DEFAULT_RETRY_SECONDS", "DEFAULT_VALIDITY",
    "DIRECTORY_PATH", "DIRECTORY_TYPE", "CertificateEntry", "CertificateUse", "Directory", "DirectoryCache",
    "DirectoryChange", "DirectoryEditor", "DirectoryRefused", "DirectorySource", "DirectorySourceError",
    "DirectoryState", "DirectoryStatus", "DirectoryTooLarge", "Environment", "Fetch", "NoCurrentCertificate",
    "NodeEntry", "Operation", "ParticipantEntry", "Publication", "Refusal", "ResolvedParticipant",
    "UnknownParticipant", "VerifiedDirectory", "directory_handler", "directory_routes", "https_fetcher",
    "load_source", "sign_directory", "verify_directory",
]
