"""The node's kernel images as the agent knows them: id, tags, repo digests, size and
kernlet labels, for the heartbeat and ``list_images``.

A rescan lists the images labelled ``ai.kernlet.kernelspec`` and compares the list with the
previous one (:func:`changes`, a pure function, PLEG-style); what was added or removed behind
the agent's back (``docker rmi``, a build, another tool's pull) is recorded as
``image_inventory_changed``. The rescan runs every ``agent.image-scan-interval`` seconds
(kernlet.periodic.every, wired in service.py) and at once after the agent's own pulls,
commits, pushes and purges (:meth:`ImageInventory.poke`). Runs on the agent's loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kernlet.drivers.image_ops import ImageOps, ImageRecord
from kernlet.errors import KernletError
from kernlet.events import EventBody, ImageInventoryChanged
from kernlet.images import KERNELSPEC_LABEL

__all__ = ["ImageInventory", "changes", "names"]

log = logging.getLogger(__name__)


def names(records: list[ImageRecord]) -> set[str]:
    """Each image's tags, or its id when it has none."""
    return {n for r in records for n in (r.tags or (r.id,))}


def changes(before: list[ImageRecord], after: list[ImageRecord]) -> tuple[list[str], list[str]]:
    """(added, removed) names between two listings, sorted."""
    old, new = names(before), names(after)
    return sorted(new - old), sorted(old - new)


class ImageInventory:
    """The last listing of the node's kernel images; one rescan at a time."""

    def __init__(self, images: ImageOps,
                 record: Callable[[EventBody], Awaitable[Any]]) -> None:
        self._images = images
        self._record = record
        self.records: list[ImageRecord] = []
        #: wall-clock time of the last rescan that succeeded (None before the first)
        self.last_scan: float | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poked: set[asyncio.Task[Any]] = set()

    async def tick(self) -> None:
        """One periodic rescan (kernlet.periodic.every)."""
        await self.rescan()

    async def rescan(self) -> list[ImageRecord]:
        """List again; record what changed since the last listing (not at the first)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
            self._loop = asyncio.get_running_loop()
        async with self._lock:
            try:
                found = await self._images.inventory(KERNELSPEC_LABEL)
            except KernletError as exc:
                log.warning("image rescan failed: %s", exc)
                return self.records
            added, removed = changes(self.records, found)
            first = self.last_scan is None
            self.records, self.last_scan = found, time.time()
            if not first and (added or removed):
                log.info("images added %s, removed %s", added, removed)
                await self._record(ImageInventoryChanged(added=tuple(added),
                                                         removed=tuple(removed)))
            return found

    def poke(self) -> None:
        """Rescan soon (from any thread); before the first rescan, nothing to do."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def go() -> None:
            task = loop.create_task(self.rescan(), name="image-rescan")
            self._poked.add(task)
            task.add_done_callback(self._poked.discard)

        loop.call_soon_threadsafe(go)

    def heartbeat(self) -> list[dict[str, Any]]:
        """One entry per tag (``name``, ``id``, ``digests``, ``size``, ``labels``)."""
        return [{"name": tag, **{k: v for k, v in r.to_dict().items() if k != "tags"}}
                for r in self.records for tag in r.tags]

    def listing(self) -> list[dict[str, Any]]:
        """One entry per image (``id``, ``tags``, ``digests``, ``size``, ``labels``)."""
        return [r.to_dict() for r in self.records]
