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
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; the message names the key."""


def parse_size(value: int | str) -> int:
    """Bytes from an int or a size string such as ``512m``, ``1.5GiB`` or ``1024``."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if m is None:
        raise ValueError(f"not a size: {value!r} (use e.g. 256m, 1g)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_origin(value: str) -> str:
    """A web origin in canonical form, ``scheme://host:port`` (lower case, port always given):
    ``HTTPS://Ops.Example`` is ``https://ops.example:443``. Only http and https origins, with
    no user, path, query or fragment; ``ValueError`` otherwise (``null`` included)."""
    try:
        u = urlsplit(value.strip())
        port = u.port
    except ValueError as exc:
        raise ValueError(f"not an origin: {value!r} ({exc})") from None
    scheme = u.scheme.lower()
    if scheme not in ("http", "https") or not u.hostname or u.username is not None \
            or u.password is not None or u.path not in ("", "/") or u.query or u.fragment \
            or "#" in value or "?" in value:
        raise ValueError(f"not an origin: {value!r} (use scheme://host[:port], e.g. "
                         "https://ops.example.com)")
    host = u.hostname  # lower case, without the brackets of an IPv6 address
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port if port is not None else _DEFAULT_PORT[scheme]}"


_DEFAULT_PORT = {"http": 80, "https": 443}


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
    #: seconds a create may take until its runtime answers
    create_timeout: float = Field(default=60.0, gt=0)
    #: seconds between relists of this agent's containers (the safety net for missed events)
    reconcile_interval: float = Field(default=5.0, gt=0)
    #: a container of this agent that no live kernel owns is removed once this old (seconds)
    orphan_grace: float = Field(default=60.0, ge=0)


class NatsSection(_Section):
    url: str = "nats://127.0.0.1:4222"
    subject_prefix: str = "kernlet"
    user: str | None = None
    password: str | None = None
    #: CA file that enables TLS when set
    tls_ca: Path | None = None
    #: publish events into a JetStream stream when the server has JetStream
    jetstream: bool = True
    stream_name: str = "KERNLET_EVENTS"


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
    #: pull a missing image at create time when its name names a registry (host[:port]/...)
    auto_pull: bool = True
    #: seconds a pull may take
    pull_timeout: float = Field(default=7200.0, gt=0)

    @field_validator("default_mem", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)


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
LOCAL_ONLY = {"agent/id", "agent/var-dir", "etcd", "nats", "docker/url", "debug"}


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
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        where = f"{source}: " if source else ""
        raise ConfigError(where + _format(exc)) from exc
