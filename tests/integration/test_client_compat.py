"""A new client and an agent that predates flow control: the stream still runs.

The agent here is a stand-in on the real NATS that answers ``execute`` as an agent of the
first round did: its request schema refuses unknown fields, so ``credit`` is an
``InvalidRequest`` before any run starts (an old version cannot be started on demand)."""

from __future__ import annotations

import uuid
from typing import Any

import nats
import pytest

from integration.conftest import NATS_URL
from kernlet.client import KernletClient
from kernlet.errors import InvalidRequest
from kernlet.events import pack, unpack
from kernlet.protocol import command_subject

pytestmark = pytest.mark.integration


async def test_stream_to_an_agent_without_flow_control_retries_without_credit(
    halfstack: None,
) -> None:
    agent_id = f"compat-{uuid.uuid4().hex[:6]}"
    nc = await nats.connect(NATS_URL)
    asked: list[dict[str, Any]] = []

    async def old_execute(msg: Any) -> None:
        args = unpack(msg.data)
        asked.append(args)
        if "credit" in args:
            await msg.respond(pack({"ok": False, "error": {
                "type": "InvalidRequest",
                "message": "execute: credit: Extra inputs are not permitted"}}))
            return
        await nc.publish(msg.reply, pack({"ok": True, "output": [["stdout", "hi\n"]]}))
        await nc.publish(msg.reply, pack({"ok": True, "result": {
            "status": "finished", "exitCode": 0, "runId": args["run_id"]}}))

    await nc.subscribe(command_subject("kernlet", agent_id, "execute"), cb=old_execute)
    await nc.flush()
    try:
        async with KernletClient(NATS_URL, agent_id=agent_id, timeout=10) as client:
            first = [item async for item in client.stream("k1", "print('hi')")]
            second = [item async for item in client.stream("k1", "print('hi')")]
    finally:
        await nc.close()
    for items in (first, second):
        assert items[0] == ("stdout", "hi\n")
        assert items[-1][0] == "result" and items[-1][1]["status"] == "finished"
    # asked with credit once, then without; the second stream went without at once
    assert ["credit" in a for a in asked] == [True, False, False]
    assert asked[0]["run_id"] == asked[1]["run_id"]


async def test_another_invalid_request_is_not_retried(halfstack: None) -> None:
    agent_id = f"compat-{uuid.uuid4().hex[:6]}"
    nc = await nats.connect(NATS_URL)
    asked: list[dict[str, Any]] = []

    async def refuse(msg: Any) -> None:
        asked.append(unpack(msg.data))
        await msg.respond(pack({"ok": False, "error": {
            "type": "InvalidRequest", "message": "execute: mode: Input should be 'query'"}}))

    await nc.subscribe(command_subject("kernlet", agent_id, "execute"), cb=refuse)
    await nc.flush()
    try:
        async with KernletClient(NATS_URL, agent_id=agent_id, timeout=10) as client:
            with pytest.raises(InvalidRequest, match="mode"):
                async for _ in client.stream("k1", "x"):
                    pass
    finally:
        await nc.close()
    assert len(asked) == 1
