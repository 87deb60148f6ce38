"""A chaos campaign: real node processes, fault proxies between them, load, SIGKILLs, then the books.

The federation is the canton's (:mod:`tests.chaos.settings`): Stadt Luzern (``node-luzern``)
and Kriens (``node-kriens``) reach each other only through the cantonal hub (``node-hub``),
which also hosts the cantonal register office, so Luzern's events to the canton go straight
to the hub. Every node-to-node link (each node's ``[[peers]] url``) points at its own
:class:`~tests.chaos.proxy.FaultProxy`, which forwards to the real peer port.

A campaign runs in three phases:

1. **chaos**: the load generator submits every message over the REST API (retrying through
   crashes until it holds a 202); meanwhile one task SIGKILLs a node at random times and
   restarts it after a random downtime (sometimes armed with the ``kill-after-deliver``
   fault point, so it dies again right after its next commit), another injects faults on
   command (reset the live connections of a link, refuse or cut its next ones), and every
   new connection draws a fault from the plan;
2. **recovery**: faults off, every node up and unarmed; wait until no node has a message
   queued, handed or a receipt owed;
3. **books**: every payload read back through the recipient's API, the stores and audit
   logs checked (:mod:`tests.chaos.ledger`); the figures in :mod:`tests.chaos.report`.

Randomness comes from one seed (``Settings.seed``): which node dies, when, for how long,
which fault each connection draws, and the messageIds. The processes' own timing is not
seeded, so one seed gives the same plan, not the same interleaving.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import aiohttp

from gateway.client import LocalApiClient
from gateway.demo import start_node, wait_ready
from gateway.federation import Federation, NodeSpec, build_federation
from gateway.node import FAULT_ENV
from gateway.samples import discover

from ..conftest import SAMPLES, XSD
from ..gateway.nodes import sample_envelope
from .ledger import Sent, close_books, inbox_rows, last_settled, open_work, read_only, retry_events, store_db, verify_audit
from .proxy import Direction, Fault, FaultProxy, Injection
from .report import Figures
from .settings import FLOWS, KILL_AFTER_DELIVER, NODES, VIA, Flow, Settings, delivery_toml

# --------------------------------------------------------------------------- nodes


class NodeProcess:
    """One ``drehscheibe node run`` process that the campaign may kill and restart."""

    def __init__(self, federation: Federation, node_id: str, log_dir: Path) -> None:
        self.federation = federation
        self.id = node_id
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.armed = False  # started with DREHSCHEIBE_FAULT=kill-after-deliver
        self.lock = asyncio.Lock()  # held while the campaign kills, restarts or stops it

    @property
    def up(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def start(self, *, armed: bool = False) -> bool:
        """Start and wait until the local API answers; False if the process exited first.

        An armed node may reach its fault point before it is ready (a queued transfer arrives
        at once); the campaign's watcher counts and restarts a node that is down.
        """
        self.armed = armed
        self.process = start_node(self.federation, self.id, self.log_dir, {FAULT_ENV: KILL_AFTER_DELIVER} if armed else None)
        try:
            await wait_ready(self.federation, self.id, process=self.process)
        except RuntimeError:
            return False
        return True

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await _reaped(self.process, 10.0)

    async def stop(self) -> None:
        """SIGTERM: a graceful stop (SIGKILL after 15 s)."""
        if self.up:
            assert self.process is not None
            self.process.terminate()
            try:
                await _reaped(self.process, 15.0)
            except TimeoutError:
                await self.kill()


async def _reaped(process: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {process.pid} did not exit within {timeout}s")
        await asyncio.sleep(0.02)
    return process.returncode


# --------------------------------------------------------------------------- campaign


@dataclass(frozen=True)
class Message:
    flow: Flow
    message_id: str
    envelope: bytes
    payload: bytes


class Campaign:
    """Build the federation in ``directory``, run the three phases, return the figures."""

    def __init__(self, directory: Path, settings: Settings) -> None:
        self.directory = Path(directory)
        self.settings = settings
        # One stream per decision maker, so the kills, the commands and the proxies' draws each
        # follow the seed whatever order the tasks happen to run in.
        self.rng = random.Random(settings.seed)  # proxies' seeds, the messages
        self._kill_rng = random.Random(f"{settings.seed}/kills")
        self._command_rng = random.Random(f"{settings.seed}/commands")
        self._jitter = random.Random(f"{settings.seed}/jitter")  # submit retry pauses
        self.figures = Figures(settings.seed, settings)
        self.federation: Federation | None = None
        self.nodes: dict[str, NodeProcess] = {}
        self.proxies: dict[str, FaultProxy] = {}
        self.sent: list[Sent] = []
        self._chaos = asyncio.Event()  # set while kills and faults run
        self._background: set[asyncio.Task] = set()
        self._faults_off = 0.0  # Unix time the recovery began
        self._journal: list[str] = []  # what the campaign did to the nodes, when (logs/campaign.log)

    # -- set-up ------------------------------------------------------------------

    async def build(self) -> Federation:
        """The federation, one proxy per directed link, and each node's peer URLs rewritten to its proxies."""
        if (self.directory / "federation").exists():
            # Stores left by an earlier run would be counted in this run's books.
            raise FileExistsError(f"{self.directory / 'federation'} exists: a campaign needs a fresh directory")
        federation = build_federation(
            self.directory / "federation", [NodeSpec(n, list(p)) for n, p in NODES.items()],
            schemas=XSD, via=VIA, delivery_toml=delivery_toml(),
        )  # fmt: skip
        for node in federation.nodes:
            config = federation.config_path(node.id)
            text = config.read_text()
            for peer in federation.nodes:
                if peer.id == node.id:
                    continue
                link = f"{node.id} → {peer.id}"
                proxy = FaultProxy(peer.listen_port, seed=self.rng.getrandbits(32), name=link)
                await proxy.start()
                self.proxies[link] = proxy
                real = f'id = "{peer.id}"\nurl = "https://127.0.0.1:{peer.listen_port}"'
                assert real in text, f"{config}: no [[peers]] entry for {peer.id}"
                text = text.replace(real, f'id = "{peer.id}"\nurl = "https://127.0.0.1:{proxy.port}"')
            config.write_text(text)
        self.federation = federation
        self.nodes = {n.id: NodeProcess(federation, n.id, self.directory / "logs") for n in federation.nodes}
        return federation

    def messages(self) -> list[Message]:
        """Every message of the load, built before the chaos starts (a retry re-sends the same bytes)."""
        sample = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))
        now = datetime.now(timezone.utc)
        flows = self.rng.choices(FLOWS, weights=[f.share for f in FLOWS], k=self.settings.messages)
        built = []
        for flow in flows:
            message_id = str(uuid.UUID(int=self.rng.getrandbits(128))).replace("-", "")[:24]
            _, envelope, payload = sample_envelope(sample, flow.sender, flow.recipient, now, message_id)
            built.append(Message(flow, message_id, envelope, payload))
        return built

    # -- the run -----------------------------------------------------------------

    async def run(self) -> Figures:
        started = time.monotonic()
        figures = self.figures
        try:
            await self.build()
            messages = self.messages()
            figures.flows = dict(collections.Counter(m.flow.label for m in messages))
            for node in self.nodes.values():
                if not await node.start():
                    raise RuntimeError(f"{node.id} did not start (see {node.log_dir / node.id}.log)")
            monitor = self._spawn(self._watch())
            figures.chaos_seconds = await self._chaos_phase(messages)
            figures.settle_seconds = await self._recover()
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)
            figures.payload_mismatches = await self._read_back()
        finally:
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            for node in self.nodes.values():
                await node.stop()
            for proxy in self.proxies.values():
                await proxy.close()
            if self._journal:
                (self.directory / "logs").mkdir(parents=True, exist_ok=True)
                (self.directory / "logs" / "campaign.log").write_text("\n".join(self._journal) + "\n", encoding="utf-8")
        self._count_faults()
        federation = self.federation
        assert federation is not None
        stores = {n: store_db(federation.config_path(n).parent) for n in NODES}
        figures.retries = retry_events(stores)
        origin_of = {p: n for n, ps in NODES.items() for p in ps}
        figures.books = close_books(self.sent, origin_of, stores)
        origins = sorted({origin_of[m.sender] for m in self.sent})
        figures.last_receipt = last_settled({n: stores[n] for n in origins}, self._faults_off)
        pki = federation.directory / "pki" / "nodes"
        figures.audits = [
            verify_audit(n, federation.config_path(n).parent / "audit" / "audit.db", pki / f"{n}.pem", pki / f"{n}-key.pem")
            for n in NODES
        ]
        figures.total_seconds = time.monotonic() - started
        return figures

    async def _chaos_phase(self, messages: list[Message]) -> float:
        started = time.monotonic()
        for proxy in self.proxies.values():
            proxy.plan = self.settings.plan
        self._chaos.set()
        self._note(f"chaos on: {len(messages)} messages, seed {self.settings.seed}")
        killer = self._spawn(self._kill_at_random())
        commander = self._spawn(self._faults_on_command())
        try:
            try:
                async with asyncio.timeout(self.settings.chaos_timeout):
                    await self._load(messages)
                    rest = self.settings.seconds - (time.monotonic() - started)
                    if rest > 0:
                        await asyncio.sleep(rest)
                    while not self._covered():
                        await asyncio.sleep(0.2)
            except TimeoutError:
                pass  # reported: fewer messages accepted than submitted, or a node never killed
        finally:
            self._chaos.clear()
            for task in (killer, commander):
                task.cancel()
            await asyncio.gather(killer, commander, return_exceptions=True)
            # Let every kill that already started finish its restart.
            restarts = [t for t in self._background if t.get_name().startswith("restart")]
            await asyncio.gather(*restarts, return_exceptions=True)
        return time.monotonic() - started

    def _covered(self) -> bool:
        """Every node was killed and every kind of fault injected at least once (the chaos may end)."""
        injected: collections.Counter = collections.Counter()
        for proxy in self.proxies.values():
            injected.update(proxy.injected)
        return all(self.figures.kills[n] >= 1 for n in NODES) and all(injected[k] >= 1 for k in Fault)

    async def _recover(self) -> float | None:
        """Faults off, every node up and unarmed; the seconds until nothing is left in flight (None: timeout)."""
        started = time.monotonic()
        self._faults_off = time.time()
        self._note("faults off, recovery")
        for proxy in self.proxies.values():
            proxy.calm()
        for node in self.nodes.values():
            async with node.lock:
                if node.up and node.armed:
                    await node.stop()  # a graceful restart without the fault point; not a kill
                elif not node.up:
                    self._count_exit(node)
                if not node.up:
                    await node.start()
        federation = self.federation
        assert federation is not None
        stores = {n: store_db(federation.config_path(n).parent) for n in NODES}
        expected = collections.Counter(m.sender for m in self.sent)
        while time.monotonic() - started < self.settings.settle_timeout:
            if not any(open_work(stores).values()) and self._origin_rows(stores) == expected:
                return time.monotonic() - started
            await asyncio.sleep(0.25)
        return None

    def _origin_rows(self, stores: Mapping[str, Path]) -> collections.Counter:
        """Settled rows per sender at its origin (a relayed message is settled only once its receipt is home)."""
        counts: collections.Counter = collections.Counter()
        for node, participants in NODES.items():
            with read_only(stores[node]) as db:
                for sender, n in db.execute(
                    "SELECT sender, COUNT(*) FROM outgoing WHERE upstream IS NULL AND state NOT IN ('queued', 'handed') GROUP BY sender"
                ):
                    if sender in participants:
                        counts[sender] += n
        return counts

    # -- load --------------------------------------------------------------------

    async def _load(self, messages: list[Message]) -> None:
        """Submit every message until it has its 202, ``submitters`` at a time, spread over ``seconds``."""
        federation = self.federation
        assert federation is not None
        clients = {
            p: LocalApiClient(federation.api_url(federation.node_of(p).id), federation.tokens[p], federation.ca_file)
            for p in {f.sender for f in FLOWS}
        }
        pending = collections.deque(enumerate(messages))
        started = time.monotonic()
        spacing = self.settings.seconds / len(messages)

        async def submitter() -> None:
            while pending:
                index, message = pending.popleft()
                delay = started + index * spacing - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._submit(clients[message.flow.sender], message)

        try:
            await asyncio.gather(*(submitter() for _ in range(self.settings.submitters)))
        finally:
            for client in clients.values():
                await client.close()

    async def _submit(self, client: LocalApiClient, message: Message) -> None:
        figures = self.figures
        while True:
            try:
                status, body = await client.submit(message.envelope, message.payload, "data.xml")
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError):
                status, body = None, None  # the origin is down, died mid-request or answered garbage: send the same bytes again
            if status == 202:
                figures.accepted += 1
                figures.duplicate_answers += bool(body.get("duplicate"))
                self.sent.append(Sent(message.flow.sender, message.message_id, message.flow.recipient,
                                      hashlib.sha256(message.payload).hexdigest()))  # fmt: skip
                return
            if status is not None and status != 503:
                figures.refused.append(f"{message.message_id}: HTTP {status} {body}")
                return
            figures.submit_retries += 1
            await asyncio.sleep(self._jitter.uniform(0.1, 0.3))

    # -- kills and faults ----------------------------------------------------------

    async def _kill_at_random(self) -> None:
        """SIGKILL a running node at random times; among the nodes up, one killed least often so far."""
        while True:
            await asyncio.sleep(self._kill_rng.uniform(*self.settings.kill_every))
            candidates = [n for n in self.nodes.values() if n.up and not n.lock.locked()]
            if not candidates:
                continue
            fewest = min(self.figures.kills[n.id] for n in candidates)
            node = self._kill_rng.choice([n for n in candidates if self.figures.kills[n.id] == fewest])
            downtime = self._kill_rng.uniform(*self.settings.downtime)
            armed = self._kill_rng.random() < self.settings.armed_share
            self._spawn(self._kill_and_restart(node, downtime, armed), name=f"restart {node.id}")

    async def _kill_and_restart(self, node: NodeProcess, downtime: float, armed: bool) -> None:
        async with node.lock:
            if not node.up:
                return
            await node.kill()
            self.figures.kills[node.id] += 1
            self._note(f"SIGKILL {node.id}, down for {downtime:.1f} s")
            await asyncio.sleep(downtime)
            armed = armed and self._chaos.is_set()
            self.figures.armed_starts[node.id] += armed
            await node.start(armed=armed)
            self._note(f"{node.id} up{' (armed: kill-after-deliver)' if armed else ''}")

    async def _faults_on_command(self) -> None:
        """Now and then, on a link that carries traffic: reset its live connections, or refuse or cut its next ones."""
        while True:
            await asyncio.sleep(self._command_rng.uniform(*self.settings.command_every))
            links = [p for p in self.proxies.values() if p.connections]
            if not links:
                continue
            proxy = self._command_rng.choice(links)
            action = self._command_rng.choice(("reset", "refuse", "cut-answer"))
            if action == "reset":
                proxy.drop_live()
            elif action == "refuse":
                proxy.inject(Injection(Fault.REFUSE), times=self._command_rng.randint(1, 3))
            else:
                # Past the TLS handshake (a few KB each way), into the first answer: the
                # request arrived and was processed, the answer is lost.
                proxy.inject(Injection(Fault.CUT, cut_after=self._command_rng.randint(2_000, 9_000), direction=Direction.DOWNSTREAM))

    async def _watch(self) -> None:
        """Restart a node that died without the campaign killing it (an armed one at its fault point, or a crash)."""
        while True:
            await asyncio.sleep(0.1)
            for node in self.nodes.values():
                if node.lock.locked() or node.process is None or node.up:
                    continue
                async with node.lock:
                    if not node.up:
                        self._count_exit(node)
                        await node.start()

    def _count_exit(self, node: NodeProcess) -> None:
        """A node is down that the campaign did not kill: at its armed fault point, or a crash (a finding)."""
        assert node.process is not None
        code = node.process.returncode
        if node.armed and code == -signal.SIGKILL:
            self.figures.fault_point_kills[node.id] += 1
            self._note(f"{node.id} died at kill-after-deliver; restarting it unarmed")
        else:
            self.figures.unexpected_exits[node.id].append(code)
            self._note(f"{node.id} EXITED ON ITS OWN with {code}; restarting it")

    def _note(self, event: str) -> None:
        self._journal.append(f"{datetime.now(timezone.utc).strftime('%H:%M:%S.%f')[:-3]} {event}")

    def _spawn(self, coroutine, name: str | None = None) -> asyncio.Task:
        """A background task the campaign keeps (and cancels at the end); a failure in it is a finding, not silence."""

        async def guarded() -> None:
            try:
                await coroutine
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - reported with the figures
                self.figures.harness_errors.append(f"{name or coroutine.__name__}: {type(error).__name__}: {error}")

        task = asyncio.create_task(guarded(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _count_faults(self) -> None:
        figures = self.figures
        for link, proxy in self.proxies.items():
            figures.faults_by_link[link] = collections.Counter(proxy.injected)
            figures.faults.update(proxy.injected)
            figures.connections += proxy.connections
            figures.target_down += proxy.target_down
            figures.live_drops += proxy.live_drops

    # -- books ----------------------------------------------------------------------

    async def _read_back(self) -> list[str]:
        """Fetch every delivered payload through its recipient's API (the seal is verified again) and compare it with what was sent.

        A message in no inbox is not fetched here: the books count it as lost or stuck.
        """
        federation = self.federation
        assert federation is not None
        inbox = inbox_rows({n: store_db(federation.config_path(n).parent) for n in NODES})
        clients = {
            p: LocalApiClient(federation.api_url(federation.node_of(p).id), federation.tokens[p], federation.ca_file)
            for p in {f.recipient for f in FLOWS}
        }
        mismatches: list[str] = []
        semaphore = asyncio.Semaphore(8)

        async def check(message: Sent) -> None:
            async with semaphore:
                try:
                    payload = await clients[message.recipient].payload(message.recipient, message.sender, message.message_id)
                except Exception as error:  # noqa: BLE001 - any failure to read it back is a finding
                    mismatches.append(f"{'/'.join(message.key)}: {type(error).__name__}: {str(error)[:100]}")
                    return
            if hashlib.sha256(payload).hexdigest() != message.payload_sha256:
                mismatches.append("/".join(message.key))

        try:
            delivered = [m for m in self.sent if inbox[m.key]]
            self.figures.payloads_read = len(delivered)
            await asyncio.gather(*(check(m) for m in delivered))
        finally:
            for client in clients.values():
                await client.close()
        return mismatches
