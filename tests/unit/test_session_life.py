"""A session's network over the whole agent core (FakeRuntime, MemoryEventLog): made once for
kernels created at once, their containers on it by hostname, removed after the last kernel,
a failed make failing the whole session, and an agent crash mid-creation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from life_rig import IMAGE, Rig

from kernlet.actors.messages import Relist
from kernlet.actors.networks import session_dir
from kernlet.errors import DockerError
from kernlet.protocol import (
    CreateKernels,
    CreateLocalNetwork,
    DestroyKernel,
    DestroyLocalNetwork,
    RestartKernel,
)

NET = "kernlet-rig-s1"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def session(n: int, **cluster: Any) -> CreateKernels:
    return CreateKernels.model_validate({
        "session_id": "s1", "kernel_ids": [f"k{i}" for i in range(1, n + 1)],
        "configs": [{"image": IMAGE, "cpu": 0.1}] * n, "cluster": cluster})


def test_kernels_created_at_once_make_one_network(rig: Rig) -> None:
    gate = rig.docker.block("ensure_network")  # every kernel's join arrives while it is made
    created = rig.submit(session(3))
    rig.wait(gate.entered.is_set)
    rig.loop.loop.call_soon_threadsafe(gate.release)
    kernels = created.result(10)["kernels"]
    assert [k["ok"] for k in kernels] == [True, True, True]
    assert [c for c in rig.docker.calls if c[0] == "ensure_network"] == [("ensure_network", NET)]
    specs = {c.spec.labels["ai.kernlet.kernel-id"]: c.spec for c in rig.docker.containers.values()}
    assert {k: (s.network, s.hostname, s.aliases) for k, s in specs.items()} == {
        "k1": (NET, "main1", ("main1", "k1")), "k2": (NET, "sub1", ("sub1", "k2")),
        "k3": (NET, "sub2", ("sub2", "k3"))}
    assert specs["k3"].env["KERNLET_CLUSTER_HOSTS"] == "main1,sub1,sub2"
    work = rig.cfg.scratch_root / "k2" / "work"
    assert (work / ".ssh" / "id_ed25519").read_bytes().startswith(b"-----BEGIN OPENSSH")
    assert (work / ".ssh" / "authorized_keys").read_bytes() == (
        session_dir(rig.cfg, NET) / "id_ed25519.pub").read_bytes()
    facts = json.loads((rig.cfg.ipc_root / "k2" / "cluster.json").read_text())
    assert (facts["role"], facts["idx"], facts["host"], facts["size"]) == ("sub", 1, "sub1", 3)
    for i in (1, 2):
        rig.call(DestroyKernel(kernel_id=f"k{i}"))
        assert NET in rig.docker.nets
    rig.call(DestroyKernel(kernel_id="k3"))  # the last one: answered once the network is gone
    assert NET not in rig.docker.nets and not session_dir(rig.cfg, NET).exists()
    assert _agent_events(rig) == ["network_created", "network_removed"]


def test_a_network_that_cannot_be_made_fails_the_whole_session(rig: Rig) -> None:
    rig.docker.fail_next("ensure_network", DockerError("network kernlet-rig-s1: no pool"))
    kernels = rig.call(session(3))["kernels"]
    assert [k["ok"] for k in kernels] == [False, False, False]
    assert {k["error"]["type"] for k in kernels} == {"CreationFailed"}
    assert "no pool" in kernels[0]["error"]["message"]
    for i in (1, 2, 3):
        rig.wait(lambda i=i: rig.events(f"k{i}")[-1:] == ["kernel_terminated"])
        assert rig.containers(f"k{i}") == [] and rig.dirs(f"k{i}") == []
    assert rig.docker.nets == {}


def test_destroy_of_the_last_kernel_racing_a_new_create(rig: Rig) -> None:
    rig.call(session(1))
    gate = rig.docker.block("remove_network")
    destroyed = rig.submit(DestroyKernel(kernel_id="k1"))
    rig.wait(gate.entered.is_set)  # the network is being removed...
    again = rig.submit(CreateKernels.model_validate({  # ...when a kernel of the session comes
        "session_id": "s1", "kernel_ids": ["k9"], "configs": [{"image": IMAGE, "cpu": 0.1}],
        "cluster": {"hostnames": ["late1"]}}))
    rig.loop.loop.call_soon_threadsafe(gate.release)
    assert destroyed.result(10)["reason"] == "user-requested"
    assert again.result(10)["kernels"][0]["ok"] is True  # made again after the removal
    assert NET in rig.docker.nets
    rig.call(DestroyKernel(kernel_id="k9"))
    assert NET not in rig.docker.nets
    assert _agent_events(rig) == ["network_created", "network_removed"] * 2


def test_crash_mid_creation_then_recovery_removes_the_network(rig: Rig) -> None:
    rig.crash_after("container_created")
    rig.submit(session(2))
    store = rig.restart_agent()
    for k in ("k1", "k2"):
        rig.wait(lambda k=k: rig.events(k, store)[-1:] == ["kernel_terminated"])
    rig.wait(lambda: NET not in rig.docker.nets)
    assert rig.docker.containers == {}


def _agent_events(rig: Rig) -> list[str]:
    return [t for t in rig.events("_agent") if t.startswith("network_")]


def test_destroy_while_the_network_is_made_leaves_nothing(rig: Rig) -> None:
    gate = rig.docker.block("ensure_network")
    created = rig.submit(session(1))
    rig.wait(gate.entered.is_set)
    destroyed = rig.submit(DestroyKernel(kernel_id="k1"))
    rig.wait(lambda: "kernel_terminating" in rig.events("k1"))
    rig.loop.loop.call_soon_threadsafe(gate.release)
    assert destroyed.result(10)["reason"] == "user-requested"
    assert created.result(10)["kernels"][0]["ok"] is False
    rig.wait(lambda: NET not in rig.docker.nets)  # made after its only holder left: removed
    assert rig.containers("k1") == [] and rig.dirs("k1") == []


def test_a_restart_keeps_the_kernel_on_its_network(rig: Rig) -> None:
    rig.call(session(2))
    rig.call(RestartKernel(kernel_id="k2"))
    (spec,) = [c.spec for c in rig.docker.containers.values()
               if c.spec.labels["ai.kernlet.kernel-id"] == "k2"]
    assert (spec.network, spec.hostname) == (NET, "sub1")
    assert [c for c in rig.docker.calls if c[0] == "ensure_network"] == [("ensure_network", NET)]


def test_the_relist_removes_an_unheld_network_of_this_agent_only(rig: Rig) -> None:
    rig.call(session(1))
    labels = {"ai.kernlet.agent-id": "rig", "ai.kernlet.session-id": "gone"}
    rig.loop.run(rig.docker.ensure_network("kernlet-rig-gone", False, labels))
    rig.loop.run(rig.docker.ensure_network("someone-elses", False, {"ai.kernlet.agent-id": "x"}))
    nets = rig.loop.run(rig.docker.networks({"ai.kernlet.agent-id": "rig"}))
    assert {n.name for n in nets} == {NET, "kernlet-rig-gone"}
    containers = tuple(rig.loop.run(rig.docker.list({"ai.kernlet.agent-id": "rig"})))
    rig.agent.tell(Relist(containers, nets[0].created + 3600, tuple(nets)))
    rig.wait(lambda: "kernlet-rig-gone" not in rig.docker.nets)
    assert NET in rig.docker.nets and "someone-elses" in rig.docker.nets  # held; not ours
    assert "network_removed" in rig.events("_agent")


def test_a_managers_network_outlives_its_kernels_and_an_agent_crash(rig: Rig) -> None:
    assert rig.call(CreateLocalNetwork(network="mgr1")) == {"network": "mgr1", "created": True}
    rig.call(session(1, network="mgr1"))
    rig.call(DestroyKernel(kernel_id="k1"))
    assert "mgr1" in rig.docker.nets
    rig.crash_after("kernel_preparing")
    rig.submit(CreateKernels.model_validate({
        "session_id": "s2", "kernel_ids": ["k2"], "configs": [{"image": IMAGE, "cpu": 0.1}],
        "cluster": {"network": "mgr1"}}))
    store = rig.restart_agent()
    rig.wait(lambda: rig.events("k2", store)[-1:] == ["kernel_terminated"])
    assert "mgr1" in rig.docker.nets  # its last kernel rolled back: still the manager's
    assert rig.call(DestroyLocalNetwork(network="mgr1")) == {"network": "mgr1",
                                                             "destroyed": True}
    assert "mgr1" not in rig.docker.nets
