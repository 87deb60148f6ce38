"""Coverage-guided fuzz targets (atheris, libFuzzer) for the parsers the network and the outbox reach.

Each target turns libFuzzer's bytes into the input of one property of ``test_fuzz.py`` (its
``check_*`` functions), so the hypothesis targets and these share one definition of a correct
answer: a documented refusal or a well-typed result, never another exception. The gateway
and adapter modules are instrumented for coverage; lxml, cryptography and joserfc are not.

    .venv/bin/python -m tests.hostile.atheris_targets <target> [libFuzzer flags, e.g. -max_total_time=60]
    .venv/bin/python -m tests.hostile.atheris_targets --all [--seconds N] [--save-crashes] [libFuzzer flags]
    .venv/bin/python -m tests.hostile.atheris_targets --list

``--all`` pays for imports and instrumentation once, then forks one libFuzzer process per target
(two at a time), N seconds each (default 3), and prints executions, coverage and time per target.

Seeds are generated at start (the same real eCH samples, genuine seals and tokens, demo policies
as the hypothesis targets) into a throw-away corpus directory; the files of
``tests/hostile/regressions/<target>/`` are replayed first. A crash (an undocumented exception,
a broken property, one input slower than ``-timeout``, RSS above ``-rss_limit_mb``) makes
libFuzzer write the input to ``-artifact_prefix`` (``make fuzz``: straight into that regressions
folder) and exit non-zero; ``test_atheris.py`` replays every regression file in ``make test``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import atheris

# Coverage instrumentation only when fuzzing (run as a module): test_atheris.py imports this file
# to replay regressions, and instrumented gateway modules would slow every later test of the session.
_FUZZING = __name__ == "__main__"
with atheris.instrument_imports(include=["gateway", "adapters"]) if _FUZZING else contextlib.nullcontext():
    from gateway.config import PayloadAcceptance
    from gateway.transport import TransferHeader

    from . import test_fuzz as properties
    from .hostile import LUZERN

REGRESSIONS = Path(__file__).resolve().parent / "regressions"


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    seeds: Callable[[], list[bytes]]
    one: Callable[[bytes], str | None]  # runs one input through the property; raises on a crash


# ------------------------------------------------------------------------- bytes → property input


def _envelope(data: bytes) -> str:
    return properties.check_parse_envelope(data)


def _transfer(data: bytes) -> str:
    """Wire format §7 and §3: the transfer header, then the seal and envelope it carries, as a destination reads them."""
    outcome = properties.check_transfer_header(data)
    if outcome != "accepted":
        return outcome
    header = TransferHeader.decode(data)
    return properties.check_verify_seal((header.seal, header.envelope, LUZERN))


def _transfer_seeds() -> list[bytes]:
    return [properties.genuine_transfer_header()]


def _jws(data: bytes) -> str | None:
    """First byte: which type and signer the verifier expects; the rest: the compact token."""
    if not data:
        return None
    typ = properties.VERIFY_TYPES[data[0] % len(properties.VERIFY_TYPES)]
    signer = properties.VERIFY_SIGNERS[(data[0] // len(properties.VERIFY_TYPES)) % len(properties.VERIFY_SIGNERS)]
    return properties.check_verify_signed((data[1:].decode("latin-1"), typ, signer))


def _jws_seeds() -> list[bytes]:
    combinations = len(properties.VERIFY_TYPES) * len(properties.VERIFY_SIGNERS)
    return [bytes([selector]) + token.encode() for token in properties.seed_tokens() for selector in range(0, combinations, 5)]


def _payload(data: bytes) -> str | None:
    """Two bytes: the chunk size the payload is fed in; one byte: well-formed or schema-valid route; the rest: the payload."""
    if len(data) < 3:
        return None
    chunk = 1 + int.from_bytes(data[:2], "big") % 5000
    acceptance = PayloadAcceptance.SCHEMA_VALID if data[2] & 1 else PayloadAcceptance.WELL_FORMED
    return properties.check_payload_check((data[3:], chunk, acceptance))


def _payload_seeds() -> list[bytes]:
    return [b"\x10\x00" + bytes([flag]) + payload for payload in properties.xml_seeds()[2] for flag in (0, 1)]


def _folder_names(data: bytes) -> str | None:
    """Up to four lines, each one outbox file: its first byte picks the content (envelope, payload, empty), the rest is
    its name (UTF-8; '/' and NUL, which no single file name can hold, become '_')."""
    files: dict[str, str] = {}
    for line in data.split(b"\n")[:4]:
        if not line:
            continue
        name = line[1:].decode("utf-8", "replace").replace("/", "_").replace("\x00", "_")
        if name in ("", ".", "..") or len(name.encode("utf-8")) > 255:
            continue
        files.setdefault(name, properties.FOLDER_CONTENTS[line[0] % len(properties.FOLDER_CONTENTS)])
    if not files:
        return None
    return properties.check_folder_names(list(files.items()))


def _folder_seeds() -> list[bytes]:
    return [b"\x00envl_m-1.xml\n\x01data_m-1.xml", b"\x00envl_m-2.xml\n\x01data_m-2.zip", b"\x01data_x.x_y", b"\x02.hidden",
            b"\x00ENVL_m-3.xml.exe\n\x01data_m-3.xml"]  # fmt: skip


TARGETS = {
    target.name: target
    for target in (
        Target("envelope", "gateway.envelope.parse_envelope (eCH-0090 envelope, XSD-validated)", lambda: properties.xml_seeds()[0], _envelope),
        Target("transfer", "gateway.transport.TransferHeader.decode, then verify_seal on the seal and envelope it carries",
               _transfer_seeds, _transfer),
        Target("jws", "gateway.crypto.seal.verify_signed / verify_node_signed (receipts, hop entries, relay acknowledgements)",
               _jws_seeds, _jws),
        Target("payload", "gateway.payload.PayloadCheck fed in chunks (well-formed and schema-valid routes)", _payload_seeds, _payload),
        Target("policy", "gateway.policy.loader.load_policy_set (one TOML policy file)", properties.policy_seeds, properties.check_policy_file),
        Target("folder_names", "adapters.sedex_folder.FolderInterface.scan_once over outbox file names", _folder_seeds, _folder_names),
    )
}  # fmt: skip


DEFAULT_FLAGS = ["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"]  # one input > 10 s is a hang


def fuzz(target: Target, argv0: str, flags: list[str]) -> None:
    """Run libFuzzer on one target in this process (never returns)."""
    corpus = Path(tempfile.mkdtemp(prefix=f"atheris-{target.name}-"))
    for number, seed in enumerate(target.seeds()):
        (corpus / f"seed-{number:03d}").write_bytes(seed)
    regressions = REGRESSIONS / target.name
    corpora = [str(corpus)] + ([str(regressions)] if regressions.is_dir() else [])

    def test_one_input(data: bytes) -> None:
        target.one(data)

    atheris.Setup([argv0, *flags, *corpora], test_one_input)
    atheris.Fuzz()


@dataclass
class Figures:
    target: str
    status: int
    executions: int
    seconds: float
    coverage: str
    log: Path


def _figures(name: str, status: int, seconds: float, log: Path) -> Figures:
    text = log.read_text(errors="replace")
    executed = re.findall(r"stat::number_of_executed_units: (\d+)", text) or re.findall(r"Done (\d+) runs", text)
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", text)
    return Figures(name, status, int(executed[-1]) if executed else 0, seconds,
                   f"cov {coverage[-1][0]} ft {coverage[-1][1]}" if coverage else "cov ?", log)  # fmt: skip


def fuzz_all(argv0: str, seconds: float, save_crashes: bool, flags: list[str], parallel: int = 2) -> list[Figures]:
    """Every target for ``seconds``, in forked children sharing this process's imports and warmed-up seeds."""
    for target in TARGETS.values():  # warm up (schemas, PKI, seals) once, before forking
        for seed in target.seeds()[:1]:
            target.one(seed)
    logs = Path(tempfile.mkdtemp(prefix="atheris-logs-"))
    pending = list(TARGETS.values())
    running: dict[int, tuple[Target, float]] = {}
    results: list[Figures] = []
    while pending or running:
        while pending and len(running) < parallel:
            target = pending.pop(0)
            artifacts = REGRESSIONS / target.name if save_crashes else logs / target.name
            artifacts.mkdir(parents=True, exist_ok=True)
            log = logs / f"{target.name}.log"
            sys.stdout.flush()
            child = os.fork()
            if child == 0:  # the child: libFuzzer writes to stderr, kept in the target's log
                descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(descriptor, 1)
                os.dup2(descriptor, 2)
                # libFuzzer ends the child with exit(); its exit handler writes a crash input to the
                # artifact prefix, so nothing here may catch that SystemExit or call os._exit first.
                fuzz(target, argv0, [*DEFAULT_FLAGS, f"-max_total_time={int(seconds)}", f"-artifact_prefix={artifacts}/", *flags])
                os._exit(70)  # not reached: atheris.Fuzz() does not return
            running[child] = (target, time.monotonic())
        child, status = os.wait()
        target, started = running.pop(child)
        results.append(_figures(target.name, os.waitstatus_to_exitcode(status), time.monotonic() - started, logs / f"{target.name}.log"))
    return results


def main(argv: list[str]) -> None:
    if len(argv) > 1 and argv[1] == "--all":
        args = argv[2:]
        seconds, save_crashes = 3.0, False
        if "--seconds" in args:
            at = args.index("--seconds")
            seconds = float(args[at + 1])
            del args[at : at + 2]
        if "--save-crashes" in args:
            args.remove("--save-crashes")
            save_crashes = True
        results = fuzz_all(argv[0], seconds, save_crashes, args)
        for figures in results:
            verdict = "ok" if figures.status == 0 else f"CRASH (exit {figures.status}), log {figures.log}"
            print(f"atheris {figures.target:13} {figures.executions:>9} executions in {figures.seconds:5.1f} s, {figures.coverage}: {verdict}")
        for figures in results:
            if figures.status != 0:
                print(f"--- {figures.target} ---\n" + "\n".join(figures.log.read_text(errors="replace").splitlines()[-40:]))
        sys.exit(0 if all(f.status == 0 for f in results) else 1)
    if len(argv) < 2 or argv[1] not in TARGETS:
        for target in TARGETS.values():
            print(f"{target.name:14} {target.what}")
        sys.exit(0 if len(argv) > 1 and argv[1] == "--list" else 2)
    fuzz(TARGETS[argv[1]], argv[0], [*DEFAULT_FLAGS, *argv[2:]])


if __name__ == "__main__":
    main(sys.argv)
