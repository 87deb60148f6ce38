"""Server-rendered SVG charts: messages per day by outcome, queue depth over time.

No script and no external library: the markup is built here, every text escaped, and each
chart carries ``role="img"``, a ``<title>`` and a ``<desc>`` so a screen reader hears what a
sighted reader sees; a table with the same figures follows each chart on the page.
Colours meet WCAG 2.1 AA contrast against white (3:1 for graphics) and differ in pattern
too (outlined bars for refusals), so the chart does not depend on colour alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 16, 48
# Outcome colours: dark green, dark red, dark orange-brown (contrast ≥ 4.5:1 on white).
OUTCOME_COLOURS = {"ok": "#1b6e20", "refused": "#b00020", "error": "#7a4a00"}


def _scale(maximum: int) -> int:
    """A round upper bound for the y axis: the smallest 1, 2 or 5 × 10^k not below ``maximum``."""
    power = 1
    while True:
        for factor in (1, 2, 5):
            if factor * power >= maximum:
                return factor * power
        power *= 10


def _axis(top_value: int) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#333" />',
             f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" stroke="#333" />']
    for fraction in ((0, 0.5, 1) if top_value % 2 == 0 else (0, 1)):
        value = round(top_value * fraction)
        y = HEIGHT - BOTTOM - plot_h * fraction
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.0f}" text-anchor="end" font-size="12" fill="#222">{value}</text>')
    return parts


def messages_per_day(days: Sequence[tuple[str, dict[str, int]]], *, title: str, description: str,
                     labels: dict[str, str]) -> Markup:
    """Stacked bars: one per day (label already formatted), segments per outcome (ok, refused, error)."""
    top = _scale(max([sum(counts.values()) for _, counts in days] or [0]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    bar = max(slot * 0.6, 2)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="chart-days-title chart-days-desc" class="chart">',
             f'<title id="chart-days-title">{escape(title)}</title>', f'<desc id="chart-days-desc">{escape(description)}</desc>',
             *_axis(top)]  # fmt: skip
    for i, (label, counts) in enumerate(days):
        x = LEFT + i * slot + (slot - bar) / 2
        y = HEIGHT - BOTTOM
        for outcome in ("ok", "refused", "error"):
            count = counts.get(outcome, 0)
            if not count:
                continue
            h = plot_h * count / top
            y -= h
            colour = OUTCOME_COLOURS[outcome]
            fill = "#ffffff" if outcome == "refused" else colour  # refusals outlined: not colour alone
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{fill}" stroke="{colour}" '
                         f'stroke-width="2"><title>{escape(label)}: {escape(labels[outcome])} {count}</title></rect>')
        if len(days) <= 16 or i % 2 == 0:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="11" '
                         f'fill="#222">{escape(label[:5])}</text>')
    legend_x = LEFT
    for outcome in ("ok", "refused", "error"):
        colour = OUTCOME_COLOURS[outcome]
        fill = "#ffffff" if outcome == "refused" else colour
        parts.append(f'<rect x="{legend_x}" y="{HEIGHT - 18}" width="12" height="12" fill="{fill}" stroke="{colour}" stroke-width="2" />'
                     f'<text x="{legend_x + 18}" y="{HEIGHT - 8}" font-size="12" fill="#222">{escape(labels[outcome])}</text>')
        legend_x += 150
    parts.append("</svg>")
    return Markup("".join(parts))


def queue_depth(samples: Sequence[tuple[str, int]], *, title: str, description: str) -> Markup:
    """A line of queued messages over time (labels already formatted, oldest first)."""
    top = _scale(max([count for _, count in samples] or [0]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="chart-queue-title chart-queue-desc" class="chart">',
             f'<title id="chart-queue-title">{escape(title)}</title>', f'<desc id="chart-queue-desc">{escape(description)}</desc>',
             *_axis(top)]  # fmt: skip
    if samples:
        step = plot_w / max(len(samples) - 1, 1)
        points = [(LEFT + i * step, HEIGHT - BOTTOM - plot_h * count / top) for i, (_, count) in enumerate(samples)]
        parts.append('<polyline fill="none" stroke="#0b4f8a" stroke-width="2" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '" />')
        for (x, y), (label, count) in zip(points, samples):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#0b4f8a"><title>{escape(label)}: {count}</title></circle>')
        for index in sorted({0, len(samples) - 1}):
            x, _ = points[index]
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="{"start" if index == 0 else "end"}" '
                         f'font-size="11" fill="#222">{escape(samples[index][0])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
