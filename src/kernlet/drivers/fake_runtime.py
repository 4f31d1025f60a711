"""An in-memory :class:`ContainerRuntime` for unit tests of the kernel lifecycle without Docker.

Containers run nothing: a test says what their process does (``kill_container`` for a death,
``FakeContainer.ignores_stop`` for a process that needs the SIGKILL). Everything else follows
Docker as kernlet sees it (the contract scenario in ``tests/fixtures/runtime_contract.py`` runs
against this and the real driver): states created/running/exited, exit code 0 for a container
never started, label filters, 404s as ContainerNotFound/ImageNotFound, a taken name as
DockerError, and the events Docker sends (create, start, kill, oom, die, stop, destroy) to every
``events`` iterator whose labels match. Nothing waits on a clock: a stop that needs the SIGKILL
ends at once with 137.

Fault injection: ``fail_next(method, exc)`` makes the next call of a method raise;
``block(method)`` holds the next call until the returned :class:`Gate` is released, so that a
test can act while a step is in flight. ``calls`` logs every call, in order.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from kernlet.drivers.container_runtime import (
    ContainerEvent,
    ContainerInfo,
    ContainerRuntime,
    ContainerSpec,
    ImageInfo,
    NetworkInfo,
    PullProgress,
)
from kernlet.drivers.image_ops import ImageRecord, RegistryAuth
from kernlet.errors import ContainerNotFound, DockerError, ImageInUse, ImageNotFound

__all__ = ["FakeContainer", "FakeRuntime", "Gate"]

_T = TypeVar("_T")

#: the methods that fail_next and block accept
METHODS = frozenset({
    "close", "ping", "runtimes", "ensure_network", "remove_network", "networks", "image",
    "pull", "images", "create", "start", "stop", "remove", "inspect", "list", "exec", "logs",
    "events", "commit", "push", "tag", "remove_image", "inventory",
})


@dataclass
class FakeContainer:
    """One container; tests may change its fields (e.g. ``ignores_stop``)."""

    id: str
    spec: ContainerSpec
    created: float
    status: str = "created"  #: created | running | exited
    exit_code: int = 0
    oom_killed: bool = False
    #: the exit code its process gives a stop (SIGINT) within the grace
    stop_exit_code: int = 0
    #: its process ignores SIGINT: a stop ends it with SIGKILL (137) after the grace
    ignores_stop: bool = False
    #: what logs() returns (the last lines of it)
    output: str = ""
    #: exit code of every exec with wait
    exec_exit_code: int = 0

    def info(self) -> ContainerInfo:
        running = self.status == "running"
        return ContainerInfo(
            id=self.id, name=self.spec.name, running=running, status=self.status,
            exit_code=None if running else self.exit_code, oom_killed=self.oom_killed,
            labels=dict(self.spec.labels), created=self.created,
        )


class Gate:
    """A held call: ``entered`` is set once the call is waiting; ``release()`` lets it go on."""

    def __init__(self, after: bool) -> None:
        self.after = after
        self.entered = asyncio.Event()
        self._open = asyncio.Event()

    def release(self) -> None:
        self._open.set()

    async def _pass(self) -> None:
        self.entered.set()
        await self._open.wait()


@dataclass
class _Subscriber:
    labels: dict[str, str]
    queue: asyncio.Queue[ContainerEvent] = field(default_factory=asyncio.Queue)


def _matches(want: dict[str, str], have: dict[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


class FakeRuntime:
    """In-memory containers and images; deterministic ids (``sha256("fake-<n>")``)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.calls: builtins.list[tuple[str, ...]] = []
        self.containers: dict[str, FakeContainer] = {}
        #: network name -> what it was made with
        self.nets: dict[str, NetworkInfo] = {}
        #: what ``runtimes()`` answers (Docker info's Runtimes)
        self.runtime_names: builtins.list[str] = ["runc"]
        self._images: dict[str, ImageInfo] = {}
        self._registry: dict[str, ImageInfo] = {}
        self._failures: dict[str, builtins.list[BaseException]] = {}
        self._gates: dict[str, builtins.list[Gate]] = {}
        self._subscribers: builtins.list[_Subscriber] = []
        self._clock = clock
        self._serial = 0

    # -- test controls ---------------------------------------------------------------------

    def add_image(
        self, name: str, labels: dict[str, str] | None = None, *, local: bool = True
    ) -> ImageInfo:
        """An image on this node (``local``), or only in its registry (for ``pull``)."""
        digest = hashlib.sha256(name.encode()).hexdigest()
        info = ImageInfo(id=f"sha256:{digest}", tags=(name,), labels=dict(labels or {}))
        (self._images if local else self._registry)[name] = info
        return info

    def kill_container(self, container_id: str, exit_code: int, oom: bool = False) -> None:
        """The container's process ends (by itself, or OOM-killed): events oom?, die."""
        c = self._get(container_id)
        if c.status != "running":
            raise ValueError(f"container {container_id[:12]} is not running")
        if oom:
            self._emit("oom", c)
        self._exit(c, exit_code, oom)

    def fail_next(self, method: str, exc: BaseException) -> None:
        """The next call of ``method`` raises ``exc`` (after any block on it)."""
        self._failures.setdefault(self._known(method), []).append(exc)

    def block(self, method: str, *, after: bool = False) -> Gate:
        """Hold the next call of ``method`` until ``release()``: before it takes effect, or
        with ``after`` once it took effect but before it returns."""
        gate = Gate(after)
        self._gates.setdefault(self._known(method), []).append(gate)
        return gate

    # -- ContainerRuntime ------------------------------------------------------------------

    async def close(self) -> None:
        await self._leave(await self._enter("close"), None)

    async def ping(self) -> None:
        await self._leave(await self._enter("ping"), None)

    async def runtimes(self) -> builtins.list[str]:
        return await self._leave(await self._enter("runtimes"), list(self.runtime_names))

    async def ensure_network(self, name: str, internal: bool,
                             labels: dict[str, str] | None = None) -> None:
        gate = await self._enter("ensure_network", name)
        self.nets.setdefault(name, NetworkInfo(name, dict(labels or {}), self._clock()))
        await self._leave(gate, None)

    async def remove_network(self, name: str) -> None:
        gate = await self._enter("remove_network", name)
        if any(c.spec.network == name for c in self.containers.values()):
            raise DockerError(f"remove network {name}: has active endpoints")
        self.nets.pop(name, None)
        await self._leave(gate, None)

    async def networks(self, labels: dict[str, str]) -> builtins.list[NetworkInfo]:
        gate = await self._enter("networks", *(f"{k}={v}" for k, v in labels.items()))
        found = [n for n in self.nets.values() if _matches(labels, n.labels)]
        return await self._leave(gate, found)

    async def image(self, name: str) -> ImageInfo:
        gate = await self._enter("image", name)
        if name not in self._images:
            raise ImageNotFound(f"inspect image {name}: No such image: {name}")
        return await self._leave(gate, self._images[name])

    async def pull(
        self, name: str, on_progress: Callable[[PullProgress], None] | None = None,
        auth: RegistryAuth | None = None,
    ) -> ImageInfo:
        gate = await self._enter("pull", name)
        info = self._registry.get(name) or self._images.get(name)
        if info is None:
            raise DockerError(f"pull {name}: manifest unknown")
        self._images[name] = info
        if on_progress is not None:
            on_progress(PullProgress(status="Download complete", current=1, total=1))
        return await self._leave(gate, info)

    async def images(self, label: str) -> builtins.list[ImageInfo]:
        gate = await self._enter("images", label)
        key, eq, value = label.partition("=")
        found = [i for i in self._images.values()
                 if key in i.labels and (not eq or i.labels[key] == value)]
        return await self._leave(gate, found)

    # -- ImageOps (in memory: a commit copies the base image's labels, a push copies the
    #    image into the fake registry)

    async def commit(
        self, container_id: str, ref: str, *, base_image: str, labels: dict[str, str],
        message: str = "",
    ) -> ImageInfo:
        gate = await self._enter("commit", container_id, ref)
        self._get(container_id)
        base = await self.image(base_image)
        self._serial += 1
        info = ImageInfo(id=f"sha256:{hashlib.sha256(f'fake-{self._serial}'.encode()).hexdigest()}",
                         tags=(ref,), labels={**base.labels, **labels})
        self._images[ref] = info
        return await self._leave(gate, info)

    async def push(
        self, ref: str, on_progress: Callable[[PullProgress], None] | None = None,
        auth: RegistryAuth | None = None,
    ) -> str:
        gate = await self._enter("push", ref)
        info = await self.image(ref)
        self._registry[ref] = info
        if on_progress is not None:
            on_progress(PullProgress(status="Pushed", current=1, total=1))
        return await self._leave(gate, info.id)

    async def tag(self, source: str, ref: str) -> None:
        gate = await self._enter("tag", source, ref)
        self._images[ref] = await self.image(source)
        await self._leave(gate, None)

    async def remove_image(self, ref: str, force: bool = False) -> builtins.list[str]:
        gate = await self._enter("remove_image", ref)
        info = await self.image(ref)
        others = [n for n, i in self._images.items() if i.id == info.id and n != ref]
        users = [c for c in self.containers.values()
                 if c.spec.image == ref or self._images.get(c.spec.image) == info]
        if users and not others and not force:
            raise ImageInUse(f"remove image {ref}: container {users[0].id[:12]} uses it")
        del self._images[ref]
        return await self._leave(gate, [ref] if others else [ref, info.id])

    async def inventory(self, label: str) -> builtins.list[ImageRecord]:
        gate = await self._enter("inventory", label)
        key, eq, value = label.partition("=")
        by_id: dict[str, ImageRecord] = {}
        for name, i in sorted(self._images.items()):
            if key in i.labels and (not eq or i.labels[key] == value):
                old = by_id.get(i.id)
                by_id[i.id] = ImageRecord(i.id, (*(old.tags if old else ()), name), (), 1,
                                          dict(i.labels))
        return await self._leave(gate, sorted(by_id.values(), key=lambda r: r.id))

    async def create(self, spec: ContainerSpec) -> str:
        gate = await self._enter("create", spec.name)
        if spec.network and spec.network not in ("none",) and spec.aliases and (
                spec.network not in self.nets):
            raise DockerError(f"create container {spec.name}: network {spec.network} not found")
        if spec.image not in self._images:
            raise ImageNotFound(f"create container {spec.name}: No such image: {spec.image}")
        if any(c.spec.name == spec.name for c in self.containers.values()):
            raise DockerError(f"create container {spec.name}: Conflict. The container name "
                              f'"/{spec.name}" is already in use')
        self._serial += 1
        cid = hashlib.sha256(f"fake-{self._serial}".encode()).hexdigest()
        self.containers[cid] = c = FakeContainer(id=cid, spec=spec, created=self._clock())
        self._emit("create", c)
        return await self._leave(gate, cid)

    async def start(self, container_id: str) -> None:
        gate = await self._enter("start", container_id)
        c = self._get(container_id)
        if c.status != "running":
            c.status, c.exit_code, c.oom_killed = "running", 0, False
            self._emit("start", c)
        await self._leave(gate, None)

    async def stop(self, container_id: str, grace: float) -> None:
        gate = await self._enter("stop", container_id, str(grace))
        c = self._get(container_id)
        if c.status == "running":
            self._emit("kill", c, signal="2")
            if c.ignores_stop:
                self._emit("kill", c, signal="9")
            self._exit(c, 137 if c.ignores_stop else c.stop_exit_code)
            self._emit("stop", c)
        await self._leave(gate, None)

    async def remove(self, container_id: str, wait: float = 30.0) -> None:
        gate = await self._enter("remove", container_id)
        c = self.containers.get(container_id)
        if c is not None:
            if c.status == "running":
                self._emit("kill", c, signal="9")
                self._exit(c, 137)
            del self.containers[c.id]
            self._emit("destroy", c)
        await self._leave(gate, None)

    async def inspect(self, container_id: str) -> ContainerInfo:
        gate = await self._enter("inspect", container_id)
        return await self._leave(gate, self._get(container_id).info())

    async def list(self, labels: dict[str, str]) -> builtins.list[ContainerInfo]:
        gate = await self._enter("list", *(f"{k}={v}" for k, v in labels.items()))
        found = [c.info() for c in reversed(self.containers.values())
                 if _matches(labels, c.spec.labels)]
        return await self._leave(gate, found)

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
        gate = await self._enter("exec", container_id, *argv)
        c = self._get(container_id)
        if c.status != "running":
            raise DockerError(f"exec in {container_id[:12]}: container is not running")
        return await self._leave(gate, None if wait is None else c.exec_exit_code)

    async def logs(self, container_id: str, tail: int = 1000, since: float | None = None,
                   timestamps: bool = False) -> str:
        """The fake keeps no times: ``since`` and ``timestamps`` are not modelled."""
        gate = await self._enter("logs", container_id)
        lines = self._get(container_id).output.splitlines(keepends=True)
        return await self._leave(gate, "".join(lines[-tail:] if tail > 0 else []))

    async def events(self, labels: dict[str, str]) -> AsyncIterator[ContainerEvent]:
        gate = await self._enter("events", *(f"{k}={v}" for k, v in labels.items()))
        sub = _Subscriber(dict(labels))
        self._subscribers.append(sub)
        try:
            await self._leave(gate, None)
            while True:
                yield await sub.queue.get()
        finally:
            self._subscribers.remove(sub)

    # -- inside ----------------------------------------------------------------------------

    def _known(self, method: str) -> str:
        if method not in METHODS:
            raise ValueError(f"FakeRuntime has no method {method!r}")
        return method

    async def _enter(self, method: str, *args: str) -> Gate | None:
        """Log the call; hold it at a before-gate; raise an injected failure."""
        self.calls.append((method, *args))
        gates = self._gates.get(method)
        gate = gates.pop(0) if gates else None
        if gate is not None and not gate.after:
            await gate._pass()
        failures = self._failures.get(method)
        if failures:
            raise failures.pop(0)
        return gate if gate is not None and gate.after else None

    async def _leave(self, gate: Gate | None, result: _T) -> _T:
        if gate is not None:
            await gate._pass()
        return result

    def _get(self, container_id: str) -> FakeContainer:
        c = self.containers.get(container_id) or next(
            (c for c in self.containers.values() if c.spec.name == container_id), None)
        if c is None:
            raise ContainerNotFound(f"container {container_id[:12]}: No such container")
        return c

    def _exit(self, c: FakeContainer, exit_code: int, oom: bool = False) -> None:
        c.status, c.exit_code, c.oom_killed = "exited", exit_code, oom
        self._emit("die", c, exitCode=str(exit_code))

    def _emit(self, action: str, c: FakeContainer, **attrs: str) -> None:
        labels = {**c.spec.labels, "name": c.spec.name, "image": c.spec.image, **attrs}
        code = attrs.get("exitCode")
        event = ContainerEvent(action, c.id, labels, int(code) if code is not None else None)
        for sub in self._subscribers:
            if _matches(sub.labels, c.spec.labels):
                sub.queue.put_nowait(event)


_check: type[ContainerRuntime] = FakeRuntime  # mypy: the fake implements the interface
