"""Agent configuration: a TOML file validated at start, with defaults that fit the halfstack.

Search path (first found wins): ``./agent.toml``, ``~/.config/kernlet/agent.toml``,
``/etc/kernlet/agent.toml``. Keys are kebab-case, grouped in tables; unknown keys are errors,
and every error names the key (``container.kernel-uid: Input should be a valid integer``).
"""

from __future__ import annotations

import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from kernlet.config_base import ConfigError, Section
from kernlet.config_nats import NatsSection
from kernlet.config_ops import DebugSection, LoggingSection, WatcherSection
from kernlet.config_pool import PoolEntry
from kernlet.config_registries import RegistrySection
from kernlet.config_values import cpu_limit_factor, parse_origin, parse_size

__all__ = [
    "SEARCH_PATH",
    "AgentConfig",
    "ConfigError",
    "DebugSection",
    "LoggingSection",
    "NatsSection",
    "WatcherSection",
    "apply_cluster",
    "find_config",
    "load_config",
    "parse_origin",
    "parse_size",
]

SEARCH_PATH = (
    Path("agent.toml"),
    Path("~/.config/kernlet/agent.toml"),
    Path("/etc/kernlet/agent.toml"),
)

class AgentSection(Section):
    id: str = Field(default_factory=lambda: f"agent-{socket.gethostname()}")
    region: str = "local"
    scaling_group: str = "default"
    #: where the scratch dirs and runtime sockets live (and the event log, unless log-dir)
    var_dir: Path = Path("/var/lib/kernlet")
    #: the event log's own dir (default ``<var-dir>/log``; best on another filesystem than
    #: the scratch dirs) and the kept logs of terminated kernels beside it
    log_dir: Path | None = None
    #: new kernels are refused while the log's filesystem has less free space than this
    #: (0: never); checked at every create (one statvfs)
    min_log_free: int = Field(default=256 * 1024**2, ge=0)
    #: Docker create/start calls at once (kernels then boot their runtimes side by side)
    kernel_creation_concurrency: int = Field(default=8, ge=1, le=64)
    #: kernels torn down at once (a reset or a mass destroy runs in waves of this many)
    kernel_teardown_concurrency: int = Field(default=8, ge=1, le=64)
    #: seconds a create may take until its runtime answers
    create_timeout: float = Field(default=60.0, gt=0)
    #: seconds between relists of this agent's containers (the safety net for missed events)
    reconcile_interval: float = Field(default=10.0, gt=0)
    #: a container of this agent that no live kernel owns is removed once this old (seconds)
    orphan_grace: float = Field(default=60.0, ge=0)
    #: the address the create result and the heartbeat report for this node's published
    #: ports (a manager elsewhere must reach it); None: container.bind-host
    advertised_host: str | None = None
    #: seconds between rescans of the node's kernel images (docs/images.md)
    image_scan_interval: float = Field(default=30.0, gt=0)

    @field_validator("min_log_free", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)


class DockerSection(Section):
    url: str = "unix:///var/run/docker.sock"


class ContainerSection(Section):
    kernel_uid: int = Field(default=1000, ge=1)
    kernel_gid: int = Field(default=1000, ge=1)
    bind_host: str = "127.0.0.1"
    port_range: tuple[int, int] = (30000, 31000)
    pids_limit: int = Field(default=1024, ge=16)
    #: seconds between stop (SIGINT) and kill on destroy
    stop_grace: float = Field(default=10.0, ge=0)
    default_cpu: float = Field(default=1.0, gt=0)
    default_mem: int = 512 * 1024**2
    #: the smallest memory a kernel may be given: the runtime and an idle ipykernel take
    #: about 76 MiB (measured, docs/resources.md); below this a create is refused
    min_mem: int = 96 * 1024**2
    #: pull a missing image at create time when its name names a registry (host[:port]/...)
    auto_pull: bool = True
    #: seconds a pull may take
    pull_timeout: float = Field(default=7200.0, gt=0)
    #: hard CFS quota on top of the guarantee (cpuset + shares): "none", "request" or "<f>x"
    cpu_limit: str = "none"
    #: the kernels' network: "bridge" (Docker's default; service ports published on
    #: bind-host), "none" (loopback only) or "internal" (the agent's network without egress);
    #: with "none" and "internal" no port is published, so services cannot be reached
    network: Literal["bridge", "none", "internal"] = "bridge"
    #: the container's root filesystem read-only (/home/work, the runtime dir and a /tmp
    #: tmpfs stay writable)
    read_only_root: bool = False
    #: size of the /tmp tmpfs of a read-only-root kernel
    tmp_size: int = 256 * 1024**2
    #: a kernel's /home/work: "hostdir" (a dir under var-dir; with scratch-size, a loop-mounted
    #: ext4 image of that size) or "tmpfs" (in memory, charged to the kernel's memory)
    scratch_type: Literal["hostdir", "tmpfs"] = "hostdir"
    #: the scratch's size; 0: a plain dir, bounded only by its filesystem (hostdir only)
    scratch_size: int = Field(default=0, ge=0)
    #: the size of /dev/shm; a kernel's memory must be at least this
    shm_size: int = Field(default=64 * 1024**2, ge=1024**2)
    #: open files and processes (per uid) of a kernel; clamped to the agent's hard limits
    ulimit_nofile: int = Field(default=512000, ge=64)
    ulimit_nproc: int = Field(default=65536, ge=16)
    #: the last bytes of a container's output kept at teardown (get_logs after it); 0: none
    keep_logs: int = Field(default=256 * 1024, ge=0, le=64 * 1024**2)

    @field_validator("default_mem", "min_mem", "tmp_size", "scratch_size", "shm_size",
                     "keep_logs", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)

    @model_validator(mode="after")
    def _limits(self) -> ContainerSection:
        if self.scratch_type == "tmpfs" and not self.scratch_size:
            raise ValueError("scratch-type tmpfs needs scratch-size (e.g. \"1g\")")
        if self.shm_size > self.default_mem:
            raise ValueError(f"shm-size ({self.shm_size}) above default-mem "
                             f"({self.default_mem})")
        return self

    @field_validator("cpu_limit")
    @classmethod
    def _cpu_limit(cls, v: str) -> str:
        v = v.strip().lower()
        cpu_limit_factor(v)
        return v

    @property
    def cpu_limit_factor(self) -> float | None:
        """The quota as a multiple of a kernel's cpu request; None: no quota."""
        return cpu_limit_factor(self.cpu_limit)


class ResourceSection(Section):
    """What the node offers kernels: detected capacity minus reserved amounts."""

    #: whole cores kept for the host (the lowest core ids)
    reserved_cpu: int = Field(default=0, ge=0)
    #: memory kept for the host and the agent
    reserved_mem: int = 512 * 1024**2
    #: "auto": report NVIDIA GPUs found through NVML; "off": never
    cuda: Literal["auto", "off"] = "auto"
    #: "device": whole GPUs (cuda.device); "shares": fractions in quanta of 0.1 (cuda.shares)
    cuda_mode: Literal["device", "shares"] = "device"
    #: how GPUs reach containers: "auto" (the NVIDIA toolkit where Docker has it, else the
    #: device nodes and driver libraries), "toolkit" or "device-nodes" (docs/resources.md)
    cuda_access: Literal["auto", "toolkit", "device-nodes"] = "auto"

    @field_validator("reserved_mem", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)


class HeartbeatSection(Section):
    #: seconds between heartbeats (NATS publish and etcd liveness refresh)
    interval: float = Field(default=10.0, gt=0)


class StatsSection(Section):
    enabled: bool = True
    #: seconds between stats samples written to Redis
    interval: float = Field(default=5.0, gt=0)
    #: expiry of the node's key (seconds)
    node_ttl: int = Field(default=120, ge=1)
    #: expiry of a kernel's key: it disappears soon after the kernel dies
    kernel_ttl: int = Field(default=10, ge=1)


class RedisSection(Section):
    url: str = "redis://127.0.0.1:6379/0"


class EtcdSection(Section):
    """Cluster-wide settings and the agent's liveness key."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=2379, ge=1, le=65535)
    #: keys live under /kernlet/<namespace>/ (several clusters can share one etcd)
    namespace: str = Field(default="local", pattern=r"^[A-Za-z0-9_.-]+$")
    user: str | None = None
    password: str | None = None
    timeout: float = Field(default=3.0, gt=0)
    #: seconds the liveness key outlives the last heartbeat (about three heartbeats)
    lease_ttl: int = Field(default=30, ge=2)


class LimitsSection(Section):
    #: largest request body accepted over NATS (bytes)
    max_request: int = 1024 * 1024
    #: largest code string accepted by execute (bytes)
    max_code: int = 512 * 1024
    #: output of one run the agent holds for its caller (bytes); past it the runtime is held
    #: back (its own buffer slows batch commands or drops query output, with a note)
    run_output_buffer: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)

    @field_validator("max_request", "max_code", "run_output_buffer", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)


class StorageSection(Section):
    """Where kernels' mounts may come from: named roots (``roots = {vfroot = "/srv/vf"}``);
    a mount names a root and a path under it (see kernlet.drivers.storage)."""

    roots: dict[str, Path] = Field(default_factory=dict)

    @field_validator("roots")
    @classmethod
    def _roots(cls, v: dict[str, Path]) -> dict[str, Path]:
        for name, path in v.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise ValueError(f"root name {name!r}: letters, digits, _ . - (64 at most)")
            if not path.is_absolute():
                raise ValueError(f"root {name!r}: {str(path)!r} is not an absolute path")
        return v


class AgentConfig(Section):
    """The whole agent configuration."""

    agent: AgentSection = AgentSection()
    nats: NatsSection = NatsSection()
    docker: DockerSection = DockerSection()
    container: ContainerSection = ContainerSection()
    resource: ResourceSection = ResourceSection()
    heartbeat: HeartbeatSection = HeartbeatSection()
    stats: StatsSection = StatsSection()
    redis: RedisSection = RedisSection()
    etcd: EtcdSection = EtcdSection()
    limits: LimitsSection = LimitsSection()
    watcher: WatcherSection = WatcherSection()
    logging: LoggingSection = LoggingSection()
    debug: DebugSection = DebugSection()
    storage: StorageSection = StorageSection()
    #: ``[registries."host:port"]``: credentials per registry (kernlet.config_registries)
    registries: dict[str, RegistrySection] = Field(default_factory=dict)
    #: ``[pool."image"]``: the warm pool, per image (kernlet.config_pool; docs/pool.md)
    pool: dict[str, PoolEntry] = Field(
        default_factory=dict,
        description="The warm pool (docs/pool.md): per image, kernels kept created and "
                    "booted for creates that fit (same image, cpu, mem, shm-size; no mounts, "
                    "slots, environ, bootstrap, preopen ports or cluster). Each holds its "
                    "cpu, memory and cores while idle. None by default.")

    @property
    def log_dir(self) -> Path:
        """The event log's dir (``agent.log-dir``, default ``<var-dir>/log``)."""
        return self.agent.log_dir or self.agent.var_dir / "log"

    @property
    def log_path(self) -> Path:
        """The event log; an agent of before log-dir keeps using ``<var-dir>/events.sqlite``
        while log-dir is not set and that file exists."""
        legacy = self.agent.var_dir / "events.sqlite"
        if self.agent.log_dir is None and legacy.exists():
            return legacy
        return self.log_dir / "events.sqlite"

    @property
    def kept_logs_dir(self) -> Path:
        """Where the kept output of terminated kernels lives, beside the event log."""
        return self.log_path.parent / "kernel-logs"

    @property
    def advertised_host(self) -> str:
        """Where this node's published ports are reached (agent.advertised-host)."""
        return self.agent.advertised_host or self.container.bind_host

    @property
    def scratch_root(self) -> Path:
        return self.agent.var_dir / "scratch"

    @property
    def ipc_root(self) -> Path:
        return self.agent.var_dir / "ipc"


#: settings that only the local file may set (identity, how to reach etcd itself, the host
#: paths kernels may mount, logging, configured once at start)
LOCAL_ONLY = {"agent/id", "agent/var-dir", "agent/log-dir", "etcd", "nats", "docker/url",
              "debug", "registries", "storage", "logging", "pool"}


def apply_cluster(cfg: AgentConfig, cluster: dict[str, str]) -> tuple[AgentConfig, list[str]]:
    """Cluster-wide settings from etcd (``section/key`` -> string) applied under the local
    file: a key the local file sets wins. Returns the new config and the keys refused (local
    only, unknown, or invalid: those leave the config as it was)."""
    data = cfg.model_dump(by_alias=True)
    refused: list[str] = []
    for key, value in sorted(cluster.items()):
        section, _, name = key.partition("/")
        model = getattr(cfg, section.replace("-", "_"), None)
        field = name.replace("-", "_")
        if (key in LOCAL_ONLY or section in LOCAL_ONLY or not isinstance(model, BaseModel)
                or field not in type(model).model_fields):
            refused.append(key)
            continue
        if field in model.model_fields_set:
            continue  # the local file said so
        candidate = {**data, section: {**data[section], name: value}}
        try:
            AgentConfig.model_validate(candidate)
        except ValidationError:
            refused.append(key)
            continue
        data = candidate
    merged = AgentConfig.model_validate(data)
    # keep "set locally" marks, so that the next change is judged against the file again
    for section in type(cfg).model_fields:
        if not isinstance(getattr(cfg, section), BaseModel):
            continue  # registries: a table of tables, local only
        getattr(merged, section).model_fields_set.clear()
        getattr(merged, section).model_fields_set.update(getattr(cfg, section).model_fields_set)
    return merged, refused


def find_config() -> Path | None:
    for candidate in SEARCH_PATH:
        path = candidate.expanduser()
        if path.is_file():
            return path
    return None


def _issues(err: ValidationError) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in e["loc"]) or "(top)", str(e["msg"]))
            for e in err.errors()]


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Read, merge and validate the configuration. ``path=None`` searches SEARCH_PATH."""
    data: dict[str, Any] = {}
    source = path if path is not None else find_config()
    if source is not None:
        try:
            data = tomllib.loads(Path(source).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{source}: {exc}", [("(file)", str(exc))]) from exc
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    where = f"{source}: " if source else ""
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as exc:
        issues = _issues(exc)
        raise ConfigError(where + "; ".join(f"{k}: {m}" for k, m in issues), issues) from exc
    try:
        cfg.nats.check_files()
    except ConfigError as exc:
        key, _, msg = str(exc).partition(": ")
        raise ConfigError(f"{where}{exc}", [(key, msg)]) from exc
    return cfg
