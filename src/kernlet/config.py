"""Agent configuration: a TOML file validated at start, with defaults that fit the halfstack.

Search path (first found wins): ``./agent.toml``, ``~/.config/kernlet/agent.toml``,
``/etc/kernlet/agent.toml``. Keys are kebab-case, grouped in tables; unknown keys are errors,
and every error names the key (``container.kernel-uid: Input should be a valid integer``).
"""

from __future__ import annotations

import importlib.util
import socket
import ssl
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kernlet.config_values import cpu_limit_factor, parse_origin, parse_size

__all__ = [
    "SEARCH_PATH",
    "AgentConfig",
    "ConfigError",
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

class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; the message names the key."""


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Section(BaseModel):
    model_config = ConfigDict(
        alias_generator=_kebab, populate_by_name=True, extra="forbid", frozen=True
    )


class AgentSection(_Section):
    id: str = Field(default_factory=lambda: f"agent-{socket.gethostname()}")
    region: str = "local"
    scaling_group: str = "default"
    #: where the event log, scratch dirs and runtime sockets live
    var_dir: Path = Path("/var/lib/kernlet")
    #: Docker create/start calls at once (kernels then boot their runtimes side by side)
    kernel_creation_concurrency: int = Field(default=8, ge=1, le=64)
    #: kernels torn down at once (a reset or a mass destroy runs in waves of this many)
    kernel_teardown_concurrency: int = Field(default=8, ge=1, le=64)
    #: seconds a create may take until its runtime answers
    create_timeout: float = Field(default=60.0, gt=0)
    #: seconds between relists of this agent's containers (the safety net for missed events)
    reconcile_interval: float = Field(default=5.0, gt=0)
    #: a container of this agent that no live kernel owns is removed once this old (seconds)
    orphan_grace: float = Field(default=60.0, ge=0)


class NatsSection(_Section):
    url: str = "nats://127.0.0.1:4222"
    subject_prefix: str = "kernlet"
    #: one way to authenticate: user and password, a token, or a .creds file (JWT and nkey)
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: Path | None = None
    #: CA file that enables TLS when set (verifies the server's certificate)
    tls_ca: Path | None = None
    #: the agent's own certificate and key (PEM), for servers that require client certs
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: publish events into a JetStream stream when the server has JetStream
    jetstream: bool = True
    stream_name: str = "KERNLET_EVENTS"

    @model_validator(mode="after")
    def _auth(self) -> NatsSection:
        ways = [k for k, v in (("user", self.user), ("token", self.token),
                               ("creds", self.creds)) if v is not None]
        if len(ways) > 1:
            raise ValueError(f"use one of user/password, token, creds; not {' and '.join(ways)}")
        if self.password is not None and self.user is None:
            raise ValueError("password needs user")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls-cert and tls-key go together")
        return self

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context these settings ask for (None: plain TCP, unless the URL says
        ``tls://``). ConfigError, naming the key, when a file cannot be loaded."""
        if self.tls_ca is None and self.tls_cert is None:
            return None
        try:
            ctx = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"nats.tls-ca: cannot load {self.tls_ca}: {exc}") from exc
        if self.tls_cert is not None:
            try:
                ctx.load_cert_chain(str(self.tls_cert), str(self.tls_key))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"nats.tls-cert/tls-key: cannot load {self.tls_cert} and "
                                  f"{self.tls_key}: {exc}") from exc
        return ctx

    def check_files(self) -> None:
        """Load what the files name, once at start: a missing or broken one is a ConfigError."""
        self.tls_context()
        if self.creds is not None:
            if not self.creds.is_file():
                raise ConfigError(f"nats.creds: no such file: {self.creds}")
            if importlib.util.find_spec("nkeys") is None:
                raise ConfigError("nats.creds: needs the nkeys package "
                                  "(pip install 'nats-py[nkeys]')")


class DockerSection(_Section):
    url: str = "unix:///var/run/docker.sock"


class ContainerSection(_Section):
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

    @field_validator("default_mem", "min_mem", "tmp_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)

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


class ResourceSection(_Section):
    """What the node offers kernels: detected capacity minus reserved amounts."""

    #: whole cores kept for the host (the lowest core ids)
    reserved_cpu: int = Field(default=0, ge=0)
    #: memory kept for the host and the agent
    reserved_mem: int = 512 * 1024**2
    #: "auto": report NVIDIA GPUs found through NVML; "off": never
    cuda: Literal["auto", "off"] = "auto"
    #: "device": whole GPUs (cuda.device); "shares": fractions in quanta of 0.1 (cuda.shares)
    cuda_mode: Literal["device", "shares"] = "device"

    @field_validator("reserved_mem", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)


class HeartbeatSection(_Section):
    #: seconds between heartbeats (NATS publish and etcd liveness refresh)
    interval: float = Field(default=10.0, gt=0)


class StatsSection(_Section):
    enabled: bool = True
    #: seconds between stats samples written to Redis
    interval: float = Field(default=5.0, gt=0)
    #: expiry of the node's key (seconds)
    node_ttl: int = Field(default=120, ge=1)
    #: expiry of a kernel's key: it disappears soon after the kernel dies
    kernel_ttl: int = Field(default=10, ge=1)


class RedisSection(_Section):
    url: str = "redis://127.0.0.1:6379/0"


class EtcdSection(_Section):
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


class LimitsSection(_Section):
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


class WatcherSection(_Section):
    """The operators' HTTP endpoint served by the watcher actor inside the agent."""

    enabled: bool = True
    host: str = "127.0.0.1"
    #: 0 picks a free port (tests); the reference uses 6009
    port: int = Field(default=6009, ge=0, le=65535)
    #: token required by the operations (header X-Kernlet-Token); None disables operations
    token: str | None = None
    #: origins besides the watcher's own whose pages may send operations (a browser's Origin
    #: header); canonical ``scheme://host:port``. A string is a comma-separated list (etcd).
    allowed_origins: tuple[str, ...] = ()

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [part for part in v.split(",") if part.strip()]
        if isinstance(v, (list, tuple)):
            return tuple(parse_origin(o) if isinstance(o, str) else o for o in v)
        return v


class LoggingSection(_Section):
    """The agent's own log (see kernlet.logs): level, text or JSON lines, stderr or a file."""

    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    #: "text": human lines with a [kernel K run R] prefix; "json": one object a line
    format: Literal["text", "json"] = "text"
    #: append to this file instead of writing to stderr
    file: Path | None = None


class DebugSection(_Section):
    """Fault injection for tests and drills; never enable in production."""

    #: accept the debug_fault command (makes a kernel actor raise)
    fault_injection: bool = False
    #: exit the agent process abruptly (like SIGKILL) right after an event of this type is
    #: durable; "type:N" waits for the N-th such event
    crash_after: str | None = None


class AgentConfig(_Section):
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

    @property
    def log_path(self) -> Path:
        return self.agent.var_dir / "events.sqlite"

    @property
    def scratch_root(self) -> Path:
        return self.agent.var_dir / "scratch"

    @property
    def ipc_root(self) -> Path:
        return self.agent.var_dir / "ipc"


#: settings that only the local file may set (identity, and how to reach etcd itself)
LOCAL_ONLY = {"agent/id", "agent/var-dir", "etcd", "nats", "docker/url", "debug", "logging"}


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
        getattr(merged, section).model_fields_set.clear()
        getattr(merged, section).model_fields_set.update(getattr(cfg, section).model_fields_set)
    return merged, refused


def find_config() -> Path | None:
    for candidate in SEARCH_PATH:
        path = candidate.expanduser()
        if path.is_file():
            return path
    return None


def _format(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top)"
        lines.append(f"{key}: {e['msg']}")
    return "; ".join(lines)


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Read, merge and validate the configuration. ``path=None`` searches SEARCH_PATH."""
    data: dict[str, Any] = {}
    source = path if path is not None else find_config()
    if source is not None:
        try:
            data = tomllib.loads(Path(source).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    where = f"{source}: " if source else ""
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(where + _format(exc)) from exc
    try:
        cfg.nats.check_files()
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from exc
    return cfg
