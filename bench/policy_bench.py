"""Policy decisions per second with 10,000 rules (plain script).

Run: .venv/bin/python bench/policy_bench.py [--rules 10000] [--decisions 300000] [--runs 3]

The synthetic federation has 2,000 Gemeinden, 20 cantonal offices and the BFS; rules
mix exact pairs, groups, glob patterns, event conditions, forbids and validity dates,
so every index path of the engine is exercised. Requests are a fixed random mix of
allowed and denied ones; the figure is decisions per second on one core.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.ids import ParticipantId  # noqa: E402
from gateway.policy import PayloadFacts, PolicyEngine, PolicyRequest, load_policy_set  # noqa: E402

TYPES = [20001, 20201, 94, 2001, 1710967]
EVENTS = ["moveIn", "moveOut", "birth", "death", "changeReligion", "marriage"]
BASIS = 'purpose = "bench"\nlegal_basis = "bench law"\nlegal_reference = "SRL 1, Art. 1"\n'


def policy_text(n_rules: int, rng: random.Random) -> str:
    gemeinden = [f"1-{1000 + i}-1" for i in range(2000)]
    offices = [f"2-{c}-1" for c in ("LU", "ZH", "BE", "UR", "SZ", "OW", "NW", "GL", "ZG", "FR", "SO", "BS", "BL", "SH", "AR", "AI", "SG", "GR", "AG", "TG")]
    out = ['[groups]\n', 'offices = [' + ", ".join(f'"{o}"' for o in offices) + ']\n']
    for g in range(20):
        out.append(f'region-{g} = [' + ", ".join(f'"{x}"' for x in gemeinden[g * 100:(g + 1) * 100]) + "]\n")
    for i in range(n_rules):
        kind = i % 20
        if kind < 14:  # exact sender → exact recipient permits, the bulk of a real set
            body = f'senders = ["{rng.choice(gemeinden)}"]\nrecipients = ["{rng.choice(offices)}"]\nmessage_types = [{rng.choice(TYPES)}]\n'
            if kind < 4:
                body += f'events = ["{rng.choice(EVENTS)}"]\n'
            out.append(f'[[rule]]\nid = "r{i}"\neffect = "permit"\n{BASIS}{body}')
        elif kind < 17:  # group → office permits with a size limit
            body = f'senders = ["region-{rng.randrange(20)}"]\nrecipients = ["{rng.choice(offices)}"]\nmessage_types = [{rng.choice(TYPES)}]\nmax_payload_size = 5000000\n'
            out.append(f'[[rule]]\nid = "r{i}"\neffect = "permit"\n{BASIS}{body}')
        elif kind < 19:  # exact forbids, some limited in time
            body = f'senders = ["{rng.choice(gemeinden)}"]\nrecipients = ["{rng.choice(offices)}"]\nvalid_from = 2025-01-01\n'
            out.append(f'[[rule]]\nid = "r{i}"\neffect = "forbid"\n{body}')
        else:  # office → sender patterns (indexed per recipient)
            body = f'senders = ["1-{rng.randrange(1, 3)}*-1"]\nrecipients = ["{rng.choice(offices)}"]\nmessage_types = [{rng.choice(TYPES)}]\n'
            out.append(f'[[rule]]\nid = "r{i}"\neffect = "permit"\n{BASIS}{body}')
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(20260301)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.toml"
        path.write_text(policy_text(args.rules, rng), encoding="utf-8")
        started = time.perf_counter()
        policy_set = load_policy_set([path])
        load_seconds = time.perf_counter() - started
    engine = PolicyEngine(policy_set)
    senders = [ParticipantId(f"1-{1000 + i}-1") for i in range(2000)]
    recipients = [ParticipantId(f"2-{c}-1") for c in ("LU", "ZH", "BE", "UR", "SZ", "OW", "NW", "GL", "ZG", "FR")] + [ParticipantId("3-CH-1")]
    requests = [
        PolicyRequest(rng.choice(senders), rng.choice(recipients), rng.choice(TYPES), 0, rng.randrange(100, 6_000_000),
                      PayloadFacts(action="1", event=rng.choice(EVENTS), data_lock=rng.random() < 0.05))
        for _ in range(50_000)
    ]
    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    decide = engine.decide
    allowed = sum(decide(r, now, "origin").allowed for r in requests)  # warm-up fills the candidate cache
    rates = []
    for _ in range(args.runs):
        started = time.perf_counter()
        done = 0
        while done < args.decisions:
            for request in requests:
                decide(request, now, "origin")
            done += len(requests)
        rates.append(done / (time.perf_counter() - started))
    cold = PolicyEngine(policy_set)
    started = time.perf_counter()
    for request in requests:
        cold.decide(request, now, "origin")
    cold_rate = len(requests) / (time.perf_counter() - started)
    print(f"rules: {len(policy_set.rules)}  load: {load_seconds:.2f} s  requests allowed: {allowed / len(requests):.1%}")
    print(f"decisions/s (warm, {args.runs} runs): median {statistics.median(rates):,.0f}  min {min(rates):,.0f}  max {max(rates):,.0f}")
    print(f"decisions/s (cold engine, first pass of {len(requests):,} requests): {cold_rate:,.0f}")


if __name__ == "__main__":
    main()
