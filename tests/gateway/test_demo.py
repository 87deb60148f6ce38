"""`make demo` as a specification: the scenario runs on real node processes and every step ends as expected."""

from __future__ import annotations

from gateway.demo import run_demo
from gateway.federation import DEFAULT_SCHEMAS

from ..conftest import SAMPLES, XSD


async def test_the_demo_delivers_redacts_denies_uses_the_folder_and_verifies_every_audit_log(tmp_path, capsys):
    code = await run_demo(tmp_path / "demo", samples=SAMPLES, schemas=XSD)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "religion: 1 element(s) sent, 0 delivered to 1-1059-1" in out
    assert "receipt 310: Lucerne Gemeinden deliver statistics through the cantonal register" in out
    assert "receipt file in folders/1-1061-1/receipts/" in out
    assert out.count(" valid: ") == 2 and "NOT" not in out
    assert "hop 0: node node-luzern (origin)" in out and "hop 1: node node-kanton (destination)" in out
    assert "demo: 8 messages, 8 as expected (7 delivered with receipt 100, 1 refused by policy), audit logs verified: yes" in out


async def test_without_samples_the_demo_still_runs_on_a_generated_message(tmp_path, capsys):
    code = await run_demo(tmp_path / "demo", samples=tmp_path / "nowhere", schemas=DEFAULT_SCHEMAS if DEFAULT_SCHEMAS.exists() else XSD)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "demo: 3 messages, 3 as expected" in out
