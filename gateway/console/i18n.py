"""Languages of the console: German by default, French and English, and Swiss dates.

Every text a page shows comes from a message catalogue (``catalogues/<lang>.json``, flat
``key -> text``); templates hold keys only. A missing key is a bug, not a fallback: it
renders as the key itself in brackets, and the catalogue test fails on it.

Dates and times are shown as ``dd.mm.yyyy`` (``dd.mm.yyyy HH:MM`` with the time) in
Europe/Zurich time, whatever the server's time zone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

LANGUAGES = ("de", "fr", "en")
DEFAULT_LANGUAGE = "de"
ZURICH = ZoneInfo("Europe/Zurich")
CATALOGUES = Path(__file__).parent / "catalogues"


@cache
def catalogue(lang: str) -> Mapping[str, str]:
    """The texts of one language (read once per process)."""
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}")
    return json.loads((CATALOGUES / f"{lang}.json").read_text(encoding="utf-8"))


def language(requested: str | None) -> str:
    """A supported language code; German for anything else."""
    return requested if requested in LANGUAGES else DEFAULT_LANGUAGE


def translator(lang: str):
    """``t(key, **values)`` for one language; values fill ``{name}`` placeholders."""
    texts = catalogue(language(lang))

    def t(key: str, **values: object) -> str:
        text = texts.get(key)
        if text is None:
            return f"[{key}]"
        return text.format(**values) if values else text

    return t


def _aware(moment: datetime | float | int) -> datetime:
    if isinstance(moment, (int, float)):
        return datetime.fromtimestamp(moment, timezone.utc)
    if moment.tzinfo is None:
        raise ValueError("console dates must be timezone-aware")
    return moment


def swiss_date(moment: datetime | float | int | None) -> str:
    """``dd.mm.yyyy`` in Europe/Zurich; '–' for no date."""
    if moment is None:
        return "–"
    return _aware(moment).astimezone(ZURICH).strftime("%d.%m.%Y")


def swiss_datetime(moment: datetime | float | int | None, *, seconds: bool = False) -> str:
    """``dd.mm.yyyy HH:MM`` (or ``HH:MM:SS``) in Europe/Zurich; '–' for no date."""
    if moment is None:
        return "–"
    return _aware(moment).astimezone(ZURICH).strftime("%d.%m.%Y %H:%M:%S" if seconds else "%d.%m.%Y %H:%M")
