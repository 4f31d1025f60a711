"""kernlet.periodic.every: one bad round is survived, stop_on ends the loop, the interval is
read each round."""

from __future__ import annotations

import asyncio

import pytest

from kernlet.periodic import every


async def test_a_failing_round_is_logged_and_the_loop_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []

    async def tick() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 2:
            raise ValueError("round two breaks")
        if len(rounds) == 4:
            raise LookupError("done")

    await asyncio.wait_for(every(0.0, tick, "test", stop_on=(LookupError,)), 5)
    assert rounds == [0, 1, 2, 3]
    assert "periodic test failed" in caplog.text and "round two breaks" in caplog.text


async def test_the_interval_is_read_each_round() -> None:
    intervals = iter([0.0, 0.0, 3600.0])
    rounds = 0

    async def tick() -> None:
        nonlocal rounds
        rounds += 1

    task = asyncio.create_task(every(lambda: next(intervals), tick))
    while rounds < 3:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rounds == 3  # the third wait is an hour
