"""docs/manager.md: every Python block runs, as written, against a live agent, in order
(create/stream/destroy, the durable JetStream consumer, finding agents, errors)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import nats
import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "manager.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def run_block(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=180, check=False)
    assert out.returncode == 0, f"block failed:\n{code}\n--- stderr:\n{out.stderr}"
    return out.stdout


async def test_every_python_block_of_the_quickstart_runs(agent: AgentProcess) -> None:
    code = blocks()
    assert len(code) == 4
    durable = f"doc-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KERNLET_AGENT": agent.agent_id,
           "KERNLET_IMAGE": IMAGE, "KERNLET_DURABLE": durable}
    try:
        out = run_block(code[0], env)
        kid = re.search(r"^created (\S+)$", out, flags=re.M)
        assert kid, out
        assert "stdout 'line 0\\n'" in out or "line 0" in out
        assert "status finished exit 0" in out and f"destroyed {kid[1]}" in out

        out = run_block(code[1], env)
        mine = [line for line in out.splitlines() if f" {kid[1]} " in line]
        assert [line.split()[-1] for line in mine][:2] == ["kernel_preparing", "kernel_creating"]
        assert mine[-1].endswith("kernel_terminated")
        assert re.search(r"handled \d+, dropped \d+ duplicate", out)
        # the consumer is durable: a second run starts where the first stopped
        again = run_block(code[1], env)
        assert f" {kid[1]} " not in again and "handled 0," in again

        out = run_block(code[2], env)
        assert agent.agent_id in out.splitlines()[0]
        assert f"heartbeat from {agent.agent_id}: kernlet " in out

        out = run_block(code[3], env).splitlines()
        assert [line.split(" - ")[0] for line in out] == [
            "KernelNotFound", "ImageNotFound", "InvalidRequest"]
        assert "code" in out[2]  # the message names the field
    finally:
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().delete_consumer("KERNLET_EVENTS", durable)
        except Exception:  # not created when the first block failed
            pass
        await nc.close()
