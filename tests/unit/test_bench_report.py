"""The bench's table and its arithmetic (bench/report.py): no agent, no Docker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.proc import container_memory, memory_in_use
from bench.profile import summarize
from bench.report import (
    Row,
    fmt_bytes,
    fmt_rate,
    fmt_seconds,
    fmt_started,
    format_table,
    median,
    percentile,
    shorten,
)


def test_table_has_one_header_one_separator_and_a_line_per_row() -> None:
    rows = [
        Row("create-to-ready", "1.20 s", "1.10 s", "1.09", "ratio <= 1.10", True),
        Row("exec p99", "9.00 ms", "8.00 ms", "1.12"),
        Row("appends", "5,000 appends/s", "6,000 inserts/s", "0.83", ">= 1.0", False),
    ]
    lines = format_table(rows).splitlines()
    assert len(lines) == 5
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "figure", "kernlet", "baseline", "ratio", "goal"]
    assert set(lines[1]) <= {"|", "-"}
    assert len({len(line) for line in lines}) == 1  # padded to the same width
    assert lines[2].rstrip(" |").endswith("ratio <= 1.10: met")
    assert "| -" in lines[3]
    assert lines[4].rstrip(" |").endswith(">= 1.0: **missed**")


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    with pytest.raises(ValueError):
        percentile([], 50)


def test_units() -> None:
    assert fmt_seconds(0.0045) == "4.50 ms"
    assert fmt_seconds(0.25) == "250 ms"
    assert fmt_seconds(1.234) == "1.23 s"
    assert fmt_bytes(50 * 1024**2) == "50.0 MiB"
    assert fmt_rate(5500.4, "appends") == "5,500 appends/s"
    assert fmt_rate(42.42, "MiB") == "42.4 MiB/s"


def test_profile_summary_counts_threads_and_functions() -> None:
    raw = (
        "thread (0x1);run (a.py:1);step (b.py:2);work (c.py:3) 30\n"
        "thread (0x1);run (a.py:1);step (b.py:9) 10\n"
        "thread (0x2);loop (d.py:5) 60\n"
    )
    text = summarize(raw)
    assert "samples on CPU: 100" in text
    assert "60.0 %  thread (0x2)" in text
    assert "40.0 %  step (b.py)" in text  # inclusive, both lines of step counted once each
    assert "30.0 %  work (c.py)" in text


def test_started_kernels_and_their_time() -> None:
    assert fmt_started(40, 40, 95.25) == "40 of 40 in 95.25 s"
    assert fmt_started(0, 10, 0.5) == "0 of 10 in 500 ms"


def test_an_error_in_a_cell_is_one_short_line_without_pipes() -> None:
    assert shorten("CreationFailed: a | b\n  c") == "CreationFailed: a / b c"
    long = shorten("x" * 100, width=20)
    assert long == "x" * 17 + "..." and len(long) == 20


MEMORY_STAT = "cache 4096\nrss 1000\ntotal_cache 8192\ntotal_inactive_file 3000\n"


def test_container_memory_is_usage_less_inactive_file_like_docker_stats(
    tmp_path: Path,
) -> None:
    assert memory_in_use(80_000, MEMORY_STAT) == 77_000
    assert memory_in_use(80_000, "cache 4096\n") == 80_000
    assert memory_in_use(1_000, MEMORY_STAT) == 0
    cg = tmp_path / "docker" / ("ab12" + "0" * 60)
    cg.mkdir(parents=True)
    (cg / "memory.usage_in_bytes").write_text("80000\n")
    (cg / "memory.stat").write_text(MEMORY_STAT)
    assert container_memory("ab12", root=tmp_path) == 77_000
    with pytest.raises(RuntimeError, match="0 memory cgroups for container cd34"):
        container_memory("cd34", root=tmp_path)
