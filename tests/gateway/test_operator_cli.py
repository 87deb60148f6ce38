"""The operator CLI (send, status, inbox, receipts) against two real in-process nodes over TLS.

Each command runs the CLI's real ``main`` in a worker thread (its own event loop, real HTTPS),
while the nodes serve in the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta

import pytest

from gateway import operator_cli
from gateway.samples import discover

from ..conftest import KANTON, LUZERN, SAMPLES
from .nodes import running, sample_envelope

MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


def connection(federation, participant: str, via: str = "token") -> list[str]:
    node = federation.node_of(participant).id
    args = ["--url", federation.api_url(node), "--ca", str(federation.ca_file)]
    if via == "token":
        # --token=…: a urlsafe token may start with "-", which argparse would read as an option
        args += [f"--token={federation.tokens[participant]}"]
    return args


async def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(operator_cli.main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_pair(directory, federation, clock, message_id=None, days_ago=0):
    directory.mkdir(parents=True, exist_ok=True)
    message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now() - timedelta(days=days_ago), message_id)
    (directory / f"envl_{message_id}.xml").write_bytes(envelope)
    (directory / f"data_{message_id}.xml").write_bytes(payload)
    return message_id, directory / f"envl_{message_id}.xml", directory / f"data_{message_id}.xml", payload


async def test_send_status_inbox_fetch_ack_and_receipts(federation, clock, capsys, tmp_path):
    """The whole round trip in text mode: send, status, inbox --fetch --ack, receipts --after."""
    message_id, envelope, data, payload = write_pair(tmp_path / "out", federation, clock)
    async with running(federation, clock) as nodes:
        code, out, err = await cli(capsys, "send", str(envelope), str(data), "--no-progress", *connection(federation, LUZERN))
        assert code == 0, err
        assert f"accepted {LUZERN}/{message_id} -> {KANTON}" in out

        code, out, _ = await cli(capsys, "status", LUZERN, message_id, *connection(federation, LUZERN))
        assert code == 0 and f"{KANTON}: queued" in out and "accepted" in out

        assert await nodes["node-luzern"].forward_due() == 1
        code, out, _ = await cli(capsys, "status", LUZERN, message_id, *connection(federation, LUZERN))
        assert code == 0 and f"{KANTON}: delivered" in out and "receipt 100" in out

        code, out, _ = await cli(capsys, "inbox", f"sedex://{KANTON}", *connection(federation, KANTON))
        assert code == 0 and f"{LUZERN}/{message_id}" in out

        fetched = tmp_path / "in"
        code, out, err = await cli(capsys, "inbox", KANTON, "--fetch", str(fetched), "--ack", "--no-progress", *connection(federation, KANTON))
        assert code == 0, err
        assert "acknowledged" in out
        assert (fetched / f"data_{message_id}.xml").read_bytes() == payload
        assert (fetched / f"envl_{message_id}.xml").read_bytes().startswith(b"<")
        assert sorted(p.name for p in fetched.iterdir()) == [f"data_{message_id}.xml", f"envl_{message_id}.xml"]  # no .part left

        code, out, _ = await cli(capsys, "inbox", KANTON, *connection(federation, KANTON))
        assert code == 0 and "is empty" in out

        code, out, _ = await cli(capsys, "receipts", LUZERN, *connection(federation, LUZERN))
        assert code == 0
        lines = out.strip().splitlines()
        assert len(lines) == 1 and " 100 " in lines[0] and message_id in lines[0]
        last = lines[0].split()[0]
        code, out, _ = await cli(capsys, "receipts", LUZERN, "--after", last, *connection(federation, LUZERN))
        assert code == 0 and "no receipts after" in out


async def test_json_output_is_one_document_for_every_command(federation, clock, capsys, tmp_path, monkeypatch):
    """--json prints exactly one JSON document on stdout; the token comes from the environment here."""
    monkeypatch.setenv("DREHSCHEIBE_TOKEN", federation.tokens[LUZERN])
    message_id, envelope, data, _ = write_pair(tmp_path / "out", federation, clock)
    async with running(federation, clock) as nodes:
        code, out, _ = await cli(capsys, "send", str(envelope), str(data), "--json", "--progress", *connection(federation, LUZERN, via="env"))
        sent = json.loads(out)
        assert code == 0 and sent["ok"] is True and sent["accepted"] == 1
        assert sent["results"][0]["messageId"] == message_id and sent["results"][0]["recipientIds"] == [KANTON]
        assert await nodes["node-luzern"].forward_due() == 1

        code, out, _ = await cli(capsys, "status", LUZERN, message_id, "--json", *connection(federation, LUZERN, via="env"))
        status = json.loads(out)
        assert code == 0 and status["ok"] and status["recipients"][0]["state"] == "delivered"
        assert status["receipts"][0]["statusCode"] == 100

        token_file = tmp_path / "kanton.token"
        token_file.write_text(federation.tokens[KANTON] + "\n")
        kanton = [*connection(federation, KANTON, via="file"), "--token-file", str(token_file)]
        code, out, _ = await cli(capsys, "inbox", KANTON, "--json", "--fetch", str(tmp_path / "in"), "--ack", "--progress", *kanton)
        inbox = json.loads(out)
        assert code == 0 and inbox["ok"] and [m["messageId"] for m in inbox["messages"]] == [message_id]
        assert inbox["messages"][0]["acknowledged"] is True
        assert inbox["messages"][0]["files"]["payload"].endswith(f"data_{message_id}.xml")

        code, out, _ = await cli(capsys, "receipts", LUZERN, "--json", *connection(federation, LUZERN, via="env"))
        receipts = json.loads(out)
        assert code == 0 and [r["statusCode"] for r in receipts["receipts"]] == [100]
        assert receipts["last"] == receipts["receipts"][0]["id"]


async def test_bulk_send_of_a_sedex_directory(federation, clock, capsys, tmp_path):
    """Every envl_/data_ pair of a directory is sent; a lone envelope is reported and makes the exit 1."""
    outbox = tmp_path / "outbox"
    ids = [write_pair(outbox, federation, clock)[0] for _ in range(3)]
    async with running(federation, clock) as nodes:
        code, out, err = await cli(capsys, "send", str(outbox), "--progress", "--json", *connection(federation, LUZERN))
        result = json.loads(out)
        assert code == 0 and result["accepted"] == 3
        assert sorted(r["messageId"] for r in result["results"]) == sorted(ids)
        assert await nodes["node-luzern"].forward_due() == 3
        assert len(nodes["node-kanton"].store.inbox(KANTON)) == 3

        (outbox / "envl_lonely.xml").write_bytes((outbox / f"envl_{ids[0]}.xml").read_bytes())
        code, out, err = await cli(capsys, "send", str(outbox), "--no-progress", *connection(federation, LUZERN))
        assert code == 1
        assert "3 accepted, 1 refused" in out and "envl_lonely.xml" in err
        assert out.count("(duplicate, already accepted)") == 3


async def test_a_refused_send_exits_1_with_the_sedex_code(federation, clock, capsys, tmp_path):
    """A message dated 31 days ago is refused with 203: exit 1, code and statusInfo on stderr and in JSON."""
    _, envelope, data, _ = write_pair(tmp_path / "out", federation, clock, days_ago=31)
    async with running(federation, clock):
        code, out, err = await cli(capsys, "send", str(envelope), str(data), "--no-progress", *connection(federation, LUZERN))
        assert code == 1 and out == ""
        assert "refused" in err and "203" in err
        code, out, err = await cli(capsys, "send", str(envelope), str(data), "--json", *connection(federation, LUZERN))
        result = json.loads(out)["results"][0]
        assert code == 1 and result["accepted"] is False and result["statusCode"] == 203 and result["statusInfo"]
        assert "<eCH-0090:statusCode>203" in result["receipt"]


async def test_status_of_an_unknown_message_exits_1(federation, clock, capsys):
    async with running(federation, clock):
        code, out, err = await cli(capsys, "status", LUZERN, "nosuchmessage", "--json", *connection(federation, LUZERN))
        assert code == 1 and json.loads(out)["httpStatus"] == 404 and "404" in err


@pytest.mark.parametrize("command", [["receipts", LUZERN], ["inbox", LUZERN], ["status", LUZERN, "abc"], ["send", "ENV", "DATA"]])
async def test_a_bad_token_exits_2_and_is_never_echoed(federation, clock, capsys, tmp_path, command):
    """The node's 401 is exit 2; neither stdout nor stderr contains the token."""
    _, envelope, data, _ = write_pair(tmp_path / "out", federation, clock)
    command = [str(envelope) if c == "ENV" else str(data) if c == "DATA" else c for c in command]
    bad = "not-the-real-token-" + "x" * 24
    node = federation.node_of(LUZERN).id
    async with running(federation, clock):
        for flag in ([], ["--json"]):
            code, out, err = await cli(capsys, *command, *flag, "--url", federation.api_url(node), "--ca", str(federation.ca_file), "--token", bad)
            assert code == 2
            assert bad not in out and bad not in err
            assert "refused the token" in err and "401" in err
            if flag:
                document = json.loads(out)
                assert document["ok"] is False and "401" in document["error"]
            else:
                assert out == ""


async def test_usage_and_connection_errors_exit_2(federation, clock, capsys, tmp_path, monkeypatch):
    """No token, a token with a newline, plain http, an unreachable node, a wrong CA: exit 2, token never shown."""
    monkeypatch.delenv("DREHSCHEIBE_TOKEN", raising=False)
    node = federation.node_of(LUZERN).id
    url, ca = federation.api_url(node), str(federation.ca_file)
    code, _, err = await cli(capsys, "receipts", LUZERN, "--url", url, "--ca", ca)
    assert code == 2 and "no token" in err
    secret = "secret-part\nX-Injected: 1"
    code, out, err = await cli(capsys, "receipts", LUZERN, "--url", url, "--ca", ca, "--token", secret)
    assert code == 2 and "secret-part" not in err + out
    code, _, err = await cli(capsys, "receipts", LUZERN, "--url", url.replace("https://", "http://"), "--ca", ca, "--token", "t")
    assert code == 2 and "https" in err
    token = federation.tokens[LUZERN]
    # Nodes not running: connection refused.
    code, out, err = await cli(capsys, "receipts", LUZERN, "--url", url, "--ca", ca, f"--token={token}")
    assert code == 2 and "cannot talk to" in err and token not in err + out
    async with running(federation, clock):
        # A CA that did not issue the node's certificate: TLS fails, exit 2.
        from gateway.pki import DevelopmentCA

        foreign = DevelopmentCA(tmp_path / "foreign")
        code, out, err = await cli(capsys, "receipts", LUZERN, "--url", url, "--ca", str(foreign.cert_path), f"--token={token}")
        assert code == 2 and "cannot talk to" in err and token not in err + out
    with pytest.raises(SystemExit) as exit_info:
        operator_cli.main(["receipts"])
    assert exit_info.value.code == 2
    code, _, err = await cli(capsys, "send", str(tmp_path), "--url", url, "--ca", ca, f"--token={token}")
    assert code == 2 and "no envl_" in err
    code, _, err = await cli(capsys, "status", LUZERN, "../admin", "--url", url, "--ca", ca, f"--token={token}")
    assert code == 2 and "messageId" in err
    code, _, err = await cli(capsys, "inbox", "kanton", "--url", url, "--ca", ca, f"--token={token}")
    assert code == 2 and "participant" in err.lower()


async def test_runs_as_a_module(federation, clock, tmp_path):
    """``python -m gateway.operator_cli`` works as a subprocess, with the token from the environment."""
    import os

    async with running(federation, clock):
        node = federation.node_of(LUZERN).id
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.operator_cli", "receipts", LUZERN, "--json", "--url", federation.api_url(node),
            "--ca", str(federation.ca_file),
            env={**os.environ, "DREHSCHEIBE_TOKEN": federation.tokens[LUZERN]},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
    assert process.returncode == 0, err
    assert json.loads(out) == {"ok": True, "participant": LUZERN, "after": 0, "last": 0, "receipts": []}


async def test_progress_goes_to_stderr_with_rich_or_a_plain_line(federation, clock, capsys, tmp_path, monkeypatch):
    """--progress draws on stderr only (rich when installed, else a plain line); stdout stays clean JSON."""
    _, envelope, data, _ = write_pair(tmp_path / "out", federation, clock)
    async with running(federation, clock):
        code, out, err = await cli(capsys, "send", str(envelope), str(data), "--progress", "--json", *connection(federation, LUZERN))
        assert code == 0 and json.loads(out)["ok"] and data.name in err
        monkeypatch.setitem(sys.modules, "rich.console", None)  # as if rich were not installed
        monkeypatch.setitem(sys.modules, "rich.progress", None)
        code, out, err = await cli(capsys, "send", str(envelope), str(data), "--progress", "--json", *connection(federation, LUZERN))
        size = operator_cli._size(data.stat().st_size)
        assert code == 0 and json.loads(out)["results"][0]["duplicate"] is True
        assert err.endswith(f"\r{data.name}: {size} of {size} 100%\n")


async def test_payloads_are_streamed_in_chunks(tmp_path):
    """A large payload file is read chunk by chunk (never whole into memory) and counted by the bar."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (operator_cli.CHUNK * 4 + 10))
    bar = operator_cli._Bar(False, big.stat().st_size, "big")
    sizes = [len(chunk) async for chunk in operator_cli._stream(big, bar)]
    assert sizes == [operator_cli.CHUNK] * 4 + [10] and bar.done == big.stat().st_size
