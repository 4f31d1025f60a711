"""A pykka actor that starts work on the loop and hears the outcome as a message to itself.

:meth:`LoopActor.spawn` never blocks the mailbox: the coroutine runs on the agent's loop, and
its result (or error) comes back as :class:`StepDone`, handled in the actor's own thread like
any other message. That is what lets ``destroy`` reach a kernel while its container starts.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pykka

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
        on_error = fail or self._step_failed

        def done(f: concurrent.futures.Future[Any]) -> None:
            if f.cancelled():
                err: BaseException | None = concurrent.futures.CancelledError()
                result = None
            else:
                err = f.exception()
                result = None if err is not None else f.result()
            try:
                ref.tell(StepDone(then=then, fail=on_error, result=result, error=err))
            except pykka.ActorDeadError:
                log.debug("step finished after its actor stopped: %r", err or result)

        future.add_done_callback(done)
        return future

    def _step_failed(self, err: BaseException) -> None:
        raise err

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StepDone):
            if message.error is not None:
                message.fail(message.error)
            else:
                message.then(message.result)
            return None
        return self.handle(message)

    def handle(self, message: Any) -> Any:
        raise NotImplementedError
