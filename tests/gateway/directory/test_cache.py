"""A node's directory cache: verified copies only, kept through an outage within grace, then fail closed."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from gateway.directory import DirectoryCache, DirectoryRefused, DirectoryState, Refusal
from gateway.ids import StatusCode

from .conftest import HUB, KANTON, LUZERN, LUZERN_NODE, Pki

VALIDITY = timedelta(hours=24)
GRACE = timedelta(hours=6)


class Hub:
    """A stand-in for the hub's endpoint: serves a token, or fails like a network outage."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.down = False
        self.calls = 0

    async def fetch(self) -> str:
        self.calls += 1
        if self.down or self.token is None:
            raise ConnectionRefusedError("connection refused")
        return self.token


@pytest.fixture
def clock(pki: Pki) -> FixedClock:
    return FixedClock(pki.now)


@pytest.fixture
def hub() -> Hub:
    return Hub()


def new_cache(pki: Pki, path: Path, hub: Hub, clock: FixedClock, **options) -> DirectoryCache:
    return DirectoryCache(path, trust=pki.trust, issuer=HUB, fetch=hub.fetch, clock=clock, grace=GRACE, **options)


@pytest.fixture
def cache(pki: Pki, tmp_path: Path, hub: Hub, clock: FixedClock) -> DirectoryCache:
    return new_cache(pki, tmp_path / "directory.jws", hub, clock)


def refused(cache: DirectoryCache) -> DirectoryRefused:
    with pytest.raises(DirectoryRefused) as caught:
        cache.lookup(LUZERN)
    assert caught.value.status is StatusCode.DIRECTORY_NOT_REACHABLE
    return caught.value


async def test_a_fetched_directory_is_used_and_kept_on_disk(pki: Pki, cache: DirectoryCache, hub: Hub):
    """A verified fetch makes the cache current and writes the exact signed text to disk."""
    hub.token = pki.signed(validity=VALIDITY)
    status = await cache.refresh()
    assert status.state is DirectoryState.CURRENT and status.version == 1 and status.last_error is None
    assert cache.lookup(LUZERN).node_id == LUZERN_NODE
    assert cache.path.read_text() == hub.token
    assert [p.name for p in cache.path.parent.iterdir()] == [cache.path.name]  # no temporary files left


async def test_before_any_fetch_lookups_fail_closed(cache: DirectoryCache, hub: Hub):
    """Without a verified copy nothing resolves, and the error says the hub was not reachable."""
    await cache.refresh()
    assert cache.state is DirectoryState.UNUSABLE
    error = refused(cache)
    assert error.reason is Refusal.UNAVAILABLE and "connection refused" in str(error)


async def test_an_outage_within_grace_keeps_the_cached_copy_and_reports_stale(pki: Pki, cache: DirectoryCache, hub: Hub, clock: FixedClock):
    """During a hub outage the last good copy serves lookups, first before expiry, then inside grace; the state is stale."""
    seen = []
    cache = new_cache(pki, cache.path, hub, clock, on_state_change=seen.append)
    hub.token = pki.signed(validity=VALIDITY)
    await cache.refresh()
    hub.down = True

    clock.advance(hours=1)
    status = await cache.refresh()
    assert status.state is DirectoryState.STALE and cache.stale
    assert status.last_error.reason is Refusal.UNAVAILABLE
    assert cache.lookup(KANTON).node_id == "node-kanton"

    clock.advance(hours=23, minutes=30)  # past expiresAt, inside the 6 h grace
    await cache.refresh()
    assert cache.stale and cache.lookup(LUZERN).node_id == LUZERN_NODE
    assert [s.state for s in seen] == [DirectoryState.CURRENT, DirectoryState.STALE]


async def test_beyond_grace_lookups_are_refused_as_expired(pki: Pki, cache: DirectoryCache, hub: Hub, clock: FixedClock):
    """Once expiresAt + grace has passed, the cached copy is refused and the error says when it expired."""
    hub.token = pki.signed(validity=VALIDITY)
    await cache.refresh()
    hub.down = True
    clock.advance(hours=30)  # exactly expiresAt + grace
    assert cache.state is DirectoryState.UNUSABLE
    error = refused(cache)
    assert error.reason is Refusal.EXPIRED
    assert "expired at 2026-03-02T08:00:00+00:00" in str(error) and "ended at 2026-03-02T14:00:00+00:00" in str(error)


async def test_the_state_turns_stale_at_expiry_without_a_refresh(pki: Pki, cache: DirectoryCache, hub: Hub, clock: FixedClock):
    """Time alone moves a current copy to stale at its expiry, and the change is reported."""
    seen = []
    cache = new_cache(pki, cache.path, hub, clock, on_state_change=seen.append)
    hub.token = pki.signed(validity=VALIDITY)
    await cache.refresh()
    clock.advance(hours=24)
    assert cache.state is DirectoryState.STALE
    assert seen[-1].state is DirectoryState.STALE and seen[-1].usable_until == pki.now + VALIDITY + GRACE


async def test_the_hub_coming_back_makes_the_cache_current_again(pki: Pki, cache: DirectoryCache, hub: Hub, clock: FixedClock):
    """After an outage a newer version is taken and the cache is current."""
    hub.token = pki.signed(validity=VALIDITY)
    await cache.refresh()
    hub.down = True
    clock.advance(hours=25)
    await cache.refresh()
    assert cache.stale
    hub.down = False
    hub.token = pki.signed(version=2, issued_at=clock.now(), validity=VALIDITY)
    status = await cache.refresh()
    assert status.state is DirectoryState.CURRENT and status.version == 2 and status.last_refresh == clock.now()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda pki: pki.signer("node-luzern").sign("drehscheibe-directory+json;v=1", pki.directory(version=2).to_claims()), Refusal.WRONG_SIGNER),
        (lambda pki: pki.signed(version=2)[:-8] + "AAAAAAAA", Refusal.BAD_SIGNATURE),
        (lambda pki: pki.signed(version=1, participants=()), Refusal.ROLLBACK),
        (lambda pki: pki.signed(version=2, issued_at=pki.now - timedelta(days=8)), Refusal.EXPIRED),
    ],
    ids=["wrong-signer", "bad-signature", "rollback", "expired"],
)
async def test_a_bad_fetched_directory_is_refused_and_the_good_copy_stays(pki: Pki, cache: DirectoryCache, hub: Hub, bad, reason):
    """A fetched directory that fails verification is not taken; the verified copy stays in use, reported stale."""
    hub.token = pki.signed(validity=VALIDITY)
    await cache.refresh()
    kept = cache.path.read_text()
    hub.token = bad(pki)
    status = await cache.refresh()
    assert status.last_error.reason is reason
    assert status.state is DirectoryState.STALE and status.version == 1
    assert cache.path.read_text() == kept
    assert cache.lookup(KANTON).directory_version == 1


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda pki: pki.rogue_signer().sign("drehscheibe-directory+json;v=1", pki.directory().to_claims()), Refusal.WRONG_SIGNER),
        (lambda pki: pki.signed()[:-8] + "AAAAAAAA", Refusal.BAD_SIGNATURE),
        (lambda pki: pki.signed(issued_at=pki.now - timedelta(days=7, seconds=1)), Refusal.EXPIRED),
    ],
    ids=["wrong-signer", "bad-signature", "expired"],
)
async def test_without_a_good_copy_a_bad_directory_fails_closed_naming_why(pki: Pki, cache: DirectoryCache, hub: Hub, bad, reason):
    """With nothing verified to fall back on, lookups raise with the reason of the refusal."""
    hub.token = bad(pki)
    await cache.refresh()
    assert cache.state is DirectoryState.UNUSABLE and not cache.path.exists()
    assert refused(cache).reason is reason


async def test_a_restarted_node_uses_the_copy_on_disk(pki: Pki, cache: DirectoryCache, hub: Hub, clock: FixedClock):
    """A new cache on the same file serves lookups before its first fetch."""
    hub.token = pki.signed(validity=VALIDITY)
    await cache.refresh()
    hub.down = True
    clock.advance(hours=2)
    restarted = new_cache(pki, cache.path, hub, clock)
    assert restarted.load().state is DirectoryState.CURRENT
    assert restarted.lookup(LUZERN).node_id == LUZERN_NODE
    await restarted.refresh()
    assert restarted.stale


async def test_a_restart_after_grace_refuses_the_copy_on_disk(pki: Pki, cache: DirectoryCache, hub: Hub, clock: FixedClock):
    """An on-disk copy past expiresAt + grace is not used after a restart either."""
    hub.token = pki.signed(validity=VALIDITY)
    await cache.refresh()
    clock.advance(days=2)
    restarted = new_cache(pki, cache.path, hub, clock)
    assert restarted.load().state is DirectoryState.UNUSABLE
    assert refused(restarted).reason is Refusal.EXPIRED


async def test_a_tampered_copy_on_disk_is_refused(pki: Pki, cache: DirectoryCache, hub: Hub, clock: FixedClock):
    """Editing the cached file breaks its signature; the restarted node fails closed naming it."""
    hub.token = pki.signed(validity=VALIDITY)
    await cache.refresh()
    header, payload, signature = cache.path.read_text().split(".")
    cache.path.write_text(".".join([header, payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB"), signature]))
    restarted = new_cache(pki, cache.path, hub, clock)
    status = restarted.load()
    assert status.state is DirectoryState.UNUSABLE and status.last_error.reason is Refusal.BAD_SIGNATURE
    error = refused(restarted)
    assert error.reason is Refusal.BAD_SIGNATURE and str(cache.path) in str(error)


async def test_the_copy_on_disk_sets_the_rollback_floor_after_a_restart(pki: Pki, cache: DirectoryCache, hub: Hub, clock: FixedClock):
    """A restarted node still refuses versions older than the one it kept."""
    hub.token = pki.signed(version=5, validity=VALIDITY)
    await cache.refresh()
    restarted = new_cache(pki, cache.path, hub, clock)
    restarted.load()
    hub.token = pki.signed(version=4, validity=VALIDITY)
    status = await restarted.refresh()
    assert status.last_error.reason is Refusal.ROLLBACK and status.version == 5


async def test_a_configured_floor_refuses_older_versions_without_a_copy(pki: Pki, tmp_path: Path, hub: Hub, clock: FixedClock):
    """min_version protects a node whose cached file was lost."""
    cache = new_cache(pki, tmp_path / "d.jws", hub, clock, min_version=3)
    hub.token = pki.signed(version=2, validity=VALIDITY)
    await cache.refresh()
    assert refused(cache).reason is Refusal.ROLLBACK


async def test_run_keeps_refreshing_until_cancelled(pki: Pki, cache: DirectoryCache, hub: Hub):
    """The refresh loop retries after failures and picks the directory up once the hub serves it."""
    task = asyncio.create_task(cache.run(interval=0.01, retry_interval=0.005))
    try:
        while hub.calls < 2:
            await asyncio.sleep(0.005)
        hub.token = pki.signed(validity=VALIDITY)
        while cache.state is not DirectoryState.CURRENT:
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cache.lookup(LUZERN).node_id == LUZERN_NODE
