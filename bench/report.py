"""Renders the raw results of ``bench/run.py`` as ``docs/benchmarks.md``.

Every figure is shown as ``median (min–max)`` over the runs; latency percentiles are taken
per run and then summarised the same way. Targets come from issue 9 (and issues 3 and 4
for the policy and audit figures); each is marked met or missed from the median.
"""

from __future__ import annotations

import statistics
import traceback

from .common import summarize
from .limits import DESTINATION_SET, ISSUE_SET, ORIGIN_SET, RECEIPT_SET, cost_us

ORIGIN, DESTINATION = "node-luzern", "node-kanton"


# ------------------------------------------------------------------------------- formatting


def num(value, digits: int | None = None) -> str:
    if value is None:
        return "–"
    value = float(value)
    if digits is not None:
        return f"{value:,.{digits}f}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def cell(values, digits: int | None = None) -> str:
    """``median (min–max)`` of a list of per-run values."""
    s = summarize([v for v in values if v is not None])
    if s["median"] is None:
        return "–"
    if s["runs"] == 1:
        return num(s["median"], digits)
    return f"{num(s['median'], digits)} ({num(s['min'], digits)}–{num(s['max'], digits)})"


def med(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def verdict(met: bool | None) -> str:
    return "–" if met is None else ("**met**" if met else "**missed**")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pick(runs: list[dict], *keys):
    """The value at ``keys`` in each run (None where missing)."""
    out = []
    for run in runs:
        value = run
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        out.append(value)
    return out


# ---------------------------------------------------------------------------------- targets


def targets(results: dict) -> list[dict]:
    """One row per issue target: the measured per-run values and whether the median meets it."""
    rows: list[dict] = []

    def add(key: str, label: str, target: str, values: list, unit: str, test) -> None:
        m = med(values)
        rows.append({"key": key, "label": label, "target": target, "values": values, "unit": unit,
                     "met": None if m is None else bool(test(m))})  # fmt: skip

    b1 = results.get("b1")
    if b1:
        add("b1.origin", "B1 origin hop alone (202/s, destination paused)", "≥ 1,000 msg/s",
            pick(b1["origin_only"], "accepted_per_s"), "msg/s", lambda m: m >= 1000)
        add("b1.e2e", "B1 origin → destination, delivered (receipt 100 at origin)", "≥ 500 msg/s",
            pick(b1["full"], "e2e_per_s"), "msg/s", lambda m: m >= 500)
        add("b1.hop1.p99", "B1 hop 1 (submit → 202) p99 at 50 % load", "≤ 20 ms",
            pick(b1["half"], "hop1", "p99"), "ms", lambda m: m <= 20)
        add("b1.hop2.p99", "B1 hop 2 (forwarding → receipt) p99 at 50 % load", "≤ 20 ms",
            pick(b1["half"], "hop2", "p99"), "ms", lambda m: m <= 20)
    limit = results.get("limit")
    if b1 and limit and limit.get("primitives"):
        prims = limit["primitives"]
        origin_bound = 1e6 / cost_us(prims, ORIGIN_SET)
        e2e_bound = 2 * 1e6 / (cost_us(prims, ORIGIN_SET) + cost_us(prims, DESTINATION_SET) + cost_us(prims, RECEIPT_SET))
        add("limit.origin", "B1-limit: origin hop ÷ primitives bound of the origin hop (1 core)", "≥ 50 %",
            [v / origin_bound * 100 for v in pick(b1["origin_only"], "accepted_per_s")], "%", lambda m: m >= 50)
        add("limit.e2e", "B1-limit: origin → destination ÷ primitives bound of both hops (2 cores)", "≥ 50 %",
            [v / e2e_bound * 100 for v in pick(b1["full"], "e2e_per_s")], "%", lambda m: m >= 50)
    b2 = results.get("b2")
    if b2:
        for size, runs in b2["sizes"].items():
            add(f"b2.{size}.mbs", f"B2 {size_label(size)} end to end", "≥ 150 MB/s", pick(runs, "e2e_mb_s"), "MB/s", lambda m: m >= 150)
            peaks = [max(r["peak_rss_mb"].values()) for r in runs]
            add(f"b2.{size}.rss", f"B2 {size_label(size)} peak RSS, larger of the two nodes", "≤ 150 MB", peaks, "MB", lambda m: m <= 150)
    b3 = results.get("b3")
    if b3:
        add("b3.pickup.p99", f"B3 pickup latency p99 (paced, {num(b3.get('paced_rate'))} pairs/s)", "≤ 1 s",
            pick(b3["paced"], "pickup", "p99"), "ms", lambda m: m <= 1000)
        ratios = [f["pairs_per_s"] / r["pairs_per_s"] * 100 for f, r in zip(b3["folder"], b3["rest"])]
        add("b3.ratio", "B3 folder throughput ÷ REST throughput (same federation, to the remote inbox)", "≥ 80 %",
            ratios, "%", lambda m: m >= 80)
    policy = (results.get("policy") or {}).get("parsed")
    if policy:
        add("policy", f"Policy decisions/s with {policy.get('rules') or '?'} rules (issue 3)", "≥ 100,000/s",
            [policy["median"], policy["min"], policy["max"]], "/s", lambda m: m >= 100_000)
        rows[-1]["summary"] = policy
    audit = (results.get("audit") or {}).get("parsed") or {}
    for name, key, target, threshold in (("append (durable)", "audit.append", "≥ 5,000/s", 5000), ("verify (full)", "audit.verify", "≥ 500,000/s", 500_000)):
        if name in audit:
            add(key, f"Audit {name} records/s (issue 4)", target, [audit[name]["median"]], "/s", lambda m, t=threshold: m >= t)
            rows[-1]["summary"] = audit[name]
    return rows


def size_label(size) -> str:
    size = int(size)
    return f"{size // 1000} GB" if size >= 1000 else f"{size} MB"


def target_cell(row: dict) -> str:
    if "summary" in row:  # figures summarised by the other scripts
        s = row["summary"]
        return f"{num(s['median'])} ({num(s['min'])}–{num(s['max'])})"
    return cell(row["values"])


def problems(results: dict) -> list[str]:
    """What went wrong functionally (not a missed target): refusals, lost or altered messages."""
    out = []
    for run in (results.get("b1") or {}).get("full", []) + (results.get("b1") or {}).get("half", []) + \
            (results.get("b1") or {}).get("origin_only", []):
        if run.get("errors"):
            out.append(f"B1: answers other than 202: {run['errors']}")
            break
    for name in ("policy", "audit"):
        section = results.get(name)
        if section and section.get("returncode", 0) != 0:
            out.append(f"bench/{name}_bench.py exited with {section['returncode']}")
    for size, runs in ((results.get("b2") or {}).get("sizes") or {}).items():
        if not all(r["identical"] for r in runs):
            out.append(f"B2 {size_label(size)}: fetched payload differs from the source")
    return out


def summary_text(results: dict) -> str:
    lines = ["", "target                                                             measured (median, min–max)      verdict"]
    for row in targets(results):
        lines.append(f"{row['label'][:66]:<66} {row['target']:<12} {target_cell(row) + ' ' + row['unit']:<28} "
                     f"{'met' if row['met'] else 'MISSED' if row['met'] is not None else '-'}")  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- render


def render(results: dict, *, before: dict | None = None, before_name: str | None = None) -> str:
    meta = results["meta"]
    parts = [_header(meta), _summary(results, before, before_name)]
    for name, function in (("stages", _stages), ("b1", _b1), ("commit", _commit), ("workers", _workers), ("limit", _limit), ("b2", _b2), ("b3", _b3),
                           ("policy", _policy), ("audit", _audit), ("replicas", _replicas)):  # fmt: skip
        if name == "stages" and "b1" in results:
            continue  # rendered inside B1
        if name == "b1" or name in results:
            try:
                text = function(results)
            except Exception:  # noqa: BLE001 - a rendering bug must not lose the other sections
                text = f"\n(section {name} could not be rendered:)\n\n```\n{traceback.format_exc()[-2000:]}\n```\n"
            if text:
                parts.append(text)
    for section, text in (results.get("errors") or {}).items():
        parts.append(f"## Section `{section}` failed in this run\n\n```\n{text}\n```")
    parts.append(_method(results))
    return "\n\n".join(p.strip("\n") for p in parts if p) + "\n"


def _provenance(section: dict) -> str:
    when = section.get("_measured") if isinstance(section, dict) else None
    return f"\n_Carried over from an earlier run: measured {when['date']} at commit {when['commit']}._\n" if when else ""


def _header(meta: dict) -> str:
    m = meta["machine"]
    runs = meta["params"]["runs"]
    rows = [
        ["date", meta["date"]],
        ["commit", f"`{meta['commit']}`"],
        ["command", f"`{meta['command']}`" + (" (what `make bench` runs)" if meta["command"].strip() == "python bench/run.py" else "")
         + (" — **quick smoke run, not for comparison**" if meta["quick"] else "")],
        ["sections", ", ".join(meta["sections"]) + f"; {runs} runs each; whole run {meta.get('seconds', 0) / 60:.1f} min"],
        ["CPU", f"{m['cpu']} ({m['cpu_flags']}), {m['cores']} cores, virtualised: {m['virtualised']}"],
        ["RAM", f"{m['ram_gb']:.1f} GB"],
        ["OS", m["os"]],
        ["Python", m["python"]],
        ["OpenSSL", f"{m['openssl']} (ssl module, TLS); {m['cryptography_openssl']} (pyca/cryptography: EC, AES-GCM)"],
        ["libraries", m["libraries"]],
        ["disk", f"one 128-byte write + fsync: {m['fsync_ms']:.3f} ms (median of 200, in the benchmark's work directory); "
                 + (f"creating one new empty file: {num(m['file_create_us']['median'])} µs CPU "
                    f"({num(m['file_create_us']['min'])}–{num(m['file_create_us']['max'])} over 5 batches of 100; the node creates one "
                    "blob file per message at each hop)" if isinstance(m.get("file_create_us"), dict)
                    and "median" in m["file_create_us"] else "")],
    ]
    load = {k: v for k, v in (meta.get("foreign_load") or {}).items() if k != "setup"}
    if load:
        busiest = max(load.items(), key=lambda kv: kv[1]["cores_busy"])
        rows.append(["other load", "CPU used by processes outside the benchmark while it ran, in cores busy (of "
                     f"{m['cores']}): " + ", ".join(f"{k} {v['cores_busy']:.2f}" for k, v in load.items())
                     + (" — **the machine was shared during this run; its figures are lower than on an idle machine**"
                        if busiest[1]["cores_busy"] > 0.15 else "")])  # fmt: skip
    return (
        "# Benchmarks\n\n"
        "Written by `make bench` (`bench/run.py`, issue 9); rerun it rather than editing this page. Every figure is the "
        f"**median of {runs} runs with (min–max)** across runs; a latency percentile is computed per run and then "
        "summarised the same way. Targets are issue 9's (policy: issue 3, audit: issue 4); a target is met when the "
        "median meets it. Nodes are real `drehscheibe node run` processes on loopback with mutual TLS between them, "
        "default settings except faster retries (`retry_base_seconds = 0.5`), no policy set, audit log on, "
        "`synchronous=FULL`; load comes from a separate load-generator process.\n\n" + table(["", ""], rows)
    )


def _summary(results: dict, before: dict | None, before_name: str | None) -> str:
    rows = targets(results)
    old = {r["key"]: r for r in targets(before)} if before else {}
    header = ["target", "issue's target", "measured", "verdict"] + (["before", "verdict before"] if before else [])
    body = []
    for row in rows:
        line = [row["label"], row["target"], f"{target_cell(row)} {row['unit']}", verdict(row["met"])]
        if before:
            was = old.get(row["key"])
            line += [f"{target_cell(was)} {was['unit']}" if was else "–", verdict(was["met"]) if was else "–"]
        body.append(line)
    met = sum(1 for r in rows if r["met"])
    text = f"## Summary: the targets\n\n{met} of {len(rows)} targets met.\n\n" + table(header, body)
    if before:
        text += f"\n\n'before' is the run in `{before_name}` ({before['meta']['date']}, commit `{before['meta']['commit']}`)."
    findings = _findings(results)
    if findings:
        text += "\n\n" + findings
    return text


def _findings(results: dict) -> str:
    """Computed pointers for optimisation: where CPU goes, against what the primitives need."""
    lines = []
    stages = results.get("stages")
    b1, limit = results.get("b1"), results.get("limit")
    if b1 and limit and limit.get("primitives"):
        prims = limit["primitives"]
        origin_cpu = med(pick(b1["origin_only"], "origin_cpu_ms_per_msg"))
        full_cpu = {node: med([r["cpu_ms_per_msg"][node] for r in b1["full"]]) for node in (ORIGIN, DESTINATION)}
        need_origin = cost_us(prims, ORIGIN_SET) / 1000
        need_dest = cost_us(prims, DESTINATION_SET) / 1000
        need_receipt = cost_us(prims, RECEIPT_SET) / 1000
        lines.append(
            f"- **CPU per message vs. what the primitives need.** The origin node spends {num(origin_cpu)} ms of CPU per message "
            f"on origin stages alone (destination paused) where the primitives need {num(need_origin)} ms "
            f"({num(need_origin / origin_cpu * 100 if origin_cpu else None)} %). Under full load the origin spends "
            f"{num(full_cpu[ORIGIN])} ms (origin stages + forwarding + receipt; primitives {num(need_origin + need_receipt)} ms) and the "
            f"destination {num(full_cpu[DESTINATION])} ms (primitives {num(need_dest)} ms)."
        )
    if stages:
        leaves = _leaves(stages["tree"])
        total = sum(r["cpu_ms"] for r in stages["tree"] if r["depth"] == 0 and r["name"] in ("submit", "forward_due"))
        top = sorted(leaves, key=lambda r: r["cpu_ms"], reverse=True)[:8]
        lines.append(
            "- **Largest CPU costs by stage** (in-process breakdown, innermost timed calls, both nodes; "
            f"{num(total)} ms CPU per message in all): "
            + "; ".join(f"{_pretty_path(r['path'])} {num(r['cpu_ms'])} ms ({num(r['cpu_ms'] / total * 100)} %)" for r in top)
            + "."
        )
        categories = stages["profile"]["by_category"][:5]
        lines.append(
            "- **By library and module** (cProfile own time, wall clock, built-ins charged to their callers): "
            + "; ".join(f"{name} {num(ms)} ms ({num(ms / stages['profile']['total_ms'] * 100)} %)" for name, ms in categories)
            + "."
        )
        waits = {"store.close_blob", "store.blobs_durable", "audit_durably", "store.durable"}  # each awaits an fsync (or finds it done)
        syncs = [(r["name"], r["calls"]) for r in stages["tree"] if r["name"] in waits]
        grouped: dict[str, float] = {}
        for name, calls in syncs:
            grouped[name] = grouped.get(name, 0.0) + calls
        lines.append(
            f"- **{sum(grouped.values()):.0f} waits for the disk per message** across both nodes: "
            + ", ".join(f"`{n}` ×{c:g}" for n, c in grouped.items())
            + ". With group commit (`[store] commit = \"group\"`, the default) each is an `await` on an fsync in a "
            "worker thread that messages in flight together share; this breakdown sends one message at a time, so here "
            "each still pays a whole fsync (see \"Group commit\" for the effect under load)."
        )
        wall = sum(r["wall_ms"] for r in stages["tree"] if r["depth"] == 0 and r["name"] in ("submit", "forward_due"))
        lines.append(
            f"- **Wall vs. CPU**, one message at a time: {num(wall)} ms wall for {num(total)} ms CPU per message; "
            "the difference is time waiting for fsync (blob files, directories, SQLite commits) and for the network."
        )
    b2 = results.get("b2")
    if b2 and b2.get("sizes"):
        size, runs = max(b2["sizes"].items(), key=lambda kv: int(kv[0]))
        origin, transfer, e2e = med(pick(runs, "origin_hop_mb_s")), med(pick(runs, "transfer_mb_s")), med(pick(runs, "e2e_mb_s"))
        lines.append(
            f"- **Large payloads are store-and-forward.** For {size_label(size)} the origin hop runs at {num(origin)} MB/s and the "
            f"transfer at {num(transfer)} MB/s, one after the other (the seal signs the digest of the whole ciphertext and travels "
            f"in front of it, so the transfer starts after the 202): end to end {num(e2e)} MB/s. 150 MB/s end to end needs both "
            "steps near 300 MB/s, or the transfer to overlap the upload."
        )
    return "### What the figures point at\n\n" + "\n".join(lines) if lines else ""


def _leaves(tree: list[dict]) -> list[dict]:
    paths = {r["path"] for r in tree}
    return [r for r in tree if not any(p.startswith(r["path"] + "/") for p in paths)]


def _pretty_path(path: str) -> str:
    parts = path.split("/")
    role = "destination" if parts[0] in ("receive", "read_header()") else ("origin" if parts[0] == "submit" else "origin forwarder")
    return f"{role}: `{parts[-1]}`" + (f" (in `{parts[-2]}`)" if len(parts) > 1 else "")


def _b1(results: dict) -> str:
    b1 = results.get("b1")
    out = ["## B1 — small messages (~20 KB eCH-0020), origin node → destination node"]
    if not b1:
        out.append("_Not run in this invocation._")
    else:
        out.append(_provenance(b1))
        message = b1["message"]
        out.append(
            f"**Message.** A generated eCH-0020 3.0 `baseDelivery` of {message['payload_bytes']:,} bytes holding "
            f"{message['persons']} distinct fictitious persons, built from `gateway.generated`'s person and validated "
            "against eCH-0020-3-0.xsd before use. Nothing is padded: every byte is eCH-0020 content. (No public eCH-0020 3.0 "
            "message exists, and the real eCH-0020 samples in `../shared/ech/samples` are 2.x documents of 4–10 KB.) "
            f"Envelope: eCH-0090 v2, {message['envelope_bytes']} bytes. Route acceptance `schema-valid`. Every message "
            "gets a fresh messageId; the payload bytes are the same for all."
        )
        out.append(
            f"**Load.** `bench/loadgen.py` in its own process, aiohttp over HTTPS with kept-alive connections, bearer token. "
            f"Full load = closed loop with {b1['concurrency']} requests in flight for "
            f"{results['meta']['params']['b1']['full_seconds']:g} s; 50 % load = open loop at half the full-load end-to-end "
            f"rate ({num(b1.get('half_rate'))} msg/s) for {results['meta']['params']['b1']['half_seconds']:g} s, latency counted "
            "from each request's scheduled start. Submit → 202 is measured by the load generator; the other latencies come from "
            "the origin's own timeline (`accepted`, `forwarding` and `receipt` events), read from its store read-only after each "
            "run — no status polling during the run. Hop 2 ends when the receipt is back and recorded at the origin; the destination "
            "has committed the message before it answers. CPU per message is psutil's user+system time of each node process "
            "from the start of the load until the last message settled, divided by the messages accepted."
        )
        full, half, alone = b1["full"], b1["half"], b1["origin_only"]
        rows = [
            ["messages accepted (202) per second", cell(pick(full, "accepted_per_s"))],
            ["messages delivered end to end per second (receipt 100 back at the origin)", cell(pick(full, "e2e_per_s"))],
            ["submit → 202, p50 / p99 / max (ms)", " / ".join(cell(pick(full, "hop1", k)) for k in ("p50", "p99", "max"))],
            ["submit → receipt at origin, p50 / p99 / max (ms) — mostly queueing: the origin accepts faster than it forwards",
             " / ".join(cell(pick(full, "e2e_latency", k)) for k in ("p50", "p99", "max"))],
            ["CPU ms per message, origin node", cell([r["cpu_ms_per_msg"][ORIGIN] for r in full])],
            ["CPU ms per message, destination node", cell([r["cpu_ms_per_msg"][DESTINATION] for r in full])],
            ["CPU ms per message, load generator", cell(pick(full, "loadgen_cpu_ms_per_msg"))],
            ["messages per run (accepted / refused or failed)", f"{cell(pick(full, 'accepted'), 0)} / {sum(sum(r['errors'].values()) for r in full)}"],
            ["queue left when the load stopped, drained in (s)", cell(pick(full, "drain_after_load_s"))],
        ]
        out.append("### Full load\n\n" + table(["figure", "median (min–max)"], rows))
        rows = [
            ["offered rate (msg/s)", num(b1.get("half_rate"))],
            ["hop 1: submit → 202", *[cell(pick(half, "hop1", k)) for k in ("p50", "p99", "max")]],
            ["queue: `accepted` → `forwarding` event", *[cell(pick(half, "queue", k)) for k in ("p50", "p99", "max")]],
            ["hop 2: `forwarding` → `receipt` event", *[cell(pick(half, "hop2", k)) for k in ("p50", "p99", "max")]],
            ["end to end: scheduled submit → `receipt`", *[cell(pick(half, "e2e_latency", k)) for k in ("p50", "p99", "max")]],
            ["CPU ms per message, origin / destination", f"{cell([r['cpu_ms_per_msg'][ORIGIN] for r in half])} / "
                                                         f"{cell([r['cpu_ms_per_msg'][DESTINATION] for r in half])}", "", ""],
        ]  # fmt: skip
        rows[0] += ["", ""]
        out.append("### 50 % of full load: latency per hop (ms)\n\n" + table(["", "p50", "p99", "max"], rows))
        rows = [
            ["messages accepted (202) per second", cell(pick(alone, "accepted_per_s"))],
            ["submit → 202, p50 / p99 / max (ms)", " / ".join(cell(pick(alone, "hop1", k)) for k in ("p50", "p99", "max"))],
            ["origin CPU ms per message (origin stages only)", cell(pick(alone, "origin_cpu_ms_per_msg"))],
            ["afterwards: backlog forwarded and delivered per second (forwarder + destination only)", cell(pick(alone, "drain_per_s"))],
        ]
        if b1.get("destination_blob_files") is not None:
            out.append(
                f"At the end of B1 the destination's blob directory held {b1['destination_blob_files']:,} files: the benchmark does "
                "not fetch, and the store keeps a delivered ciphertext (one file per message, one flat directory) until "
                "something removes it — it does not delete it on acknowledgement either."
            )
        out.append(
            "### The origin hop alone\n\nThe destination process is paused (SIGSTOP) so the origin's forwarder stalls on its first "
            f"connections and the origin runs origin stages only; closed loop for {results['meta']['params']['b1']['origin_seconds']:g} s "
            "(below the forwarder's 10 s connect timeout). Then the destination resumes and the backlog drains.\n\n"
            + table(["figure", "median (min–max)"], rows)
        )
    if results.get("stages"):
        out.append(_stages(results))
    return "\n\n".join(p for p in out if p)


def _commit(results: dict) -> str:
    section = results.get("commit")
    if not section:
        return ""
    runs = section["runs"]
    out = ["## Group commit: before and after, in one run"]
    if "_measured" in section:
        out.append(_provenance(section))
    out.append(
        f"B1 full load (closed loop, {section['concurrency']} requests in flight, {section['seconds']:g} s per run) against two "
        "federations that differ only in `[store] commit` on both nodes; runs alternate between them, so the machine's other "
        "load falls on both alike. `each` = the node before group commit: every durable write synced on its own, on the event "
        "loop (SQLite `synchronous=FULL` in every store COMMIT, one audit transaction per message, blob and directory fsyncs "
        "in line); `group` = store COMMITs without sync and one shared WAL fsync awaited before any acknowledgement, audit "
        "records of concurrent messages in one transaction, blob and directory fsyncs in worker threads "
        "(`gateway/groupcommit.py`)."
    )
    rows = []
    for label, keys in (("accepted (202) msg/s", ("accepted_per_s",)), ("delivered (receipt 100) msg/s", ("e2e_per_s",)),
                        ("hop 1 p50 ms", ("hop1", "p50")), ("hop 1 p99 ms", ("hop1", "p99"))):  # fmt: skip
        rows.append([label] + [cell(pick(runs[mode], *keys)) for mode in ("each", "group")])
    for node in (ORIGIN, DESTINATION):
        rows.append([f"CPU ms/msg {node}"] + [cell([r["cpu_ms_per_msg"][node] for r in runs[mode]]) for mode in ("each", "group")])
    each, group = med(pick(runs["each"], "e2e_per_s")), med(pick(runs["group"], "e2e_per_s"))
    if each and group:
        rows.append(["delivered, group / each", "", f"{group / each:.2f}×"])
    half = section.get("half")
    if half:
        for label, keys in (("at {rate} msg/s: hop 1 p50 ms", ("hop1", "p50")), ("at {rate} msg/s: hop 1 p99 ms", ("hop1", "p99")),
                            ("at {rate} msg/s: end to end p50 ms", ("e2e_latency", "p50")),
                            ("at {rate} msg/s: end to end p99 ms", ("e2e_latency", "p99"))):  # fmt: skip
            rows.append([label.format(rate=num(section["half_rate"]))] + [cell(pick(half[mode], *keys)) for mode in ("each", "group")])
    out.append(table(["figure (median, min–max)", "commit = each", "commit = group"], rows))
    if half:
        out.append("The rows \"at … msg/s\" are an open loop at half the slower mode's full-load delivery rate, the same rate "
                   "for both modes: the latency each design gives a moderately loaded node.")
    return "\n\n".join(out)


def _workers(results: dict) -> str:
    section = results.get("workers")
    if not section:
        return ""
    out = ["## Both cores: one process per node, then two (`[node] workers`), in one run"]
    if "_measured" in section:
        out.append(_provenance(section))
    out.append(
        f"Two federations (origin → destination, as in B1) that differ only in `[node] workers` on both nodes; runs alternate "
        f"between them. Each run: the **origin hop alone** (destination paused, closed loop of {section['concurrency']} requests "
        f"for {section['origin_seconds']:g} s), then **full load end to end** ({section['seconds']:g} s, then the wait for every "
        "receipt). With `workers = 2` a node is two processes sharing its ports with SO_REUSEPORT; only the first runs the "
        "forwarder (`gateway/workers.py`). CPU per message counts every process of the node."
    )
    origin, full = section["origin_only"], section["full"]
    modes = [m for m in ("1", "2") if m in full]
    rows = [
        ["origin hop alone: accepted msg/s"] + [cell(pick(origin[m], "accepted_per_s")) for m in modes],
        ["origin hop alone: hop 1 p99 ms"] + [cell(pick(origin[m], "hop1", "p99")) for m in modes],
        ["origin hop alone: origin CPU ms/msg"] + [cell(pick(origin[m], "origin_cpu_ms_per_msg")) for m in modes],
        ["full load: accepted (202) msg/s"] + [cell(pick(full[m], "accepted_per_s")) for m in modes],
        ["full load: delivered (receipt 100) msg/s"] + [cell(pick(full[m], "e2e_per_s")) for m in modes],
        ["full load: hop 1 p50 ms"] + [cell(pick(full[m], "hop1", "p50")) for m in modes],
        ["full load: hop 1 p99 ms"] + [cell(pick(full[m], "hop1", "p99")) for m in modes],
    ]
    for node in (ORIGIN, DESTINATION):
        rows.append([f"full load: CPU ms/msg {node}"] + [cell([r["cpu_ms_per_msg"][node] for r in full[m]]) for m in modes])
    for label, runs, key in (("origin hop alone", origin, "accepted_per_s"), ("delivered at full load", full, "e2e_per_s")):
        one, two = med(pick(runs.get("1", []), key)), med(pick(runs.get("2", []), key))
        if one and two:
            rows.append([f"{label}, 2 workers / 1", "", f"{two / one:.2f}×"])
    out.append(table(["figure (median, min–max)", *(f"workers = {m}" for m in modes)], rows))
    return "\n\n".join(out)


def _stages(results: dict) -> str:
    stages = results["stages"]
    tree = stages["tree"]
    by_path = {r["path"]: r for r in tree}

    def value(path: str, key: str = "cpu_ms") -> float:
        return by_path[path][key] if path in by_path else 0.0

    destination = value("receive") + value("read_header()")
    origin_submit = value("submit")
    origin_forward = value("forward_due") - destination
    origin_total = origin_submit + origin_forward
    http = value("forward_due/forward/_post_transfer") - destination - value("forward_due/forward/_post_transfer/store.add_events") \
        - value("forward_due/forward/_post_transfer/TransferHeader.encode")
    out = [
        "### Breakdown by stage (in-process)",
        _provenance(stages),
        f"Both nodes in one process, built from their configuration files like `tests/gateway/nodes.py` does; the destination "
        f"listens on loopback (mTLS) and the origin's forwarder sends to it. {stages['messages_per_run']} messages per run, one at "
        "a time: `Node.submit` (called directly, so the local API's HTTP/multipart handling is *not* in these figures) then "
        "`Node.forward_due`. The harness wraps stage methods and the library calls inside them with timers from outside "
        "(`bench/stages.py`; no gateway code is changed). CPU = `thread_time`, wall = `perf_counter`; times are inclusive "
        "(a row contains the rows indented under it). Run-to-run spread is shown for CPU.",
        table(["", "CPU ms/msg", "wall ms/msg"], [
            ["origin node: origin stages (`submit`)", num(origin_submit), num(value("submit", "wall_ms"))],
            ["origin node: forwarding + receipt (`forward_due` minus the destination's stages)", num(origin_forward), "–"],
            ["  of which HTTP + mTLS round trip, both sides (`_post_transfer` minus the destination stages)", num(http), "–"],
            ["destination node (`read_header` + `receive`)", num(destination), num(value("receive", "wall_ms") + value("read_header()", "wall_ms"))],
            ["both nodes", num(origin_total + destination), num(value("submit", "wall_ms") + value("forward_due", "wall_ms"))],
            ["whole process (`process_time`: also the event loop and both ends of the transfer's TLS)", cell(stages["process_cpu_ms"]), cell(stages["wall_ms"])],
        ]),  # fmt: skip
    ]
    rows = []
    for row in tree:
        node_total = destination if row["path"].split("/")[0] in ("receive", "read_header()") else origin_total
        share = row["cpu_ms"] / node_total * 100 if node_total else None
        indent = "  " * row["depth"]
        rows.append([f"{'&nbsp;' * 4 * row['depth']}`{row['name']}`" if indent else f"**`{row['name']}`**", num(row["calls"]),
                     f"{num(row['cpu_ms'])} ({num(row['cpu_ms_min'])}–{num(row['cpu_ms_max'])})", num(row["wall_ms"]),
                     num(share)])  # fmt: skip
    out.append("The timed calls, in the order they first ran (percentages are of the node's CPU per message):")
    out.append(table(["stage / call", "calls/msg", "CPU ms/msg", "wall ms/msg", "% of node"], rows))
    if stages.get("missing"):
        out.append("Not present in this version of the code (not timed): " + ", ".join(f"`{m}`" for m in stages["missing"]) + ".")
    profile = stages["profile"]
    out.append(
        f"**Profile** (cProfile, {stages['profile_messages']} more messages without the timers, same one-at-a-time loop). "
        "cProfile's clock is wall time, so waiting in fsync and SQLite commits shows up under those names; it also inflates "
        "Python-level calls, so read it for proportions. Built-ins such as `list.extend` or `isinstance` are charged to the "
        f"code that called them; lxml's compiled methods are invisible to cProfile, so their time is the own time of the "
        "function that called them (e.g. `payload.py _push` feeds the pull parser with XSD validation, `safexml.py parse_xml` "
        f"calls `etree.fromstring`). {num(profile['total_ms'])} ms per message in all."
    )
    shown = [(name, ms) for name, ms in profile["by_category"] if ms >= 0.01 * profile["total_ms"]]
    rest = profile["total_ms"] - sum(ms for _, ms in shown)
    rows = [[name, num(ms), num(ms / profile["total_ms"] * 100)] for name, ms in shown]
    rows.append([f"everything else ({len(profile['by_category']) - len(shown)} smaller groups)", num(rest), num(rest / profile["total_ms"] * 100)])
    out.append(table(["where the time goes (own time)", "ms/msg", "%"], rows))
    out.append(table(["function (top by own time)", "own ms/msg", "cumulative ms/msg", "calls/msg", "called mostly from"],
                     [[f"`{t['function'][:100]}`", num(t["tottime_ms"]), num(t["cumtime_ms"]), num(t["calls"]),
                       f"`{t.get('caller', '')[:70]}`" if t.get("caller") else ""] for t in profile["top"]]))  # fmt: skip
    return "\n\n".join(p for p in out if p)


def _limit(results: dict) -> str:
    limit = results["limit"]
    b1 = results.get("b1")
    out = ["## B1-limit — the same run's floors", _provenance(limit)]
    bare = limit.get("runs") or []
    if bare:
        out.append(
            "**(a) Transport floor.** A bare aiohttp server (`bench/limits.py`) in its own process with mutual TLS (the federation's "
            "certificates, client certificate required) reads the same multipart request as the local API — envelope part, "
            "then the payload in 256 KiB chunks — and answers 200. Same load generator, same concurrency and duration as B1's full load."
        )
        rows = [
            ["requests per second", cell(pick(bare, "requests_per_s"))],
            ["latency p50 / p99 / max (ms)", " / ".join(cell(pick(bare, "latency", k)) for k in ("p50", "p99", "max"))],
            ["server CPU ms per request", cell(pick(bare, "server_cpu_ms_per_request"))],
            ["load generator CPU ms per request", cell(pick(bare, "loadgen_cpu_ms_per_request"))],
        ]
        out.append(table(["bare mTLS server", "median (min–max)"], rows))
    prims = limit.get("primitives")
    if prims:
        out.append(
            "**(b) Primitives floor.** CPU per operation (`process_time`), each in a loop of at least "
            f"{results['meta']['params']['limit']['min_seconds']:g} s, the way the node calls them: lxml parse + validation with "
            "the compiled official XSD, joserfc ES256 signatures and ECDH-ES+A256KW key wrapping (as `gateway/crypto/seal.py` "
            "does), pyca/cryptography AES-256-GCM, hashlib SHA-256, and the node's `AuditLog.append` with 200 records per "
            "transaction (`synchronous=FULL`; the record is `bench/audit_bench.py`'s). Columns: how often one message needs "
            "each, per role."
        )
        rows = []
        for name, v in prims.items():
            rows.append([name, f"{num(v['cpu_us'])} ({num(v['min'])}–{num(v['max'])})", num(v["wall_us"]),
                         str(ORIGIN_SET.get(name, "")), str(DESTINATION_SET.get(name, "")), str(RECEIPT_SET.get(name, "")),
                         str(ISSUE_SET.get(name, ""))])  # fmt: skip
        sets = {"origin hop": ORIGIN_SET, "destination hop": DESTINATION_SET, "receipt at origin": RECEIPT_SET, "issue's list": ISSUE_SET}
        rows.append(["**CPU per message (µs)**", "", "", *[f"**{num(cost_us(prims, s))}**" for s in sets.values()]])
        out.append(table(["primitive", "CPU µs/op", "wall µs/op", "origin", "destination", "receipt at origin", "issue's list"], rows))
        origin_cost = cost_us(prims, ORIGIN_SET)
        e2e_cost = origin_cost + cost_us(prims, DESTINATION_SET) + cost_us(prims, RECEIPT_SET)
        issue_cost = cost_us(prims, ISSUE_SET)
        bounds = [
            ["origin hop, one core", 1e6 / origin_cost],
            ["origin → destination, both hops and the receipt, two cores", 2e6 / e2e_cost],
            ["the issue's list (parse + validate, one signature, encrypt + decrypt, digest, one audit record), one core", 1e6 / issue_cost],
        ]
        out.append("Primitives-only bounds (messages/s if a node did nothing but these):\n\n"
                   + table(["bound", "msg/s"], [[b, num(v)] for b, v in bounds]))  # fmt: skip
        if b1:
            origin_rate = pick(b1["origin_only"], "accepted_per_s")
            e2e_rate = pick(b1["full"], "e2e_per_s")
            rows = [
                ["origin hop alone ÷ origin primitives bound (1 core)", cell([v / bounds[0][1] * 100 for v in origin_rate]), "≥ 50 %"],
                ["origin → destination ÷ primitives bound of both hops (2 cores)", cell([v / bounds[1][1] * 100 for v in e2e_rate]), "≥ 50 %"],
                ["origin hop alone ÷ the issue's list bound (1 core)", cell([v / bounds[2][1] * 100 for v in origin_rate]), ""],
            ]
            if bare:
                bare_rate = med(pick(bare, "requests_per_s"))
                rows += [
                    ["origin hop alone ÷ bare mTLS server", cell([v / bare_rate * 100 for v in origin_rate]), ""],
                    ["origin → destination ÷ bare mTLS server (two HTTP hops in the real path)", cell([v / bare_rate * 100 for v in e2e_rate]), ""],
                ]
            out.append("Drehscheibe's throughput as a share of each floor (per B1 run, against the floors' medians):\n\n"
                       + table(["ratio", "% (median, min–max)", "target"], rows))  # fmt: skip
    return "\n\n".join(p for p in out if p)


def _b2(results: dict) -> str:
    b2 = results["b2"]
    out = [
        "## B2 — large payloads through two nodes",
        _provenance(b2),
        "One payload of pseudo-random (incompressible) bytes per run on an `any` route (no XML check, like a zip), streamed "
        "from a file over the local API; a fresh pair of node processes per run, so each node's peak RSS (`VmHWM` from "
        "`/proc`, read after the recipient fetched the payload) belongs to that run alone. End to end = submit start → "
        "receipt event at the origin. The fetch (destination's local API: verify seal, decrypt, stream) is checked "
        "byte for byte (SHA-256) against the source. MB = 10^6 bytes. 10 GB runs only with `BENCH_LARGE=1`.",
    ]
    rows = []
    for size, runs in b2["sizes"].items():
        rows.append([
            size_label(size), cell(pick(runs, "e2e_mb_s")), cell(pick(runs, "origin_hop_mb_s")), cell(pick(runs, "transfer_mb_s")),
            cell(pick(runs, "fetch_mb_s")), cell([r["peak_rss_mb"][ORIGIN] for r in runs]), cell([r["peak_rss_mb"][DESTINATION] for r in runs]),
            cell([max(r["idle_rss_mb"].values()) for r in runs]), "yes" if all(r["identical"] for r in runs) else "**NO**",
        ])  # fmt: skip
    if rows:
        out.append(table(["payload", "end to end MB/s", "origin hop (→ 202) MB/s", "transfer MB/s", "fetch MB/s",
                          "peak RSS origin MB", "peak RSS destination MB", "RSS at start MB", "identical"], rows))  # fmt: skip
    for size, note in b2.get("skipped", {}).items():
        out.append(f"- {size_label(size)}: {note}")
    if not results["meta"].get("bench_large"):
        out.append("- 10 GB: not run (set `BENCH_LARGE=1`).")
    return "\n\n".join(p for p in out if p)


def _b3(results: dict) -> str:
    b3 = results["b3"]
    ratios = [f["pairs_per_s"] / r["pairs_per_s"] * 100 for f, r in zip(b3["folder"], b3["rest"])]
    out = [
        "## B3 — the sedex folder interface",
        _provenance(b3),
        "Both participants have folders; both nodes run as processes with their folder tasks. The benchmark writes "
        "`data_<id>.xml`, then the envelope under a temporary name, and renames it to `envl_<id>.xml` (that rename is the "
        f"envelope's appearance). Throughput: a burst of {b3['burst']} pairs, timed until the last envelope appears in the "
        "recipient's `inbox/` (50 ms polling); then the same number of messages over the REST API (load generator, closed loop) "
        "to the same remote inbox in the same federation, so both paths include the destination writing the inbox pair. "
        "Pickup latency: envelope rename → the origin's `accepted` event, with pairs dropped at a steady rate of half the "
        "folder throughput; under the burst it includes waiting behind the rest of the burst. The interface waits until "
        "a file has not changed for `settle` = 0.2 s (its default) before submitting it.",
        table(["figure", "median (min–max)"], [
            ["folder: pairs/s, outbox → remote inbox", cell(pick(b3["folder"], "pairs_per_s"))],
            ["REST: messages/s, submit → remote inbox (same federation)", cell(pick(b3["rest"], "pairs_per_s"))],
            ["folder ÷ REST", cell(ratios) + " %"],
            [f"pickup latency at {num(b3.get('paced_rate'))} pairs/s, p50 / p99 / max (ms)",
             " / ".join(cell(pick(b3["paced"], "pickup", k)) for k in ("p50", "p99", "max"))],
            [f"pickup latency under the burst of {b3['burst']}, p50 / p99 / max (ms)",
             " / ".join(cell(pick(b3["folder"], "pickup_under_burst", k)) for k in ("p50", "p99", "max"))],
            ["CPU ms per pair, folder path: origin / destination",
             f"{cell([r['cpu_ms_per_pair'][ORIGIN] for r in b3['folder']])} / {cell([r['cpu_ms_per_pair'][DESTINATION] for r in b3['folder']])}"],
            ["CPU ms per message, REST path: origin / destination",
             f"{cell([r['cpu_ms_per_pair'][ORIGIN] for r in b3['rest']])} / {cell([r['cpu_ms_per_pair'][DESTINATION] for r in b3['rest']])}"],
        ]),  # fmt: skip
    ]
    return "\n\n".join(p for p in out if p)


def _script_section(title: str, section: dict, explanation: str, parsed_table: str) -> str:
    out = [title, _provenance(section), explanation]
    if section["returncode"] != 0:
        out.append(f"**The script failed** (exit {section['returncode']}):\n\n```\n{section['stderr']}\n```")
    if parsed_table:
        out.append(parsed_table)
    out.append(f"Output of `{section['command']}` ({section['seconds']:.0f} s):\n\n```\n{section['stdout'].strip()}\n```")
    return "\n\n".join(p for p in out if p)


def _policy(results: dict) -> str:
    section = results["policy"]
    parsed = section.get("parsed")
    parsed_table = ""
    if parsed:
        parsed_table = table(["figure", "median (min–max)", "target (issue 3)", "verdict"], [[
            f"decisions/s, {parsed.get('rules') or '?'} rules, warm", f"{num(parsed['median'])} ({num(parsed['min'])}–{num(parsed['max'])})",
            "≥ 100,000/s", verdict(parsed["median"] >= 100_000)]])  # fmt: skip
    return _script_section("## Policy engine (bench/policy_bench.py)", section,
                           "Run by `bench/run.py` as its own process; the script (owned by the policy work) takes its own "
                           "median of runs on one core.", parsed_table)  # fmt: skip


def _audit(results: dict) -> str:
    section = results["audit"]
    parsed = section.get("parsed") or {}
    targets_by_name = {"append (durable)": 5000, "verify (full)": 500_000}
    rows = []
    for name, v in parsed.items():
        target = targets_by_name.get(name)
        rows.append([name, f"{num(v['median'])} ({num(v['min'])}–{num(v['max'])})", f"≥ {target:,}/s" if target else "",
                     verdict(v["median"] >= target) if target else ""])  # fmt: skip
    parsed_table = table(["records/s", "median (min–max)", "target (issue 4)", "verdict"], rows) if rows else ""
    return _script_section("## Audit log (bench/audit_bench.py)", section,
                           "Run by `bench/run.py` as its own process; durable appends with group commit "
                           "(`synchronous=FULL`, WAL), full verification, export.", parsed_table)  # fmt: skip


def _replicas(results: dict) -> str:
    section = results["replicas"]
    configurations = section["configurations"]
    names = {"sqlite": "one process, SQLite", "pg-1": "1 replica, PostgreSQL", "pg-2": "2 replicas, PostgreSQL",
             "pg-3": "3 replicas, PostgreSQL"}  # fmt: skip
    base = (configurations.get("sqlite") or {}).get("delivered_per_s", {}).get("median")
    rows = []
    for name, c in configurations.items():
        runs = c["runs"]
        cpu = {group: med([r["cpu_ms_per_msg"].get(group) for r in runs]) for group in ("origin", "destination", "postgresql", "load generators")}
        delivered = c["delivered_per_s"]["median"]
        rows.append([names.get(name, name), cell([r["accepted_per_s"] for r in runs]), cell([r["delivered_per_s"] for r in runs]),
                     f"{delivered / base:.2f}×" if base and delivered else "",
                     " / ".join(num(cpu[g], 1) if cpu[g] is not None else "–" for g in cpu)])  # fmt: skip
    other = (results["meta"].get("foreign_load") or {}).get("replicas")
    busy = other.get("cores_busy") if isinstance(other, dict) else None
    cost = ""
    if "sqlite" in configurations and "pg-1" in configurations:
        def cpu_of(name: str, group: str) -> float | None:
            return med([r["cpu_ms_per_msg"].get(group) for r in configurations[name]["runs"]])

        extra, server = cpu_of("pg-1", "origin"), cpu_of("pg-1", "postgresql")
        if extra is not None and cpu_of("sqlite", "origin") is not None:
            cost = (f"Measured cost of the shared database, one replica against SQLite: the origin process spent "
                    f"{extra - cpu_of('sqlite', 'origin'):+.1f} ms of CPU per message (the pure-Python psycopg driver, one round "
                    f"trip per statement, the audit log's lock and catch-up read) and the PostgreSQL server "
                    f"{num(server, 1)} ms. ")  # fmt: skip
    shared = f"Other processes on the machine kept **{num(busy, 2)} of the 2 cores** busy while this section ran. " if busy is not None else ""
    return "\n\n".join(part for part in [
        "## Replicas — one node as 1, 2, 3 processes on PostgreSQL vs one on SQLite (bench/replicas.py)",
        _provenance(section),
        f"The B1 message from Stadt Luzern's node to the canton's (one process on SQLite throughout). The origin node runs as one "
        f"process on SQLite, or as 1, 2 or 3 replicas of the same node sharing PostgreSQL {section.get('postgresql', '?')} "
        f"(`synchronous_commit = {section.get('synchronous_commit', '?')}`, on loopback, same machine) for the message store and the "
        f"audit log. Closed loop, {section['concurrency']} requests in flight in total, split over one load-generator process per "
        f"replica; {section['seconds']:.0f} s per run. *delivered/s* counts accepted messages over first submit → the origin's queue "
        "empty (every message settled with its receipt). CPU per message, by process group: origin replicas together / "
        "destination / PostgreSQL server / load generators.",
        table(["origin", "accepted/s", "delivered/s", "vs SQLite", "CPU ms/msg: origin / destination / PostgreSQL / load"], rows),
        f"{cost}**Read with care: this machine has 2 cores and was shared with other work.** {shared}"
        "Every process here (load generators, the origin replicas, the destination, the PostgreSQL server) competes for the same "
        "2 cores, so adding replicas adds processes, not CPU: the figures show what replicas cost (CPU per message on the origin "
        "and in PostgreSQL, the lock on the audit log's head row that serialises appends), not how they scale. On a machine or "
        "cluster where each replica has its own cores and PostgreSQL its own host, the origin's work (TLS, schema validation, "
        "signing and encryption — most of the CPU per message in B1) runs in parallel, so throughput should grow with the "
        "number of replicas until the next shared resource saturates: the destination node (one process here), PostgreSQL's WAL "
        "flushes (one commit per submission and per settlement; each replica commits in its own transactions, so flushes "
        "group across sessions) and the per-node audit lock (one append at a time per node identity; an append holds it for "
        "one short transaction). We have not measured that here.",
    ] if part)


def _method(results: dict) -> str:
    return (
        "## How to run, and what the figures do not say\n\n"
        "```sh\n"
        "make bench                                   # all sections, writes this page and bench/results/last-full.json\n"
        ".venv/bin/python bench/run.py --only b1,stages   # a subset; sections not run are carried over from last-full.json\n"
        ".venv/bin/python bench/run.py --quick        # smoke run < 60 s, report in $TMPDIR/drehscheibe-bench-quick.md\n"
        ".venv/bin/python bench/run.py --compare old.json # adds a 'before' column to the summary\n"
        "BENCH_LARGE=1 .venv/bin/python bench/run.py --only b2   # with the 10 GB payload\n"
        "DREHSCHEIBE_BENCH_PG_DSN=postgresql://… .venv/bin/python bench/run.py --only replicas   # else .ci/postgres.sh starts a server\n"
        "```\n\n"
        "- All processes share this machine's cores: the load generator, the nodes and (in B1) both nodes compete for them, "
        "so B1's end-to-end figure is what two nodes and a client achieve together on 2 cores.\n"
        "- The machine is a virtual machine; runs vary (the min–max columns show by how much). Compare figures from the same "
        "machine only, and prefer the medians.\n"
        "- Latencies are wall-clock times between processes on one host (`time.time()` in the load generator and in the "
        "nodes' timelines); they share one clock.\n"
        "- The stage breakdown runs one message at a time in one process: it shows where CPU goes, not how stages overlap under load.\n"
        "- Quick runs (`--quick`) use short windows and small sizes; they check that the suite works, not the figures."
    )
