"""GPUs end to end without a GPU: an NVML stand-in, a fake /dev and driver library dirs, the
real actors over FakeRuntime + MemoryEventLog (life_rig), from a create_kernels request with
``slots`` to the ContainerSpec (device requests, device nodes, mounts, env), the allocation in
the log, a restart and an agent recovery keeping it, all-or-nothing across slots, and the bad
inputs refused before anything exists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from life_rig import IMAGE, Rig
from nvml_standin import fake_nvml

from kernlet.drivers.container_runtime import ContainerSpec
from kernlet.drivers.resources import (
    CUDA_DEVICE,
    CudaAccess,
    PluginInfo,
    SlotPool,
    cuda_device_ids,
    cuda_for_containers,
    cuda_parts,
    detect_cpu,
    detect_cuda,
    gather_hwinfo,
    probe_cuda_access,
)
from kernlet.errors import InsufficientResource, InvalidRequest
from kernlet.protocol import CreateKernels, DestroyKernel, ListKernels, RestartKernel, parse_request

DRIVER_LIBS = ("libnvidia-ml.so.1", "libnvidia-ml.so.560.35", "libcuda.so.1",
               "libcuda.so.560.35", "libnvidia-ptxjitcompiler.so.1")


def no_hook(_: str) -> None:
    return None


def fake_node(root: Path, minors: tuple[int, ...] = (0, 1), libs: tuple[str, ...] = DRIVER_LIBS,
              ctl: bool = True) -> dict[str, Any]:
    """A /dev with the NVIDIA nodes and a lib dir with the driver's libraries under ``root``;
    the keyword arguments ``probe_cuda_access`` takes to look there."""
    dev, lib, bin_ = root / "dev", root / "lib", root / "bin"
    for d in (dev, lib, bin_):
        d.mkdir(parents=True, exist_ok=True)
    for name in (*(f"nvidia{m}" for m in minors), "nvidia-uvm", *(("nvidiactl",) if ctl else ())):
        (dev / name).touch()
    for name in libs:  # the .1 names are links to the versioned file, as the driver installs
        real = lib / name.replace(".so.1", ".so.560.35")
        real.touch()
        if name != real.name:
            (lib / name).symlink_to(real.name)
    (bin_ / "nvidia-smi").touch()
    return {"dev": dev, "lib_dirs": (lib,), "bin_dirs": (bin_,), "which": no_hook}


def gpu_plugin(count: int = 2, minors: tuple[int, ...] | None = None) -> PluginInfo:
    plugin = detect_cuda("device", nvml=fake_nvml(count, minors=minors))
    assert plugin is not None
    return plugin


# -- how the node gives GPUs --------------------------------------------------------------------


def test_the_toolkit_is_found_through_dockers_runtimes_or_its_hook(tmp_path: Path) -> None:
    plugin = gpu_plugin()
    access, why = probe_cuda_access(plugin, "auto", ["runc", "nvidia"], dev=tmp_path,
                                    which=no_hook)
    assert access == CudaAccess("toolkit") and "nvidia runtime" in why
    access, why = probe_cuda_access(plugin, "auto", ["runc"], dev=tmp_path,
                                    which=lambda n: f"/usr/bin/{n}")
    assert access is not None and access.mode == "toolkit" and "hook" in why
    # forced, though Docker does not list it
    access, _ = probe_cuda_access(plugin, "toolkit", ["runc"], dev=tmp_path, which=no_hook)
    assert access is not None and access.mode == "toolkit"
    with pytest.raises(ValueError, match="cuda-access"):
        probe_cuda_access(plugin, "cdi", ["runc"])


def test_device_nodes_and_driver_libraries(tmp_path: Path) -> None:
    roots = fake_node(tmp_path, minors=(3, 7))
    # NVML index 0 is /dev/nvidia3, index 1 /dev/nvidia7: the node follows the minor number
    access, _ = probe_cuda_access(gpu_plugin(2, minors=(3, 7)), "auto", ["runc"], **roots)
    assert access is not None and access.mode == "device-nodes"
    dev = roots["dev"]
    assert access.nodes == {"0": str(dev / "nvidia3"), "1": str(dev / "nvidia7")}
    assert access.control == (str(dev / "nvidiactl"), str(dev / "nvidia-uvm"))
    inside = {c: h for h, c in access.files}
    lib = roots["lib_dirs"][0]
    # every versioned entry, links resolved to the file they name
    assert inside["/usr/local/nvidia/lib64/libcuda.so.1"] == str(lib / "libcuda.so.560.35")
    assert inside["/usr/local/nvidia/lib64/libnvidia-ml.so.1"] == str(
        lib / "libnvidia-ml.so.560.35")
    assert "/usr/local/nvidia/lib64/libnvidia-ptxjitcompiler.so.1" in inside
    assert inside["/usr/local/nvidia/bin/nvidia-smi"] == str(roots["bin_dirs"][0] / "nvidia-smi")


@pytest.mark.parametrize(("broken", "why"), [
    ({"ctl": False}, "nvidiactl"),
    ({"libs": ("libnvidia-ml.so.1",)}, "libcuda.so.1"),
    ({"minors": ()}, "/dev/nvidia<minor>"),
])
def test_a_gpu_that_cannot_be_given_is_not_advertised(
    tmp_path: Path, broken: dict[str, Any], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    roots = fake_node(tmp_path, **broken)
    plugins = [detect_cpu([0, 1]), gpu_plugin()]
    access, reason = probe_cuda_access(plugins[1], "auto", ["runc"], **roots)
    assert access is None and why in reason
    out, access = cuda_for_containers(plugins, "auto", ["runc"], **roots)
    assert access is None and [p.key for p in out] == ["cpu"]
    assert "no cuda slot advertised" in caplog.text


def test_only_the_gpus_with_a_device_node_are_advertised(tmp_path: Path) -> None:
    roots = fake_node(tmp_path, minors=(1,))  # /dev/nvidia0 is missing
    out, access = cuda_for_containers([gpu_plugin(2)], "device-nodes", ["runc"], **roots)
    assert access is not None and list(access.nodes) == ["1"]
    (cuda,) = out
    assert cuda.pools == (SlotPool(CUDA_DEVICE, {"1": 1}),)  # type: ignore[dict-item]
    info = gather_hwinfo(out)["cuda"]
    assert info["slots"]["cuda.device"]["capacity"] == "1"
    assert info["access"]["mode"] == "device-nodes"
    # under the toolkit every GPU NVML sees is given
    out, access = cuda_for_containers([gpu_plugin(2)], "auto", ["runc", "nvidia"], **roots)
    assert out[0].pools[0].devices.keys() == {"0", "1"}


def test_what_a_container_gets_for_its_gpus(tmp_path: Path) -> None:
    toolkit = CudaAccess("toolkit")
    parts = cuda_parts(toolkit, ("1", "3"))
    assert parts.gpus == ("1", "3") and parts.devices == () and parts.mounts == ()
    assert parts.env == {"CUDA_VISIBLE_DEVICES": "0,1", "NVIDIA_VISIBLE_DEVICES": "1,3",
                         "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
                         "KERNLET_CUDA_DEVICES": "1,3"}
    # no GPU held, under the toolkit: an image's NVIDIA_VISIBLE_DEVICES=all reaches none
    assert cuda_parts(toolkit, ()).env == {"NVIDIA_VISIBLE_DEVICES": "void"}
    assert cuda_parts(None, ()).env == {}
    roots = fake_node(tmp_path)
    nodes, _ = probe_cuda_access(gpu_plugin(), "device-nodes", ["runc"], **roots)
    assert nodes is not None
    parts = cuda_parts(nodes, ("1",), {"LD_LIBRARY_PATH": "/opt/lib"})
    assert parts.gpus == ()
    assert parts.devices == (*nodes.control, str(roots["dev"] / "nvidia1"))
    assert all(ro for _, _, ro in parts.mounts) and len(parts.mounts) == len(nodes.files)
    assert parts.env["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64:/opt/lib"
    # by UUID there: the driver may list the host's other GPUs, so an index could be wrong
    assert parts.env["CUDA_VISIBLE_DEVICES"] == "GPU-1"
    assert parts.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert parts.env["NVIDIA_VISIBLE_DEVICES"] == "1"
    with pytest.raises(InsufficientResource, match="cannot give GPUs"):
        cuda_parts(None, ("0",))
    with pytest.raises(InsufficientResource, match="no device node"):
        cuda_parts(nodes, ("5",))
    assert cuda_device_ids({"cuda.device": {"10": "1", "2": "1"}, "cpu": {"0": "1"}}) == (
        "2", "10")
    assert cuda_device_ids({"cuda.shares": {"0": "0.5"}}) == ("0",)


# -- through the real actors ---------------------------------------------------------------------


def gpu_rig(tmp: Path, cuda: CudaAccess) -> Rig:
    out, _ = cuda_for_containers([gpu_plugin(2)], "toolkit", [])
    return Rig(tmp, extra_pools=out[0].pools, cuda=cuda)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = gpu_rig(tmp_path, CudaAccess("toolkit"))
    yield r
    r.close()


def create(kernel_id: str, slots: dict[str, Any], cpu: float = 0.5) -> CreateKernels:
    req = parse_request("create_kernels", {
        "session_id": "s1", "kernel_ids": [kernel_id],
        "configs": [{"image": IMAGE, "cpu": cpu, "slots": slots}]})
    assert isinstance(req, CreateKernels)
    return req


def spec_of(rig: Rig, kernel_id: str) -> ContainerSpec:
    (cid,) = rig.containers(kernel_id)
    return rig.docker.containers[cid].spec


def creating(rig: Rig, kernel_id: str, store: Any = None) -> list[Any]:
    events = rig.loop.run((store or rig.store).read_stream(kernel_id))
    return [e.body for e in events if e.type == "kernel_creating"]


def test_from_request_to_container_spec_and_the_log(rig: Rig) -> None:
    res = rig.call(create("k1", {"cuda.device": 1}))["kernels"][0]
    assert res["ok"] is True
    assert res["resource_spec"]["cuda.device"] == "1" and res["devices"] == {
        "cuda.device": ["0"]}
    spec = spec_of(rig, "k1")
    assert spec.gpus == ("0",)
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "0"
    assert spec.env["NVIDIA_VISIBLE_DEVICES"] == "0"
    (body,) = creating(rig, "k1")
    assert body.devices == {"cuda.device": {"0": "1"}}
    assert body.slots["cuda.device"] == "1"
    # the second kernel gets the other GPU; a kernel without GPUs gets none of them
    rig.call(create("k2", {"cuda.device": 1}))
    assert spec_of(rig, "k2").gpus == ("1",)
    rig.call(create("k3", {}))
    assert spec_of(rig, "k3").gpus == () and spec_of(rig, "k3").env[
        "NVIDIA_VISIBLE_DEVICES"] == "void"
    assert rig.slots_used()["cuda.device"] == "2"
    for k in ("k1", "k2", "k3"):
        rig.call(DestroyKernel(kernel_id=k))
    rig.wait(lambda: rig.slots_used()["cuda.device"] == "0")


def test_all_or_nothing_when_one_slot_lacks_capacity(rig: Rig) -> None:
    rig.call(create("big", {"cuda.device": 2}))
    before = rig.slots_used()
    assert before["cuda.device"] == "2" and before["cpu"] == "0.5"
    answer = rig.call(create("k2", {"cuda.device": 1}, cpu=0.5))["kernels"][0]
    assert answer["ok"] is False and answer["error"]["type"] == "InsufficientResource"
    assert "cuda.device" in answer["error"]["message"]
    # the cpu that would have fit is not held either
    assert rig.slots_used() == before
    assert rig.containers("k2") == []
    rig.call(DestroyKernel(kernel_id="big"))


def test_restart_keeps_the_gpus(rig: Rig) -> None:
    rig.call(create("k0", {"cuda.device": 1}))  # takes GPU 0
    rig.call(create("k1", {"cuda.device": 1}))
    assert spec_of(rig, "k1").gpus == ("1",)
    rig.call(DestroyKernel(kernel_id="k0"))  # GPU 0 free again: a re-placement would take it
    res = rig.call(RestartKernel(kernel_id="k1"))
    assert res["ok"] is True and res["devices"] == {"cuda.device": ["1"]}
    assert spec_of(rig, "k1").gpus == ("1",)
    first, again = creating(rig, "k1")
    assert first == again and again.devices == {"cuda.device": {"1": "1"}}
    rig.call(DestroyKernel(kernel_id="k1"))


def test_recovery_restores_the_gpus_from_the_log(rig: Rig) -> None:
    rig.call(create("k0", {"cuda.device": 1}))
    rig.crash_after("kernel_started")
    rig.submit(create("k1", {"cuda.device": 1}))
    store = rig.restart_agent()
    rig.wait(lambda: len(rig.call(ListKernels())["kernels"]) == 2)
    # both GPUs are held again, exactly as recorded: a third kernel cannot have one
    assert rig.slots_used()["cuda.device"] == "2"
    answer = rig.call(create("k2", {"cuda.device": 1}))["kernels"][0]
    assert answer["ok"] is False and answer["error"]["type"] == "InsufficientResource"
    # and a restart after the recovery gives k1 the same GPU
    rig.call(DestroyKernel(kernel_id="k0"))
    assert rig.call(RestartKernel(kernel_id="k1"))["ok"] is True
    assert spec_of(rig, "k1").gpus == ("1",)
    assert creating(rig, "k1", store)[-1].devices == {"cuda.device": {"1": "1"}}
    rig.call(DestroyKernel(kernel_id="k1"))


def test_device_nodes_reach_the_container_spec(tmp_path: Path) -> None:
    roots = fake_node(tmp_path / "node")
    access, _ = probe_cuda_access(gpu_plugin(), "device-nodes", ["runc"], **roots)
    assert access is not None
    rig = gpu_rig(tmp_path, access)
    try:
        rig.call(create("k1", {"cuda.device": 1}))
        spec = spec_of(rig, "k1")
        assert spec.gpus == ()
        assert str(roots["dev"] / "nvidia0") in spec.devices
        assert str(roots["dev"] / "nvidiactl") in spec.devices
        assert ("/usr/local/nvidia/lib64/libcuda.so.1" in
                {inside for _, inside, ro in spec.mounts if ro})
        assert spec.env["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64"
        assert spec.env["CUDA_VISIBLE_DEVICES"] == "GPU-0"
        rig.call(DestroyKernel(kernel_id="k1"))
    finally:
        rig.close()


# -- bad input: a typed error naming the field, nothing held, no kernel made ---------------------


@pytest.mark.parametrize(("slots", "error", "match"), [
    ({"cuda.device": 3}, InsufficientResource, "configs.0.slots.cuda.device.*has 2 in all"),
    ({"cuda.shares": 1}, InsufficientResource, "configs.0.slots.cuda.shares.*has none"),
    ({"cuda.device": -1}, InvalidRequest, "configs.0.slots.cuda.device.*>= 0"),
    ({"cuda.device": 0.5}, InvalidRequest, "configs.0.slots.cuda.device.*multiple of 1"),
    ({"cuda.device": "1.5"}, InvalidRequest, "configs.0.slots.cuda.device.*multiple of 1"),
    ({"cuda.device": "lots"}, InvalidRequest, "configs.0.slots.cuda.device.*not an amount"),
    ({"tpu.device": 1}, InvalidRequest, "configs.0.slots.tpu.device.*unknown resource slot"),
])
def test_bad_slot_requests(rig: Rig, slots: dict[str, Any], error: type[Exception],
                           match: str) -> None:
    with pytest.raises(error, match=match):
        rig.call(create("bad", slots))
    assert rig.events("bad") == [] and rig.containers("bad") == [] and rig.dirs("bad") == []
    assert all(float(v) == 0 for v in rig.slots_used().values())
    assert rig.call(create("good", {"cuda.device": 1}))["kernels"][0]["ok"] is True


def test_a_node_without_gpus_refuses_them_up_front(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        with pytest.raises(InsufficientResource,
                           match=r"configs.1.slots.cuda.device \(kernel b\).*has none"):
            rig.call(parse_request("create_kernels", {
                "session_id": "s", "kernel_ids": ["a", "b"],
                "configs": [{"image": IMAGE}, {"image": IMAGE, "slots": {"cuda.device": 1}}]}))
        # all kernels of the request are refused together: none of them exists
        assert rig.events("a") == [] and rig.events("b") == []
        assert all(float(v) == 0 for v in rig.slots_used().values())
    finally:
        rig.close()


@pytest.mark.parametrize(("slots", "match"), [
    ({"cpu": 1}, "cpu: set by the fields"),
    ({"cuda.device": True}, "slots.cuda.device"),
    ({"Cuda": 1}, r"slots.Cuda"),
])
def test_malformed_slots_are_refused_by_the_schema(slots: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        parse_request("create_kernels", {"session_id": "s", "kernel_ids": ["k"],
                                         "configs": [{"image": IMAGE, "slots": slots}]})
