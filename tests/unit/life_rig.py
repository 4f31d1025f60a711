"""A whole agent core without Docker, NATS or a process: the real AgentActor and kernel actors
on a real loop thread, over FakeRuntime and MemoryEventLog, with a stand-in for the
in-container runtime (a unix socket that answers ``status``).

``crash_after(event_type)`` freezes the log after an event of that type is durable, as a
SIGKILL would; ``restart_agent()`` then builds a new agent core from what the log holds, the
containers left as they were, exactly as ``AgentService.start`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pykka

from kernlet.actors.agent import AgentActor
from kernlet.actors.context import AgentContext
from kernlet.actors.image_jobs import interrupted_jobs
from kernlet.actors.loop import LoopThread
from kernlet.actors.messages import Command
from kernlet.actors.outbox import Outbox
from kernlet.actors.pulls import interrupted_pulls
from kernlet.actors.reply import Reply
from kernlet.config import AgentConfig
from kernlet.drivers.docker import LABEL_KERNEL
from kernlet.drivers.fake_runtime import FakeRuntime
from kernlet.drivers.ports import PortPool
from kernlet.drivers.resources import CPU, MEM, Allocator, CudaAccess, SlotPool
from kernlet.events import AGENT_STREAM, Envelope, KernelState, is_live, replay
from kernlet.events.codec import FrameReader, frame
from kernlet.layout import IPC_IN_CONTAINER
from kernlet.store.memory import MemoryEventLog

IMAGE = "kernlet/python:3.11"
GiB = 1024**3


class RigRuntime(FakeRuntime):
    """FakeRuntime whose started containers answer on their runtime socket: ``status``
    (ready; busy with ``busy``), and every other op is kept in ``received``. ``finish`` sends
    a run's end to every connection, as the runtime does."""

    def __init__(self) -> None:
        super().__init__()
        self.servers: dict[str, asyncio.AbstractServer] = {}
        self.busy: str | None = None
        self.received: list[dict[str, Any]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._seq = 0
        #: how many status requests were answered (each agent's channel asks once it connects)
        self.statuses = 0

    def finish(self, run_id: str, exit_code: int) -> None:  # loop thread
        self._seq += 1
        msg = {"run_id": run_id, "t": "finished", "data": {"exitCode": exit_code},
               "seq": self._seq}
        for writer in self._writers:
            if not writer.is_closing():
                writer.write(frame(msg))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        frames = FrameReader()
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                for msg in frames.feed(data):
                    if msg.get("op") == "status":
                        self.statuses += 1
                        writer.write(frame({"req": msg["req"], "data": {
                            "ready": True, "runtime": "fake", "version": "0",
                            "busy": self.busy}}))
                    elif msg.get("op") != "ack":
                        self.received.append(msg)
                await writer.drain()
        self._writers.remove(writer)
        writer.close()

    async def start(self, container_id: str) -> None:
        await super().start(container_id)
        c = self.containers[container_id]
        ipc = next(host for host, inside, _ in c.spec.mounts if inside == IPC_IN_CONTAINER)
        path = Path(ipc) / "runtime.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.servers[container_id] = await asyncio.start_unix_server(self._serve, str(path))

    async def remove(self, container_id: str, wait: float = 30.0) -> None:
        await super().remove(container_id, wait)
        server = self.servers.pop(container_id, None)
        if server is not None:
            server.close()


class CrashingLog(MemoryEventLog):
    """Freezes (every later append waits forever) once an event of ``crash_type`` is in."""

    def __init__(self) -> None:
        super().__init__()
        self.crash_type = ""
        self.crashed = asyncio.Event()

    async def append(self, envs: Sequence[Envelope], *, lazy: bool = False) -> None:
        if self.crashed.is_set():
            await asyncio.Event().wait()
        await super().append(envs, lazy=lazy)
        if any(e.type == self.crash_type for e in envs):
            self.crashed.set()


class Rig:
    """``extra_pools`` (e.g. a cuda.device pool) join the 2 cores and 4 GiB; ``cuda`` is the
    node's GPU access (``AgentContext.cuda``); ``roots`` the storage roots; ``pool`` the
    ``[pool]`` table (the warm pool)."""

    def __init__(self, tmp: Path, extra_pools: Sequence[SlotPool] = (),
                 cuda: CudaAccess | None = None, roots: dict[str, str] | None = None,
                 pool: dict[str, Any] | None = None) -> None:
        self.tmp = tmp
        self.extra_pools = tuple(extra_pools)
        self.cuda = cuda
        self.loop = LoopThread().start()
        self.docker = RigRuntime()
        self.docker.add_image(IMAGE, {"ai.kernlet.kernelspec": "1"})
        self.cfg = AgentConfig.model_validate({
            "agent": {"id": "rig", "var-dir": str(tmp / "var")},
            "container": {"stop-grace": 0.1, "default-cpu": 0.5},
            "storage": {"roots": roots or {}},
            "pool": pool or {},
        })
        for d in (self.cfg.scratch_root, self.cfg.ipc_root):
            d.mkdir(parents=True, exist_ok=True)
        self.store = CrashingLog()
        self.agent = self._start_agent(self.store, {})

    def _start_agent(self, store: MemoryEventLog,
                     live: dict[str, KernelState]) -> pykka.ActorRef[Any]:
        self.loop.run(store.open())
        ctx = AgentContext(cfg=self.cfg, loop=self.loop, store=store,
                           docker=self.docker,  # type: ignore[arg-type]
                           outbox=Outbox(None, store, "kernlet", "rig"),  # type: ignore[arg-type]
                           create_slots=self.loop.run(_semaphore()),
                           teardown_slots=self.loop.run(_semaphore(2)), cuda=self.cuda)
        allocator = Allocator([SlotPool(CPU, {"0": Decimal(1), "1": Decimal(1)}),
                               SlotPool(MEM, {"0": Decimal(4 * GiB)}), *self.extra_pools])
        agent = AgentActor.start(ctx, set(self.loop.run(store.kernel_ids())), allocator,
                                 PortPool(30000, 30010))
        agent.proxy().adopt(live).get()
        agent_events = self.loop.run(store.read_stream(AGENT_STREAM))
        agent.proxy().resume_pulls(interrupted_pulls(agent_events)).get()
        for failed in interrupted_jobs(agent_events):  # as service.py does at start
            self.loop.run(ctx.record_agent(failed))
        return agent

    # -- driving ----------------------------------------------------------------------------

    def call(self, request: Any, timeout: float = 10) -> Any:
        async def ask() -> Any:
            reply = Reply.new(asyncio.get_running_loop())
            self.agent.tell(Command(request, reply))
            return await asyncio.wait_for(reply.future, timeout)
        return self.loop.run(ask())

    def submit(self, request: Any) -> Any:
        """Send a command; a concurrent future of its answer."""
        async def ask() -> Any:
            reply = Reply.new(asyncio.get_running_loop())
            self.agent.tell(Command(request, reply))
            return await asyncio.wait_for(reply.future, 20)
        return self.loop.submit(ask())

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()
        return self.loop.run(run())

    def events(self, kernel_id: str, store: MemoryEventLog | None = None) -> list[str]:
        return [e.type for e in self.loop.run((store or self.store).read_stream(kernel_id))]

    def wait(self, pred: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.01)

    # -- crash and restart ------------------------------------------------------------------

    def crash_after(self, event_type: str) -> None:
        self.store.crash_type = event_type

    def restart_agent(self) -> MemoryEventLog:
        """SIGKILL and start again: actors gone, containers and dirs left, log as it was."""
        self.wait(self.store.crashed.is_set)
        pykka.ActorRegistry.stop_all()
        old = self.store
        store = MemoryEventLog()
        self.loop.run(store.open())
        for stream in {AGENT_STREAM, *self.loop.run(old.kernel_ids())}:
            self.loop.run(store.append(self.loop.run(old.read_stream(stream))))
        live = {}
        for kernel_id in self.loop.run(store.kernel_ids()):
            if kernel_id != AGENT_STREAM:
                state = replay(self.loop.run(store.read_stream(kernel_id)))
                if state is not None and is_live(state):
                    live[kernel_id] = state
        self.agent = self._start_agent(store, live)
        return store

    # -- what is held -----------------------------------------------------------------------

    def containers(self, kernel_id: str) -> list[str]:
        return [c.id for c in self.docker.containers.values()
                if c.spec.labels.get(LABEL_KERNEL) == kernel_id]

    def dirs(self, kernel_id: str) -> list[Path]:
        var = self.cfg.agent.var_dir
        return [p for p in (self.cfg.scratch_root / kernel_id, self.cfg.ipc_root / kernel_id,
                            var / "config" / kernel_id, var / "mounts" / kernel_id)
                if p.exists()]

    def slots_used(self) -> dict[str, str]:
        slots = self.call(_hwinfo())["slots"]
        return {name: s["used"] for name, s in slots.items()}

    def close(self) -> None:
        pykka.ActorRegistry.stop_all()
        self.loop.stop()


def _hwinfo() -> Any:
    from kernlet.protocol import GatherHwinfo
    return GatherHwinfo()


async def _semaphore(n: int = 4) -> asyncio.Semaphore:
    return asyncio.Semaphore(n)
