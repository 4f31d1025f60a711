"""The floor for creating a kernel: the same container, made directly, no agent.

The container is built by the agent's own :func:`kernlet.actors.steps.container_spec` (same
image, mounts, limits, user, command, labels; the labels carry the bench's own agent id), from
the allocation the agent gave its own kernel in the same figure (slots and pinned cores), and
created and started through :class:`kernlet.drivers.docker.DockerDriver`, the agent's thin
aiodocker adapter that turns that spec into the Docker API's config. Readiness is the agent's
own test: :class:`kernlet.drivers.runtime.RuntimeChannel` connects to the runtime's socket and
asks ``status`` until it says ready. What is left out is exactly what kernlet adds: NATS,
request validation, actors, the event log, the image check and the leftover-container check.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any

from kernlet.actors import steps
from kernlet.config import AgentConfig
from kernlet.drivers.docker import DockerDriver
from kernlet.drivers.runtime import RuntimeChannel
from kernlet.events import KernelCreating, KernelPreparing, KernelState, new_envelope, replay

__all__ = ["DirectKernel", "DirectKernels", "Placement"]

#: (slots as the agent records them, e.g. {"cpu": "1", "mem": "536870912"}; pinned cores)
Placement = tuple[dict[str, str], tuple[int, ...]]


@dataclass
class DirectKernel:
    kernel_id: str
    container_id: str
    channel: RuntimeChannel
    dirs: steps.KernelDirs
    finished: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    def on_run(self, msg: dict[str, Any]) -> None:
        fut = self.finished.get(str(msg.get("run_id")))
        if fut is not None and msg.get("t") == "finished" and not fut.done():
            fut.set_result(msg)

    async def run(self, code: str, timeout: float = 60.0) -> dict[str, Any]:
        """Run code on the runtime; returns its ``finished`` message (output is ignored)."""
        run_id = uuid.uuid4().hex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.finished[run_id] = fut
        try:
            await self.channel.send({"op": "execute", "run_id": run_id, "mode": "query",
                                     "code": code})
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.finished.pop(run_id, None)


class DirectKernels:
    """Kernel containers made without an agent. ``cfg.agent.id`` labels them for cleanup."""

    def __init__(self, cfg: AgentConfig, image: str) -> None:
        self.cfg = cfg
        self.image = image
        self.docker = DockerDriver(cfg.docker.url)
        self.live: dict[str, DirectKernel] = {}

    def state(self, kernel_id: str, dirs: steps.KernelDirs, placement: Placement) -> KernelState:
        """The kernel's state as the agent would have it when it makes the container."""
        slots, cpuset = placement
        envs = [
            new_envelope(kernel_id, 1, KernelPreparing(session_id=kernel_id, image=self.image,
                                                       config={"image": self.image})),
            new_envelope(kernel_id, 2, KernelCreating(slots=dict(slots), cpuset=tuple(cpuset),
                                                      scratch_dir=str(dirs.scratch))),
        ]
        state = replay(envs)
        assert state is not None
        return state

    async def create(self, placement: Placement, timeout: float = 120.0) -> DirectKernel:
        """Create and start a kernel container with this allocation (slots and cores, as the
        agent placed its own kernel); returns once its runtime reports ready."""
        kernel_id = f"direct-{uuid.uuid4().hex[:12]}"
        dirs = await steps.prepare_dirs(self.cfg, kernel_id, "")
        spec = steps.container_spec(self.cfg, self.state(kernel_id, dirs, placement), dirs, {})
        container_id = await self.docker.create(spec)
        channel = RuntimeChannel(dirs.socket, lambda msg: kernel.on_run(msg), lambda: None)
        kernel = DirectKernel(kernel_id, container_id, channel, dirs)
        self.live[kernel_id] = kernel
        await self.docker.start(container_id)
        await kernel.channel.connect(timeout)
        return kernel

    async def remove(self, kernel: DirectKernel) -> None:
        self.live.pop(kernel.kernel_id, None)
        await kernel.channel.close()
        await self.docker.remove(kernel.container_id)
        await asyncio.to_thread(shutil.rmtree, kernel.dirs.scratch, True)
        await asyncio.to_thread(shutil.rmtree, kernel.dirs.ipc, True)

    async def remove_all(self) -> None:
        await asyncio.gather(*(self.remove(k) for k in list(self.live.values())),
                             return_exceptions=True)

    async def close(self) -> None:
        await self.remove_all()
        await self.docker.close()
