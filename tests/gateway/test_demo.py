"""`make demo` and `drehscheibe demo up` as specifications: real node processes, every step ends as expected."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from gateway.client import LocalApiClient
from gateway.demo import EMMEN, KANTON, LUZERN, run_demo
from gateway.federation import DEFAULT_SCHEMAS
from gateway.ids import ParticipantId
from gateway.receipt import parse_receipt
from gateway.samples import discover, envelope_for, payload_for

from ..conftest import SAMPLES, XSD


async def test_the_demo_moves_a_person_redacts_denies_relays_uses_the_folder_and_verifies_every_audit_log(tmp_path, capsys):
    code = await run_demo(tmp_path / "demo", samples=SAMPLES, schemas=XSD)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "religion: 1 element(s) sent, 0 delivered to 1-1059-1" in out
    assert "receipt 310: Lucerne Gemeinden deliver statistics through the cantonal register" in out
    assert "receipt file in folders/1-1024-1/receipts/" in out
    assert "node-hub       received  from node-luzern, relaying to node-kriens" in out
    assert out.count(" valid: ") == 4 and "NOT" not in out
    assert "hop 0: node node-luzern (origin)" in out and "hop 1: node node-hub (relay)" in out and "hop 2: node node-kriens (destination)" in out
    assert "demo: 7 messages, 7 as expected (6 delivered with receipt 100, 1 refused by policy), audit logs verified: yes" in out


async def test_without_samples_the_demo_still_runs_on_a_generated_message(tmp_path, capsys):
    code = await run_demo(tmp_path / "demo", samples=tmp_path / "nowhere", schemas=DEFAULT_SCHEMAS if DEFAULT_SCHEMAS.exists() else XSD)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "demo: 3 messages, 3 as expected" in out


async def test_demo_up_keeps_the_federation_running_for_black_box_use_through_folders_and_rest(tmp_path):
    """federation.json is enough to drive it: Emmen's outbox folder in, the register's REST inbox out, receipt file back."""
    directory = tmp_path / "up"
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "up", "--dir", str(directory), "--schemas", str(XSD)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "federation up" not in line:
            assert time.monotonic() < deadline and process.poll() is None, "demo up did not start"
            line = await asyncio.to_thread(process.stdout.readline)
        described = json.loads((directory / "federation.json").read_text())
        move = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))
        message_id = uuid.uuid4().hex[:20]
        outbox = described["folders"][EMMEN]["outbox"]
        sender, recipient = ParticipantId(EMMEN), ParticipantId(KANTON)
        payload = payload_for(move, sender, recipient, 20001)
        with open(f"{outbox}/data_{message_id}.xml", "wb") as handle:
            handle.write(payload)
        with open(f"{outbox}/envl_{message_id}.xml", "wb") as handle:
            handle.write(envelope_for(move, sender, recipient, message_id, datetime.now(timezone.utc), 20001))
        register = next(n for n in described["nodes"] if KANTON in n["participants"])
        async with LocalApiClient(register["apiUrl"], described["tokens"][KANTON], described["ca"]) as api:
            for _ in range(200):
                if any(m["messageId"] == message_id for m in await api.inbox(KANTON)):
                    break
                await asyncio.sleep(0.05)
            assert await api.payload(KANTON, EMMEN, message_id) == payload
        receipts = described["folders"][EMMEN]["receipts"]
        for _ in range(200):
            found = [p for p in Path(receipts).glob("*.xml") if message_id in p.read_text()]
            if found:
                break
            await asyncio.sleep(0.05)
        assert int(parse_receipt(found[0].read_bytes()).status) == 100
        assert {n["id"] for n in described["nodes"]} == {"node-hub", "node-luzern", "node-kriens", "node-register"}
        assert LUZERN in described["tokens"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
