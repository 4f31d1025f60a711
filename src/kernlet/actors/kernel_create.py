"""Creating and restarting a kernel: the steps, in the order the module kernel.py draws."""


from __future__ import annotations

import logging
import time
from typing import Any

from kernlet.actors import steps
from kernlet.actors.kernel_base import KernelBase
from kernlet.actors.messages import (
    Allocate,
    Allocated,
    Create,
    Restart,
)
from kernlet.errors import (
    CreationFailed,
    ImageNotFound,
    InsufficientResource,
    InvalidRequest,
    KernelNotRunning,
)
from kernlet.events import (
    ContainerCreated,
    KernelCreating,
    KernelPreparing,
    KernelPulling,
    KernelRestarting,
    KernelStarted,
    KernelTerminating,
    can_execute,
    is_live,
    is_terminating,
)
from kernlet.runner.services import parse_service_ports

log = logging.getLogger(__name__)

KERNELSPEC_LABEL = "ai.kernlet.kernelspec"
SERVICE_PORTS_LABEL = "ai.kernlet.service-ports"


__all__ = ["CreateSteps"]


class CreateSteps(KernelBase):
    """preparing → (pulling) → allocate → dirs → creating → container → started."""

    # -- create ---------------------------------------------------------------------------

    def _create(self, msg: Create) -> None:
        self._create_done = msg.done
        self._create_started = time.monotonic()
        self._record(
            KernelPreparing(session_id=msg.session_id, image=msg.image, config=msg.config),
            then=self._check_image,
        )

    def _check_image(self) -> None:
        assert self.state is not None
        self._step(self.ctx.docker.image(self.state.image), then=self._image_ok,
                   fail=self._image_missing)

    def _image_missing(self, err: BaseException) -> None:
        """Pull the image when the name names a registry (auto-pull); else fail."""
        assert self.state is not None
        image = self.state.image
        if not (isinstance(err, ImageNotFound) and self.ctx.cfg.container.auto_pull
                and steps.names_registry(image)):
            self._create_failed(err)
            return
        timeout = self.ctx.cfg.container.pull_timeout
        self._record(KernelPulling(image=image), then=lambda: self._step(
            steps.pull_image(self.ctx.docker, image, timeout), then=self._image_ok))

    def _image_ok(self, info: Any) -> None:
        assert self.state is not None
        if KERNELSPEC_LABEL not in info.labels:
            self._create_failed(
                InvalidRequest(f"image {self.state.image} is not a kernlet kernel image "
                               f"(no {KERNELSPEC_LABEL} label)")
            )
            return
        try:
            self._service_ports = parse_service_ports(info.labels.get(SERVICE_PORTS_LABEL, ""))
        except ValueError as exc:
            self._create_failed(InvalidRequest(f"image {self.state.image}: {exc}"))
            return
        cfg = self.ctx.cfg.container
        request = {
            "cpu": str(self.state.config.get("cpu") or cfg.default_cpu),
            "mem": str(self.state.config.get("mem") or cfg.default_mem),
        }
        self.agent.tell(Allocate(self.kernel_id, request, len(self._service_ports),
                                 self.actor_ref))

    def _allocated(self, msg: Allocated) -> None:
        """The agent's answer: hold the allocation, or fail the create (nothing held)."""
        if is_terminating(self.state) or not is_live(self.state):
            return  # a destroy came first; its teardown releases what the agent gave
        if msg.error is not None:
            self._create_failed(msg.error)
            return
        self._allocation = msg.allocation
        self._ports = msg.ports
        assert self.state is not None
        bootstrap = str(self.state.config.get("bootstrap") or "")
        self._step(steps.prepare_dirs(self.ctx.cfg, self.kernel_id, bootstrap), self._dirs_ok)

    def _dirs_ok(self, dirs: steps.KernelDirs) -> None:
        alloc = self._allocation
        devices = {s: m for s, m in alloc.to_plain()["devices"].items()
                   if s not in ("cpu", "mem")}
        self._record(
            KernelCreating(slots=alloc.plain_slots(), cpuset=alloc.cpuset, ports=self._ports,
                           scratch_dir=str(dirs.scratch), devices=devices),
            then=self._create_container,
        )

    def _create_container(self) -> None:
        assert self.state is not None
        if is_terminating(self.state):
            self._teardown()
            return
        s = self.state
        spec = steps.container_spec(
            self.ctx.cfg, s, steps.kernel_dirs(self.ctx.cfg, self.kernel_id),
            self._port_map(),
        )

        async def create() -> str:
            async with self.ctx.create_slots:
                return await steps.create_container(self.ctx.docker, spec)

        self._cancellable = False
        self._inflight = self.spawn(create(), then=self._container_created,
                                    fail=self._guard_fail(None))

    def _container_created(self, container_id: str) -> None:
        self._inflight = None
        if is_terminating(self.state):
            self._stray_container = container_id
            self._teardown()
            return
        self._record(ContainerCreated(container_id=container_id), then=self._start)

    def _start(self) -> None:
        assert self.state is not None

        async def start() -> dict[str, Any]:
            # the slot bounds Docker calls, not the runtime's boot: held until the runtime
            # answered, it made a create of more kernels than slots run in waves
            async with self.ctx.create_slots:
                await self.ctx.docker.start(self.state.container_id if self.state else "")
            return await self.runs.connect(self.ctx.cfg.agent.create_timeout)

        self._step(start(), then=self._started)

    def _port_map(self) -> dict[int, int]:
        """Container port -> host port, from the image's declared services (create) or the
        kernel's recorded service ports (restart)."""
        assert self.state is not None
        if self._service_ports:
            return {sp.port: hp for sp, hp in zip(self._service_ports, self.state.ports,
                                                  strict=True)}
        return {int(p["container_port"]): int(p["host_port"])
                for p in self.state.info.get("service_ports", [])}

    def _started(self, status: dict[str, Any]) -> None:
        assert self.state is not None
        info = {
            "id": self.kernel_id,
            "session_id": self.state.session_id,
            "agent_id": self.ctx.cfg.agent.id,
            "host": self.ctx.cfg.container.bind_host,
            "container_id": self.state.container_id,
            "image": self.state.image,
            "resource_spec": dict(self.state.slots),
            "service_ports": [
                {"name": sp.name, "protocol": sp.protocol, "container_port": sp.port,
                 "host_port": hp}
                for sp, hp in zip(self._service_ports, self.state.ports, strict=True)
            ] or list(self.state.info.get("service_ports", [])),
            "scratch_dir": self.state.scratch_dir,
            "runtime": {k: status.get(k) for k in ("runtime", "version")},
            "create_seconds": round(time.monotonic() - self._create_started, 3),
        }
        self._record(
            KernelStarted(container_id=self.state.container_id, info=info),
            then=lambda: self._answer_create({"ok": True, **info}),
        )

    def _answer_create(self, result: dict[str, Any]) -> None:
        done, self._create_done = self._create_done, None
        if done is not None:
            done({"id": self.kernel_id, **result})
        if self._restart_reply is not None:
            reply, self._restart_reply = self._restart_reply, None
            if result.get("ok"):
                reply.ok({"id": self.kernel_id, **result})
            else:
                reply.error(KernelNotRunning(f"restart failed: {result.get('error')}"))

    def _create_failed(self, err: BaseException) -> None:
        log.warning("kernel %s: creation failed: %s", self.kernel_id, err)
        if not isinstance(err, (ImageNotFound, InvalidRequest, InsufficientResource)):
            err = CreationFailed(f"kernel {self.kernel_id}: {err}")
        self._failure = err
        if is_live(self.state) and not is_terminating(self.state):
            self._record(KernelTerminating(reason="failed-to-create"), then=self._teardown)

    # -- restart ------------------------------------------------------------------------------

    def _restart(self, msg: Restart) -> None:
        if not can_execute(self.state):
            msg.reply.error(KernelNotRunning(f"kernel {self.kernel_id} is not running"))
            return
        self._restart_reply = msg.reply
        self._create_started = time.monotonic()
        old = self.state.container_id if self.state else ""

        async def remove_old() -> None:
            await self.runs.close("restarting")
            await self.ctx.docker.remove(old)

        def recreate(_: Any) -> None:
            assert self.state is not None
            self.runs = self._new_runbook()
            s = self.state
            self._record(
                KernelCreating(slots=s.slots, cpuset=s.cpuset, ports=s.ports,
                               scratch_dir=s.scratch_dir),
                then=self._create_container,
            )

        self._record(KernelRestarting(), then=lambda: self._step(remove_old(), recreate))
