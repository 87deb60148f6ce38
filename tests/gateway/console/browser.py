"""The console's end-to-end harness: the demo federation as processes, Debian's chromium through Playwright, axe-core.

Used by test_browser.py (one federation per test session) and by ``make screenshots``
(``python -m tests.gateway.console.browser docs/screenshots``). Nothing here is mocked: four
node processes on loopback with mutual TLS, real eCH samples, the real demo policies (a copy,
so a test may edit it), a real browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.demo import (EMMEN, HUB, LUZERN, POLICIES, _directories_current, _run_step, demo_federation, scenario,
                          start_node, stop_federation, wait_ready)  # fmt: skip
from gateway.federation import Federation

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
XSD = (ROOT / ".." / "shared" / "ech" / "xsd").resolve()
SAMPLES = (ROOT / ".." / "shared" / "ech" / "samples").resolve()
CHROMIUM = Path("/usr/bin/chromium")
AXE = HERE / "node" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
INSTALL_HINT = ("the console's browser tests need Debian's chromium at /usr/bin/chromium and axe-core under "
                "tests/gateway/console/node: run `sudo apt-get install -y chromium` and "
                "`npm ci --prefix tests/gateway/console/node` (.ci/run does both)")  # fmt: skip


def missing_tools() -> str | None:
    """None when chromium, axe-core and Playwright are there; else what to install (the tests fail with it)."""
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} not found")
    if not AXE.exists():
        problems.append(f"{AXE.relative_to(ROOT)} not found")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the Python package playwright is not installed (pip install -e '.[test]')")
    return f"{'; '.join(problems)}: {INSTALL_HINT}" if problems else None


def require_browser_tools() -> None:
    """Skip (saying what to install) on a machine without chromium or axe-core; fail in CI, which installs both.

    The same rule as the PostgreSQL tests: ``make test`` works on a machine with only Python,
    and ``.ci/run`` (CI=true) never lets a browser test pass by not running.
    """
    problem = missing_tools()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {problem}", pytrace=False)
    pytest.skip(problem)


@dataclass
class Sent:
    """What the scenario sent: messageIds by what they are."""

    move: str  # Stadt Luzern → cantonal register (through the hub), a person with an AHV number
    denied: str  # Stadt Luzern → BFS, refused by policy
    statistics: str  # cantonal register → BFS (hosted on the hub)
    emmen: str  # Emmen (hosted on the hub) → cantonal register
    ahv: str  # an AHV number of the person in `move`, read from the sample


@dataclass
class ConsoleDemo:
    federation: Federation
    processes: list
    policies: Path
    sent: Sent

    def url(self, node_id: str, path: str = "/console/login") -> str:
        return self.federation.api_url(node_id) + path

    def operator(self, node_id: str, role: str) -> tuple[str, str]:
        return f"{role}-{node_id}", self.federation.operator_tokens[node_id][role]

    def system(self, participant: str) -> tuple[str, str]:
        return f"register-{participant}", self.federation.tokens[participant]

    def stop(self) -> None:
        stop_federation(self.processes)


def _ahv(payload: bytes) -> str:
    import re

    from lxml import etree

    root = etree.fromstring(payload)
    found = [e.text.strip() for e in root.iter("{*}vn")
             if e.tag.startswith("{http://www.ech.ch/xmlns/eCH-0044/") and re.fullmatch(r"756\d{10}", (e.text or "").strip())]  # fmt: skip
    return found[0]


async def _send(federation: Federation, directory: Path) -> Sent:
    steps = scenario(SAMPLES, directory)
    move, denied, statistics, emmen = steps[0], steps[4], steps[5], dataclasses.replace(steps[6], via_folder=False)
    ids = []
    with contextlib.redirect_stdout(io.StringIO()):  # the demo narrates; the tests do not need it
        for step in (move, denied, statistics, emmen):
            ok, _, message_id = await _run_step(federation, step)
            if ok is not True:
                raise RuntimeError(f"demo step did not end as expected: {step.title}: {ok}")
            ids.append(message_id)
    return Sent(*ids, ahv=_ahv(move.sample.payload()))


async def _start(federation: Federation, logs: Path) -> list:
    """The hub first (it serves the directory), then the three others at once: the start is what takes time."""
    processes = [start_node(federation, HUB, logs)]
    try:
        await wait_ready(federation, HUB, process=processes[0], timeout=60)
        others = [n.id for n in federation.nodes if n.id != HUB]
        processes += [start_node(federation, node_id, logs) for node_id in others]
        await asyncio.gather(*(wait_ready(federation, n, process=p, timeout=60) for n, p in zip(others, processes[1:])))
        await _directories_current(federation, timeout=60)
    except BaseException:
        stop_federation(processes)
        raise
    return processes


def start_demo(directory: Path) -> ConsoleDemo:
    """Build and start the four-node demo federation on a copy of the demo policies; send four messages."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    policies = directory / "policies"
    shutil.copytree(POLICIES, policies)
    federation = demo_federation(directory / "federation", XSD, policies=policies)
    processes = asyncio.run(_start(federation, directory / "federation" / "logs"))
    try:
        sent = asyncio.run(_send(federation, directory))
    except BaseException:
        stop_federation(processes)
        raise
    return ConsoleDemo(federation, processes, policies, sent)


def launch(playwright):
    """Debian's chromium, headless, with nothing that phones home."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


def login(page, demo: ConsoleDemo, node_id: str, credential: tuple[str, str], *, lang: str | None = None) -> None:
    """Fill and send the login form as a person would (keyboard: name, Tab, secret, Enter)."""
    page.goto(demo.url(node_id, "/console/login" + (f"?lang={lang}" if lang else "")))
    page.locator("#name").fill(credential[0])
    page.locator("#secret").fill(credential[1])
    page.locator("#secret").press("Enter")
    page.wait_for_url(lambda url: "/console/login" not in url)


def screenshots(target: Path) -> list[Path]:
    """PNGs of the main pages (``make screenshots``)."""
    from playwright.sync_api import sync_playwright

    problem = missing_tools()
    if problem:
        raise SystemExit(problem)
    target.mkdir(parents=True, exist_ok=True)
    demo = start_demo(ROOT / ".demo" / "console-screenshots")
    written = []
    try:
        rules = demo.policies / "einwohnerregister.toml"
        rules.write_text(rules.read_text().replace('id = "lu-gemeinden-zuzugsmeldung"', 'id = "lu-zuzug-neu"'))
        with sync_playwright() as playwright:
            browser = launch(playwright)
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900}, locale="de-CH")

            def shot(page, name: str) -> None:
                path = target / f"{name}.png"
                page.screenshot(path=str(path), full_page=True)
                written.append(path)

            page = context.new_page()
            page.goto(demo.url("node-luzern"))
            shot(page, "login")
            login(page, demo, "node-luzern", demo.operator("node-luzern", "auditor"))
            page.goto(demo.url("node-luzern", "/console/audit?verify=1"))
            shot(page, "auditor-log-status")
            page.goto(demo.url("node-luzern", "/console/audit/search"))
            page.locator("#person").fill(demo.sent.ahv)
            page.locator("form.grid button[type=submit]").click()
            page.wait_for_load_state()
            shot(page, "auditor-search-by-person")
            page.goto(demo.url("node-luzern", f"/console/audit/messages/{demo.sent.move}"))
            shot(page, "auditor-trace")
            page.goto(demo.url("node-luzern", "/console/audit/report"))
            page.locator("#person").fill(demo.sent.ahv)
            page.locator("form.stacked button[type=submit]").click()
            page.wait_for_load_state()
            shot(page, "auditor-report")
            page.emulate_media(media="print")
            shot(page, "auditor-report-print")
            context.close()
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900}, locale="de-CH")
            page = context.new_page()
            login(page, demo, "node-luzern", demo.operator("node-luzern", "admin"))
            shot(page, "admin-overview")
            page.goto(demo.url("node-luzern", "/console/admin/policies"))
            shot(page, "admin-policies")
            page.goto(demo.url("node-luzern", "/console/admin/explain"))
            page.locator("#sender").fill(LUZERN)
            page.locator("#message_id").fill(demo.sent.move)
            page.locator("form.grid button[type=submit]").click()
            page.wait_for_load_state()
            shot(page, "admin-explain")
            page.goto(demo.url("node-luzern", "/console/admin/policies/diff"))
            shot(page, "admin-policy-diff")
            context.close()
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900}, locale="fr-CH")
            page = context.new_page()
            login(page, demo, HUB, demo.system(EMMEN), lang="fr")
            shot(page, "system-messages-fr")
            context.close()
            browser.close()
    finally:
        demo.stop()
    return written


if __name__ == "__main__":
    for written in screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")):
        print(written.relative_to(ROOT) if written.is_relative_to(ROOT) else written)
