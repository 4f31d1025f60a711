"""The half stack: the real services kernlet needs, on loopback, started by kernlet itself.

``up`` installs what is missing from Debian's packages, starts each service that does not
answer yet (in its own session, logging to a file in the state directory, with a pid file) and
waits until it answers. ``down`` stops only what ``up`` started, and only after checking that
the recorded pid still runs the same program. ``status`` probes each service.

The probes use the standard library only, so that they work before any service exists.

Modules, each one concern: ``_probes`` (does a service answer), ``_services`` (the table of
services and tools, the state directory), ``_registry`` (the local registry's config and
probe), ``_install`` (apt-get), ``_processes`` (pid files, start, wait until answering, stop),
``_stack`` (``up``, ``down``, ``status`` over them all).
"""

from kernlet.halfstack._install import ensure_installed
from kernlet.halfstack._probes import DOCKER_SOCKET as DOCKER_SOCKET
from kernlet.halfstack._probes import ETCD_PEER_PORT as ETCD_PEER_PORT
from kernlet.halfstack._probes import ETCD_PORT as ETCD_PORT
from kernlet.halfstack._probes import LOOPBACK as LOOPBACK
from kernlet.halfstack._probes import NATS_MONITOR_PORT as NATS_MONITOR_PORT
from kernlet.halfstack._probes import NATS_PORT as NATS_PORT
from kernlet.halfstack._probes import REDIS_PORT as REDIS_PORT
from kernlet.halfstack._probes import Probe, probe_docker, probe_etcd, probe_nats, probe_redis
from kernlet.halfstack._processes import read_pid_file, stop_recorded
from kernlet.halfstack._registry import REGISTRY_PORT as REGISTRY_PORT
from kernlet.halfstack._registry import probe_registry, registry_config
from kernlet.halfstack._services import (
    DEFAULT_STATE_DIR,
    SERVICES,
    TOOLS,
    HalfstackError,
    Service,
    ServiceStatus,
    resolve_state_dir,
)
from kernlet.halfstack._stack import down, status, up

__all__ = [
    "DEFAULT_STATE_DIR",
    "REGISTRY_PORT",
    "SERVICES",
    "TOOLS",
    "HalfstackError",
    "Probe",
    "Service",
    "ServiceStatus",
    "down",
    "ensure_installed",
    "probe_docker",
    "probe_etcd",
    "probe_nats",
    "probe_redis",
    "probe_registry",
    "read_pid_file",
    "registry_config",
    "resolve_state_dir",
    "status",
    "stop_recorded",
    "up",
]
