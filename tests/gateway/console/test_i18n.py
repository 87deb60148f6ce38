"""Languages and Swiss conventions: complete catalogues in de, fr and en, no text in templates, dd.mm.yyyy in Zurich time."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import datetime, timezone
from fnmatch import fnmatch
from pathlib import Path

from gateway.audit.record import Action, Outcome
from gateway.auth.principal import PrincipalKind
from gateway.audit.export import FORMATS
from gateway.console import app as console
from gateway.console.i18n import CATALOGUES, LANGUAGES, catalogue, swiss_date, swiss_datetime, translator
from gateway.policy.model import Effect
from gateway.store import OutgoingState

from ..nodes import running
from .conftest import Browser

PACKAGE = Path(console.__file__).parent
TEMPLATES = PACKAGE / "templates"
ROOT = PACKAGE.parents[1]


def keys_used() -> set[str]:
    """Every literal key the templates and the handlers ask the catalogue for (not the dynamic prefixes)."""
    found = set()
    for template in TEMPLATES.glob("*.html"):
        found |= {k for k in re.findall(r"t\('([a-z_.]+)'", template.read_text()) if not k.endswith(".")}
    source = (PACKAGE / "app.py").read_text()
    found |= {k for k in re.findall(r'(?:title|message)="([a-z_]+\.[a-z_.]+)"', source) if not k.endswith(".html")}
    found |= set(re.findall(r'"((?:form\.error|error|admin|audit|system|chart)\.[a-z_.]+)"', source))
    return {k for k in found if not k.endswith((".html", ".css"))}


def dynamic_keys() -> set[str]:
    """Keys built from a prefix and a value of the domain (actions, outcomes, roles, states, ...)."""
    values = {
        "action": [a.value for a in Action], "outcome": [o.value for o in Outcome], "role": [k.value for k in PrincipalKind],
        "effect": [e.value for e in Effect], "state": [s.value for s in OutgoingState] + ["acknowledged"],
        "format": list(FORMATS), "lang": list(LANGUAGES), "breaker": ["closed", "open"],
        "certificate": ["node", "signing", "encryption"], "change": ["gained", "lost", "redactions"], "receipt": ["ok", "failed"],
        "field": ["message_id", "participant", "message_type", "since", "until", "person", "format", "sender", "recipient", "message_class"],
    }  # fmt: skip
    return {f"{prefix}.{value}" for prefix, items in values.items() for value in items}


def test_the_three_catalogues_have_exactly_the_same_keys_and_no_empty_text():
    """de, fr and en hold the same keys, each with a non-empty text, and the same placeholders."""
    catalogues = {lang: json.loads((CATALOGUES / f"{lang}.json").read_text(encoding="utf-8")) for lang in LANGUAGES}
    assert set(LANGUAGES) == {"de", "fr", "en"}
    assert catalogues["de"].keys() == catalogues["fr"].keys() == catalogues["en"].keys()
    for key in catalogues["de"]:
        texts = [catalogues[lang][key] for lang in LANGUAGES]
        assert all(isinstance(t, str) and t.strip() for t in texts), key
        assert len({tuple(sorted(re.findall(r"\{(\w+)\}", t))) for t in texts}) == 1, key


def test_every_key_the_pages_use_is_in_every_catalogue():
    """Literal keys of templates and handlers and every domain-derived key resolve in de, fr and en."""
    needed = keys_used() | dynamic_keys()
    assert len(needed) > 150
    for lang in LANGUAGES:
        missing = sorted(needed - catalogue(lang).keys())
        assert not missing, (lang, missing)


def test_templates_hold_no_text_of_their_own():
    """Outside tags and Jinja expressions a template has no letters: every word comes from a catalogue."""
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        text = re.sub(r"\{%.*?%\}|\{\{.*?\}\}|<[^>]*>|<!doctype html>", "", text, flags=re.S)
        assert not re.search(r"[A-Za-zÀ-ÿ]", text), (template.name, re.findall(r"[A-Za-zÀ-ÿ]+", text)[:5])


def test_dates_are_dd_mm_yyyy_in_zurich_time_in_winter_and_summer():
    """UTC instants shift by one hour in winter and two in summer, across midnight and the year's end."""
    assert swiss_date(datetime(2026, 12, 31, 23, 30, tzinfo=timezone.utc)) == "01.01.2027"
    assert swiss_datetime(datetime(2026, 12, 31, 23, 30, tzinfo=timezone.utc)) == "01.01.2027 00:30"
    assert swiss_datetime(datetime(2026, 6, 30, 22, 5, 7, tzinfo=timezone.utc), seconds=True) == "01.07.2026 00:05:07"
    assert swiss_date(datetime(2026, 3, 29, 0, 59, tzinfo=timezone.utc).timestamp()) == "29.03.2026"
    assert swiss_date(None) == "–"


def test_a_missing_key_is_shown_as_the_key_in_brackets_and_placeholders_are_filled():
    """The translator never invents text: unknown keys show up, known ones take their values."""
    t = translator("fr")
    assert t("no.such.key") == "[no.such.key]"
    assert "7" in t("audit.search.results", count=7)
    assert translator("xx")("login.title") == catalogue("de")["login.title"]


def test_the_wheel_ships_the_templates_catalogues_and_stylesheet():
    """pyproject's package-data patterns cover every file the console reads at run time."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["gateway"]
    for folder in ("templates", "catalogues", "static"):
        files = [p.relative_to(ROOT / "gateway").as_posix() for p in (PACKAGE / folder).iterdir() if p.is_file()]
        assert files
        for name in files:
            assert any(fnmatch(name, pattern) for pattern in patterns), name


async def test_a_language_chosen_on_the_login_page_stays_for_the_session(governed, clock):
    """?lang=fr sets <html lang="fr"> and French texts; German is the default."""
    async with running(governed, clock, "node-luzern"), Browser(governed) as browser:
        _, page, _ = await browser.get("/console/login")
        assert '<html lang="de">' in page and catalogue("de")["login.submit"] in page
        _, page, _ = await browser.get("/console/login?lang=fr")
        assert '<html lang="fr">' in page and catalogue("fr")["login.submit"] in page
        _, page, _ = await browser.get("/console/login")
        assert '<html lang="fr">' in page
