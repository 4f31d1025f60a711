"""Replies that cross from actors (threads) to the loop without blocking anyone.

A :class:`Reply` wraps an asyncio future owned by the loop; actors complete it from their
threads with :meth:`Reply.ok` or :meth:`Reply.error`. A reply completes once; later calls are
ignored, so a kernel that fails after answering cannot answer twice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from kernlet.errors import KernletError

__all__ = ["Gather", "Reply"]


class Reply:
    """Completes a loop-side future from any thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[Any] | None,
        callback: Callable[[Any], None] | None = None,
    ) -> None:
        self._loop = loop
        self._future = future
        self._callback = callback
        self._lock = threading.Lock()
        self._done = False

    @classmethod
    def new(cls, loop: asyncio.AbstractEventLoop) -> Reply:
        """Make one on the loop thread (the future belongs to that loop)."""
        return cls(loop, loop.create_future())

    @classmethod
    def to(cls, callback: Callable[[Any], None]) -> Reply:
        """A reply that calls ``callback(result or error)`` in the completing thread."""
        return cls(None, None, callback)

    @property
    def future(self) -> asyncio.Future[Any]:
        assert self._future is not None, "a callback reply has no future"
        return self._future

    def _claim(self) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done = True
            return True

    def ok(self, result: Any = None) -> None:
        if self._claim():
            self._complete(result, None)

    def error(self, err: BaseException) -> None:
        if self._claim():
            self._complete(None, err)

    def _complete(self, result: Any, err: BaseException | None) -> None:
        if self._callback is not None:
            self._callback(err if err is not None else result)
        elif self._loop is not None and self._future is not None:
            if _running_loop() is self._loop:  # on the loop already: no wake-up round
                _set(self._future, result, err)
            else:
                self._loop.call_soon_threadsafe(_set, self._future, result, err)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _set(fut: asyncio.Future[Any], result: Any, err: BaseException | None) -> None:
    if fut.done():
        return
    if err is not None:
        fut.set_exception(err)
    else:
        fut.set_result(result)


class Gather:
    """Collects one answer per part, then calls ``done`` with them in order (thread-safe)."""

    def __init__(self, parts: int, done: Callable[[list[Any]], None]) -> None:
        self._results: list[Any] = [None] * parts
        self._left = parts
        self._done = done
        self._lock = threading.Lock()

    def part(self, index: int) -> Callable[[Any], None]:
        def complete(value: Any) -> None:
            with self._lock:
                self._results[index] = value
                self._left -= 1
                finished = self._left == 0
            if finished:
                self._done(self._results)

        return complete


def error_dict(err: BaseException) -> dict[str, str]:
    if isinstance(err, KernletError):
        return err.to_wire()
    return {"type": "InternalError", "message": f"{type(err).__name__}: {err}"}
