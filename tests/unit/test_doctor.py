"""`kernlet doctor`: every check over a fake node (a /proc/sys and a cgroup tree in a temp
dir, fake limits, disks and probes), the CLI's text, --json and exit code, --write-sysctl."""

from __future__ import annotations

import json
import resource
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import kernlet.cli.doctor as cli_doctor
from kernlet import doctor as dr
from kernlet.cli import main
from kernlet.config import AgentConfig, load_config

GIB = 1024**3

HEALTHY_SYSCTLS = {
    "fs.file-max": "9223372036854775807",
    "fs.inotify.max_user_watches": "524288",
    "net.core.somaxconn": "4096",
    "net.ipv4.ip_local_port_range": "40000\t65000",
    "net.ipv4.ip_local_reserved_ports": "",
}


def _write_sysctls(root: Path, values: Mapping[str, str]) -> None:
    for key, value in values.items():
        path = root / key.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")


def _cgroup_v2(root: Path, controllers: str = "cpuset cpu io memory pids",
               swap: bool = True) -> Path:
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "system.slice").mkdir()
    if swap:
        (root / "system.slice" / "memory.swap.max").write_text("max\n")
    return root


@pytest.fixture
def make_node(tmp_path: Path) -> Callable[..., dr.Node]:
    """A healthy node; keyword arguments replace sysctl values or Node fields."""
    def build(sysctls: Mapping[str, str] | None = None, **fields: Any) -> dr.Node:
        proc_sys = tmp_path / "proc-sys"
        _write_sysctls(proc_sys, {**HEALTHY_SYSCTLS, **(sysctls or {})})
        cgroup = tmp_path / "cgroup"
        if not cgroup.exists():
            _cgroup_v2(cgroup)
        node = dr.Node(
            proc_sys=proc_sys, proc=tmp_path / "no-proc", cgroup_root=cgroup,
            limits=lambda: {"nofile": (512000, 512000), "nproc": (65536, 65536)},
            root=False,
            disk=lambda path: dr.DiskSpace(total=500 * GIB, free=200 * GIB),
            docker=lambda url: dr.DockerInfo(True, "root dir /var/lib/docker", "27.0",
                                             "overlay2", True),
            nats=lambda url: dr.Probe(True, "nats 2.10; JetStream enabled"),
            etcd=lambda host, port: dr.Probe(True, "healthy"),
            redis=lambda url: dr.Probe(True, "PONG"),
        )
        return replace(node, **fields)

    return build


def _by_check(findings: list[dr.Finding]) -> dict[str, dr.Finding]:
    return {f.check: f for f in findings}


def _run(make: Callable[[], dr.Node], monkeypatch: pytest.MonkeyPatch, *args: str,
         config: Path | None = None) -> Any:
    monkeypatch.setattr(cli_doctor, "make_node", make)
    argv = ["doctor", *(["--config", str(config)] if config else []), *args]
    return CliRunner().invoke(main, argv)


@pytest.fixture
def agent_toml(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent]\nvar-dir = "{tmp_path / "var"}"\n')
    return path


# --- the node as a whole --------------------------------------------------------------------


def test_a_healthy_node_has_only_ok_findings(make_node: Callable[..., dr.Node]) -> None:
    findings = dr.diagnose(AgentConfig(), make_node())
    assert [f for f in findings if f.status is not dr.Status.OK] == []
    assert {"cgroup.memory", "cgroup.swap", "limits.nofile", "limits.nproc",
            "sysctl.fs.inotify.max_user_watches", "sysctl.net.core.somaxconn",
            "ports.local-range", "docker", "docker.storage-driver", "disk.var-dir",
            "disk.scratch", "nats", "etcd", "redis"} <= {f.check for f in findings}
    assert dr.exit_code(findings) == 0
    assert all(f.fix == "" for f in findings)


def test_overlapping_port_range_and_low_nofile_are_both_reported_with_fixes(
        make_node: Callable[..., dr.Node], monkeypatch: pytest.MonkeyPatch,
        agent_toml: Path) -> None:
    node = make_node({"net.ipv4.ip_local_port_range": "30500\t60999"},
                     limits=lambda: {"nofile": (4096, 4096), "nproc": (65536, 65536)})
    result = _run(lambda: node, monkeypatch, config=agent_toml)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    ports = next(i for i, line in enumerate(lines) if "ports.local-range" in line)
    assert lines[ports].lstrip().startswith("FAIL")
    assert "30500-60999 overlaps container.port-range 30000-31000" in lines[ports]
    assert "(501 ports, 30500-31000)" in lines[ports]
    assert "fix: sysctl -w net.ipv4.ip_local_port_range='40000 65000'" in lines[ports + 1]
    nofile = next(i for i, line in enumerate(lines) if "limits.nofile" in line)
    assert lines[nofile].lstrip().startswith("WARN")
    assert "soft 4096, hard 4096 (reference 512000)" in lines[nofile]
    assert "LimitNOFILE=512000" in lines[nofile + 1]
    assert "root soft nofile 512000" in lines[nofile + 1]
    assert "0 fail" not in lines[-1]
    assert lines[-1].endswith("something blocks the agent (exit 1)")


def test_json_shape(make_node: Callable[..., dr.Node], monkeypatch: pytest.MonkeyPatch,
                    agent_toml: Path) -> None:
    node = make_node({"net.ipv4.ip_local_port_range": "30500 60999"},
                     limits=lambda: {"nofile": (256, 4096), "nproc": (65536, 65536)})
    result = _run(lambda: node, monkeypatch, "--json", config=agent_toml)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert set(doc) == {"ok", "exit_code", "config", "counts", "findings"}
    assert doc["ok"] is False and doc["exit_code"] == 1
    assert doc["config"] == str(agent_toml)
    for f in doc["findings"]:
        assert set(f) == {"check", "status", "detail", "fix"}
        assert f["status"] in ("ok", "warn", "fail")
        assert (f["fix"] == "") == (f["status"] == "ok")
    by = {f["check"]: f for f in doc["findings"]}
    assert by["config"]["status"] == "ok"
    assert by["ports.local-range"]["status"] == "fail"
    assert by["limits.nofile"]["status"] == "fail"  # soft 256: below the floor of 1024
    assert "below 1024" in by["limits.nofile"]["detail"]
    assert doc["counts"] == {s: sum(f["status"] == s for f in doc["findings"])
                             for s in ("ok", "warn", "fail")}
    assert doc["counts"]["fail"] == 2


def test_warnings_alone_exit_zero(make_node: Callable[..., dr.Node],
                                  monkeypatch: pytest.MonkeyPatch, agent_toml: Path) -> None:
    node = make_node({"fs.inotify.max_user_watches": "8192"})
    result = _run(lambda: node, monkeypatch, "--json", config=agent_toml)
    doc = json.loads(result.stdout)
    assert result.exit_code == 0 and doc["ok"] is True
    assert doc["counts"] == {"ok": len(doc["findings"]) - 1, "warn": 1, "fail": 0}


def test_a_bad_config_is_a_failing_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           make_node: Callable[..., dr.Node]) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text("[container]\nport-range = 5\n")
    result = _run(make_node, monkeypatch, "--json", config=bad)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert [f["check"] for f in doc["findings"]] == ["config"]
    assert doc["findings"][0]["status"] == "fail"
    assert "container.port-range" in doc["findings"][0]["detail"]


# --- each check -----------------------------------------------------------------------------


def test_reserved_ports_make_an_overlap_safe(make_node: Callable[..., dr.Node]) -> None:
    node = make_node({"net.ipv4.ip_local_port_range": "1024 65000",
                      "net.ipv4.ip_local_reserved_ports": "8080,29000-31000"})
    f = _by_check(dr.diagnose(AgentConfig(), node))["ports.local-range"]
    assert f.status is dr.Status.OK and "reserved" in f.detail
    node = make_node({"net.ipv4.ip_local_port_range": "1024 65000",
                      "net.ipv4.ip_local_reserved_ports": "30000-30999"})
    f = _by_check(dr.diagnose(AgentConfig(), node))["ports.local-range"]
    assert f.status is dr.Status.FAIL and "(1 ports, 31000-31000)" in f.detail


def test_the_pool_comes_from_the_config(make_node: Callable[..., dr.Node],
                                        tmp_path: Path) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text("[container]\nport-range = [50000, 50100]\n")
    cfg = load_config(toml)
    f = _by_check(dr.diagnose(cfg, make_node()))["ports.local-range"]  # 40000-65000
    assert f.status is dr.Status.FAIL
    assert "ip_local_port_range='50101 65000'" in f.fix


def test_suggested_range_stays_clear_of_the_pool() -> None:
    assert dr.suggest_local_range((30000, 31000)) == (40000, 65000)
    assert dr.suggest_local_range((50000, 50100)) == (50101, 65000)
    assert dr.suggest_local_range((40000, 60000)) == (10000, 39999)
    assert dr.suggest_local_range((60000, 65535)) == (10000, 59999)
    assert dr.suggest_local_range((20000, 64000)) == (10000, 19999)
    assert dr.suggest_local_range((1024, 64000)) == (64001, 65000)
    assert dr.suggest_local_range((1024, 65000)) is None  # 535 ports above, none below
    for first in range(1024, 65536, 997):
        for last in (first, first + 1000, first + 20000, 65535):
            pool = (first, min(last, 65535))
            got = dr.suggest_local_range(pool)
            if got is not None:
                lo, hi = got
                assert lo >= 1024 and hi - lo + 1 >= 1000 and hi <= 65535
                assert hi < pool[0] or lo > pool[1], (pool, got)


@pytest.mark.parametrize(("limits", "root", "status"), [
    ({"nofile": (1024, 524288), "nproc": (65536, 65536)}, False, {"limits.nofile": "warn"}),
    ({"nofile": (512, 512), "nproc": (65536, 65536)}, False, {"limits.nofile": "fail"}),
    ({"nofile": (None, None), "nproc": (None, None)}, False, {}),
    ({"nofile": (512000, 512000), "nproc": (512, 512)}, False, {"limits.nproc": "fail"}),
    ({"nofile": (512000, 512000), "nproc": (512, 512)}, True, {}),
    ({"nproc": (65536, 65536)}, False, {"limits.nofile": "warn"}),
])
def test_limits(limits: dict[str, tuple[int | None, int | None]], root: bool,
                status: dict[str, str]) -> None:
    found = {f.check: str(f.status) for f in dr.check_limits(limits, root=root)
             if f.status is not dr.Status.OK}
    assert found == status


def test_sysctls_below_the_reference_warn(make_node: Callable[..., dr.Node]) -> None:
    node = make_node({"net.core.somaxconn": "128", "fs.inotify.max_user_watches": "8192"})
    by = _by_check(dr.diagnose(AgentConfig(), node))
    assert by["sysctl.net.core.somaxconn"].status is dr.Status.WARN
    assert "sysctl -w net.core.somaxconn=1024" in by["sysctl.net.core.somaxconn"].fix
    assert by["sysctl.fs.inotify.max_user_watches"].status is dr.Status.WARN
    assert by["sysctl.fs.file-max"].status is dr.Status.OK


def test_an_unreadable_sysctl_warns(tmp_path: Path) -> None:
    node = dr.Node(proc_sys=tmp_path / "empty")
    assert node.sysctl("net.core.somaxconn") is None
    f = dr.check_sysctl("net.core.somaxconn", None, 1024, "why", "hint")
    assert f.status is dr.Status.WARN and "could not be read" in f.detail
    f = dr.check_port_range(None, None, (30000, 31000), "hint")
    assert f.status is dr.Status.WARN


def test_cgroups(tmp_path: Path) -> None:
    v2 = _cgroup_v2(tmp_path / "v2")
    assert {str(f.status) for f in dr.check_cgroup_memory(v2, None)} == {"ok"}
    no_mem = _cgroup_v2(tmp_path / "v2-no-memory", controllers="cpu io pids")
    (f,) = dr.check_cgroup_memory(no_mem, None)
    assert f.check == "cgroup.memory" and f.status is dr.Status.FAIL
    assert "cgroup_enable=memory" in f.fix
    no_swap = _cgroup_v2(tmp_path / "v2-no-swap", swap=False)
    by = _by_check(dr.check_cgroup_memory(no_swap, None))
    assert by["cgroup.memory"].status is dr.Status.OK
    assert by["cgroup.swap"].status is dr.Status.WARN and "swapaccount=1" in by["cgroup.swap"].fix

    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    enabled = "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t4\t188\t1\n"
    by = _by_check(dr.check_cgroup_memory(v1, enabled))
    assert by["cgroup.memory"].status is dr.Status.OK and "cgroup v1" in by["cgroup.memory"].detail
    assert by["cgroup.swap"].status is dr.Status.WARN
    (f,) = dr.check_cgroup_memory(v1, enabled.replace("188\t1", "188\t0"))
    assert f.status is dr.Status.FAIL
    (f,) = dr.check_cgroup_memory(tmp_path / "nothing", None)
    assert f.status is dr.Status.FAIL


def test_docker(make_node: Callable[..., dr.Node]) -> None:
    down = make_node(docker=lambda url: dr.DockerInfo(False, "Connection refused"))
    by = _by_check(dr.diagnose(AgentConfig(), down))
    assert by["docker"].status is dr.Status.FAIL and "Connection refused" in by["docker"].detail
    assert "docker.storage-driver" not in by
    vfs = make_node(docker=lambda url: dr.DockerInfo(True, "", "27.0", "vfs", False))
    by = _by_check(dr.diagnose(AgentConfig(), vfs))
    assert by["docker.storage-driver"].status is dr.Status.WARN
    assert "overlay2" in by["docker.storage-driver"].fix
    assert by["docker.memory-limit"].status is dr.Status.FAIL
    info = dr.DockerInfo.from_info({"ServerVersion": "24.0", "Driver": "overlay2",
                                    "MemoryLimit": True, "DockerRootDir": "/d"})
    assert info == dr.DockerInfo(True, "root dir /d", "24.0", "overlay2", True)


def test_docker_info_of_a_missing_socket_is_unreachable(tmp_path: Path) -> None:
    info = dr.docker_info(f"unix://{tmp_path / 'no.sock'}", timeout=2.0)
    assert not info.reachable and info.detail


def test_disks(make_node: Callable[..., dr.Node], tmp_path: Path) -> None:
    asked: list[Path] = []

    def disk(path: Path) -> dr.DiskSpace:
        asked.append(path)
        return dr.DiskSpace(total=100 * GIB, free=GIB // 2)

    cfg = AgentConfig.model_validate({"agent": {"var-dir": str(tmp_path / "var")}})
    by = _by_check(dr.diagnose(cfg, make_node(disk=disk)))
    assert by["disk.var-dir"].status is dr.Status.FAIL
    assert by["disk.scratch"].status is dr.Status.FAIL
    assert "measured at " + str(tmp_path) in by["disk.scratch"].detail
    assert by["disk.log-dir"].status is dr.Status.FAIL
    assert asked == [tmp_path] * 3  # var-dir does not exist yet: its nearest ancestor
    assert dr.check_disk("d", "/x", "/x", dr.DiskSpace(100 * GIB, 5 * GIB)).status == "warn"
    assert dr.check_disk("d", "/x", "/x", dr.DiskSpace(1000 * GIB, 50 * GIB)).status == "warn"
    assert dr.check_disk("d", "/x", "/x", dr.DiskSpace(100 * GIB, 50 * GIB)).status == "ok"
    assert dr.check_disk("d", "/x", "/x", None).status == "warn"


def test_services(make_node: Callable[..., dr.Node]) -> None:
    down = dr.Probe(False, "Connection refused")
    node = make_node(nats=lambda url: down, etcd=lambda h, p: down, redis=lambda url: down)
    by = _by_check(dr.diagnose(AgentConfig(), node))
    assert by["nats"].status is dr.Status.FAIL and "nats.url" in by["nats"].fix
    assert by["etcd"].status is dr.Status.WARN and "etcd.enabled" in by["etcd"].fix
    assert by["redis"].status is dr.Status.WARN and "stats.enabled" in by["redis"].fix

    off = AgentConfig.model_validate({"etcd": {"enabled": False}, "stats": {"enabled": False}})
    by = _by_check(dr.diagnose(off, node))
    assert by["etcd"].status is dr.Status.OK and "etcd.enabled = false" in by["etcd"].detail
    assert by["redis"].status is dr.Status.OK

    no_js = make_node(nats=lambda url: dr.Probe(True, "nats 2.10; JetStream DISABLED"))
    by = _by_check(dr.diagnose(AgentConfig(), no_js))
    assert by["nats"].status is dr.Status.OK
    assert by["nats.jetstream"].status is dr.Status.WARN


def test_services_are_probed_where_the_config_says(make_node: Callable[..., dr.Node]) -> None:
    asked: list[object] = []
    node = make_node(nats=lambda url: asked.append(url) or dr.Probe(True),
                     etcd=lambda h, p: asked.append((h, p)) or dr.Probe(True),
                     redis=lambda url: asked.append(url) or dr.Probe(True),
                     docker=lambda url: asked.append(url) or dr.DockerInfo(False, "x"))
    cfg = AgentConfig.model_validate({
        "nats": {"url": "nats://127.0.0.2:4333"}, "etcd": {"host": "127.0.0.3", "port": 2999},
        "redis": {"url": "redis://127.0.0.4:6390/1"}, "docker": {"url": "unix:///tmp/d.sock"}})
    dr.diagnose(cfg, node)
    assert asked == ["unix:///tmp/d.sock", "nats://127.0.0.2:4333", ("127.0.0.3", 2999),
                     "redis://127.0.0.4:6390/1"]


def test_read_limits_is_this_process() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    got = dr.read_limits()
    assert set(got) == {"nofile", "nproc"}
    assert got["nofile"][0] == (None if soft == resource.RLIM_INFINITY else soft)


# --- --write-sysctl -------------------------------------------------------------------------


def _sysctl_file(text: str) -> dict[str, str]:
    settings = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            assert "#" not in value  # sysctl.d would read a trailing comment as the value
            settings[key.strip()] = value.strip()
    return settings


def test_write_sysctl(make_node: Callable[..., dr.Node], monkeypatch: pytest.MonkeyPatch,
                      tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text(f'[agent]\nvar-dir = "{tmp_path}"\n[container]\n'
                    "port-range = [45000, 46000]\n")
    node = make_node({"net.ipv4.ip_local_port_range": "32768 60999",
                      "net.core.somaxconn": "4096"})
    before = {p: p.read_text() for p in node.proc_sys.rglob("*") if p.is_file()}
    out = tmp_path / "90-kernlet.conf"
    result = _run(lambda: node, monkeypatch, "--write-sysctl", str(out), config=toml)
    assert result.exit_code == 1  # the node's 32768-60999 overlaps 45000-46000
    settings = _sysctl_file(out.read_text())
    assert list(settings) == [key for key, _ in dr.RECOMMENDED_SYSCTLS]
    assert settings["net.ipv4.ip_local_port_range"] == "46001 65000"
    assert settings["net.core.somaxconn"] == "4096"  # the node's higher value kept
    assert settings["fs.inotify.max_user_watches"] == "524288"
    assert settings["fs.file-max"] == "9223372036854775807"
    assert settings["net.ipv4.tcp_rmem"] == "4096 12582912 16777216"
    assert "Nothing was applied" in out.read_text()
    assert {p: p.read_text() for p in node.proc_sys.rglob("*") if p.is_file()} == before
    by = {line.split()[1]: line for line in result.output.splitlines() if line[:6].strip()
          in ("ok", "WARN", "FAIL")}
    assert "FAIL" in by["ports.local-range"]


def test_write_sysctl_reserves_the_pool_when_no_range_is_clear(
        make_node: Callable[..., dr.Node], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text(f'[agent]\nvar-dir = "{tmp_path}"\n[container]\n'
                    "port-range = [1024, 65000]\n")
    out = tmp_path / "s.conf"
    result = _run(make_node, monkeypatch, "--json", "--write-sysctl", str(out), config=toml)
    settings = _sysctl_file(out.read_text())
    assert settings["net.ipv4.ip_local_reserved_ports"] == "1024-65000"
    by = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    assert by["ports.local-range"]["status"] == "fail"
    assert by["ports.local-range"]["fix"].startswith(
        "reserve the pool: sysctl -w net.ipv4.ip_local_reserved_ports=1024-65000")


def test_write_sysctl_to_an_unwritable_place_is_an_error(
        make_node: Callable[..., dr.Node], monkeypatch: pytest.MonkeyPatch,
        agent_toml: Path, tmp_path: Path) -> None:
    result = _run(make_node, monkeypatch, "--write-sysctl", str(tmp_path / "no" / "f.conf"),
                  config=agent_toml)
    assert result.exit_code == 1
    assert "cannot write" in result.output


def test_public_surface() -> None:
    assert all(hasattr(dr, name) for name in dr.__all__)
    assert {"Finding", "Node", "Status", "diagnose", "exit_code", "sysctl_text"} <= set(dr.__all__)
