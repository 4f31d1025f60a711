"""Docker Engine driver over aiodocker: the real :class:`ContainerRuntime`.

Returns kernlet's own dataclasses (defined in :mod:`kernlet.drivers.container_runtime`, and
re-exported here), never aiodocker objects. aiodocker errors are translated into kernlet errors
in one place, :func:`~kernlet.drivers.docker_errors.translated`. Only aiodocker's public API
is used. All methods run on the agent's event loop. The image operations are in
:mod:`kernlet.drivers.docker_images`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiodocker

from kernlet.drivers.container_runtime import (
    LABEL_AGENT,
    LABEL_KERNEL,
    LABEL_POOL,
    LABEL_SESSION,
    ContainerEvent,
    ContainerInfo,
    ContainerRuntime,
    ContainerSpec,
    ImageInfo,
    NetworkInfo,
    PullProgress,
)
from kernlet.drivers.docker_errors import translated
from kernlet.drivers.docker_images import DockerImages
from kernlet.errors import ContainerNotFound, DockerError, ImageNotFound

__all__ = [
    "LABEL_AGENT",
    "LABEL_KERNEL",
    "LABEL_POOL",
    "LABEL_SESSION",
    "ContainerEvent",
    "ContainerInfo",
    "ContainerSpec",
    "DockerDriver",
    "ImageInfo",
    "NetworkInfo",
    "PullProgress",
    "translated",
]

log = logging.getLogger(__name__)


def _container_info(raw: dict[str, Any]) -> ContainerInfo:
    state = raw.get("State") or {}
    cfg = raw.get("Config") or {}
    running = bool(state.get("Running"))
    return ContainerInfo(
        id=raw["Id"],
        name=str(raw.get("Name", "")).lstrip("/"),
        running=running,
        status=str(state.get("Status", "")),
        exit_code=None if running else state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        labels=dict(cfg.get("Labels") or {}),
        created=_epoch(str(raw.get("Created", ""))),
    )


def _epoch(iso: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as epoch seconds (0.0 if unparsable)."""
    try:
        head, _, frac = iso.rstrip("Z").partition(".")
        stamp = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC)
        return stamp.timestamp() + (float(f"0.{frac}") if frac else 0.0)
    except ValueError:
        return 0.0


class DockerDriver(DockerImages):
    """Async Docker client for kernel containers (its image operations: DockerImages)."""

    def __init__(self, url: str = "unix:///var/run/docker.sock") -> None:
        self._url = url
        self._docker: aiodocker.Docker | None = None
        self._events_busy = False

    @property
    def _d(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self._url)
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    async def ping(self) -> None:
        with translated("ping"):
            await self._d.version()

    async def runtimes(self) -> list[str]:
        with translated("info"):
            info = await self._d.system.info()
        return sorted((info.get("Runtimes") or {}).keys())

    async def ensure_network(self, name: str, internal: bool,
                             labels: dict[str, str] | None = None) -> None:
        with translated(f"network {name}", DockerError):
            existing = await self._d.networks.list(filters={"name": [name]})
            if any(n.get("Name") == name for n in existing):
                return
            await self._d.networks.create({
                "Name": name, "Driver": "bridge", "Internal": internal,
                "CheckDuplicate": True,
                "Labels": {"ai.kernlet.network": "kernels", **(labels or {})},
            })

    async def remove_network(self, name: str) -> None:
        with contextlib.suppress(ContainerNotFound), translated(f"remove network {name}"):
            network = await self._d.networks.get(name)
            await network.delete()

    async def networks(self, labels: dict[str, str]) -> list[NetworkInfo]:
        flt = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with translated("list networks", DockerError):
            raws = await self._d.networks.list(filters=flt)
        return [NetworkInfo(name=str(r.get("Name", "")), labels=dict(r.get("Labels") or {}),
                            created=_epoch(str(r.get("Created", "")))) for r in raws]

    async def create(self, spec: ContainerSpec) -> str:
        host_config: dict[str, Any] = {
            "Init": True,
            "Binds": [f"{h}:{c}:{'ro' if ro else 'rw'}" for h, c, ro in spec.mounts],
            "SecurityOpt": ["no-new-privileges"],
            "CapDrop": ["ALL"],
            "PortBindings": {
                f"{cport}/tcp": [{"HostIp": spec.bind_host, "HostPort": str(hport)}]
                for cport, hport in spec.ports.items()
            },
        }
        if spec.nano_cpus:
            host_config["NanoCpus"] = spec.nano_cpus
        if spec.cpu_shares:
            host_config["CpuShares"] = spec.cpu_shares
        if spec.cpuset:
            host_config["CpusetCpus"] = spec.cpuset
        if spec.memory:
            host_config["Memory"] = spec.memory
            host_config["MemorySwap"] = spec.memory
        if spec.pids_limit:
            host_config["PidsLimit"] = spec.pids_limit
        if spec.network:
            host_config["NetworkMode"] = spec.network
        if spec.read_only:
            host_config["ReadonlyRootfs"] = True
        if spec.tmpfs:
            host_config["Tmpfs"] = dict(spec.tmpfs)
        if spec.gpus:
            host_config["DeviceRequests"] = [{"Driver": "nvidia", "DeviceIDs": list(spec.gpus),
                                              "Capabilities": [["gpu"]]}]
        if spec.devices:
            host_config["Devices"] = [{"PathOnHost": d, "PathInContainer": d,
                                       "CgroupPermissions": "rwm"} for d in spec.devices]
        if spec.shm_size:
            host_config["ShmSize"] = spec.shm_size
        if spec.ulimits:
            host_config["Ulimits"] = [{"Name": n, "Soft": v, "Hard": v}
                                      for n, v in spec.ulimits.items()]
        config: dict[str, Any] = {
            "Hostname": spec.hostname,
            "Image": spec.image,
            "Cmd": list(spec.cmd),
            "Labels": spec.labels,
            "Env": [f"{k}={v}" for k, v in spec.env.items()],
            "User": spec.user,
            "WorkingDir": spec.workdir,
            "StopSignal": "SIGINT",
            "ExposedPorts": {f"{p}/tcp": {} for p in spec.ports},
            "HostConfig": host_config,
        }
        if spec.network and spec.aliases:
            config["NetworkingConfig"] = {
                "EndpointsConfig": {spec.network: {"Aliases": list(spec.aliases)}}}
        with translated(f"create container {spec.name} from image {spec.image}", ImageNotFound):
            container = await self._d.containers.create(config, name=spec.name)
        return str(container.id)

    async def start(self, container_id: str) -> None:
        with translated(f"start container {container_id[:12]}"):
            await self._d.containers.container(container_id).start()

    async def stop(self, container_id: str, grace: float) -> None:
        with translated(f"stop container {container_id[:12]}"):
            await self._d.containers.container(container_id).stop(t=int(grace))

    async def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        with translated(f"kill container {container_id[:12]}"):
            await self._d.containers.container(container_id).kill(signal=signal)

    async def remove(self, container_id: str, wait: float = 30.0) -> None:
        """Remove a container (force); one already gone, or being removed, is not an error.

        Returns when the container no longer exists (or after ``wait`` seconds).
        """
        try:
            with translated(f"remove {container_id[:12]}"):
                await self._d.containers.container(container_id).delete(force=True, v=True)
            return
        except ContainerNotFound:
            return
        except DockerError as exc:
            if "already in progress" not in exc.message:
                raise
        deadline = asyncio.get_running_loop().time() + wait
        while asyncio.get_running_loop().time() < deadline:
            try:
                await self.inspect(container_id)
            except ContainerNotFound:
                return
            await asyncio.sleep(0.1)

    async def inspect(self, container_id: str) -> ContainerInfo:
        with translated(f"inspect container {container_id[:12]}"):
            raw = await self._d.containers.container(container_id).show()
        return _container_info(raw)

    async def list(self, labels: dict[str, str]) -> list[ContainerInfo]:
        """Containers (running or not) carrying all of these labels.

        One list call; only containers that are not running are inspected (for their exit
        code and OOM flag), so a relist of many running kernels stays cheap.
        """
        flt = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with translated("list containers"):
            items = await self._d.containers.list(all=True, filters=json.dumps(flt))
        out = []
        for item in items:
            # the list entry's fields, read through DockerContainer's public item access
            raw = {k: item[k] for k in ("State", "Names", "Labels", "Created") if k in item}
            if raw.get("State") == "running":
                names = raw.get("Names") or [""]
                out.append(ContainerInfo(
                    id=item.id, name=str(names[0]).lstrip("/"), running=True,
                    status="running", exit_code=None, oom_killed=False,
                    labels=dict(raw.get("Labels") or {}), created=float(raw.get("Created", 0)),
                ))
                continue
            with contextlib.suppress(ContainerNotFound):
                out.append(await self.inspect(item.id))
        return out

    async def exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        user: str = "",
        workdir: str = "",
        env: dict[str, str] | None = None,
        wait: float | None = None,
    ) -> int | None:
        """Run a command in the container (detached). With ``wait``, wait up to that many
        seconds for it to end and return its exit code; else return None at once."""
        with translated(f"exec in {container_id[:12]}"):
            ex = await self._d.containers.container(container_id).exec(
                [*argv], stdout=False, stderr=False, user=user, workdir=workdir or None,
                environment=env or None,
            )
            await ex.start(detach=True)
            if wait is None:
                return None
            deadline = asyncio.get_running_loop().time() + wait
            while True:
                info = await ex.inspect()
                if not info.get("Running"):
                    return int(info.get("ExitCode") or 0)
                if asyncio.get_running_loop().time() >= deadline:
                    raise DockerError(f"exec {argv[0]} in {container_id[:12]}: still running "
                                      f"after {wait:.0f} s")
                await asyncio.sleep(0.1)

    async def logs(self, container_id: str, tail: int = 1000, since: float | None = None,
                   timestamps: bool = False) -> str:
        extra: dict[str, Any] = {"timestamps": timestamps}
        if since is not None:
            extra["since"] = f"{since:.6f}"  # Docker takes seconds.fraction
        with translated(f"logs of {container_id[:12]}"):
            lines = await self._d.containers.container(container_id).log(
                stdout=True, stderr=True, tail=tail, **extra
            )
        return "".join(lines)

    async def events(self, labels: dict[str, str]) -> AsyncIterator[ContainerEvent]:
        """Container events for containers with these labels, until cancelled.

        Reconnects after a broken stream (Docker restarts) with a short pause. aiodocker's
        event stream is one per client, so one ``events`` iterator per driver at a time (a
        second one raises DockerError at once).
        """
        if self._events_busy:
            raise DockerError("event stream: this driver already has one")
        self._events_busy = True
        flt = json.dumps(
            {"type": ["container"], "label": [f"{k}={v}" for k, v in labels.items()]}
        )
        try:
            while True:
                source = self._d.events
                # (aiodocker leaves subscribe() unannotated)
                feed = source.subscribe(create_task=False)  # type: ignore[no-untyped-call]
                stream = asyncio.create_task(source.run(filters=flt))
                try:
                    # run() publishes each event, then None once the stream ends or fails
                    while (raw := await feed.get()) is not None:
                        yield _container_event(raw)
                    with translated("event stream"):
                        await stream
                    log.warning("docker event stream ended; reconnecting")
                except DockerError as exc:
                    log.warning("docker event stream broke (%s); reconnecting", exc)
                finally:
                    stream.cancel()
                    await asyncio.wait([stream])
                await asyncio.sleep(1.0)
        finally:
            self._events_busy = False


def _container_event(raw: dict[str, Any]) -> ContainerEvent:
    actor = raw.get("Actor") or {}
    attrs = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
    code = attrs.get("exitCode")
    return ContainerEvent(
        action=str(raw.get("Action") or raw.get("status") or ""),
        container_id=str(actor.get("ID") or raw.get("id") or ""),
        labels=attrs,
        exit_code=int(code) if code is not None else None,
    )


_check: type[ContainerRuntime] = DockerDriver  # mypy: DockerDriver implements the interface
