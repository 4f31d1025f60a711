"""The warm pool, on the agent side (docs/pool.md): ``[pool."image"]`` entries, the fit rule,
taking a pool kernel for a create, and the refill.

A pool kernel is an ordinary kernel made by the ordinary hooks (:mod:`kernlet.actors.hooks`),
in session ``pool``, with ``{"pool": {"entry": image}}`` in its config (and the container
label ``ai.kernlet.pool``): it is in the log, the ledger, the watcher and the heartbeat, and
re-adopted after an agent restart like any kernel. Everything here runs in the agent actor's
thread; the take itself is written by the pool kernel's actor
(:mod:`kernlet.actors.pool_take`).

::

    create_kernels ──fits an entry, a pool kernel is ready──► HandOver ─► pool kernel's actor
          │ (else: the cold path, the hooks)                               │ durable take
          ▼                                                                ▼
     Create ─► new kernel actor                       Taken ─► agent: holdings P → X, start
                                                               X's actor (AdoptTaken), refill
                                                               a second later

The refill runs a second after a take (``REFILL_AFTER_TAKE``), after a pool kernel is gone, at
start (``adopt``) and at each relist; a failed pool create backs off (1 s doubling, at most
60 s) and never stops the agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from kernlet.actors.messages import Create
from kernlet.actors.pool_take import AdoptTaken, HandOver, Taken
from kernlet.actors.steps import POOL_KEY
from kernlet.config import AgentConfig
from kernlet.config_pool import PoolEntry
from kernlet.errors import KernletError
from kernlet.events import KernelState, can_execute, is_live

if TYPE_CHECKING:
    from kernlet.actors.agent import AgentActor

__all__ = ["POOL_SESSION", "REFILL_AFTER_TAKE", "Pool", "PoolCreated", "entry_of",
           "fitting_entry", "pool_config"]

log = logging.getLogger(__name__)

#: the session id of every pool kernel (its marker is the config's ``pool`` key)
POOL_SESSION = "pool"
#: seconds between a take and its refill: the taker's first code does not share the node's
#: cpu with a new container's boot (measured: the first ``pass`` took 40-60 ms instead of
#: about 5 ms while the refill booted; docs/pool.md)
REFILL_AFTER_TAKE = 1.0
#: fields of a create's config that a pool kernel cannot have been made with
_MUST_BE_EMPTY = ("slots", "environ", "bootstrap", "mounts", "preopen_ports")


class PoolCreated:
    """To the agent: a pool kernel's create ended (``ok`` or not)."""

    def __init__(self, image: str, kernel_id: str, ok: bool, error: str = "") -> None:
        self.image, self.kernel_id, self.ok, self.error = image, kernel_id, ok, error


def _resolved(cfg: AgentConfig, cpu: Any, mem: Any, shm: Any) -> tuple[float, int, int]:
    c = cfg.container
    return float(cpu or c.default_cpu), int(mem or c.default_mem), int(shm or c.shm_size)


def pool_config(cfg: AgentConfig, image: str, entry: PoolEntry) -> dict[str, Any]:
    """The creation config of a pool kernel of ``[pool."image"]`` (cpu, mem, shm resolved)."""
    cpu, mem, shm = _resolved(cfg, entry.cpu, entry.mem, entry.shm_size)
    return {"image": image, "cpu": cpu, "mem": mem, "shm_size": shm, "slots": {},
            "environ": {}, "bootstrap": "", "mounts": [], "preopen_ports": [],
            POOL_KEY: {"entry": image}}


def fitting_entry(cfg: AgentConfig, config: dict[str, Any], cluster: bool) -> str | None:
    """The pool entry (image) a create's config fits, or None: the same image name, the same
    cpu, mem and shm_size once the agent's defaults are applied, and nothing a container
    would have to be made with (slots, environ, bootstrap, mounts, preopen ports, a
    cluster). Pure."""
    image = config.get("image")
    entry = cfg.pool.get(image) if isinstance(image, str) else None
    if entry is None or not entry.size or cluster or any(config.get(k) for k in _MUST_BE_EMPTY):
        return None
    want = _resolved(cfg, config.get("cpu"), config.get("mem"), config.get("shm_size"))
    have = _resolved(cfg, entry.cpu, entry.mem, entry.shm_size)
    return image if want == have else None


def entry_of(state: KernelState | None) -> str:
    """The pool entry a kernel was made for ("": not a pool kernel)."""
    if state is None:
        return ""
    return str((state.config.get(POOL_KEY) or {}).get("entry") or "")


class Pool:
    """The pool's bookkeeping; only the agent actor calls it."""

    def __init__(self, agent: AgentActor) -> None:
        self.agent = agent
        #: pool kernels being handed over now (not to be given twice)
        self.taking: set[str] = set()
        #: image -> failed pool creates in a row, and when the next refill may try
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        self._scheduled: set[str] = set()

    @property
    def cfg(self) -> AgentConfig:
        return self.agent.ctx.cfg

    def members(self, image: str) -> list[KernelState]:
        """The live pool kernels of an entry, oldest first (creating ones too)."""
        return sorted((s for s in self.agent.states.values()
                       if is_live(s) and entry_of(s) == image
                       and s.kernel_id not in self.taking),
                      key=lambda s: s.created_at)

    def is_member(self, kernel_id: str) -> bool:
        return bool(entry_of(self.agent.states.get(kernel_id)))

    # -- take --------------------------------------------------------------------------------

    def take(self, kernel_id: str, session_id: str, config: dict[str, Any],
             done: Any, cluster: bool) -> bool:
        """Hand a ready pool kernel over to ``kernel_id``; False: take the cold path."""
        image = fitting_entry(self.cfg, config, cluster)
        if image is None:
            return False
        ready = [s for s in self.members(image)
                 if can_execute(s) and not s.current_run and s.kernel_id in self.agent.kernels]
        if not ready:
            log.info("pool %s: no ready kernel for %s (cold create)", image, kernel_id)
            return False
        pool_id = ready[0].kernel_id
        msg = HandOver(kernel_id, session_id, config, done, time.monotonic())
        self.taking.add(pool_id)
        self.agent.known_ids.add(kernel_id)  # reserved: no second create of it meanwhile
        if not self.agent.tell_kernel(pool_id, msg):
            self.taking.discard(pool_id)
            self.agent.known_ids.discard(kernel_id)
            return False
        return True

    def taken(self, msg: Taken) -> None:
        """The pool kernel's answer: move its holdings to the taker and start the taker's
        actor; or, refused, create the kernel the cold way."""
        agent, req = self.agent, msg.request
        self.taking.discard(msg.pool_id)
        if msg.state is None or msg.pool_state is None:
            log.warning("pool: %s; kernel %s is created cold", msg.why, req.kernel_id)
            agent.known_ids.discard(req.kernel_id)
            agent.start_kernel(req.kernel_id, None).tell(Create(
                session_id=req.session_id, image=str(req.config.get("image")),
                config=req.config, done=req.done))
            return
        agent.kernels.pop(msg.pool_id, None)
        agent.states.pop(msg.pool_id, None)
        state = msg.state
        agent.ledger.release(msg.pool_id)
        try:
            agent.ledger.restore(state.kernel_id, state.slots, state.cpuset, state.devices,
                                 state.ports)
        except KernletError as exc:  # cannot happen: exactly what the pool kernel held
            log.error("kernel %s: the pool kernel's resources not moved: %s",
                      state.kernel_id, exc)
        agent.start_kernel(state.kernel_id, state).tell(AdoptTaken(req.done))
        image = entry_of(msg.pool_state)
        self._not_before[image] = max(self._not_before.get(image, 0.0),
                                      time.monotonic() + REFILL_AFTER_TAKE)
        self._schedule(image, REFILL_AFTER_TAKE)

    # -- refill ------------------------------------------------------------------------------

    def refill(self) -> None:
        """Start the pool creates that bring each entry up to its size (unless backing off)."""
        now = time.monotonic()
        for image, entry in self.cfg.pool.items():
            if now < self._not_before.get(image, 0.0):
                self._schedule(image, self._not_before[image] - now)
                continue
            for _ in range(max(0, entry.size - len(self.members(image)))):
                self._create(image, entry)

    def _create(self, image: str, entry: PoolEntry) -> None:
        agent = self.agent
        kernel_id = f"pool-{uuid.uuid4().hex[:16]}"
        ref = agent.actor_ref

        def done(result: dict[str, Any]) -> None:  # in the pool kernel's actor thread
            error = result.get("error") or {}
            ref.tell(PoolCreated(image, kernel_id, bool(result.get("ok")),
                                 str(error.get("message", "")) if isinstance(error, dict)
                                 else str(error)))

        log.info("pool %s: creating %s", image, kernel_id)
        agent.start_kernel(kernel_id, None).tell(Create(
            session_id=POOL_SESSION, image=image, config=pool_config(self.cfg, image, entry),
            done=done))

    def created(self, msg: PoolCreated) -> None:
        if msg.ok:
            self._failures.pop(msg.image, None)
            return
        self.failed(msg.image, f"pool kernel {msg.kernel_id} failed to create: {msg.error}")

    def gone(self, state: KernelState | None) -> None:
        """A kernel's actor finished: a pool kernel that went (destroyed, died) is replaced,
        after a backoff so that a pool kernel that dies at once does not spin."""
        image = entry_of(state)
        if image and state is not None and state.reason != "failed-to-create":
            self.failed(image, f"pool kernel {state.kernel_id} ended ({state.reason})")

    def failed(self, image: str, why: str) -> None:
        n = self._failures.get(image, 0) + 1
        self._failures[image] = n
        delay = min(60.0, 2.0 ** (n - 1))
        self._not_before[image] = time.monotonic() + delay
        log.warning("pool %s: %s; refill again in %.0f s", image, why, delay)
        self._schedule(image, delay)

    def _schedule(self, image: str, delay: float) -> None:
        if image in self._scheduled:
            return
        self._scheduled.add(image)

        def again(_: Any) -> None:
            self._scheduled.discard(image)
            self.refill()

        self.agent.spawn(asyncio.sleep(delay + 0.01), then=again, fail=again)
