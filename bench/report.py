"""The one table the bench prints: figure | kernlet | baseline | ratio | goal (met / missed).

Pure formatting and arithmetic, so it is unit-tested (tests/unit/test_bench_report.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "Row",
    "fmt_bytes",
    "fmt_rate",
    "fmt_ratio",
    "fmt_seconds",
    "fmt_started",
    "format_table",
    "median",
    "percentile",
    "shorten",
]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table. ``met`` is None for a row without a goal of its own."""

    figure: str
    kernlet: str
    baseline: str
    ratio: str
    goal: str = ""
    met: bool | None = None

    @property
    def goal_cell(self) -> str:
        if self.met is None:
            return self.goal or "-"
        return f"{self.goal}: {'met' if self.met else '**missed**'}"


def format_table(rows: Iterable[Row]) -> str:
    """A GitHub markdown table, columns padded so that it also reads well as plain text."""
    header = ("figure", "kernlet", "baseline", "ratio", "goal")
    cells = [header, *((r.figure, r.kernlet, r.baseline, r.ratio, r.goal_cell) for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sample."""
    if not values:
        raise ValueError("percentile of an empty sample")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of an empty sample")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def fmt_seconds(s: float) -> str:
    if s < 0.01:
        return f"{s * 1000:.2f} ms"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    return f"{s:.2f} s"


def fmt_bytes(n: float) -> str:
    mib = n / 1024**2
    return f"{mib:.1f} MiB" if abs(mib) >= 0.1 or n == 0 else f"{n / 1024:.0f} KiB"


def fmt_rate(per_s: float, unit: str) -> str:
    if per_s >= 100:
        return f"{per_s:,.0f} {unit}/s"
    return f"{per_s:.1f} {unit}/s"


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}"


def fmt_started(started: int, asked: int, seconds: float) -> str:
    """How many of the kernels asked for started, and in how long: ``38 of 40 in 95.3 s``."""
    return f"{started} of {asked} in {fmt_seconds(seconds)}"


def shorten(text: str, width: int = 60) -> str:
    """One line of at most ``width`` characters, no ``|`` (an error message in a cell)."""
    line = " ".join(text.split()).replace("|", "/")
    return line if len(line) <= width else line[: width - 3] + "..."
