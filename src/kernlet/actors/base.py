"""A pykka actor that starts work on the loop and hears the outcome as a message to itself.

:meth:`LoopActor.spawn` never blocks the mailbox: the coroutine runs on the agent's loop, and
its result (or error) comes back as :class:`StepDone`, handled in the actor's own thread like
any other message. That is what lets ``destroy`` reach a kernel while its container starts.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pykka

from kernlet import logs
from kernlet.actors.loop import LoopThread
from kernlet.actors.messages import StepDone

__all__ = ["LoopActor"]

log = logging.getLogger(__name__)


class LoopActor(pykka.ThreadingActor):
    """Base of kernlet's actors. Subclasses implement :meth:`handle`."""

    def __init__(self, loop: LoopThread) -> None:
        super().__init__()
        self._loop = loop

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        then: Callable[[Any], None],
        fail: Callable[[BaseException], None] | None = None,
    ) -> concurrent.futures.Future[Any]:
        """Run ``coro`` on the loop; later call ``then(result)`` or ``fail(error)`` here."""
        future = self._loop.submit(coro)
        ref = self.actor_ref
        context = contextvars.copy_context()
        on_error = fail or self._step_failed

        def done(f: concurrent.futures.Future[Any]) -> None:
            if f.cancelled():
                err: BaseException | None = concurrent.futures.CancelledError()
                result = None
            else:
                err = f.exception()
                result = None if err is not None else f.result()
            try:
                ref.tell(StepDone(then=then, fail=on_error, result=result, error=err,
                                  context=context))
            except pykka.ActorDeadError:
                log.debug("step finished after its actor stopped: %r", err or result)

        future.add_done_callback(done)
        return future

    def _step_failed(self, err: BaseException) -> None:
        raise err

    def on_receive(self, message: Any) -> Any:
        """A step's continuation runs in the context its step started in; any other message
        is handled with the kernel it names bound for the log (kernlet.logs)."""
        if isinstance(message, StepDone):
            if message.context is not None:
                message.context.run(self._finish_step, message)
            else:
                self._finish_step(message)
            return None
        kernel_id, run_id = _ids(message)
        with logs.bound(kernel_id=kernel_id, run_id=run_id):
            return self.handle(message)

    @staticmethod
    def _finish_step(message: StepDone) -> None:
        if message.error is not None:
            message.fail(message.error)
        else:
            message.then(message.result)

    def handle(self, message: Any) -> Any:
        raise NotImplementedError


def _ids(message: Any) -> tuple[str | None, str | None]:
    """The kernel and the run a message is about: its own ``kernel_id``/``run_id``, else its
    request's, else its state's."""
    found: dict[str, str] = {}
    for holder in (message, getattr(message, "request", None), getattr(message, "state", None)):
        for key in ("kernel_id", "run_id"):
            value = getattr(holder, key, None)
            if key not in found and isinstance(value, str) and value:
                found[key] = value
    return found.get("kernel_id"), found.get("run_id")
