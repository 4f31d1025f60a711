"""A kernel's cpu request is a guarantee (cpuset and CPU shares); a hard quota comes only from
``container.cpu-limit``: none (the default), the request itself, or a burst factor of it,
capped at the cpuset's cores. Checked on the spec, and on the HostConfig Docker is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kernlet.actors.steps import container_spec, kernel_dirs
from kernlet.config import AgentConfig, ConfigError, apply_cluster, load_config
from kernlet.drivers.container_runtime import ContainerSpec
from kernlet.drivers.docker import DockerDriver
from kernlet.events import KernelState, State


def spec_for(tmp_path: Path, cpu: str, cpuset: tuple[int, ...], limit: str | None = None,
             ) -> ContainerSpec:
    container: dict[str, Any] = {} if limit is None else {"cpu-limit": limit}
    cfg = AgentConfig.model_validate(
        {"agent": {"var-dir": str(tmp_path)}, "container": container})
    state = KernelState(
        kernel_id="k1", state=State.CREATING, seq=1, session_id="s", image="img",
        slots={"cpu": cpu, "mem": str(256 * 1024**2)}, cpuset=cpuset,
    )
    return container_spec(cfg, state, kernel_dirs(cfg, "k1"), {})


# -- the guarantee ---------------------------------------------------------------------------


@pytest.mark.parametrize(("cpu", "shares"), [
    ("0.02", 20), ("0.25", 256), ("1", 1024), ("1.5", 1536), ("0.001", 2),  # Docker's least
])
def test_shares_follow_the_request(tmp_path: Path, cpu: str, shares: int) -> None:
    spec = spec_for(tmp_path, cpu, (1,) if float(cpu) <= 1 else (0, 1))
    assert spec.cpu_shares == shares


def test_the_cpuset_is_the_allocation(tmp_path: Path) -> None:
    assert spec_for(tmp_path, "1.5", (0, 1)).cpuset == "0,1"


# -- the limit -------------------------------------------------------------------------------


def test_by_default_there_is_no_quota(tmp_path: Path) -> None:
    cfg = AgentConfig()
    assert cfg.container.cpu_limit == "none" and cfg.container.cpu_limit_factor is None
    spec = spec_for(tmp_path, "0.02", (1,))
    assert spec.nano_cpus == 0
    assert spec.cpu_shares == 20


@pytest.mark.parametrize(("cpu", "cpuset", "nano"), [
    ("0.02", (1,), 20_000_000), ("0.5", (1,), 500_000_000), ("1.5", (0, 1), 1_500_000_000),
    ("0.001", (1,), 10_000_000),  # under Docker's least quota (0.01 cpu): raised to it
])
def test_request_limits_to_the_request(
    tmp_path: Path, cpu: str, cpuset: tuple[int, ...], nano: int
) -> None:
    spec = spec_for(tmp_path, cpu, cpuset, "request")
    assert spec.nano_cpus == nano
    assert spec.cpu_shares == max(round(float(cpu) * 1024), 2)


@pytest.mark.parametrize(("limit", "cpu", "cpuset", "nano"), [
    ("4x", "0.02", (1,), 80_000_000),
    ("1.5x", "0.5", (1,), 750_000_000),
    ("4x", "0.5", (1,), 1_000_000_000),        # capped at the cpuset's one core
    ("4x", "1.5", (0, 1), 2_000_000_000),      # and at two
    ("1x", "0.25", (1,), 250_000_000),         # same as "request"
    (" 2X ", "0.25", (1,), 500_000_000),       # spaces and case do not matter
])
def test_a_factor_bursts_above_the_request_within_the_cpuset(
    tmp_path: Path, limit: str, cpu: str, cpuset: tuple[int, ...], nano: int
) -> None:
    spec = spec_for(tmp_path, cpu, cpuset, limit)
    assert spec.nano_cpus == nano


@pytest.mark.parametrize("bad", ["0.5x", "x", "4", "lots", "", "-2x", "4xx", "full"])
def test_a_bad_cpu_limit_is_an_error_naming_the_key(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'[container]\ncpu-limit = "{bad}"\n')
    with pytest.raises(ConfigError, match=r"container\.cpu-limit: .*not a cpu limit"):
        load_config(path)


def test_cpu_limit_can_come_from_etcd() -> None:
    merged, refused = apply_cluster(AgentConfig(), {"container/cpu-limit": "3x"})
    assert refused == [] and merged.container.cpu_limit_factor == 3.0
    _, refused = apply_cluster(AgentConfig(), {"container/cpu-limit": "half"})
    assert refused == ["container/cpu-limit"]


# -- what Docker is sent ---------------------------------------------------------------------


class _Created:
    id = "c" * 64


class _Containers:
    def __init__(self) -> None:
        self.configs: list[dict[str, Any]] = []

    async def create(self, config: dict[str, Any], name: str) -> _Created:
        self.configs.append(config)
        return _Created()


class _Docker:
    def __init__(self) -> None:
        self.containers = _Containers()


async def host_config(spec: ContainerSpec) -> dict[str, Any]:
    driver = DockerDriver()
    stub = _Docker()
    driver._docker = stub  # type: ignore[assignment]  # a stand-in for aiodocker
    assert await driver.create(spec) == _Created.id
    (config,) = stub.containers.configs
    hc: dict[str, Any] = config["HostConfig"]
    return hc


async def test_docker_gets_shares_and_no_quota_by_default(tmp_path: Path) -> None:
    hc = await host_config(spec_for(tmp_path, "0.02", (1,)))
    assert hc["CpuShares"] == 20 and hc["CpusetCpus"] == "1"
    assert "NanoCpus" not in hc and "CpuQuota" not in hc


async def test_docker_gets_the_quota_when_limited(tmp_path: Path) -> None:
    hc = await host_config(spec_for(tmp_path, "0.02", (1,), "request"))
    assert hc["CpuShares"] == 20 and hc["NanoCpus"] == 20_000_000
