"""``make demo``: the canton of Lucerne's demo federation on localhost, real eCH messages, mutual TLS.

Four node processes: the cantonal hub (``node-hub``, which also hosts Emmen ``1-1024-1`` and the
BFS ``3-CH-1`` as logical participants), Stadt Luzern (``node-luzern``), Kriens
(``node-kriens``) and the cantonal register office ``2-LU-1`` (``node-register``). The
Gemeinden reach everyone through the hub, which relays without being able to read. The
scenario: a move from Luzern to Kriens (the move-in notice to Kriens without the religion; the
events to the cantonal register), a civil-status event, a denial, statistics, a message through
Emmen's sedex folder interface; each message's timeline printed as it happens; then, as an
auditor, every node's log verified and one message traced across all its hops.

``drehscheibe demo up`` starts the same federation and keeps it running for scripts and
black-box tests (``DIR/federation.json`` says how to reach it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lxml import etree

from .client import ApiError, LocalApiClient
from .federation import Federation, NodeSpec, build_federation
from .ids import ParticipantId
from .samples import Sample, discover, envelope_for, payload_for

LUZERN = "1-1061-1"
KRIENS = "1-1059-1"
EMMEN = "1-1024-1"
KANTON = "2-LU-1"
BFS = "3-CH-1"
HUB = "node-hub"
NODES = ((HUB, [EMMEN, BFS]), ("node-luzern", [LUZERN]), ("node-kriens", [KRIENS]), ("node-register", [KANTON]))
PARTICIPANTS = {LUZERN: "Stadt Luzern", KRIENS: "Gemeinde Kriens", EMMEN: "Gemeinde Emmen",
                KANTON: "Kantonale Registerstelle", BFS: "Bundesamt für Statistik"}
POLICIES = Path(__file__).resolve().parents[1] / "policies" / "demo"
E20_V2 = "http://www.ech.ch/xmlns/eCH-0020/2"


@dataclass(frozen=True)
class Step:
    """One message of the demo scenario and what must happen to it."""

    title: str
    sender: str
    recipient: str
    sample: Sample
    message_type: int
    expect_codes: tuple[int, ...] = (100,)  # the receipt the sender must get
    via_folder: bool = False
    removed: str | None = None  # an element that must be absent at the recipient (redaction)

    @property
    def refused(self) -> bool:
        return 100 not in self.expect_codes


def start_node(federation: Federation, node_id: str, log_dir: Path, env: dict | None = None) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{node_id}.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "node", "run", "--config", str(federation.config_path(node_id))],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


async def wait_ready(federation: Federation, node_id: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Wait until the node's local API answers (401 without a token means: up)."""
    import aiohttp
    import ssl

    context = ssl.create_default_context(cafile=str(federation.ca_file))
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        while True:
            try:
                async with session.get(federation.api_url(node_id) + "/api/v1/messages/x/y") as response:
                    if response.status == 401:
                        return
            except (aiohttp.ClientError, OSError):
                pass
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"node {node_id} exited with code {process.returncode} (see its log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {node_id} did not start within {timeout}s")
            await asyncio.sleep(0.1)


def scenario(samples_dir: Path, directory: Path) -> list[Step]:
    """The demo's messages, in order (see the module docstring)."""
    found = {s.name.split("/")[1] if "/" in s.name else s.name: s for s in discover(samples_dir)} if samples_dir.is_dir() else {}

    def sample(prefix: str) -> Sample | None:
        return next((s for name, s in found.items() if name.startswith(prefix)), None)

    move, move_in, death = sample("div-movetest"), sample("movein-personsecondaryresidence"), sample("deathtest-7561829871378")
    contact, sempach = sample("div-contacttest"), sample("1196247040467") or sample("ech0099")
    if None in (move, move_in, death, contact, sempach):
        from .generated import generated_ech0020_v3

        generated = generated_ech0020_v3(directory)
        print("no samples folder: the scenario uses a generated eCH-0020 3.0 message (no redaction step)")
        return [
            Step("eCH-0020 3.0 event from Luzern to the cantonal register, through the hub", LUZERN, KANTON, generated, 20001),
            Step("the same from Emmen, through its sedex folder interface", EMMEN, KANTON, generated, 20001, via_folder=True),
            Step("denied: a Gemeinde delivers directly to the BFS", LUZERN, BFS, generated, 20001, expect_codes=(310, 311)),
        ]
    return [
        Step("the move: Luzern reports the departure to the cantonal register", LUZERN, KANTON, move, 20201),
        Step("the move: Luzern notifies Kriens of the move-in; the religion is removed (no legal basis)", LUZERN, KRIENS, move_in, 20201,
             removed=f"{{{E20_V2}}}religion"),
        Step("the move: Kriens reports the move-in to the cantonal register", KRIENS, KANTON, move_in, 20201),
        Step("a civil-status event (death) from Luzern to the cantonal register", LUZERN, KANTON, death, 20001),
        Step("denied: Stadt Luzern sends statistics directly to the BFS", LUZERN, BFS, sempach, 94, expect_codes=(310, 311)),
        Step("the cantonal register delivers the statistics to the BFS", KANTON, BFS, sempach, 94),
        Step("Emmen's register drops a contact event into its sedex outbox folder", EMMEN, KANTON, contact, 20001, via_folder=True),
    ]  # fmt: skip


def demo_federation(directory: Path, schemas: Path, *, policies: Path = POLICIES) -> Federation:
    """The hub federation: Gemeinden route everything through the hub; the hub routes directly.

    ``policies``: another folder than policies/demo (the console tests edit a copy)."""
    everyone = [p for _, ps in NODES for p in ps]
    via = {node: {p: HUB for p in everyone if p not in own} for node, own in NODES if node != HUB}
    # The hub publishes the signed directory: no node's file lists another node's participants.
    return build_federation(
        directory, [NodeSpec(node, list(own)) for node, own in NODES], schemas=schemas, policies=policies,
        folders={EMMEN}, via=via, delivery_toml="poll_seconds = 0.05", directory_hub=HUB, known_participants=False,
    )  # fmt: skip


async def run_demo(directory: Path, *, samples: Path, schemas: Path) -> int:
    """Run the scenario on a fresh federation; exit code 0 only if every step ended as expected."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    steps = scenario(samples, directory)
    federation = demo_federation(directory, schemas)
    processes = await start_federation(federation, directory)
    try:
        results = [await _run_step(federation, step) for step in steps]
        print()
        traced = next((m for _, step, m in results if step.removed), results[0][2])
        audited = await _audit(federation, traced, LUZERN)
        for ok, step, message_id in results:
            if ok is not True:
                print(f"NOT as expected: {step.title} ({message_id}): {ok}")
        good = sum(1 for ok, _, _ in results if ok is True)
        print(f"\ndemo: {len(steps)} messages, {good} as expected "
              f"({sum(1 for s in steps if not s.refused)} delivered with receipt 100, "
              f"{sum(1 for s in steps if s.refused)} refused by policy), audit logs verified: {'yes' if audited else 'NO'}")  # fmt: skip
        return 0 if good == len(steps) and audited else 1
    finally:
        stop_federation(processes)


async def start_federation(federation: Federation, directory: Path) -> list[subprocess.Popen]:
    print(f"demo federation in {directory}: CA, {len(federation.nodes)} node processes, demo policies (see federation.json)")
    processes = []
    try:
        # The hub first: the others fetch the federation directory from it when they start.
        for node in federation.nodes:
            processes.append(start_node(federation, node.id, directory / "logs"))
            await wait_ready(federation, node.id, process=processes[-1])
        await _directories_current(federation)
    except BaseException:
        stop_federation(processes)
        raise
    for node in federation.nodes:
        hosted = ", ".join(f"{PARTICIPANTS.get(p, p)} {p}" for p in node.participants)
        print(f"  {node.id:<14} {federation.api_url(node.id)}  hosts {hosted}")
    print()
    return processes


async def _directories_current(federation: Federation, timeout: float = 30.0) -> None:
    """Wait until every node has fetched the hub's directory (a node answers 402 until then)."""
    deadline = time.monotonic() + timeout
    for node in federation.nodes:
        cache = federation.config_path(node.id).parent / "directory" / "directory.jws"
        while not cache.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {node.id} did not fetch the federation directory")
            await asyncio.sleep(0.05)


def stop_federation(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


async def demo_up(directory: Path, *, schemas: Path) -> int:
    """Start the demo federation and keep it running until SIGINT/SIGTERM (for scripts and black-box tests)."""
    import signal

    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    federation = demo_federation(directory, schemas)
    processes = await start_federation(federation, directory)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"federation up; {directory / 'federation.json'} lists nodes, participants, folders, API URLs and credentials", flush=True)
    try:
        while not stop.is_set():
            for node, process in zip(federation.nodes, processes):
                if process.poll() is not None:
                    print(f"node {node.id} exited with code {process.returncode} (see {directory / 'logs'})", flush=True)
                    return 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        return 0
    finally:
        stop_federation(processes)


async def _run_step(federation: Federation, step: Step) -> tuple[bool | str, Step, str]:
    """Send one message, wait for its outcome, print its timeline; True when it ended as expected."""
    sender, recipient = ParticipantId(step.sender), ParticipantId(step.recipient)
    message_id = uuid.uuid4().hex[:20]
    now = datetime.now(timezone.utc)
    envelope = envelope_for(step.sample, sender, recipient, message_id, now, step.message_type)
    payload = payload_for(step.sample, sender, recipient, step.message_type)
    print(f"— {step.title}\n  {step.sample.name} as {message_id}: {step.sender} → {step.recipient}, messageType {step.message_type}")
    async with _client(federation, step.sender) as sender_api, _client(federation, step.recipient) as recipient_api:
        if step.via_folder:
            outbox = federation.folder(step.sender) / "outbox"
            (outbox / f"data_{message_id}{step.sample.data.suffix}").write_bytes(payload)
            (outbox / f"envl_{message_id}.xml").write_bytes(envelope)
            print(f"  written to {outbox.relative_to(federation.directory)}/ (data first, envelope last)")
        else:
            status, body = await sender_api.submit(envelope, payload, step.sample.data.name)
            print(f"  submitted over the REST API: HTTP {status}" + (f", receipt {body.get('statusCode')}: {body.get('statusInfo')}" if status != 202 else ""))
        state = await _follow(sender_api, step.sender, message_id)
        receipt = state["receipts"][-1] if state["receipts"] else {}
        code = receipt.get("statusCode")
        print(f"  receipt {code}: {receipt.get('statusInfo')}")
        if code not in step.expect_codes:
            return f"receipt {code}, expected {step.expect_codes}", step, message_id
        if step.via_folder:
            receipts = federation.folder(step.sender) / "receipts"
            if not await _appears(lambda: any(message_id in p.read_text() for p in receipts.glob("*.xml"))):
                print("  NO receipt file in the sender's receipts/ folder")
                return "no receipt file", step, message_id
            print(f"  receipt file in {receipts.relative_to(federation.directory)}/")
        if step.refused:
            inbox = await recipient_api.inbox(step.recipient)
            if any(m["messageId"] == message_id for m in inbox):
                return "a denied message reached the recipient", step, message_id
            print(f"  nothing reached {step.recipient}")
            return True, step, message_id
        delivered = await recipient_api.payload(step.recipient, step.sender, message_id)
        await recipient_api.acknowledge(step.recipient, step.sender, message_id)
        if step.removed is not None:
            before = len(etree.fromstring(payload).findall(f".//{step.removed}"))
            after = len(etree.fromstring(delivered).findall(f".//{step.removed}"))
            print(f"  {etree.QName(step.removed).localname}: {before} element(s) sent, {after} delivered to {step.recipient}")
            return (True if before and not after else "redaction not visible"), step, message_id
        identical = delivered == payload
        print(f"  payload at {step.recipient} identical to what was sent: {identical}")
        return (True if identical else "payload differs"), step, message_id


def _client(federation: Federation, participant: str) -> LocalApiClient:
    node = federation.node_of(participant)
    return LocalApiClient(federation.api_url(node.id), federation.tokens[participant], federation.ca_file)


async def _appears(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.1)
    return False


async def _follow(api: LocalApiClient, sender: str, message_id: str, timeout: float = 60.0) -> dict:
    """Print the message's timeline as it happens (the sender's view); return its status once settled."""
    deadline = time.monotonic() + timeout
    shown = 0
    while True:
        try:
            status = await api.status(sender, message_id)
        except ApiError as error:
            if error.http_status != 404 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)  # the folder interface has not picked it up yet
            continue
        for event in status["events"][shown:]:
            extra = f" [{event['status']}]" if "status" in event else ""
            print(f"  {event['time'][11:23]}  {event['node']:<14} {event['kind']}{extra}  {event.get('detail', '')}", flush=True)
        shown = len(status["events"])
        recipients = status["recipients"]
        settled = recipients and all(r["state"] in ("delivered", "failed", "expired") for r in recipients)
        if settled or (not recipients and status["receipts"]) or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


async def _audit(federation: Federation, message_id: str, sender: str) -> bool:
    """As an auditor: verify every node's log through its auditor API, then trace one message from the exports.

    Each node's export is verified offline against that node's certificate (not trusting the
    node's own word), and the trace checks that what each hop sent is what the next received.
    """
    import aiohttp
    import ssl

    from .audit import AuditVerificationError, BrokenTrace, load_public_key, trace_message, verify_export

    context = ssl.create_default_context(cafile=str(federation.ca_file))
    all_valid, exports = True, []
    print("audit: every node's log, verified through its auditor API (each read is itself audited)")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for node in federation.nodes:
            headers = {"Authorization": f"Bearer {federation.operator_tokens[node.id]['auditor']}"}
            base = federation.api_url(node.id) + "/audit/v1"
            async with session.get(base + "/export", params={"message_id": message_id}, headers=headers) as response:
                text = await response.text()
            certificate = federation.directory / "pki" / "nodes" / f"{node.id}.pem"
            try:
                exports.append(verify_export(text, load_public_key(certificate.read_bytes()), origin=node.id))
            except AuditVerificationError as error:
                print(f"  {node.id:<14} export of {message_id} NOT verifiable: {error}")
                all_valid = False
            # The export signed a fresh checkpoint over the whole log: the verification covers every record.
            async with session.get(base + "/verify", headers=headers) as response:
                result = await response.json()
            valid = response.status == 200 and result.get("valid") is True
            all_valid &= valid
            detail = (f"{result['size']} records, {result['checkpoints']} signed checkpoints, the newest over "
                      f"{result['signed_size']}, unsigned tail {result['unsigned_tail']}" if valid
                      else f"INVALID at index {result.get('first_bad_index')}: {result.get('reason')}")  # fmt: skip
            print(f"  {node.id:<14} {'valid' if valid else 'NOT VALID'}: {detail}")
    try:
        trace = trace_message(message_id, exports)
    except BrokenTrace as error:
        print(f"trace of {message_id}: BROKEN: {error}")
        return False
    print(f"trace of {message_id} from the verified exports ({sender} → ...):")
    for line in trace.timeline():
        print(f"  {line}")
    return all_valid and len(trace.hops) >= 2
