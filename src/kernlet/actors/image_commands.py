"""The manager's image commands (part of the table in :mod:`kernlet.actors.commands`):
commit_kernel, get_commit_status, push_image, purge_images, list_images.

Each runs in the agent actor's thread as ``handler(agent, request, command)``; the long ones
(commit, push) answer at once and report their end as events (:mod:`kernlet.actors.image_jobs`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kernlet.actors.image_jobs import commit_statuses, start_commit, start_push
from kernlet.actors.messages import Command
from kernlet.drivers.container_runtime import ContainerRuntime
from kernlet.errors import ImageInUse, ImageNotFound, InvalidRequest, KernletError
from kernlet.events import AGENT_STREAM, ImagesPurged, is_live
from kernlet.protocol import CommitKernel, GetCommitStatus, ListImages, PurgeImages, PushImage

if TYPE_CHECKING:
    from kernlet.actors.agent import AgentActor

__all__ = ["IMAGE_COMMANDS", "purge", "purge_plan"]


def _commit_kernel(agent: AgentActor, req: CommitKernel, cmd: Command) -> None:
    status = start_commit(agent, req.kernel_id, f"{req.image}:{req.tag}")
    cmd.reply.ok(status.to_dict())


def _get_commit_status(agent: AgentActor, req: GetCommitStatus, cmd: Command) -> None:
    """From memory for this process's commits, else from the agent's stream (commits of
    before a restart, those it cut short recorded failed at the start)."""
    def pick(statuses: dict[str, Any]) -> Any:
        if req.commit_id is not None:
            return statuses.get(req.commit_id)
        mine = [s for s in statuses.values() if s.kernel_id == req.kernel_id]
        return mine[-1] if mine else None

    found = pick(agent.image_jobs.commits)
    if found is not None:
        cmd.reply.ok(found.to_dict())
        return

    def answer(events: list[Any]) -> None:
        status = pick(commit_statuses(events))
        if status is None:
            which = (f"commit_id: no commit {req.commit_id!r}" if req.commit_id is not None
                     else f"kernel_id: no commit of kernel {req.kernel_id!r}")
            cmd.reply.error(InvalidRequest(f"{which} on agent {agent.ctx.cfg.agent.id}"))
        else:
            cmd.reply.ok(status.to_dict())

    agent.spawn(agent.ctx.store.read_stream(AGENT_STREAM), then=answer, fail=cmd.reply.error)


def _push_image(agent: AgentActor, req: PushImage, cmd: Command) -> None:
    target = start_push(agent, req.image, req.registry)
    cmd.reply.ok({"image": target, "status": "pushing"})


# -- purge ------------------------------------------------------------------------------------


def purge_plan(
    wanted: dict[str, str | None], live: dict[str, str]
) -> tuple[list[str], dict[str, KernletError]]:
    """Which of the ``wanted`` names (name -> image id, None if not found) may be removed,
    given the image ids that live kernels run (kernel id -> image id); the others refused
    with why. A live kernel's image is never removed, ``force`` or not."""
    ok: list[str] = []
    refused: dict[str, KernletError] = {}
    for name, image_id in wanted.items():
        users = sorted(k for k, i in live.items() if image_id is not None and i == image_id)
        if image_id is None:
            refused[name] = ImageNotFound(f"image {name} is not on this node")
        elif users:
            refused[name] = ImageInUse(f"image {name} is run by live kernel(s) "
                                       f"{', '.join(users)}")
        else:
            ok.append(name)
    return ok, refused


async def _image_id(docker: ContainerRuntime, name: str) -> str | None:
    try:
        return (await docker.image(name)).id
    except ImageNotFound:
        return None


async def purge(
    docker: ContainerRuntime, names: list[str], live_images: dict[str, str], force: bool,
) -> tuple[list[str], dict[str, KernletError]]:
    """Resolve names and live kernels' images to ids, then remove what :func:`purge_plan`
    allows; Docker's refusal (a stopped container uses it, without ``force``) is ImageInUse."""
    wanted = {n: await _image_id(docker, n) for n in dict.fromkeys(names)}
    live: dict[str, str] = {}
    for kernel_id, image in live_images.items():
        image_id = await _image_id(docker, image)
        if image_id is not None:
            live[kernel_id] = image_id
    allowed, refused = purge_plan(wanted, live)
    removed = []
    for name in allowed:
        try:
            await docker.remove_image(name, force=force)
            removed.append(name)
        except ImageInUse as exc:
            refused[name] = ImageInUse(f"{exc.message} (force removes it: no live kernel "
                                       "runs it)")
        except KernletError as exc:
            refused[name] = exc
    return removed, refused


def _purge_images(agent: AgentActor, req: PurgeImages, cmd: Command) -> None:
    # every kernel not yet terminated, those in creation too (a create may be about to use it)
    live = {k: s.image for k, s in agent.states.items() if is_live(s) and s.image}

    def done(result: tuple[list[str], dict[str, KernletError]]) -> None:
        removed, refused = result
        agent.record_agent_event(ImagesPurged(
            removed=tuple(removed), refused={n: e.message for n, e in refused.items()}))
        agent.ctx.inventory.poke()
        cmd.reply.ok({"removed": removed,
                      "refused": {n: e.to_wire() for n, e in refused.items()}})

    agent.spawn(purge(agent.ctx.docker, req.images, live, req.force), then=done,
                fail=cmd.reply.error)


def _list_images(agent: AgentActor, req: ListImages, cmd: Command) -> None:
    inventory = agent.ctx.inventory

    async def fresh() -> list[dict[str, Any]]:
        await inventory.rescan()
        return inventory.listing()

    agent.spawn(fresh(), then=lambda found: cmd.reply.ok({"images": found}),
                fail=cmd.reply.error)


IMAGE_COMMANDS: dict[type[Any], Callable[[AgentActor, Any, Command], None]] = {
    CommitKernel: _commit_kernel,
    GetCommitStatus: _get_commit_status,
    PushImage: _push_image,
    PurgeImages: _purge_images,
    ListImages: _list_images,
}
