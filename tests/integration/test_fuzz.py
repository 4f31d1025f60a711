"""Thousands of malformed requests to a live agent: each gets a typed error, the agent never
dies, nothing leaks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration.conftest import NATS_URL, AgentProcess
from kernlet.client import KernletClient
from kernlet.errors import KernletError
from kernlet.protocol import COMMANDS

pytestmark = pytest.mark.integration

#: commands whose well-formed payloads act on the node (pull, reset): fuzzed with garbage only
ACTING = {"check_and_pull", "reset_agent", "create_kernels", "trigger_batch_execution"}
EXPECTED_ERRORS = {"InvalidRequest", "UnknownCommand", "KernelNotFound", "KernelNotRunning"}

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=15,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes]:
    command = draw(st.sampled_from(sorted(COMMANDS)) | st.text(
        alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20))
    kind = draw(st.sampled_from(["bytes", "value", "fields"]))
    if kind == "bytes":
        return command, draw(st.binary(max_size=200))
    if kind == "value" or command in ACTING or command not in COMMANDS:
        return command, msgpack.packb(draw(values), use_bin_type=True)
    fields = list(COMMANDS[command].model_fields)
    payload = draw(st.dictionaries(st.sampled_from(fields) if fields else st.text(max_size=5),
                                   values, max_size=len(fields) + 1))
    return command, msgpack.packb(payload, use_bin_type=True)


@pytest.fixture(scope="module")
def fuzz_agent(halfstack: None, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path_factory.mktemp("fuzz"), f"fuzz-{uuid.uuid4().hex[:8]}")
    proc.start()
    yield proc
    proc.cleanup()


def test_fuzzed_requests_get_typed_errors(fuzz_agent: AgentProcess, tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    client = KernletClient(NATS_URL, agent_id=fuzz_agent.agent_id, timeout=10)
    loop.run_until_complete(client.connect())
    seen: dict[str, int] = {}

    @settings(max_examples=2000, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(requests())
    def one(req: tuple[str, bytes]) -> None:
        command, data = req
        try:
            result: Any = loop.run_until_complete(client.call_raw(command, data))
            seen["ok"] = seen.get("ok", 0) + 1
            assert isinstance(result, dict | list)
        except KernletError as exc:
            assert exc.type in EXPECTED_ERRORS, f"{command}: {exc.type}: {exc.message}"
            seen[exc.type] = seen.get(exc.type, 0) + 1

    try:
        one()
        assert sum(seen.values()) >= 2000
        assert seen.get("InvalidRequest", 0) > 500 and seen.get("UnknownCommand", 0) > 50
        assert loop.run_until_complete(client.ping("alive"))["msg"] == "alive"
        assert fuzz_agent.proc is not None and fuzz_agent.proc.poll() is None
        assert fuzz_agent.containers() == [] and fuzz_agent.scratch_dirs() == []
        assert "agent_error" not in fuzz_agent.log.read_text()
    finally:
        loop.run_until_complete(client.close())
        loop.close()
