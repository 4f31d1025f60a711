"""``kernlet bench --profile DIR``: py-spy records the agent process during a figure.

py-spy is not a dependency of kernlet: install it where you run the bench (``pip install
py-spy``). Each recording is written as py-spy's raw collapsed stacks (``NAME.raw``, feed it to
flamegraph.pl or speedscope) and summarised in ``NAME.txt``: samples per thread, and the
functions with the most samples on CPU, inclusive and self. Only samples of threads that were
running are kept (py-spy drops idle threads by default). More py-spy options (``--gil``,
``--native``...) can be given in the environment variable ``KERNLET_BENCH_PYSPY_ARGS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["record", "summarize"]


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    return found


@contextlib.asynccontextmanager
async def record(pid: int, summary: Path, rate: int = 200) -> AsyncIterator[None]:
    raw = summary.with_suffix(".raw")
    proc = await asyncio.create_subprocess_exec(
        _py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
        "--threads", "--nonblocking", "--output", str(raw),
        *os.environ.get("KERNLET_BENCH_PYSPY_ARGS", "").split(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(0.5)  # attached
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        await proc.wait()
        await asyncio.to_thread(_append_summary, raw, summary)


def _append_summary(raw: Path, summary: Path) -> None:
    if raw.exists():
        with summary.open("a") as out:
            out.write(summarize(raw.read_text()))


def _name(frame: str) -> str:
    # "func (module/file.py:123)" -> "func (module/file.py)"
    head, _, where = frame.partition(" (")
    return f"{head} ({where.rsplit(':', 1)[0]})" if where else head


def summarize(raw: str, top: int = 25) -> str:
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        total += count
        threads[thread] += count
        for name in {_name(f) for f in frames}:
            inclusive[name] += count
        if frames:
            self_[_name(frames[-1])] += count
    out = [f"samples on CPU: {total}", "", "by thread:"]
    out += [f"  {n:7d} {100 * n / max(total, 1):5.1f} %  {t}" for t, n in threads.most_common()]
    out += ["", "inclusive (function and what it calls):"]
    out += [f"  {n:7d} {100 * n / max(total, 1):5.1f} %  {f}" for f, n in
            inclusive.most_common(top)]
    out += ["", "self (the function's own code):"]
    out += [f"  {n:7d} {100 * n / max(total, 1):5.1f} %  {f}" for f, n in self_.most_common(top)]
    return "\n".join(out) + "\n\n"
