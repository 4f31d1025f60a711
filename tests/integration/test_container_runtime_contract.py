"""The runtime contract against the real Docker Engine, through DockerDriver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from fixtures.image_contract import image_scenario
from fixtures.runtime_contract import Programs, scenario
from integration.conftest import IMAGE
from kernlet.drivers.docker import DockerDriver
from kernlet.errors import DockerError

pytestmark = pytest.mark.integration


async def test_docker_driver_passes_the_runtime_contract(halfstack: None) -> None:
    rt = DockerDriver()
    try:
        await scenario(rt, IMAGE, Programs())
    finally:
        await rt.close()


async def test_event_stream_without_an_engine_keeps_reconnecting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream that cannot connect logs a warning and tries again; it never raises."""
    rt = DockerDriver(f"unix://{tmp_path}/no-docker.sock")
    caplog.set_level(logging.WARNING, logger="kernlet.drivers.docker")
    stream = rt.events({"a": "b"})
    task = asyncio.create_task(anext(stream))
    while sum("reconnecting" in r.getMessage() for r in caplog.records) < 2:
        assert not task.done()
        await asyncio.sleep(0.1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await stream.aclose()
    with pytest.raises(DockerError):
        await rt.ping()
    await rt.close()


async def test_docker_driver_passes_the_image_contract(halfstack: None) -> None:
    rt = DockerDriver()
    try:
        await image_scenario(rt, IMAGE)
    finally:
        await rt.close()
