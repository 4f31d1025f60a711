"""`kernlet log show|verify` read a real SQLite log offline and catch a broken one."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from kernlet.cli import main
from kernlet.events import (
    KernelCreating,
    KernelPreparing,
    KernelTerminated,
    KernelTerminating,
    new_envelope,
)
from kernlet.store import SQLiteEventLog


def _write_log(path: Path) -> None:
    async def body() -> None:
        log = SQLiteEventLog(path)
        await log.open()
        await log.append([
            new_envelope("k1", 1, KernelPreparing(session_id="s", image="img")),
            new_envelope("k1", 2, KernelCreating(slots={"cpu": "1"})),
            new_envelope("k2", 1, KernelPreparing(session_id="s", image="img")),
            new_envelope("k2", 2, KernelTerminating(reason="user-requested")),
            new_envelope("k2", 3, KernelTerminated(reason="user-requested", exit_code=0)),
        ])
        await log.close()

    asyncio.run(body())


def test_show_and_verify_a_sound_log(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    _write_log(path)
    runner = CliRunner()
    res = runner.invoke(main, ["log", "verify", "--log", str(path)])
    assert res.exit_code == 0, res.output
    assert "2 streams, 5 events, 1 live kernels, 5 undelivered" in res.output
    res = runner.invoke(main, ["log", "show", "--log", str(path), "--json"])
    states = {k["id"]: k["state"] for k in json.loads(res.output)}
    assert states == {"k1": "creating", "k2": "terminated"}
    res = runner.invoke(main, ["log", "show", "k2", "--log", str(path)])
    assert res.exit_code == 0
    assert [line.split()[2] for line in res.output.splitlines()] == [
        "kernel_preparing", "kernel_terminating", "kernel_terminated"]


def test_verify_reports_a_sequence_gap(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    _write_log(path)
    with sqlite3.connect(path) as db:  # damage it behind the store's back
        db.execute("DELETE FROM events WHERE kernel_id = 'k2' AND seq = 2")
    res = CliRunner().invoke(main, ["log", "verify", "--log", str(path)])
    assert res.exit_code == 1
    assert "k2" in res.output


def test_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["log", "verify", "--log", str(tmp_path / "nope.sqlite")])
    assert res.exit_code != 0
    assert "no event log" in res.output
