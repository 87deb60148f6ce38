"""A TCP fault-injection proxy on loopback: pass, delay, drop, cut mid-transfer or refuse.

The proxy forwards raw bytes, so TLS (and mutual TLS) passes through it untouched: the
nodes still authenticate each other end to end and the proxy sees only ciphertext. Each
accepted connection gets one :class:`Injection`, chosen when it is accepted: a command
queued with :meth:`FaultProxy.inject` first, otherwise a draw from the proxy's
:class:`FaultPlan` with its own seeded RNG, so one seed gives one sequence of decisions.
:attr:`FaultProxy.injected` counts what was done, by kind.

The faults, as a peer node sees them:

| fault | what the proxy does | what the client sees |
|---|---|---|
| ``pass`` | forwards both ways | a working connection |
| ``delay`` | holds every chunk for ``delay`` seconds before forwarding it, both ways | a slow link |
| ``drop`` | accepts, swallows whatever arrives for ``hold`` seconds, forwards nothing, then resets | a stalled handshake, then a reset |
| ``cut`` | forwards until ``cut_after`` bytes have gone one way, then closes both sides | a request or an answer broken off mid-transfer |
| ``refuse`` | closes the connection at once with a reset | connection reset before the first byte |

:meth:`FaultProxy.drop_live` resets every open connection on command (counted as ``drop``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Mapping

CHUNK = 64 * 1024


class Fault(enum.Enum):
    PASS = "pass"
    DELAY = "delay"
    DROP = "drop"
    CUT = "cut"
    REFUSE = "refuse"


class Direction(enum.Enum):
    UPSTREAM = "upstream"  # client → target: the request (a transfer body, a returned receipt)
    DOWNSTREAM = "downstream"  # target → client: the answer (a receipt, a hand-over acknowledgement)


@dataclass(frozen=True)
class Injection:
    """What the proxy does to one connection."""

    fault: Fault
    delay: float = 0.0  # DELAY: seconds each chunk is held
    hold: float = 0.0  # DROP: seconds the connection is kept silent before the reset
    cut_after: int = 0  # CUT: bytes forwarded in ``direction`` before both sides are closed
    direction: Direction = Direction.UPSTREAM

    def __post_init__(self) -> None:
        if self.delay < 0 or self.hold < 0 or self.cut_after < 0:
            raise ValueError(f"injection parameters must not be negative: {self!r}")


PASS = Injection(Fault.PASS)


@dataclass(frozen=True)
class FaultPlan:
    """How often each fault is drawn for a new connection, and the ranges of its parameters.

    ``weights`` are relative (they need not sum to 1); a kind left out is never drawn.
    """

    weights: Mapping[Fault, float] = field(default_factory=lambda: {Fault.PASS: 1.0})
    delay: tuple[float, float] = (0.01, 0.2)
    hold: tuple[float, float] = (0.2, 2.0)
    cut_after: tuple[int, int] = (0, 24 * 1024)

    def __post_init__(self) -> None:
        if any(not isinstance(k, Fault) for k in self.weights):
            raise ValueError(f"weights: keys must be Fault members, got {list(self.weights)!r}")
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError(f"weights: must be non-negative with a positive sum, got {dict(self.weights)!r}")
        for name in ("delay", "hold", "cut_after"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name}: expected 0 <= low <= high, got {(low, high)!r}")

    @classmethod
    def calm(cls) -> FaultPlan:
        """Every connection passes."""
        return cls()

    def draw(self, rng: random.Random) -> Injection:
        kinds = [k for k, w in self.weights.items() if w > 0]
        fault = rng.choices(kinds, weights=[self.weights[k] for k in kinds])[0]
        if fault is Fault.DELAY:
            return Injection(fault, delay=rng.uniform(*self.delay))
        if fault is Fault.DROP:
            return Injection(fault, hold=rng.uniform(*self.hold))
        if fault is Fault.CUT:
            return Injection(fault, cut_after=rng.randint(*self.cut_after), direction=rng.choice(list(Direction)))
        return Injection(fault)


class _Cut(Exception):
    """The byte budget of a CUT injection is spent."""


@dataclass(eq=False)
class _Connection:
    """One proxied connection: both ends, and its injection (made calm by :meth:`FaultProxy.calm`)."""

    client: asyncio.StreamWriter
    injection: Injection
    upstream: asyncio.StreamWriter | None = None
    forwarded: dict[Direction, int] = field(default_factory=lambda: {d: 0 for d in Direction})

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


class FaultProxy:
    """Listens on ``host``:(free port) and forwards each connection to ``host``:``target_port``, with faults."""

    def __init__(self, target_port: int, *, seed: int, plan: FaultPlan | None = None, host: str = "127.0.0.1", name: str = "") -> None:
        self.target_port = target_port
        self.host = host
        self.name = name or f"→{target_port}"
        self.plan = plan or FaultPlan.calm()
        self.injected: collections.Counter[Fault] = collections.Counter()
        self.connections = 0  # accepted
        self.target_down = 0  # connections reset because the target refused (a node that is down), not injected
        self.live_drops = 0  # open connections reset by drop_live (also counted under DROP)
        self._rng = random.Random(seed)
        self._commands: collections.deque[Injection] = collections.deque()
        self._live: set[_Connection] = set()
        self._handlers: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for connection in list(self._live):
            for writer in connection.writers():
                _reset(writer)
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    # -- commands ----------------------------------------------------------------

    def inject(self, injection: Injection, times: int = 1) -> None:
        """Apply ``injection`` to the next ``times`` new connections (before any draw from the plan)."""
        self._commands.extend([injection] * times)

    def drop_live(self) -> int:
        """Reset every open connection now; returns how many."""
        dropped = 0
        for connection in list(self._live):
            for writer in connection.writers():
                _reset(writer)
            dropped += 1
        self.injected[Fault.DROP] += dropped
        self.live_drops += dropped
        return dropped

    def calm(self) -> None:
        """Faults off: new connections pass, queued commands are dropped, open connections stop being delayed or cut."""
        self.plan = FaultPlan.calm()
        self._commands.clear()
        for connection in self._live:
            if connection.injection.fault in (Fault.DELAY, Fault.CUT):
                connection.injection = PASS

    @property
    def faults(self) -> int:
        """Connections that got anything other than ``pass``."""
        return sum(n for fault, n in self.injected.items() if fault is not Fault.PASS)

    # -- per connection ----------------------------------------------------------

    def _next(self) -> Injection:
        return self._commands.popleft() if self._commands else self.plan.draw(self._rng)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        injection = self._next()
        self.injected[injection.fault] += 1
        if injection.fault is Fault.REFUSE:
            _reset(writer)
            return
        connection = _Connection(writer, injection)
        self._live.add(connection)
        try:
            if injection.fault is Fault.DROP:
                await _swallow(reader, injection.hold)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
            except OSError:
                self.target_down += 1
                return
            connection.upstream = up_writer
            pumps = [
                asyncio.create_task(self._pump(reader, up_writer, connection, Direction.UPSTREAM)),
                asyncio.create_task(self._pump(up_reader, writer, connection, Direction.DOWNSTREAM)),
            ]
            try:
                done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            except asyncio.CancelledError:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                raise
            for pump in pending:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._live.discard(connection)
            for end in connection.writers():
                # A cut ends with FIN so the bytes before it arrive; every other end is reset.
                if connection.injection.fault is Fault.CUT:
                    end.close()
                else:
                    _reset(end)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection, direction: Direction) -> None:
        """Copy one direction until EOF; then half-close, so the other direction can finish."""
        while True:
            data = await reader.read(CHUNK)  # a reset ends the pump with ConnectionError, and the connection with it
            if not data:
                break
            injection = connection.injection
            if injection.fault is Fault.DELAY:
                await asyncio.sleep(injection.delay)
            if injection.fault is Fault.CUT and injection.direction is direction:
                room = injection.cut_after - connection.forwarded[direction]
                if len(data) >= room:
                    writer.write(data[: max(room, 0)])
                    connection.forwarded[direction] += max(room, 0)
                    with contextlib.suppress(ConnectionError, OSError):
                        await writer.drain()
                    raise _Cut
            connection.forwarded[direction] += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            with contextlib.suppress(OSError):
                writer.write_eof()
        # One side finished cleanly: wait for the other by returning normally.


async def _swallow(reader: asyncio.StreamReader, hold: float) -> None:
    """Read and discard for ``hold`` seconds (or until the client gives up)."""
    with contextlib.suppress(asyncio.TimeoutError, ConnectionError, OSError):
        async with asyncio.timeout(hold):
            while await reader.read(CHUNK):
                pass
            await asyncio.sleep(hold)  # the client half-closed: stay silent until the hold ends


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN: the peer sees ``connection reset``."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
