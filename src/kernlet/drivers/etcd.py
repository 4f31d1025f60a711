"""etcd driver over aetcd: cluster-wide settings and the agent's liveness key.

Keys, under one namespace (``/kernlet/<namespace>/``)::

    config/<name...>          cluster-wide settings, read as a flat dict {"redis/addr": ...}
    nodes/agents/<agent_id>   liveness: bound to a lease that the agent keeps alive;
                              revoked on clean shutdown, expires by itself when it dies

aetcd and gRPC errors become :class:`EtcdError` in one place, :func:`_translate`. A watch
reconnects by itself: after an outage it re-reads the settings and yields what changed
meanwhile, then watches again from that revision. Runs on the agent's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aetcd
import aetcd.exceptions
import grpc

from kernlet.errors import EtcdError

__all__ = ["AgentLease", "ConfigChange", "EtcdDriver", "EtcdError"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One setting changed: ``key`` relative to the config prefix; ``value`` None: deleted."""

    key: str
    value: str | None


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    """The one place where aetcd's and gRPC's errors become kernlet's."""
    try:
        yield
    except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError, OSError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        raise EtcdError(f"etcd {what}: {type(exc).__name__}: {detail}") from exc


def _diff(old: dict[str, str], new: dict[str, str]) -> list[ConfigChange]:
    changes = [ConfigChange(k, v) for k, v in new.items() if old.get(k) != v]
    return changes + [ConfigChange(k, None) for k in old if k not in new]


class EtcdDriver:
    """Settings and liveness under ``/kernlet/<namespace>/``; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2379,
        namespace: str = "local",
        *,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 3.0,
        reconnect_delay: float = 1.0,
    ) -> None:
        if not namespace or "/" in namespace:
            raise ValueError(f"bad etcd namespace {namespace!r}")
        self.prefix = f"/kernlet/{namespace}/"
        self.config_prefix = self.prefix + "config/"
        backoff_ms = max(100, int(reconnect_delay * 1000))
        self._args: dict[str, Any] = {
            "host": host, "port": port, "username": user, "password": password,
            "timeout": timeout,
            # gRPC's reconnect backoff grows to 120 s by default (and is shared between
            # channels): after an etcd outage we want to be back within seconds
            "options": {
                "grpc.initial_reconnect_backoff_ms": backoff_ms,
                "grpc.min_reconnect_backoff_ms": backoff_ms,
                "grpc.max_reconnect_backoff_ms": max(backoff_ms, 5000),
                "grpc.use_local_subchannel_pool": 1,
            },
        }
        self.reconnect_delay = reconnect_delay
        self._client: Any = None

    @property
    def _c(self) -> Any:
        if self._client is None:
            self._client = aetcd.Client(**self._args)
        return self._client

    async def close(self) -> None:
        """Close the connection; the next call opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken channel may fail too
                await client.close()

    def agent_key(self, agent_id: str) -> str:
        return f"{self.prefix}nodes/agents/{agent_id}"

    async def live_agents(self) -> dict[str, str]:
        """Every agent whose liveness key exists (its lease has not expired): id -> value."""
        base = self.prefix + "nodes/agents/"
        with _translate("list agents"):
            got = await self._c.get_prefix(base.encode())
            return {bytes(kv.key).decode()[len(base):]: bytes(kv.value).decode()
                    for kv in got}

    async def get(self, key: str) -> str | None:
        """The value of ``<prefix><key>``, or None."""
        with _translate(f"get {key}"):
            got = await self._c.get((self.prefix + key).encode())
        return None if got is None else bytes(got.value).decode()

    async def put(self, key: str, value: str, lease: int | None = None) -> None:
        with _translate(f"put {key}"):
            await self._c.put((self.prefix + key).encode(), value.encode(), lease=lease)

    async def delete(self, key: str) -> None:
        with _translate(f"delete {key}"):
            await self._c.delete((self.prefix + key).encode())

    async def get_config(self) -> dict[str, str]:
        """Every setting under ``config/``, as {relative key: value}."""
        return (await self._snapshot())[0]

    async def _snapshot(self) -> tuple[dict[str, str], int]:
        with _translate("read config"):
            got = await self._c.get_prefix(self.config_prefix.encode())
            revision = int(got.header.revision)
            items = {
                bytes(kv.key).decode()[len(self.config_prefix):]: bytes(kv.value).decode()
                for kv in got
            }
        return items, revision

    async def watch_config(
        self, known: Mapping[str, str] | None = None
    ) -> AsyncIterator[ConfigChange]:
        """Changes to the settings, until closed or cancelled. ``known``: the settings the
        caller has (from :meth:`get_config`); whatever differs from them is yielded first,
        so no change between that read and this watch is lost. Survives etcd outages:
        while etcd is away it retries every ``reconnect_delay`` seconds, then yields what
        changed meanwhile."""
        known = dict(known) if known is not None else None
        while True:
            try:
                snapshot, revision = await self._snapshot()
                for change in _diff(known, snapshot) if known is not None else []:
                    yield change
                known = snapshot
                with _translate("watch config"):
                    watch = await self._c.watch_prefix(
                        self.config_prefix.encode(), start_revision=revision + 1
                    )
                events = watch.__aiter__()
                try:
                    while True:
                        with _translate("watch config"):
                            try:
                                event = await events.__anext__()
                            except StopAsyncIteration:
                                break
                        key = bytes(event.kv.key).decode()[len(self.config_prefix):]
                        value = None if event.kind == "DELETE" else bytes(event.kv.value).decode()
                        if value is None:
                            known.pop(key, None)
                        else:
                            known[key] = value
                        yield ConfigChange(key, value)
                finally:
                    with contextlib.suppress(Exception):
                        await watch.cancel()
            except EtcdError as exc:
                log.warning("etcd config watch broken (%s); retrying", exc)
                await self.close()
                await asyncio.sleep(self.reconnect_delay)

    def liveness(self, agent_id: str, value: str, ttl: int = 30) -> AgentLease:
        """The liveness key of ``agent_id`` (not yet registered: call ``start``)."""
        return AgentLease(self, self.agent_key(agent_id), value, ttl)

    async def grant(self, ttl: int) -> int:
        with _translate("grant lease"):
            return int((await self._c.lease(ttl)).id)

    async def refresh(self, lease: int) -> int:
        """Keep a lease alive; returns its remaining TTL (0: it has expired)."""
        with _translate("refresh lease"):
            reply = await self._c.refresh_lease(lease)
        return int(reply.TTL) if reply is not None else 0

    async def revoke(self, lease: int) -> None:
        with _translate("revoke lease"):
            await self._c.revoke_lease(lease)


class AgentLease:
    """A key bound to a lease, refreshed every ttl/3 s by a task on the loop. If the lease
    expired meanwhile (etcd away longer than the TTL), a new one is granted and the key
    written again."""

    def __init__(self, etcd: EtcdDriver, key: str, value: str, ttl: int) -> None:
        if ttl < 2:
            raise ValueError("etcd lease TTL must be at least 2 s")
        self.etcd, self.key, self.value, self.ttl = etcd, key, value, ttl
        self.lease: int | None = None
        self._ok = False
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        """Whether the last registration or refresh went through."""
        return self.lease is not None and self._ok

    async def start(self) -> None:
        """Register once (a failure is logged, not raised) and start the refresh task."""
        await self._tick()
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def update(self, value: str) -> None:
        """Write a new value under the same lease (EtcdError if etcd fails)."""
        self.value = value
        if self.lease is not None:
            await self.etcd.put(self.key[len(self.etcd.prefix):], value, lease=self.lease)

    async def stop(self, revoke: bool = True) -> None:
        """Stop refreshing; ``revoke`` removes the key at once (clean shutdown). Without it
        the key expires after the TTL, as if the agent had died."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        lease, self.lease = self.lease, None
        if revoke and lease is not None:
            try:
                await self.etcd.revoke(lease)
            except EtcdError as exc:
                log.warning("liveness lease not revoked (it will expire): %s", exc)

    async def _tick(self) -> None:
        try:
            if self.lease is not None and await self.etcd.refresh(self.lease) > 0:
                self._ok = True
                return
            if self.lease is not None:
                log.warning("liveness lease expired; registering again")
            self.lease = None
            lease = await self.etcd.grant(self.ttl)
            await self.etcd.put(self.key[len(self.etcd.prefix):], self.value, lease=lease)
            self.lease, self._ok = lease, True
        except EtcdError as exc:
            if self._ok or self._task is None:  # log the first failure of an outage only
                log.warning("liveness key %s not refreshed: %s", self.key, exc)
            self._ok = False
            await self.etcd.close()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self._tick()
