"""Live state on the loop: kernels folded from durable events, and the server-sent events hub.

:class:`KernelView` keeps each live kernel's state by folding every durable event through the
lifecycle's pure ``apply``, as replay does. It is seeded from the log when the watcher starts;
an event it cannot apply (one was missed while it was seeded) makes it re-read that kernel's
stream instead, so the view heals itself. :class:`Hub` fans messages out to the dashboards
connected to ``GET /events``; a client too slow to keep up is dropped, never waited for.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from kernlet.events import Envelope, IllegalTransition, KernelState, apply, is_live, replay
from kernlet.store import EventLog

__all__ = ["Hub", "KernelView", "sse"]

log = logging.getLogger(__name__)


def sse(event: str, data: Any) -> bytes:
    """One server-sent event: a name and a JSON body on one ``data:`` line."""
    body = json.dumps(data, separators=(",", ":"), default=str)
    return f"event: {event}\ndata: {body}\n\n".encode()


class KernelView:
    """Each live kernel's state, as of the last durable event seen. Loop thread only."""

    def __init__(self, store: EventLog) -> None:
        self._store = store
        self._states: dict[str, KernelState] = {}

    async def seed(self) -> None:
        self._states = dict(await self._store.live_kernels())

    def get(self, kernel_id: str) -> KernelState | None:
        return self._states.get(kernel_id)

    def apply(self, env: Envelope) -> tuple[KernelState | None, KernelState] | None:
        """Fold one kernel event in: (state before, state after), or None after a gap."""
        before = self._states.get(env.kernel_id)
        try:
            after = apply(before, env)
        except IllegalTransition:
            return None
        self._store_state(after)
        return before, after

    async def reload(self, kernel_id: str) -> KernelState | None:
        """Re-read one kernel's stream (after a gap); its state now."""
        state = replay(await self._store.read_stream(kernel_id))
        if state is not None:
            self._store_state(state)
        return state

    def _store_state(self, state: KernelState) -> None:
        if is_live(state):
            self._states[state.kernel_id] = state
        else:
            self._states.pop(state.kernel_id, None)

    def containers(self) -> dict[str, str]:
        """Kernel id -> container id of every live kernel that has a container."""
        return {kid: s.container_id for kid, s in self._states.items() if s.container_id}


class Hub:
    """Fan-out of encoded server-sent events to subscribers. Loop thread only."""

    def __init__(self, max_queue: int = 512) -> None:
        self._max = max_queue
        self._subs: set[asyncio.Queue[bytes | None]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        q: asyncio.Queue[bytes | None] = asyncio.Queue(self._max)
        self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[bytes | None]) -> None:
        self._subs.discard(q)

    def publish(self, message: bytes) -> None:
        for q in list(self._subs):
            try:
                q.put_nowait(message)
            except asyncio.QueueFull:
                log.info("dashboard client too slow: dropped")
                self._end(q)

    def close(self) -> None:
        """End every subscription (each stream handler returns)."""
        for q in list(self._subs):
            self._end(q)

    def _end(self, q: asyncio.Queue[bytes | None]) -> None:
        self._subs.discard(q)
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)
