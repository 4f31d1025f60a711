"""Image pulls of ``check_and_pull``, recorded on the agent's own stream so that none is left
hanging: every pull begins with ``image_pull_progress`` (status ``started``), reports progress
at most once a second, and ends with ``image_pulled`` (ok or failed). A pull that an agent
crash cut short is found in the log at the next start (:func:`interrupted_pulls`) and pulled
again, so it too ends with ``image_pulled``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from kernlet.actors.image_jobs import Throttle, error_fields
from kernlet.actors.steps import pull_image
from kernlet.drivers.docker import ImageInfo
from kernlet.events import Envelope, ImagePulled, ImagePullProgress

if TYPE_CHECKING:
    from kernlet.actors.agent import AgentActor

__all__ = ["interrupted_pulls", "start_pull"]


def start_pull(agent: AgentActor, image: str, timeout: float, why: str = "started") -> None:
    """Pull ``image`` in the background (agent actor thread), with the credentials of
    ``[registries]`` for its registry."""
    agent.pulling.add(image)
    agent.record_agent_event(ImagePullProgress(image=image, status=why))
    progress = Throttle(agent.actor_ref, lambda p: ImagePullProgress(
        image=image, status=p.status, current=p.current, total=p.total))

    def pulled(info: ImageInfo) -> None:
        agent.pulling.discard(image)
        agent.record_agent_event(ImagePulled(image=image, ok=True, image_id=info.id))
        agent.ctx.inventory.poke()

    def failed(err: BaseException) -> None:
        agent.pulling.discard(image)
        agent.record_agent_event(ImagePulled(image=image, ok=False, **error_fields(err)))

    agent.spawn(pull_image(agent.ctx.docker, image, timeout, progress,
                           key="check_and_pull timeout", registries=agent.ctx.cfg.registries),
                then=pulled, fail=failed)


def interrupted_pulls(events: Iterable[Envelope]) -> list[str]:
    """The images whose pull the agent's stream shows begun and never ended."""
    pending: dict[str, None] = {}
    for env in events:
        body = env.body
        if isinstance(body, ImagePullProgress):
            pending[body.image] = None
        elif isinstance(body, ImagePulled):
            pending.pop(body.image, None)
    return list(pending)
