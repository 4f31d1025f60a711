"""Redis driver over redis.asyncio: the stats writer.

Keys (values are msgpack maps, encoded by :func:`kernlet.events.codec.pack`)::

    kernlet:stats:node:<agent_id>     node stats, expires after node_ttl (120 s)
    kernlet:stats:kernel:<kernel_id>  one kernel's stats, expires after kernel_ttl (10 s),
                                      so it disappears soon after the kernel dies

Every sample is written in one pipelined round trip. redis errors become
:class:`StatsStoreError` in one place, :func:`_translate`. Redis being down never stops the
agent: :meth:`StatsWriter.try_write` and :meth:`StatsWriter.run` log and carry on, and the
next write after Redis returns goes through (the client reconnects by itself).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kernlet.errors import StatsStoreError
from kernlet.events.codec import CodecError, pack, unpack
from kernlet.periodic import every

__all__ = ["KERNEL_KEY", "NODE_KEY", "StatsStoreError", "StatsWriter"]

log = logging.getLogger(__name__)

NODE_KEY = "kernlet:stats:node:{agent_id}"
KERNEL_KEY = "kernlet:stats:kernel:{kernel_id}"

#: what :meth:`StatsWriter.run` asks for each tick: (node stats, kernel id -> kernel stats)
Sample = tuple[Mapping[str, Any], Mapping[str, Mapping[str, Any]]]


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    """The one place where redis errors become kernlet's."""
    try:
        yield
    except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
        raise StatsStoreError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except CodecError as exc:
        raise StatsStoreError(f"{what}: {exc}") from exc


class StatsWriter:
    """Writes node and kernel stats to Redis with expiry; survives Redis outages."""

    def __init__(
        self,
        agent_id: str,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        node_ttl: float = 120.0,
        kernel_ttl: float = 10.0,
        timeout: float = 2.0,
    ) -> None:
        self.agent_id = agent_id
        self.node_ttl, self.kernel_ttl = node_ttl, kernel_ttl
        self._redis = aioredis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # one immediate retry: the first command after a Redis restart meets a dead
            # pooled connection, the retry opens a new one
            retry=Retry(NoBackoff(), 1),
        )
        #: whether the last write went through (False from the first failure until a success)
        self.healthy = True
        #: writes that failed since this writer was made
        self.failures = 0

    async def close(self) -> None:
        await self._redis.aclose()

    async def write(
        self, node: Mapping[str, Any] | None, kernels: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Write one sample in one round trip; StatsStoreError if Redis fails."""
        with _translate(f"write stats of {len(kernels)} kernel(s)"):
            pipe = self._redis.pipeline(transaction=False)
            if node is not None:
                pipe.set(NODE_KEY.format(agent_id=self.agent_id), pack(dict(node)),
                         px=int(self.node_ttl * 1000))
            for kernel_id, stats in kernels.items():
                pipe.set(KERNEL_KEY.format(kernel_id=kernel_id), pack(dict(stats)),
                         px=int(self.kernel_ttl * 1000))
            await pipe.execute()

    async def try_write(
        self, node: Mapping[str, Any] | None, kernels: Mapping[str, Mapping[str, Any]]
    ) -> bool:
        """:meth:`write` that never raises a driver error: logs once when Redis goes away
        and once when it comes back. Returns whether the write went through."""
        try:
            await self.write(node, kernels)
        except StatsStoreError as exc:
            self.failures += 1
            if self.healthy:
                log.warning("stats not written, Redis unavailable (will retry): %s", exc)
            self.healthy = False
            return False
        if not self.healthy:
            log.info("stats written again, Redis is back")
        self.healthy = True
        return True

    async def run(self, sample: Callable[[], Awaitable[Sample]], interval: float = 5.0) -> None:
        """Every ``interval`` seconds: take a sample and write it, until cancelled. A
        failing sample or write is logged and the loop goes on."""
        async def tick() -> None:
            node, kernels = await sample()  # a failing sample is logged by every()
            await self.try_write(node, kernels)

        await every(interval, tick, "stats sample")

    async def read_node(self, agent_id: str | None = None) -> dict[str, Any] | None:
        return await self._read(NODE_KEY.format(agent_id=agent_id or self.agent_id))

    async def read_kernel(self, kernel_id: str) -> dict[str, Any] | None:
        return await self._read(KERNEL_KEY.format(kernel_id=kernel_id))

    async def _read(self, key: str) -> dict[str, Any] | None:
        with _translate(f"read {key}"):
            data = await self._redis.get(key)
            if not isinstance(data, bytes):
                return None
            value = unpack(data)
        return value if isinstance(value, dict) else None
