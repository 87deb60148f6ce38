"""The fault-injection proxy does to a connection exactly what its injection says, and counts it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import pytest

from .proxy import Direction, Fault, FaultPlan, FaultProxy, Injection


class Target:
    """A plain TCP server on loopback that records what each connection sent and echoes it."""

    def __init__(self) -> None:
        self.received: list[bytearray] = []
        self.ended: list[asyncio.Event] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Target:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()

    async def connection_ended(self, timeout: float = 5.0) -> None:
        """Wait until the first connection the target accepted has ended."""
        async with asyncio.timeout(timeout):
            while not self.ended:
                await asyncio.sleep(0.01)
            await self.ended[0].wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data, ended = bytearray(), asyncio.Event()
        self.received.append(data)
        self.ended.append(ended)
        try:
            while chunk := await reader.read(65536):
                data += chunk
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            ended.set()
            writer.close()


@contextlib.asynccontextmanager
async def proxied(plan: FaultPlan | None = None, seed: int = 1):
    async with Target() as target:
        proxy = FaultProxy(target.port, seed=seed, plan=plan)
        await proxy.start()
        try:
            yield proxy, target
        finally:
            await proxy.close()


async def read_all(reader: asyncio.StreamReader, timeout: float = 5.0) -> tuple[bytes, type[BaseException] | None]:
    """Everything the connection delivers until EOF, and the error that ended it (None for a clean EOF)."""
    data = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    except (ConnectionError, OSError) as error:
        return bytes(data), type(error)
    return bytes(data), None


async def test_a_passing_connection_carries_every_byte_both_ways():
    async with proxied() as (proxy, target):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        message = random.Random(3).randbytes(300_000)
        writer.write(message)
        writer.write_eof()
        echoed, error = await read_all(reader)
        assert (echoed, error) == (message, None)
        assert bytes(target.received[0]) == message
        assert proxy.injected == {Fault.PASS: 1} and proxy.faults == 0


async def test_a_refused_connection_is_reset_before_the_first_byte_and_never_reaches_the_target():
    async with proxied() as (proxy, target):
        proxy.inject(Injection(Fault.REFUSE))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"hello")
        data, error = await read_all(reader)
        assert data == b"" and error is ConnectionResetError
        assert target.received == []
        assert proxy.injected == {Fault.REFUSE: 1}


async def test_a_dropped_connection_stays_silent_for_its_hold_then_is_reset():
    async with proxied() as (proxy, target):
        proxy.inject(Injection(Fault.DROP, hold=0.3))
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"hello, anyone?")
        data, error = await read_all(reader)
        assert data == b"" and error is ConnectionResetError
        assert time.monotonic() - started >= 0.3
        assert target.received == [], "nothing was forwarded"
        assert proxy.injected == {Fault.DROP: 1}


async def test_a_delayed_connection_holds_each_chunk():
    async with proxied() as (proxy, target):
        proxy.inject(Injection(Fault.DELAY, delay=0.2))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        started = time.monotonic()
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        assert time.monotonic() - started >= 0.4, "held once on the way there and once on the way back"
        writer.close()
        assert proxy.injected == {Fault.DELAY: 1}


@pytest.mark.parametrize("cut_after", [0, 1, 5000, 65536, 99_999])
async def test_a_cut_upstream_delivers_exactly_n_bytes_of_the_request_then_closes_both_sides(cut_after):
    async with proxied() as (proxy, target):
        proxy.inject(Injection(Fault.CUT, cut_after=cut_after, direction=Direction.UPSTREAM))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        message = bytes(range(256)) * 400  # 102,400 bytes
        writer.write(message)
        await read_all(reader)
        await target.connection_ended()
        assert bytes(target.received[0]) == message[:cut_after]
        assert proxy.injected == {Fault.CUT: 1}


async def test_a_cut_downstream_delivers_exactly_n_bytes_of_the_answer():
    async with proxied() as (proxy, target):
        proxy.inject(Injection(Fault.CUT, cut_after=1000, direction=Direction.DOWNSTREAM))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        message = b"x" * 5000
        writer.write(message)
        answer, _ = await read_all(reader)
        await target.connection_ended()
        assert answer == message[:1000]
        assert bytes(target.received[0]) == message, "the request arrived whole: only the answer was lost"


async def test_drop_live_resets_open_connections_on_command():
    async with proxied() as (proxy, target):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        assert proxy.drop_live() == 1
        data, error = await read_all(reader)
        assert data == b"" and error is ConnectionResetError
        assert proxy.injected == {Fault.PASS: 1, Fault.DROP: 1} and proxy.live_drops == 1


async def test_calm_stops_delaying_an_open_connection_and_lets_new_ones_pass():
    plan = FaultPlan({Fault.REFUSE: 1.0})
    async with proxied(plan) as (proxy, target):
        proxy.inject(Injection(Fault.DELAY, delay=1.0))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.calm()
        started = time.monotonic()
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        assert time.monotonic() - started < 0.5
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer2.write(b"pong")
        assert await reader2.readexactly(4) == b"pong", "the plan that refused everything is off"
        writer.close()
        writer2.close()


async def test_a_target_that_is_down_resets_the_client_and_is_not_counted_as_a_fault():
    async with proxied() as (proxy, target):
        proxy.target_port = target.port
        target.server.close()
        await target.server.wait_closed()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        data, error = await read_all(reader)
        assert data == b"" and error is ConnectionResetError
        assert proxy.target_down == 1 and proxy.faults == 0


async def test_random_faults_follow_the_plan_and_count_every_connection():
    plan = FaultPlan({Fault.PASS: 1, Fault.REFUSE: 1, Fault.DELAY: 1, Fault.CUT: 1, Fault.DROP: 1},
                     delay=(0.0, 0.01), hold=(0.0, 0.01), cut_after=(0, 10))  # fmt: skip
    async with proxied(plan, seed=42) as (proxy, target):
        for _ in range(60):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"0123456789abcdef")
            writer.write_eof()
            await read_all(reader)
            writer.close()
        assert proxy.connections == sum(proxy.injected.values()) == 60
        assert set(proxy.injected) == set(Fault), proxy.injected


def test_one_seed_gives_one_sequence_of_decisions():
    plan = FaultPlan({Fault.PASS: 2, Fault.REFUSE: 1, Fault.DELAY: 1, Fault.CUT: 1, Fault.DROP: 1})
    first = [plan.draw(rng) for rng in [random.Random(7)] for _ in range(50)]
    again = [plan.draw(rng) for rng in [random.Random(7)] for _ in range(50)]
    other = [plan.draw(rng) for rng in [random.Random(8)] for _ in range(50)]
    assert first == again
    assert first != other


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"weights": {Fault.PASS: -1.0}}, "weights"),
        ({"weights": {}}, "weights"),
        ({"weights": {"cut": 1.0}}, "weights"),
        ({"delay": (0.5, 0.1)}, "delay"),
        ({"cut_after": (-1, 5)}, "cut_after"),
    ],
)
def test_a_bad_plan_fails_at_construction_naming_the_field(options, names):
    with pytest.raises(ValueError, match=names):
        FaultPlan(**options)
