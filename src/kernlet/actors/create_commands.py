"""The manager's creation commands (part of the table in :mod:`kernlet.actors.commands`):
create_kernels, create_local_network, destroy_local_network, and the log-space check a create
passes first.

Each runs in the agent actor's thread as ``handler(agent, request, command)``. A create is
refused before anything is created or recorded: ids, memory, mounts, shm, the log's free
space and the node's slots are checked for every kernel of the request first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernlet.actors.hooks.allocate import slot_fields, slot_request
from kernlet.actors.messages import Command, Create
from kernlet.actors.reply import Gather, Reply
from kernlet.cluster import CLUSTER_KEY, plan_cluster
from kernlet.drivers import scratch, storage
from kernlet.errors import InsufficientResource, InvalidRequest, KernelAlreadyExists, KernletError
from kernlet.protocol import CreateKernels, CreateLocalNetwork, DestroyLocalNetwork

if TYPE_CHECKING:
    from kernlet.actors.agent import AgentActor
    from kernlet.config import AgentConfig

__all__ = ["check_log_space", "create_kernels", "create_local_network", "destroy_local_network"]


def create_kernels(agent: AgentActor, req: CreateKernels, cmd: Command) -> None:
    taken = [k for k in req.kernel_ids if k in agent.known_ids or k in agent.kernels]
    if taken:
        raise KernelAlreadyExists(f"kernel id(s) already used on this agent: {taken}")
    c = agent.ctx.cfg.container
    small = [k for k, kc in zip(req.kernel_ids, req.configs, strict=True)
             if (kc.mem or c.default_mem) < c.min_mem]
    if small:
        raise InvalidRequest(
            f"kernel(s) {small}: mem below the smallest a kernel can be given "
            f"({c.min_mem // 1024**2} MiB, container.min-mem: the runtime and an idle "
            "ipykernel take about 76 MiB)")
    roots = agent.ctx.cfg.storage.roots
    for i, kc in enumerate(req.configs):  # refused before anything is created or recorded
        where = f"configs[{i}].mounts"
        plans = storage.plan_mounts(roots, [m.model_dump() for m in kc.mounts], where)
        storage.check_sources(roots, plans, where)
    over = [k for k, kc in zip(req.kernel_ids, req.configs, strict=True)
            if (kc.shm_size or c.shm_size) > (kc.mem or c.default_mem)]
    if over:
        raise InvalidRequest(
            f"kernel(s) {over}: shm_size above mem (/dev/shm is part of the kernel's memory; "
            f"the default shm_size is container.shm-size = {c.shm_size // 1024**2} MiB)")
    check_log_space(agent.ctx.cfg)
    for i, (kernel_id, kconfig) in enumerate(zip(req.kernel_ids, req.configs, strict=True)):
        for slot, amount in slot_request(agent.ctx.cfg, kconfig.model_dump()).items():
            try:
                agent.ledger.check({slot: amount})
            except KernletError as exc:
                raise type(exc)(f"create_kernels: configs.{i}.{slot_fields(slot)} (kernel "
                                f"{kernel_id}): {exc.message}") from exc
    cluster = _cluster(agent, req)
    gather = Gather(len(req.kernel_ids), lambda results: cmd.reply.ok({"kernels": results}))
    for i, (kernel_id, kconfig) in enumerate(zip(req.kernel_ids, req.configs, strict=True)):
        config = kconfig.model_dump()
        if cluster:
            config[CLUSTER_KEY] = cluster[i]
        elif agent.pool.take(kernel_id, req.session_id, config, gather.part(i), False):
            continue  # a warm-pool kernel becomes this one (kernlet.actors.pool)
        ref = agent.start_kernel(kernel_id, None)
        ref.tell(Create(session_id=req.session_id, image=kconfig.image,
                        config=config, done=gather.part(i)))


def _cluster(agent: AgentActor, req: CreateKernels) -> list[dict[str, Any]]:
    """Each kernel's session facts (docs/sessions.md); [] for kernels of no cluster."""
    if req.cluster is None:
        return []
    if agent.ctx.cfg.container.network == "none":
        raise InvalidRequest("create_kernels: cluster: this agent runs kernels without a "
                             "network (container.network = none)")
    net = req.cluster.network
    if net and agent.networks.book.owner(net) != "manager":
        raise InvalidRequest(f"create_kernels: cluster.network {net!r} was not made by "
                             "create_local_network on this agent")
    return plan_cluster(req.session_id, req.kernel_ids, req.cluster, agent.ctx.cfg.agent.id)


def create_local_network(agent: AgentActor, req: CreateLocalNetwork, cmd: Command) -> None:
    internal = agent.ctx.cfg.container.network != "bridge"
    agent.networks.run(agent.networks.book.create_owned(req.network, internal, cmd.reply))


def destroy_local_network(agent: AgentActor, req: DestroyLocalNetwork, cmd: Command) -> None:
    agent.networks.run(agent.networks.book.destroy_owned(req.network, Reply.to(
        lambda r: cmd.reply.error(r) if isinstance(r, BaseException) else cmd.reply.ok(
            {"network": req.network, "destroyed": True}))))


def check_log_space(cfg: AgentConfig) -> None:
    """InsufficientResource while the event log's filesystem has less free space than
    ``agent.min-log-free``: a kernel must never make the agent unable to record it."""
    floor = cfg.agent.min_log_free
    if not floor:
        return
    free = scratch.free_bytes(cfg.log_path.parent)
    if free < floor:
        raise InsufficientResource(
            f"the event log's filesystem ({cfg.log_path.parent}) has {free // 1024**2} MiB "
            f"free, less than agent.min-log-free ({floor // 1024**2} MiB): no new kernel "
            "until space is freed")
