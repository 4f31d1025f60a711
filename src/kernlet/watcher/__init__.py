"""The watcher: the operators' HTTP endpoint of one agent, served on the agent's loop.

A :class:`Watcher` is a pykka actor (:class:`WatcherActor`: usage sampling and shutdown, the
work that must not run on the loop) plus an aiohttp app on the agent's single loop: health,
status, Prometheus metrics, kernels with their event history, operations guarded by a token,
a live dashboard (server-sent events) and an OpenAPI document. See docs/watcher.md.
"""

from kernlet.watcher._actor import Sample, ShutdownAgent, WatcherActor
from kernlet.watcher._app import DESTROY_REASON, TOKEN_HEADER, build_app, check_token
from kernlet.watcher._core import WatcherCore
from kernlet.watcher._handle import AgentHandle
from kernlet.watcher._link import RESET_REASON, AgentLink
from kernlet.watcher._live import Hub, KernelView
from kernlet.watcher._metrics import WatcherMetrics
from kernlet.watcher._openapi import openapi_spec
from kernlet.watcher._status import Check, NodeStatus, build_status, reconcile_check
from kernlet.watcher._usage import HostUsage, KernelUsage, Usage, UsageTracker
from kernlet.watcher._watcher import Watcher, node_capacity

__all__ = [
    "DESTROY_REASON",
    "RESET_REASON",
    "TOKEN_HEADER",
    "AgentHandle",
    "AgentLink",
    "Check",
    "HostUsage",
    "Hub",
    "KernelUsage",
    "KernelView",
    "NodeStatus",
    "Sample",
    "ShutdownAgent",
    "Usage",
    "UsageTracker",
    "Watcher",
    "WatcherActor",
    "WatcherCore",
    "WatcherMetrics",
    "build_app",
    "build_status",
    "check_token",
    "node_capacity",
    "openapi_spec",
    "reconcile_check",
]
