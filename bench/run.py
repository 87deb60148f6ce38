"""The benchmark suite (issue 9): ``make bench`` → ``python bench/run.py``.

Starts real nodes on loopback, generates load from a separate process and writes
``docs/benchmarks.md`` (machine, date, commit, command, every figure as the median of at
least three runs with min and max, the issue's targets beside them, met or missed).

    python bench/run.py                      # everything, 5 runs each (about 12 minutes on 2 cores)
    python bench/run.py --only b1,stages     # a subset: stages, b1, commit, workers, limit, b2, b3, policy, audit, replicas
    python bench/run.py --quick              # smoke version, < 60 s; writes into its work directory
    python bench/run.py --compare bench/results/last-full.json   # adds a "before" column
    BENCH_LARGE=1 python bench/run.py --only b2                  # adds the 10 GB payload
    BENCH_DIR=/big/disk python bench/run.py                      # where federations and payloads go

Raw results are written next to the report as JSON (``bench/results/last-full.json`` for a
full run), so a later run can show before/after figures with ``--compare``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.common import SCHEMAS, ForeignLoad, git_commit, log, machine_info, now_utc  # noqa: E402

SECTIONS = ("stages", "b1", "commit", "workers", "limit", "b2", "b3", "policy", "audit", "replicas")


def parameters(quick: bool) -> dict:
    if quick:
        return {
            "runs": 3,
            "stages": {"messages": 15, "profile_messages": 10},
            "b1": {"full_seconds": 1.0, "half_seconds": 1.0, "origin_seconds": 1.0, "concurrency": 16, "warmup_seconds": 0.5},
            "commit": {"seconds": 1.0, "concurrency": 16, "warmup_seconds": 0.5},
            "workers": {"seconds": 0.5, "origin_seconds": 0.5, "concurrency": 16, "warmup_seconds": 0.3},
            "limit": {"seconds": 0.7, "min_seconds": 0.02},
            "b2": {"sizes_mb": [10]},
            "b3": {"burst": 20, "paced_seconds": 1.0, "concurrency": 16, "warmup": 3},
            "policy": ["--rules", "1000", "--decisions", "10000", "--runs", "3"],
            "audit": ["--records", "2000", "--batch", "500", "--runs", "3"],
            "replicas": {"seconds": 1.0, "concurrency": 16, "warmup_seconds": 0.5},
        }
    large = os.environ.get("BENCH_LARGE") == "1"
    return {
        "runs": 5,
        "stages": {"messages": 300, "profile_messages": 200},
        "b1": {"full_seconds": 15.0, "half_seconds": 10.0, "origin_seconds": 6.0, "concurrency": 16, "warmup_seconds": 2.0},
        "commit": {"seconds": 10.0, "concurrency": 16, "warmup_seconds": 2.0},
        "workers": {"seconds": 10.0, "origin_seconds": 6.0, "concurrency": 16, "warmup_seconds": 2.0},
        "limit": {"seconds": 10.0, "min_seconds": 0.5},
        "b2": {"sizes_mb": [100, 1000] + ([10000] if large else [])},
        "b3": {"burst": 600, "paced_seconds": 10.0, "concurrency": 16, "warmup": 10},
        "policy": ["--rules", "10000", "--decisions", "300000", "--runs", "5"],
        "audit": ["--records", "100000", "--batch", "500", "--runs", "5"],
        "replicas": {"seconds": 10.0, "concurrency": 16, "warmup_seconds": 2.0},
    }


async def run_limit_transport(workdir: Path, params: dict, runs: int, concurrency: int, catalog) -> dict:
    """B1-limit (a): the bare mTLS server, driven like the origin node's local API."""
    from gateway.config import load_config

    from bench.b1_small import _spec
    from bench.common import DESTINATION, KANTON, LUZERN, ORIGIN, make_federation, run_loadgen
    from gateway.federation import free_port
    from bench.limits import BareServer
    from bench.messages import write_message_files

    base = workdir / "limit"
    federation = make_federation(base / "federation")
    files = write_message_files(base / "messages", LUZERN, KANTON, catalog)
    server_tls = load_config(federation.config_path(ORIGIN)).tls
    client_tls = load_config(federation.config_path(DESTINATION)).tls
    port = free_port()
    server = BareServer(server_tls.certificate, server_tls.private_key, federation.ca_file, port)
    out = []
    try:
        for run in range(runs + 1):
            spec = _spec(federation, files, f"bare{run}", mode="closed", concurrency=concurrency,
                         duration=min(1.0, params["seconds"]) if run == 0 else params["seconds"])  # fmt: skip
            spec["url"] = f"https://127.0.0.1:{port}/api/v1/messages"
            spec["client_cert"], spec["client_key"] = str(client_tls.certificate), str(client_tls.private_key)
            cpu0 = server.cpu_seconds()
            result = run_loadgen(spec, base, f"bare{run}")
            cpu1 = server.cpu_seconds()
            if run == 0:
                continue  # warm-up
            ok = [r for r in result["records"] if r[4] == 200]
            if not ok:
                raise RuntimeError(f"bare server answered no request with 200: {result.get('errors')}")
            first = min(r[2] for r in result["records"])
            window = max(r[2] + r[3] for r in ok) - first
            from bench.common import latency_stats

            out.append({
                "requests_per_s": len(ok) / window,
                "latency": latency_stats([r[3] for r in ok]),
                "server_cpu_ms_per_request": (cpu1 - cpu0) * 1000 / len(ok),
                "loadgen_cpu_ms_per_request": result["cpu_seconds"] * 1000 / len(result["records"]),
            })  # fmt: skip
            log(f"B1-limit bare mTLS server run {run}: {out[-1]['requests_per_s']:.0f} requests/s, "
                f"server CPU {out[-1]['server_cpu_ms_per_request']:.2f} ms/request")  # fmt: skip
    finally:
        server.stop()
    return {"runs": out}


def run_script(name: str, arguments: list[str]) -> dict:
    """Run bench/policy_bench.py or bench/audit_bench.py (owned elsewhere) and keep its output."""
    command = [sys.executable, str(REPO / "bench" / name), *arguments]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    return {
        "command": "python bench/" + name + " " + " ".join(arguments),
        "returncode": completed.returncode,
        "stdout": completed.stdout,
        "stderr": completed.stderr[-3000:],
        "seconds": time.perf_counter() - started,
    }


def parse_policy(output: str) -> dict | None:
    match = re.search(r"decisions/s \(warm, (\d+) runs\): median ([\d,]+)\s+min ([\d,]+)\s+max ([\d,]+)", output)
    if not match:
        return None
    rules = re.search(r"rules: (\d+)", output)
    values = [float(match.group(i).replace(",", "")) for i in (2, 3, 4)]
    return {"runs": int(match.group(1)), "median": values[0], "min": values[1], "max": values[2],
            "rules": int(rules.group(1)) if rules else None}  # fmt: skip


def parse_audit(output: str) -> dict:
    out = {}
    for line in output.splitlines():
        match = re.match(r"\s*(.+?)\s+median\s+([\d,]+)/s\s+min\s+([\d,]+)/s\s+max\s+([\d,]+)/s", line)
        if match:
            out[match.group(1).strip()] = {k: float(match.group(i).replace(",", "")) for k, i in (("median", 2), ("min", 3), ("max", 4))}
    return out


async def main_async(args: argparse.Namespace) -> int:
    only = set(SECTIONS) if not args.only else {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    params = parameters(args.quick)
    runs = params["runs"]
    base_dir = os.environ.get("BENCH_DIR")
    if base_dir:
        Path(base_dir).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="drehscheibe-bench-", dir=base_dir))
    output = Path(args.output) if args.output else (workdir / "benchmarks.md" if args.quick else REPO / "docs" / "benchmarks.md")
    json_path = Path(args.json) if args.json else (workdir / "results.json" if args.quick else REPO / "bench" / "results" / "last-full.json")
    if args.quick and not args.output:
        # keep the quick report after the work directory is removed
        output = Path(tempfile.gettempdir()) / "drehscheibe-bench-quick.md"
        json_path = Path(tempfile.gettempdir()) / "drehscheibe-bench-quick.json" if not args.json else json_path
    started = time.perf_counter()
    from gateway.schemas import SchemaCatalog

    catalog = SchemaCatalog(SCHEMAS)
    results: dict = {
        "meta": {
            "date": now_utc(),
            "commit": git_commit(),
            "command": "python bench/run.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
            "quick": args.quick,
            "sections": [s for s in SECTIONS if s in only],
            "params": params,
            "machine": machine_info(),
            "bench_large": os.environ.get("BENCH_LARGE") == "1",
        }
    }
    log(f"work directory {workdir}; report → {output}")

    async def stages() -> dict:
        from bench.stages import run_stages

        return await run_stages(workdir, runs=runs, **params["stages"])

    async def b1() -> dict:
        from bench.b1_small import run_b1

        return await run_b1(workdir, runs=runs, catalog=catalog, **params["b1"])

    async def commit() -> dict:
        from bench.b1_commit import run_commit

        return await run_commit(workdir, runs=runs, catalog=catalog, **params["commit"])

    async def workers() -> dict:
        from bench.b1_workers import run_workers

        return await run_workers(workdir, runs=runs, catalog=catalog, **params["workers"])

    async def limit() -> dict:
        from bench.limits import primitives
        from bench.messages import ech0020_delivery, envelope_for, envelope_template

        out = await run_limit_transport(workdir, params["limit"], runs, params["b1"]["concurrency"], catalog)
        envelope = envelope_for(envelope_template("1-1061-1", "2-LU-1"), "primitive-1")
        out["primitives"] = primitives(ech0020_delivery(), envelope, runs=runs, min_seconds=params["limit"]["min_seconds"])
        return out

    async def b2() -> dict:
        from bench.b2_large import run_b2

        return await run_b2(workdir, sizes_mb=params["b2"]["sizes_mb"], runs=runs)

    async def b3() -> dict:
        from bench.b3_folder import run_b3

        return await run_b3(workdir, runs=runs, catalog=catalog, **params["b3"])

    async def policy() -> dict:
        log("policy benchmark (bench/policy_bench.py)")
        out = run_script("policy_bench.py", params["policy"])
        out["parsed"] = parse_policy(out["stdout"])
        return out

    async def audit() -> dict:
        log("audit benchmark (bench/audit_bench.py)")
        out = run_script("audit_bench.py", params["audit"])
        out["parsed"] = parse_audit(out["stdout"])
        return out

    async def replicas() -> dict:
        from bench.replicas import run_replicas

        return await run_replicas(workdir, runs=runs, catalog=catalog, **params["replicas"])

    runners = {"stages": stages, "b1": b1, "commit": commit, "workers": workers, "limit": limit, "b2": b2, "b3": b3, "policy": policy, "audit": audit,
               "replicas": replicas}  # fmt: skip
    failed: list[str] = []
    foreign = ForeignLoad().start()
    try:
        for section in SECTIONS:
            if section not in only:
                continue
            foreign.enter(section)
            try:
                results[section] = await runners[section]()
            except Exception:  # noqa: BLE001 - one broken section must not lose the others' figures
                failed.append(section)
                results["errors"] = {**results.get("errors", {}), section: traceback.format_exc()[-4000:]}
                log(f"section {section} FAILED:\n{traceback.format_exc()}")
    finally:
        results["meta"]["foreign_load"] = foreign.stop()
        results["meta"]["seconds"] = time.perf_counter() - started
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    before = json.loads(Path(args.compare).read_text()) if args.compare else None
    if json_path.exists() and not args.quick:
        earlier = json.loads(json_path.read_text())
        shutil.copyfile(json_path, json_path.with_suffix(".previous.json"))
        if args.only:
            # A partial run keeps the other sections of the last full report, marked as carried over.
            for section in SECTIONS:
                if section not in results and section not in failed and section in earlier:
                    carried = earlier[section]
                    carried.setdefault("_measured", {"date": earlier["meta"]["date"], "commit": earlier["meta"]["commit"]})
                    results[section] = carried
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str))
    text = report.render(results, before=before, before_name=args.compare)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(report.summary_text(results))
    problems = failed + report.problems(results)
    log(f"done in {results['meta']['seconds']:.0f} s; report {output}; raw results {json_path}")
    if problems:
        log("PROBLEMS: " + "; ".join(problems))
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 60 s); report goes to the temp directory unless --output")
    parser.add_argument("--output", help="markdown report path (default docs/benchmarks.md; quick: $TMPDIR/drehscheibe-bench-quick.md)")
    parser.add_argument("--json", help="raw results path (default bench/results/last-full.json; quick: $TMPDIR/drehscheibe-bench-quick.json)")
    parser.add_argument("--compare", help="raw results of an earlier run: adds a 'before' column to the summary")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (federations, logs, load generator results)")
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
