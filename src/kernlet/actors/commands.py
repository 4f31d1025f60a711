"""The manager's commands, as a table from request type to handler.

Each handler runs in the agent actor's thread as ``handler(agent, request, command)``: it
either answers ``command.reply`` itself, hands the reply to a kernel actor, or starts a step
on the loop that answers later. A :class:`~kernlet.errors.KernletError` it raises becomes the
reply's error (see :meth:`AgentActor.handle`). Grouped by concern: kernels, files, services,
images, registry sync and reset, node info, debug; the creation of kernels and of the
manager's networks is in :mod:`kernlet.actors.create_commands`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kernlet import __version__
from kernlet.actors import kept_logs
from kernlet.actors.create_commands import (
    check_log_space,
    create_kernels,
    create_local_network,
    destroy_local_network,
)
from kernlet.actors.image_commands import IMAGE_COMMANDS
from kernlet.actors.messages import (
    Command,
    Complete,
    Destroy,
    InjectedFault,
    Interrupt,
    Restart,
    RunCode,
    TriggerBatch,
)
from kernlet.actors.pool import entry_of
from kernlet.actors.pulls import start_pull
from kernlet.actors.reply import Gather, Reply
from kernlet.actors.services import shutdown_service, start_service
from kernlet.actors.steps import kernel_dirs
from kernlet.drivers.files import WorkDir
from kernlet.errors import (
    ImageNotFound,
    InvalidRequest,
    KernelNotFound,
    KernelNotRunning,
)
from kernlet.events import (
    KernelState,
    event_to_dict,
    is_live,
)
from kernlet.protocol import (
    CheckAndPull,
    CreateKernels,
    CreateLocalNetwork,
    DebugFault,
    DestroyKernel,
    DestroyLocalNetwork,
    DownloadFile,
    Execute,
    GatherHwinfo,
    GetCompletions,
    GetEvents,
    GetLogs,
    InterruptKernel,
    ListFiles,
    ListKernels,
    Ping,
    ResetAgent,
    RestartKernel,
    ShutdownService,
    StartService,
    SyncKernelRegistry,
    TriggerBatchExecution,
    UploadFile,
)

if TYPE_CHECKING:
    from kernlet.actors.agent import AgentActor

__all__ = ["COMMANDS", "Handler", "check_log_space", "summary"]

#: ``(agent, request, command) -> None``
Handler = Callable[["AgentActor", Any, Command], None]


def summary(state: KernelState) -> dict[str, Any]:
    """The public view of one kernel."""
    return {
        "id": state.kernel_id,
        "session_id": state.session_id,
        "state": state.state.value,
        "image": state.image,
        "container_id": state.container_id,
        "slots": dict(state.slots),
        "executions": state.executions,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "reason": state.reason,
        "exit_code": state.exit_code,
        "pool": entry_of(state),  # an unassigned warm-pool kernel's entry (image), else ""
    }


# -- kernels -----------------------------------------------------------------------------------


def _destroy_kernel(agent: AgentActor, req: DestroyKernel, cmd: Command) -> None:
    agent.kernel(req.kernel_id).tell(Destroy(reason=req.reason, reply=cmd.reply))


def _restart_kernel(agent: AgentActor, req: RestartKernel, cmd: Command) -> None:
    agent.kernel(req.kernel_id).tell(Restart(reply=cmd.reply))


def _execute(agent: AgentActor, req: Execute, cmd: Command) -> None:
    agent.kernel(req.kernel_id).tell(RunCode(req, cmd.reply, cmd.sink))


def _interrupt_kernel(agent: AgentActor, req: InterruptKernel, cmd: Command) -> None:
    agent.kernel(req.kernel_id).tell(Interrupt(cmd.reply))


def _get_completions(agent: AgentActor, req: GetCompletions, cmd: Command) -> None:
    agent.kernel(req.kernel_id).tell(Complete(req.text, req.pos, cmd.reply))


def _trigger_batch(agent: AgentActor, req: TriggerBatchExecution, cmd: Command) -> None:
    run_id = uuid.uuid4().hex
    agent.kernel(req.kernel_id).tell(
        TriggerBatch(run_id=run_id, code=req.code, timeout=req.timeout, reply=cmd.reply))


def _list_kernels(agent: AgentActor, req: ListKernels, cmd: Command) -> None:
    live = [summary(s) for s in agent.states.values() if is_live(s)]
    if not req.all:
        cmd.reply.ok({"kernels": live})
        return
    store = agent.ctx.store

    async def everything() -> list[dict[str, Any]]:
        return [summary(state) for _, state in sorted((await store.all_kernels()).items())]

    agent.spawn(everything(), then=lambda ks: cmd.reply.ok({"kernels": ks}),
                fail=cmd.reply.error)


def _get_events(agent: AgentActor, req: GetEvents, cmd: Command) -> None:
    def done(events: list[Any]) -> None:
        if not events:
            cmd.reply.error(KernelNotFound(f"no events for kernel {req.kernel_id!r}"))
        else:
            cmd.reply.ok({"events": [event_to_dict(e) for e in events]})

    agent.spawn(agent.ctx.store.read_stream(req.kernel_id), then=done, fail=cmd.reply.error)


def _get_logs(agent: AgentActor, req: GetLogs, cmd: Command) -> None:
    try:
        state = agent.live_state(req.kernel_id)
    except (KernelNotFound, KernelNotRunning) as exc:  # terminated: what was kept, if any
        gone = exc

        def answer(text: str | None) -> None:
            if text is None:
                cmd.reply.error(gone)
            else:
                cmd.reply.ok({"logs": text, "kept": True})

        agent.spawn(asyncio.to_thread(kept_logs.read, agent.ctx.cfg, req.kernel_id, req.tail),
                    then=answer, fail=cmd.reply.error)
        return
    agent.spawn(agent.ctx.docker.logs(state.container_id, req.tail, req.since,
                                      req.timestamps),
                then=lambda text: cmd.reply.ok({"logs": text}), fail=cmd.reply.error)


# -- files -------------------------------------------------------------------------------------


def _work_dir(agent: AgentActor, kernel_id: str) -> WorkDir:
    agent.kernel(kernel_id)
    c = agent.ctx.cfg.container
    return WorkDir(kernel_dirs(agent.ctx.cfg, kernel_id).work, c.kernel_uid, c.kernel_gid)


def _upload_file(agent: AgentActor, req: UploadFile, cmd: Command) -> None:
    wd = _work_dir(agent, req.kernel_id)
    agent.spawn(wd.upload(req.path, req.data, req.append), then=cmd.reply.ok,
                fail=cmd.reply.error)


def _download_file(agent: AgentActor, req: DownloadFile, cmd: Command) -> None:
    wd = _work_dir(agent, req.kernel_id)
    agent.spawn(wd.download(req.path, req.offset, req.length), then=cmd.reply.ok,
                fail=cmd.reply.error)


def _list_files(agent: AgentActor, req: ListFiles, cmd: Command) -> None:
    wd = _work_dir(agent, req.kernel_id)
    agent.spawn(wd.list(req.path), then=cmd.reply.ok, fail=cmd.reply.error)


# -- services ----------------------------------------------------------------------------------


def _start_service(agent: AgentActor, req: StartService, cmd: Command) -> None:
    state = agent.live_state(req.kernel_id)
    agent.spawn(start_service(agent.ctx.docker, agent.ctx.cfg, state, req.service),
                then=cmd.reply.ok, fail=cmd.reply.error)


def _shutdown_service(agent: AgentActor, req: ShutdownService, cmd: Command) -> None:
    state = agent.live_state(req.kernel_id)
    agent.spawn(shutdown_service(agent.ctx.docker, agent.ctx.cfg, state, req.service),
                then=cmd.reply.ok, fail=cmd.reply.error)


# -- images ------------------------------------------------------------------------------------


def _check_and_pull(agent: AgentActor, req: CheckAndPull, cmd: Command) -> None:
    """Answer at once (present / pulling); a pull reports image_pull_progress events
    and ends with image_pulled (see kernlet.actors.pulls)."""
    image, reply = req.image, cmd.reply
    if image in agent.pulling:
        reply.ok({"image": image, "status": "pulling"})
        return
    def missing(err: BaseException) -> None:
        if not isinstance(err, ImageNotFound):
            reply.error(err)
            return
        reply.ok({"image": image, "status": "pulling"})
        start_pull(agent, image, req.timeout)

    agent.spawn(agent.ctx.docker.image(image),
                then=lambda info: reply.ok({"image": image, "status": "present",
                                            "id": info.id}),
                fail=missing)


# -- registry sync and reset -------------------------------------------------------------------


def _sync_registry(agent: AgentActor, req: SyncKernelRegistry, cmd: Command) -> None:
    """The manager's belief vs ours: destroy what it does not know, report what we lack."""
    ours = {k for k, s in agent.states.items() if is_live(s) and not entry_of(s)}  # not the pool's
    theirs = set(req.kernel_ids)
    for kernel_id in sorted(ours - theirs):
        agent.tell_kernel(kernel_id, Destroy(reason="not-found-in-manager"))
    terminated = [
        {"id": k, "reason": "already-terminated" if k in agent.known_ids else "unknown-kernel"}
        for k in sorted(theirs - ours)
    ]
    cmd.reply.ok({"destroyed": sorted(ours - theirs), "terminated": terminated})


def _reset(agent: AgentActor, req: ResetAgent, cmd: Command) -> None:
    """Destroy every live kernel; answer when all are clean."""
    ids = [k for k, ref in agent.kernels.items() if ref.is_alive()]
    if not ids:
        cmd.reply.ok({"destroyed": []})
        return
    gather = Gather(len(ids), lambda results: cmd.reply.ok({"destroyed": [
        r.get("id") if isinstance(r, dict) else {"error": str(r)} for r in results]}))
    for i, kernel_id in enumerate(ids):
        part = Reply.to(gather.part(i))
        if not agent.tell_kernel(kernel_id, Destroy(reason=req.reason, reply=part)):
            part.ok({"id": kernel_id})  # it stopped meanwhile: nothing left to destroy


# -- node info and debug -----------------------------------------------------------------------


def _ping(agent: AgentActor, req: Ping, cmd: Command) -> None:
    cmd.reply.ok({"msg": req.msg, "agent_id": agent.ctx.cfg.agent.id, "version": __version__})


def _gather_hwinfo(agent: AgentActor, req: GatherHwinfo, cmd: Command) -> None:
    cmd.reply.ok({"plugins": agent.hwinfo, "slots": agent.ledger.slot_report()})


def _debug_fault(agent: AgentActor, req: DebugFault, cmd: Command) -> None:
    if not agent.ctx.cfg.debug.fault_injection:
        raise InvalidRequest("debug_fault: fault injection is disabled "
                             "(debug.fault-injection = false)")
    if req.actor == "agent":
        cmd.reply.ok({"injected": True, "actor": "agent"})
        agent.inject_root_fault()
    else:
        agent.kernel(req.kernel_id).tell(InjectedFault())
        cmd.reply.ok({"injected": True, "actor": "kernel"})


COMMANDS: dict[type[Any], Handler] = {
    Ping: _ping,
    CreateKernels: create_kernels,
    CreateLocalNetwork: create_local_network,
    DestroyLocalNetwork: destroy_local_network,
    DestroyKernel: _destroy_kernel,
    RestartKernel: _restart_kernel,
    Execute: _execute,
    InterruptKernel: _interrupt_kernel,
    GetCompletions: _get_completions,
    TriggerBatchExecution: _trigger_batch,
    ListKernels: _list_kernels,
    GetEvents: _get_events,
    GetLogs: _get_logs,
    UploadFile: _upload_file,
    DownloadFile: _download_file,
    ListFiles: _list_files,
    StartService: _start_service,
    ShutdownService: _shutdown_service,
    CheckAndPull: _check_and_pull,
    SyncKernelRegistry: _sync_registry,
    ResetAgent: _reset,
    GatherHwinfo: _gather_hwinfo,
    DebugFault: _debug_fault,
    **IMAGE_COMMANDS,  # commit_kernel, get_commit_status, push_image, purge_images, list_images
}
