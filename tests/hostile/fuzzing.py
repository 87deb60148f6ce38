"""A small mutation fuzzer on top of Hypothesis: budgets, known bugs, figures.

Two ways to run the targets in ``test_fuzz.py``:

* inside the normal suite: a fixed, derandomised number of examples per target
  (``QUICK_EXAMPLES``), so ``make test`` stays fast and reproducible;
* as a campaign: ``FUZZ_SECONDS=<total seconds>`` (split evenly over the targets) and/or
  ``FUZZ_EXAMPLES=<examples per target>``; examples are then drawn at random, batch after
  batch, until the budget is spent. ``FUZZ_REPORT=<file.json>`` writes the figures.

A target's property says which exceptions are documented (a ``GatewayError`` subclass
with a sedex status, or the module's own error type); anything else fails the run, as
does one example taking longer than ``HANG_SECONDS`` or the process's peak RSS growing by
more than ``RSS_GROWTH_MB`` during a target. Hypothesis then shrinks the input and prints
a reproduction blob; a crash found this way becomes a named test in the corpus.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway.ids import GatewayError, StatusCode

QUICK_EXAMPLES = 300
BATCH = 400
HANG_SECONDS = 5.0
RSS_GROWTH_MB = 300
TARGETS = ("parse_xml", "parse_envelope", "parse_receipt", "transfer_header", "verify_seal", "verify_signed",
           "payload_check", "segment_stream", "folder_names", "policy_loader")  # fmt: skip


def _env_number(name: str, kind):
    value = os.environ.get(name, "").strip()
    return kind(value) if value else None


FUZZ_SECONDS = _env_number("FUZZ_SECONDS", float)
FUZZ_EXAMPLES = _env_number("FUZZ_EXAMPLES", int)
CAMPAIGN = FUZZ_SECONDS is not None or FUZZ_EXAMPLES is not None


def timeout_seconds() -> float:
    """What pytest-timeout should allow one fuzz target."""
    if FUZZ_SECONDS is not None:
        return FUZZ_SECONDS / len(TARGETS) * 2 + 300
    if FUZZ_EXAMPLES is not None:
        return max(300.0, FUZZ_EXAMPLES * 0.2)
    return 120.0


@dataclass
class Stats:
    examples: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    outcomes: Counter = field(default_factory=Counter)


STATS: dict[str, Stats] = {}

# A known bug a target's property tolerates (and counts) instead of failing the run, so that the
# suite stays green while the bug is open. Each entry names the strict xfail test that shows
# it; when the bug is fixed that test XPASSes and the entry must go.
KNOWN_BUGS: list[tuple[str, type, str, str]] = [
    # (target, exception type, text in its message, the strict-xfail test that shows it)
    # Empty: F6 (RecursionError in transfer_header, verify_signed, verify_seal) and F17 (ValueError 'Invalid tag name'
    # in payload_check) are fixed; their tests are ordinary regression tests now.
]


def known_bug(target: str, error: BaseException) -> str | None:
    for name, kind, text, test in KNOWN_BUGS:
        if name == target and type(error) is kind and text in str(error):
            return test
    return None


def documented(error: BaseException) -> bool:
    """A documented refusal: a GatewayError that carries a sedex status code."""
    return isinstance(error, GatewayError) and isinstance(error.status, StatusCode)


def label(error: BaseException) -> str:
    text = str(error).split(":")[0][:40] if str(error) else ""
    return f"{type(error).__name__}({text})" if text else type(error).__name__


def run(target: str, strategy: st.SearchStrategy, check: Callable[[object], str]) -> Stats:
    """Feed ``strategy``'s examples to ``check`` within the budget; ``check`` returns an outcome label or raises."""
    assert target in TARGETS, target
    stats = STATS.setdefault(target, Stats())
    per_target_seconds = FUZZ_SECONDS / len(TARGETS) if FUZZ_SECONDS is not None else None
    wanted = FUZZ_EXAMPLES if FUZZ_EXAMPLES is not None else (None if CAMPAIGN else QUICK_EXAMPLES)

    def one(example) -> None:
        started = time.monotonic()
        try:
            outcome = check(example)
        except BaseException as error:  # noqa: BLE001 - sorted into documented, known and new below
            known = known_bug(target, error)
            if known is None:
                raise
            outcome = f"KNOWN BUG {type(error).__name__} ({known.split('::')[-1]})"
        elapsed = time.monotonic() - started
        stats.examples += 1
        stats.slowest = max(stats.slowest, elapsed)
        stats.outcomes[outcome] += 1
        assert elapsed < HANG_SECONDS, f"{target}: one input took {elapsed:.1f} s"

    def batch(size: int) -> None:
        @settings(max_examples=size, deadline=None, database=None, derandomize=not CAMPAIGN, print_blob=True,
                  phases=[Phase.explicit, Phase.generate, Phase.shrink],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(strategy)
        def fuzz(example):
            one(example)

        fuzz()

    started = time.monotonic()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    done = 0
    while True:
        if wanted is not None and done >= wanted:
            break
        if per_target_seconds is not None and time.monotonic() - started >= per_target_seconds:
            break
        size = min(BATCH, wanted - done) if wanted is not None else BATCH
        before = stats.examples
        batch(size)
        done += stats.examples - before
        if not CAMPAIGN:
            break
    stats.seconds += time.monotonic() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 - peak_before
    assert grown < RSS_GROWTH_MB, f"{target}: peak RSS grew by {grown} MB"
    return stats


def write_report() -> None:
    path = os.environ.get("FUZZ_REPORT")
    if not path or not STATS:
        return
    report = {
        target: {"examples": s.examples, "seconds": round(s.seconds, 1), "slowest_example_seconds": round(s.slowest, 3),
                 "outcomes": dict(s.outcomes.most_common())}
        for target, s in sorted(STATS.items())
    }  # fmt: skip
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"fuzz_seconds": FUZZ_SECONDS, "fuzz_examples": FUZZ_EXAMPLES, "targets": report}, handle, indent=2)


# --------------------------------------------------------------------------------- mutations

XML_TOKENS = [
    b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>', b"<!DOCTYPE r SYSTEM 'http://127.0.0.1:9/x.dtd'>",
    b"<!ENTITY x SYSTEM 'file:///etc/passwd'>", b"&a;", b"&x;", b"&#0;", b"&#x110000;", b"&lt;", b"<![CDATA[", b"]]>", b"<!--",
    b"-->", b"<?pi data?>", b"<?xml version='1.0' encoding='UTF-16'?>", b"<?xml version='1.0' encoding='UTF-7'?>",
    b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd"/>', b' xmlns:p="urn:x" p:a="1"',
    b' xmlns=""', b"<a>" * 70, b"</a>", b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"\xc3", b"sedex://", b"1-1061-1", b"T1-1-1",
    b"0-sedex-0", b"<eCH-0090:recipientId>2-LU-1</eCH-0090:recipientId>", b"2099-12-31T23:59:59Z", b"-", b"999999999999999999999",
]  # fmt: skip
JSON_TOKENS = [b"[", b"]", b"{", b"}", b'"', b"\\u0000", b"\\ud800", b"null", b"true", b"1e999", b"-0", b"99999999999999999999999",
               b'"hops":["a"]', b'"envelope":"@@@"', b",", b":", b"\xff", b"NaN", b"Infinity"]  # fmt: skip


def _apply(seed: bytes, operations, seeds: list[bytes]) -> bytes:
    data = bytearray(seed)
    for operation in operations:
        kind, where = operation[0], operation[1]
        position = int(where * len(data))
        if kind == "flip" and data:
            data[min(position, len(data) - 1)] ^= 1 << operation[2]
        elif kind == "insert":
            data[position:position] = operation[2]
        elif kind == "delete":
            del data[position : position + operation[2]]
        elif kind == "repeat":
            piece = bytes(data[position : position + operation[2]])
            data[position:position] = piece * operation[3]
        elif kind == "truncate":
            del data[position:]
        elif kind == "splice":
            other = operation[2]
            cut = int(operation[3] * len(other))
            data[position:] = other[cut:]
    return bytes(data)


def mutated(seeds: list[bytes], tokens: list[bytes], *, max_operations: int = 6) -> st.SearchStrategy[bytes]:
    """Real inputs bent by flips, inserted attack tokens, deletions, repetitions, truncation and splices."""
    where = st.floats(0, 1, allow_nan=False)
    operation = st.one_of(
        st.tuples(st.just("flip"), where, st.integers(0, 7)),
        st.tuples(st.just("insert"), where, st.sampled_from(tokens) | st.binary(max_size=12)),
        st.tuples(st.just("delete"), where, st.integers(1, 64)),
        st.tuples(st.just("repeat"), where, st.integers(1, 32), st.integers(2, 64)),
        st.tuples(st.just("truncate"), where),
        st.tuples(st.just("splice"), where, st.sampled_from(seeds), where),
    )
    return st.builds(lambda seed, ops: _apply(seed, ops, seeds), st.sampled_from(seeds), st.lists(operation, max_size=max_operations))


def reencoded(documents: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Sometimes re-encode a (mutated) XML document as UTF-16/UTF-32 with a matching declaration."""

    def encode(data: bytes, encoding: str | None) -> bytes:
        if encoding is None:
            return data
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return data
        if text.startswith("<?xml"):
            text = text[text.find("?>") + 2 :] if "?>" in text else text
        return (f'<?xml version="1.0" encoding="{encoding.upper()}"?>' + text).encode(encoding)

    return st.builds(encode, documents, st.sampled_from([None, None, None, "utf-16", "utf-32"]))
