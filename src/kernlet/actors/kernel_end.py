"""Ending a kernel: destroy, container death, teardown; and recovery after an agent restart."""


from __future__ import annotations

import asyncio
import logging
from typing import Any

from kernlet.actors import steps
from kernlet.actors.kernel_base import KernelBase
from kernlet.actors.messages import (
    ContainerDied,
    Destroy,
    KernelGone,
    Release,
)
from kernlet.actors.reply import error_dict
from kernlet.errors import (
    CreationFailed,
    KernelNotRunning,
)
from kernlet.events import (
    KernelTerminated,
    KernelTerminating,
    in_creation,
    is_live,
    is_terminating,
)

log = logging.getLogger(__name__)


__all__ = ["EndSteps"]


class EndSteps(KernelBase):
    """terminating → close runs → stop → remove containers and dirs → release → terminated."""

    # -- destroy and death ------------------------------------------------------------------

    def _destroy(self, msg: Destroy) -> None:
        if msg.reply is not None:
            self._waiters.append(msg.reply)
        if not is_live(self.state):
            self._finish()
            return
        if is_terminating(self.state):
            return  # already on its way; the reply waits with the others
        creating = in_creation(self.state)
        self._record(KernelTerminating(reason=msg.reason))
        if creating and self._inflight is not None:
            # a step is in flight: its outcome leads to the teardown (see _guard)
            if self._cancellable:
                self._inflight.cancel()
            return
        self._teardown()

    def _container_died(self, msg: ContainerDied) -> None:
        if self.state is None or self._tearing_down:
            return
        if msg.container_id not in (self.state.container_id, self._stray_container):
            return  # an old container (e.g. replaced by a restart)
        if msg.action == "oom":
            self._oom = True
        if msg.exit_code is not None:
            self._died_exit = msg.exit_code
        if is_terminating(self.state) or not is_live(self.state):
            return
        if msg.action in ("die", "destroy", "oom"):
            reason = "oom-killed" if self._oom else (
                "container-not-found" if msg.action == "destroy" else "self-terminated")
            if in_creation(self.state):
                self._failure = CreationFailed(
                    f"kernel {self.kernel_id}: the container {msg.action} during start "
                    f"(exit code {msg.exit_code}); see its logs"
                )
                reason = "failed-to-create"
            self._record(KernelTerminating(reason=reason))
            if self._inflight is None:
                self._teardown()
            elif self._cancellable:
                self._inflight.cancel()

    def _teardown(self) -> None:
        if self._tearing_down:
            return
        self._tearing_down = True
        assert self.state is not None
        container = self.state.container_id or self._stray_container
        grace = self.ctx.cfg.container.stop_grace

        async def run() -> int | None:
            await self.runs.close(self.state.reason if self.state else "terminated")
            return await steps.teardown(self.ctx.docker, self.ctx.cfg, self.kernel_id,
                                        container, grace)

        self.spawn(run(), then=self._torn_down, fail=self._teardown_failed)

    def _teardown_failed(self, err: BaseException) -> None:
        """Retry with backoff: a kernel is only recorded terminated once it is clean."""
        self._teardown_tries += 1
        delay = min(30.0, 0.5 * 2**self._teardown_tries)
        log.error("kernel %s: teardown failed (try %d, again in %.1f s): %s",
                  self.kernel_id, self._teardown_tries, delay, err)
        for reply in self._waiters:
            reply.error(err)
        self._waiters.clear()

        def again(_: Any) -> None:
            self._tearing_down = False
            self._teardown()

        self.spawn(asyncio.sleep(delay), then=again)

    def _torn_down(self, exit_code: int | None) -> None:
        assert self.state is not None
        self.agent.tell(Release(self.kernel_id))  # clean now: slots and ports go back
        if self._died_exit is not None and self.state.reason != "user-requested":
            exit_code = self._died_exit
        reason = self.state.reason
        if self._oom and reason not in ("failed-to-create",):
            reason = "oom-killed"
        self._record(KernelTerminated(reason=reason, exit_code=exit_code), then=self._finish)

    def _finish(self) -> None:
        state = self.state
        for reply in self._waiters:
            reply.ok({"id": self.kernel_id, "reason": state.reason if state else "",
                      "exit_code": state.exit_code if state else None})
        self._waiters.clear()
        if self._create_done is not None or self._restart_reply is not None:
            err = self._failure or KernelNotRunning(
                f"kernel {self.kernel_id} terminated during creation "
                f"({state.reason if state else 'unknown'})"
            )
            self._answer_create({"ok": False, "error": error_dict(err)})
        self.agent.tell(KernelGone(self.kernel_id))
        self.stop()

    # -- recovery and shutdown ----------------------------------------------------------------

    def _recover(self) -> None:
        """Rebuilt from the log after an agent restart: re-adopt, or record what happened."""
        assert self.state is not None
        s = self.state
        if is_terminating(s) or in_creation(s):
            # mid-creation kernels are rolled back; mid-destroy ones are finished
            if not is_terminating(s):
                self._record(KernelTerminating(reason="agent-restarted-during-creation"))
            self._teardown()
            return

        if s.current_run:
            # a run was going on when the agent stopped: its output is still buffered in the
            # runtime; collect it again and record its end
            self.runs.adopt(s.current_run, "query")
            self._active_runs.add(s.current_run)

        async def check() -> dict[str, Any]:
            info = await self.ctx.docker.inspect(s.container_id)
            if not info.running:
                return {"running": False, "exit_code": info.exit_code, "oom": info.oom_killed}
            status = await self.runs.connect(timeout=15.0)
            self.runs.settle_adopted(status.get("busy"))
            return {"running": True, "status": status}

        def checked(result: dict[str, Any]) -> None:
            if result["running"]:
                log.info("kernel %s re-adopted", self.kernel_id)
                return
            self._oom = bool(result.get("oom"))
            self._died_exit = result.get("exit_code")
            self._record(KernelTerminating(reason="oom-killed" if self._oom else "self-terminated"))
            self._teardown()

        def missing(err: BaseException) -> None:
            reason = "container-not-found" if "ContainerNotFound" in type(err).__name__ else (
                f"unrecoverable: {err}")
            log.warning("kernel %s: %s", self.kernel_id, err)
            self._record(KernelTerminating(reason=reason[:128]))
            self._teardown()

        self._step(check(), then=checked, fail=missing)

    def _shutdown(self) -> None:
        """Agent exit: keep the container; just close the runtime channel."""

        async def close() -> None:
            await self.runs.channel.close()

        self.spawn(close(), then=lambda _: self.stop(), fail=lambda _: self.stop())
