"""Long image jobs of the agent: ``commit_kernel`` and ``push_image``, on the pattern of the
pulls (:mod:`kernlet.actors.pulls`): recorded on the agent's own stream so that none is left
hanging.

- A commit begins with ``image_commit_started`` (durable before Docker is asked) and ends
  with ``image_commit_finished`` (ok with the image id, or the error and its type).
- A push begins with ``image_push_progress`` (status ``started``), reports progress at most
  once a second, and ends with ``image_pushed`` (ok with the digest, or the error).
- A job that an agent crash cut short is found in the log at the next start
  (:func:`interrupted_jobs`) and recorded as failed: never left "running".

The fold :func:`commit_statuses` answers ``get_commit_status`` for commits this agent process
did not start (those of before a restart). Credentials come from ``[registries]`` per call;
they are never in an event or a log line.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pykka

from kernlet.actors.messages import RecordAgentEvent
from kernlet.actors.steps import registry_auth_of
from kernlet.drivers.container_runtime import ImageInfo, PullProgress
from kernlet.drivers.image_ops import registry_of
from kernlet.errors import AgentTimeout, InvalidRequest, KernelNotRunning, KernletError
from kernlet.events import (
    Envelope,
    EventBody,
    ImageCommitFinished,
    ImageCommitStarted,
    ImagePushed,
    ImagePushProgress,
    can_execute,
)

if TYPE_CHECKING:
    from kernlet.actors.agent import AgentActor

__all__ = [
    "RESTARTED",
    "CommitStatus",
    "ImageJobs",
    "Throttle",
    "commit_statuses",
    "error_fields",
    "interrupted_jobs",
    "push_target",
    "start_commit",
    "start_push",
]

#: the error of a job an agent restart cut short
RESTARTED = "the agent restarted during the job (it was cut short)"
#: labels every committed image gets on top of its base image's
LABEL_COMMITTED_FROM = "ai.kernlet.committed-from"
LABEL_COMMIT_ID = "ai.kernlet.commit-id"


def error_fields(err: BaseException) -> dict[str, str]:
    """An error as an event's ``error`` and ``error_type`` (a kernlet error's class name)."""
    kind = type(err).__name__ if isinstance(err, KernletError) else "InternalError"
    return {"error": str(err)[:1000], "error_type": kind}


class Throttle:
    """Progress of one job as agent events, at most one per ``interval`` seconds; called on
    the loop thread, the events are recorded by the agent actor."""

    def __init__(self, ref: pykka.ActorRef[Any], make: Callable[[PullProgress], EventBody],
                 interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ref, self._make, self._interval, self._clock = ref, make, interval, clock
        self._last = clock()

    def __call__(self, p: PullProgress) -> None:
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._ref.tell(RecordAgentEvent(self._make(p)))


@dataclass(frozen=True, slots=True)
class CommitStatus:
    """What ``get_commit_status`` answers."""

    commit_id: str
    kernel_id: str
    image: str
    #: "running", "done" or "failed"
    status: str
    image_id: str = ""
    error: str = ""
    error_type: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"commit_id": self.commit_id, "kernel_id": self.kernel_id, "image": self.image,
                "status": self.status, "image_id": self.image_id, "error": self.error,
                "error_type": self.error_type}


@dataclass
class ImageJobs:
    """The agent actor's image jobs in flight (only that actor touches it)."""

    #: commit id -> status, of every commit this process started
    commits: dict[str, CommitStatus] = field(default_factory=dict)
    #: push targets in flight
    pushing: set[str] = field(default_factory=set)

    def committing(self, kernel_id: str) -> CommitStatus | None:
        return next((c for c in self.commits.values()
                     if c.kernel_id == kernel_id and c.status == "running"), None)


def commit_statuses(events: Iterable[Envelope]) -> dict[str, CommitStatus]:
    """Every commit of the agent's stream, as its status (a fold over its events)."""
    out: dict[str, CommitStatus] = {}
    for env in events:
        body = env.body
        if isinstance(body, ImageCommitStarted):
            out[body.commit_id] = CommitStatus(body.commit_id, body.kernel_id, body.image,
                                               "running")
        elif isinstance(body, ImageCommitFinished):
            out[body.commit_id] = CommitStatus(
                body.commit_id, body.kernel_id, body.image, "done" if body.ok else "failed",
                body.image_id, body.error, body.error_type)
    return out


def interrupted_jobs(events: Iterable[Envelope]) -> list[EventBody]:
    """The failure events to record for the commits and pushes that the agent's stream shows
    begun and never ended (an agent crash cut them short)."""
    events = list(events)
    out: list[EventBody] = [
        ImageCommitFinished(commit_id=c.commit_id, kernel_id=c.kernel_id, image=c.image,
                            ok=False, error=RESTARTED, error_type="AgentTimeout")
        for c in commit_statuses(events).values() if c.status == "running"]
    pushes: dict[str, None] = {}
    for env in events:
        if isinstance(env.body, ImagePushProgress) and env.body.status == "started":
            pushes[env.body.image] = None
        elif isinstance(env.body, ImagePushed):
            pushes.pop(env.body.image, None)
    out += [ImagePushed(image=image, ok=False, error=RESTARTED, error_type="AgentTimeout")
            for image in pushes]
    return out


# -- commit -----------------------------------------------------------------------------------


def start_commit(agent: AgentActor, kernel_id: str, image: str) -> CommitStatus:
    """Commit the running kernel's container as ``image`` (``repo:tag``) in the background
    (agent actor thread); its status, "running", at once."""
    state = agent.live_state(kernel_id)
    if not can_execute(state):
        raise KernelNotRunning(f"kernel {kernel_id!r} is {state.state.value}, not running: "
                               "only a running kernel can be committed")
    busy = agent.image_jobs.committing(kernel_id)
    if busy is not None:
        raise InvalidRequest(f"kernel_id: kernel {kernel_id!r} is being committed already "
                             f"(commit {busy.commit_id})")
    jobs = agent.image_jobs
    status = CommitStatus(uuid.uuid4().hex, kernel_id, image, "running")
    jobs.commits[status.commit_id] = status
    started = agent.record_agent_event(ImageCommitStarted(
        commit_id=status.commit_id, kernel_id=kernel_id, image=image,
        container_id=state.container_id))
    docker = agent.ctx.docker
    labels = {LABEL_COMMITTED_FROM: kernel_id, LABEL_COMMIT_ID: status.commit_id,
              "ai.kernlet.built-by": "kernlet kernel commit"}

    async def commit() -> ImageInfo:
        await asyncio.wrap_future(started)  # durable before Docker is asked
        return await docker.commit(state.container_id, image, base_image=state.image,
                                   labels=labels, message=f"kernlet commit of {kernel_id}")

    def end(done: CommitStatus, body: ImageCommitFinished) -> None:
        jobs.commits[status.commit_id] = done
        agent.record_agent_event(body)
        agent.ctx.inventory.poke()

    def committed(info: ImageInfo) -> None:
        end(replace(status, status="done", image_id=info.id),
            ImageCommitFinished(commit_id=status.commit_id, kernel_id=kernel_id, image=image,
                                ok=True, image_id=info.id))

    def failed(err: BaseException) -> None:
        why = error_fields(err)
        end(replace(status, status="failed", **why),
            ImageCommitFinished(commit_id=status.commit_id, kernel_id=kernel_id, image=image,
                                ok=False, **why))

    agent.spawn(commit(), then=committed, fail=failed)
    return status


# -- push -------------------------------------------------------------------------------------


def push_target(image: str, registry: str) -> str:
    """The name pushed: ``image`` itself when it names ``registry`` (or no registry is
    given), else ``registry/<image without its registry>``."""
    own = registry_of(image)
    if not registry:
        if not own:
            raise InvalidRequest(f"registry: image {image!r} names no registry; give one "
                                 "(host:port)")
        return image
    if own == registry:
        return image
    rest = image[len(own) + 1:] if own else image
    return f"{registry}/{rest}"


def start_push(agent: AgentActor, image: str, registry: str) -> str:
    """Push ``image`` to ``registry`` in the background (agent actor thread); the pushed
    name. A push of the same name in flight is not started twice."""
    target = push_target(image, registry)
    jobs = agent.image_jobs
    if target in jobs.pushing:
        return target
    jobs.pushing.add(target)
    agent.record_agent_event(ImagePushProgress(image=target, status="started"))
    docker, cfg = agent.ctx.docker, agent.ctx.cfg
    progress = Throttle(agent.actor_ref, lambda p: ImagePushProgress(
        image=target, status=p.status, current=p.current, total=p.total))

    async def push() -> str:
        auth = await registry_auth_of(cfg.registries, target)
        if target != image:
            await docker.tag(image, target)
        return await asyncio.wait_for(docker.push(target, progress, auth),
                                      cfg.container.pull_timeout)

    def pushed(digest: str) -> None:
        jobs.pushing.discard(target)
        agent.record_agent_event(ImagePushed(image=target, ok=True, digest=digest))
        agent.ctx.inventory.poke()

    def failed(err: BaseException) -> None:
        jobs.pushing.discard(target)
        if isinstance(err, TimeoutError):
            err = AgentTimeout(f"push {target}: not done after "
                                   f"{cfg.container.pull_timeout:g} s (container.pull-timeout)")
        agent.record_agent_event(ImagePushed(image=target, ok=False, **error_fields(err)))

    agent.spawn(push(), then=pushed, fail=failed)
    return target
