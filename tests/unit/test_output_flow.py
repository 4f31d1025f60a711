"""Credit flow control of a streaming execute (actors/flow.py): the sink waits while the
caller's window is full, an ack opens it, a caller that stops acknowledging is abandoned
after the stall timeout, and acks of calls not streaming are reported as not applied."""

from __future__ import annotations

import asyncio

import pytest

from kernlet.actors.flow import Flows, OutputFlow
from kernlet.errors import InvalidRequest
from kernlet.protocol import AckOutput, Execute, parse_request


async def test_a_full_window_waits_until_an_ack_opens_it() -> None:
    flow = OutputFlow(credit=100)
    await flow.wait()  # empty window: at once
    flow.published(60)
    await flow.wait()
    flow.published(60)  # 120 in flight > 100
    waiter = asyncio.create_task(flow.wait())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    flow.ack(10)  # 110 still in flight: still closed
    await asyncio.sleep(0.05)
    assert not waiter.done()
    flow.ack(60)  # 60 in flight
    await asyncio.wait_for(waiter, 1)
    assert flow.waits >= 1 and not flow.abandoned


async def test_acks_are_cumulative_and_never_go_back_or_past_what_was_sent() -> None:
    flow = OutputFlow(credit=100)
    flow.published(150)
    flow.ack(120)
    flow.ack(30)  # late, repeated: ignored
    assert flow.received == 120
    flow.ack(10_000)  # more than was sent: capped
    assert flow.received == 150


async def test_a_caller_that_stops_acknowledging_is_abandoned() -> None:
    flow = OutputFlow(credit=10, stall_timeout=0.1)
    flow.published(50)
    await asyncio.wait_for(flow.wait(), 2)
    assert flow.abandoned and flow.open


def test_flows_apply_acks_by_kernel_and_run() -> None:
    flows = Flows()
    flow = flows.open("k1", "r1", 100)
    flow.published(80)
    assert flows.ack("k1", "r1", 50) and flow.received == 50
    assert not flows.ack("k2", "r1", 50)  # another kernel's run of the same id
    flows.close("k1", "r1", OutputFlow(1))  # a stale close leaves the current call alone
    assert len(flows) == 1
    flows.close("k1", "r1", flow)
    assert len(flows) == 0 and not flows.ack("k1", "r1", 80)


def test_the_protocol_takes_credit_and_acks_and_names_bad_fields() -> None:
    req = parse_request("execute", {"kernel_id": "k", "run_id": "r", "stream": True,
                                    "credit": 1024 * 1024})
    assert isinstance(req, Execute) and req.credit == 1024 * 1024
    ack = parse_request("ack_output", {"kernel_id": "k", "run_id": "r", "received": 5})
    assert isinstance(ack, AckOutput)
    with pytest.raises(InvalidRequest, match="credit"):
        parse_request("execute", {"kernel_id": "k", "run_id": "r", "credit": 10})
    with pytest.raises(InvalidRequest, match="received"):
        parse_request("ack_output", {"kernel_id": "k", "run_id": "r", "received": -1})
