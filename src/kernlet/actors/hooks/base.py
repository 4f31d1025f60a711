"""What every hook of a kernel's life is, and what it is given.

A hook is one step of a kernel's creation with its undo (Nomad's prestart/stop hooks):

- ``before(env)``: an event to make durable before ``up`` acts (or None);
- ``up(env)``: a coroutine on the loop that does the step and returns what it made (a *fact*,
  kept under the hook's name for the later hooks);
- ``record(env, fact)``: the event that makes the step durable (or None, when a later hook's
  event carries it); the next hook starts only once it is in the log;
- ``down(env)``: the undo. **Down hooks must be idempotent** and safe for a kernel whose
  ``up`` never ran, ran halfway, or ran in an agent that has since crashed: they run again
  after a failed try and on recovery, where nothing but the log is known.

Hooks never touch an actor's fields: they get a frozen :class:`HookEnv` (the kernel's state
as a snapshot, the earlier hooks' facts) and run on the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import pykka

    from kernlet.actors.context import AgentContext
    from kernlet.actors.runs import RunBook
    from kernlet.events import EventBody, KernelState

__all__ = ["Hook", "HookEnv"]


@dataclass(frozen=True)
class HookEnv:
    """What a hook sees: a snapshot, never the actor's live fields."""

    kernel_id: str
    ctx: AgentContext
    #: the agent actor (the resource ledger answers through it)
    agent: pykka.ActorRef[Any]
    #: the kernel's runtime channel owner (a loop-only object; hooks run on the loop)
    runs: RunBook
    #: the kernel's state when the hook was started
    state: KernelState
    #: hook name -> what its ``up`` returned, for the hooks that ran in this actor
    facts: Mapping[str, Any] = field(default_factory=dict)
    #: the reason of the teardown, for down hooks
    reason: str = ""
    #: time.monotonic() when this create or restart began
    started: float = 0.0


class Hook(Protocol):
    """One named step of a kernel's life (see the module's docstring)."""

    name: ClassVar[str]
    #: whether a destroy may cancel ``up`` in flight (never a Docker create: its container
    #: would be made anyway, unknown to the log)
    cancellable: ClassVar[bool]

    def before(self, env: HookEnv) -> EventBody | None: ...

    async def up(self, env: HookEnv) -> Any: ...

    def record(self, env: HookEnv, fact: Any) -> EventBody | None: ...

    async def down(self, env: HookEnv) -> Any: ...


class BaseHook:
    """Defaults: nothing before, nothing recorded, nothing to undo."""

    name: ClassVar[str] = ""
    cancellable: ClassVar[bool] = True

    def before(self, env: HookEnv) -> EventBody | None:
        return None

    async def up(self, env: HookEnv) -> Any:
        return None

    def record(self, env: HookEnv, fact: Any) -> EventBody | None:
        return None

    async def down(self, env: HookEnv) -> Any:
        return None
