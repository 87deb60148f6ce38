"""A node's copy of the federation directory: fetch, verify, keep, and fail closed.

The cache holds the last directory that verified, on disk (atomically replaced) and in
memory. A refresh that fails for any reason — hub unreachable, bad signature, wrong
signer, rollback, expired — leaves that copy in place and is reported. Lookups use the
copy while ``now < expiresAt + grace``; after that, or if no copy ever verified, every
lookup raises :class:`DirectoryRefused` naming why (sedex 402: messages wait).

States (for metrics and events; ``on_state_change`` is called on every transition):

* ``current`` — the copy is within its validity and the last refresh succeeded;
* ``stale`` — the copy is still used, but the last refresh failed or it is past
  ``expiresAt`` (inside the grace period);
* ``unusable`` — no usable copy: lookups fail closed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp

from ..clock import Clock
from ..crypto.seal import TrustStore
from ..ids import ParticipantId
from .errors import DirectoryRefused, Refusal
from .files import atomic_write
from .model import format_time
from .verify import ResolvedParticipant, VerifiedDirectory, verify_directory

log = logging.getLogger(__name__)

DEFAULT_GRACE = timedelta(hours=24)
DEFAULT_REFRESH_SECONDS = 900.0
DEFAULT_RETRY_SECONDS = 60.0
# A signed directory is at most 256 KiB of payload plus header and signature.
MAX_DOCUMENT_BYTES = 512 * 1024
# Loading the copy from our own disk checks signature, signer, shape and certificates;
# its age is judged by the cache (grace), not by the verifier.
_NO_EXPIRY = timedelta(days=365 * 100)

Fetch = Callable[[], Awaitable[str]]
"""Returns the signed directory text; raises :class:`DirectoryRefused` or ``OSError`` when it cannot."""


class DirectoryState(enum.Enum):
    CURRENT = "current"
    STALE = "stale"
    UNUSABLE = "unusable"


@dataclass(frozen=True)
class DirectoryStatus:
    """A snapshot for metrics, events and health checks."""

    state: DirectoryState
    version: int | None
    expires_at: datetime | None
    usable_until: datetime | None  # expiresAt + grace
    last_refresh: datetime | None  # last successful refresh
    last_error: DirectoryRefused | None  # why the last refresh (or load) failed; None after a success

    def to_json(self) -> dict:
        return {
            "state": self.state.value,
            "version": self.version,
            "expiresAt": format_time(self.expires_at) if self.expires_at else None,
            "usableUntil": format_time(self.usable_until) if self.usable_until else None,
            "lastRefresh": format_time(self.last_refresh) if self.last_refresh else None,
            "lastError": str(self.last_error) if self.last_error else None,
            "lastErrorReason": self.last_error.reason.value if self.last_error else None,
        }


class DirectoryCache:
    """The directory as one node sees it. Call :meth:`load` at start, then :meth:`refresh`
    (or keep :meth:`run` as a task); :meth:`lookup` and :meth:`current` fail closed."""

    def __init__(
        self,
        path: Path,
        *,
        trust: TrustStore,
        issuer: str,
        fetch: Fetch,
        clock: Clock | None = None,
        grace: timedelta = DEFAULT_GRACE,
        min_version: int = 0,
        on_state_change: Callable[[DirectoryStatus], None] | None = None,
    ) -> None:
        if grace < timedelta(0):
            raise ValueError("grace must not be negative")
        self.path = Path(path)
        self.trust = trust
        self.issuer = issuer
        self.grace = grace
        self.min_version = min_version
        self._fetch = fetch
        self._clock = clock or Clock()
        self._on_state_change = on_state_change
        self._copy: VerifiedDirectory | None = None
        self._last_error: DirectoryRefused | None = None
        self._last_refresh: datetime | None = None
        self._refresh_failed = False
        self._reported: DirectoryState | None = None

    # -- state ---------------------------------------------------------------------

    def _state_at(self, now: datetime) -> DirectoryState:
        copy = self._copy
        if copy is None or now >= copy.expires_at + self.grace:
            return DirectoryState.UNUSABLE
        if self._refresh_failed or now >= copy.expires_at:
            return DirectoryState.STALE
        return DirectoryState.CURRENT

    def _snapshot(self, state: DirectoryState) -> DirectoryStatus:
        copy = self._copy
        return DirectoryStatus(
            state=state,
            version=copy.version if copy else None,
            expires_at=copy.expires_at if copy else None,
            usable_until=copy.expires_at + self.grace if copy else None,
            last_refresh=self._last_refresh,
            last_error=self._last_error,
        )

    @property
    def status(self) -> DirectoryStatus:
        return self._snapshot(self._observe())

    @property
    def state(self) -> DirectoryState:
        return self._observe()

    @property
    def stale(self) -> bool:
        """True while lookups are served from a copy the hub has not confirmed (see module doc)."""
        return self._observe() is DirectoryState.STALE

    def _observe(self) -> DirectoryState:
        """The state now; reports a transition (also one caused only by time passing)."""
        state = self._state_at(self._clock.now())
        if state is not self._reported:
            self._reported = state
            level = logging.INFO if state is DirectoryState.CURRENT else logging.WARNING
            log.log(level, "directory %s (version %s): %s", state.value,
                    self._copy.version if self._copy else "-", self._last_error or "ok")
            if self._on_state_change is not None:
                self._on_state_change(self._snapshot(state))
        return state

    # -- use -----------------------------------------------------------------------

    def current(self) -> VerifiedDirectory:
        """The directory to route by; raises :class:`DirectoryRefused` when there is none usable."""
        now = self._clock.now()
        self._observe()
        copy = self._copy
        if copy is None:
            if self._last_error is not None:
                raise DirectoryRefused(self._last_error.reason, f"no verified directory; {self._last_error.info}")
            raise DirectoryRefused(Refusal.UNAVAILABLE, "no directory has been loaded or fetched yet")
        if now >= copy.expires_at + self.grace:
            detail = f"; last refresh: {self._last_error.info}" if self._last_error else ""
            raise DirectoryRefused(
                Refusal.EXPIRED,
                f"version {copy.version} expired at {format_time(copy.expires_at)} and the grace of {self.grace} "
                f"ended at {format_time(copy.expires_at + self.grace)}{detail}",
            )
        return copy

    def lookup(self, participant: ParticipantId | str) -> ResolvedParticipant:
        """Resolve a participant now (see :meth:`VerifiedDirectory.lookup`)."""
        return self.current().lookup(participant, self._clock.now())

    # -- load and refresh ------------------------------------------------------------

    def load(self) -> DirectoryStatus:
        """Read the copy kept on disk (no network). A copy that fails verification is not used."""
        try:
            token = self.path.read_text("ascii")
        except FileNotFoundError:
            return self.status
        except (OSError, UnicodeDecodeError) as exc:
            self._last_error = DirectoryRefused(Refusal.UNAVAILABLE, f"cached copy {self.path} cannot be read: {exc}")
            return self.status
        try:
            self._copy = verify_directory(
                token, trust=self.trust, issuer=self.issuer, now=self._clock.now(), grace=_NO_EXPIRY, min_version=self.min_version
            )
        except DirectoryRefused as exc:
            self._last_error = DirectoryRefused(exc.reason, f"cached copy {self.path}: {exc.info}")
        return self.status

    async def refresh(self) -> DirectoryStatus:
        """Fetch from the hub and take the result if it verifies; never raises for a failed fetch."""
        try:
            token = await self._fetch()
        except DirectoryRefused as exc:
            return self._failed(exc)
        except (OSError, asyncio.TimeoutError) as exc:
            return self._failed(DirectoryRefused(Refusal.UNAVAILABLE, f"hub not reachable: {exc.__class__.__name__}: {exc}"))
        return self.accept(token)

    def accept(self, token: str) -> DirectoryStatus:
        """Take a signed directory obtained by other means, if it verifies (used by :meth:`refresh`)."""
        now = self._clock.now()
        try:
            verified = verify_directory(
                token, trust=self.trust, issuer=self.issuer, now=now, previous=self._copy, min_version=self.min_version
            )
        except DirectoryRefused as exc:
            return self._failed(exc)
        if self._copy is None or verified.digest != self._copy.digest:
            try:
                atomic_write(self.path, verified.token.encode("ascii"))
            except OSError as exc:
                # Still use it: it verified. Not keeping it only weakens the next start.
                log.error("directory version %s verified but could not be kept at %s: %s", verified.version, self.path, exc)
            self._copy = verified
        self._last_error = None
        self._last_refresh = now
        self._refresh_failed = False
        return self.status

    def _failed(self, error: DirectoryRefused) -> DirectoryStatus:
        self._last_error = error
        self._refresh_failed = True
        log.warning("directory refresh failed: %s", error)
        return self.status

    async def run(self, *, interval: float = DEFAULT_REFRESH_SECONDS, retry_interval: float = DEFAULT_RETRY_SECONDS) -> None:
        """Refresh forever: every ``interval`` seconds, every ``retry_interval`` after a failure.
        Keep a reference to the task and cancel it at shutdown."""
        while True:
            status = await self.refresh()
            await asyncio.sleep(retry_interval if status.last_error else interval)


def https_fetcher(url: str, ssl_context: ssl.SSLContext, *, timeout: float = 30.0, max_bytes: int = MAX_DOCUMENT_BYTES) -> Fetch:
    """A :data:`Fetch` that GETs the directory over HTTPS; ``ssl_context`` carries the node's
    client certificate (mutual TLS) and the federation trust anchors (see
    :func:`gateway.transport.client_context`)."""

    async def fetch() -> str:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
                async with session.get(url, ssl=ssl_context, headers={"Accept": "application/jose"}) as response:
                    if response.status != 200:
                        raise DirectoryRefused(Refusal.UNAVAILABLE, f"hub answered HTTP {response.status} for {url}")
                    body = bytearray()
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        body += chunk
                        if len(body) > max_bytes:
                            raise DirectoryRefused(Refusal.UNAVAILABLE, f"directory from {url} is larger than {max_bytes} bytes")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise DirectoryRefused(Refusal.UNAVAILABLE, f"hub {url} not reachable: {exc.__class__.__name__}: {exc}") from None
        try:
            return body.decode("ascii").strip()
        except UnicodeDecodeError:
            raise DirectoryRefused(Refusal.BAD_SIGNATURE, f"the answer from {url} is not a compact JWS") from None

    return fetch
