"""The image commands of the manager-side client (mixed into
:class:`~kernlet.client.KernletClient`): pull, commit a kernel, push, purge, list.

The long ones (pull, commit, push) answer at once; ``pull``, ``commit`` and ``push`` here
then wait for the job's end event on the agent's event subject and raise the typed error it
names (``RegistryAuthFailed`` for refused credentials, ``DockerError``...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nats.aio.client import Client

from kernlet.client_events import EventSubscriber
from kernlet.errors import error_from_wire

__all__ = ["ImageCalls"]

Progress = Callable[[dict[str, Any]], None]


def _raise_failure(payload: dict[str, Any]) -> None:
    if not payload.get("ok"):
        raise error_from_wire({"type": payload.get("error_type") or "DockerError",
                               "message": payload.get("error", "")})


class ImageCalls:
    """Needs ``call``, ``nc``, ``prefix`` and ``agent_id`` of the client it is mixed into."""

    prefix: str
    agent_id: str

    @property
    def nc(self) -> Client:
        raise NotImplementedError

    async def call(self, command: str, reply_timeout: float | None = None, **args: Any) -> Any:
        raise NotImplementedError

    async def _job(self, start: Callable[[], Any], match: Callable[[dict[str, Any]], bool],
                   progress_type: str, end_type: str, on_progress: Progress | None,
                   timeout: float) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Start a background job (subscribed first, so that no event is missed); its
        answer, and its end event's payload (None when ``start`` says there is no job)."""
        events = await EventSubscriber(self.nc, self.prefix, self.agent_id).start()

        def done(e: dict[str, Any]) -> bool:
            if not match(e["payload"]):
                return False
            if e["type"] == progress_type and on_progress is not None:
                on_progress(dict(e["payload"]))
            return bool(e["type"] == end_type)

        try:
            res = dict(await start())
            if res.get("status") not in ("pulling", "pushing", "running"):
                return res, None
            ev = await events.until(done, timeout)
            _raise_failure(ev["payload"])
            return res, dict(ev["payload"])
        finally:
            await events.stop()

    # -- pull ---------------------------------------------------------------------------------

    async def check_and_pull(self, image: str, timeout: float = 7200.0) -> dict[str, Any]:
        """Start pulling an image unless present; answers at once (status present/pulling)."""
        return dict(await self.call("check_and_pull", image=image, timeout=timeout))

    async def pull(self, image: str, timeout: float = 7200.0,
                   on_progress: Progress | None = None) -> dict[str, Any]:
        """check_and_pull, then wait for its image_pulled event; raises its typed error.
        ``on_progress`` gets each ``image_pull_progress`` payload of that image."""
        res, end = await self._job(lambda: self.check_and_pull(image, timeout),
                                   lambda p: p.get("image") == image, "image_pull_progress",
                                   "image_pulled", on_progress, timeout + 5)
        if end is None:
            return res
        return {"image": image, "status": "pulled", "id": end["image_id"]}

    # -- commit -------------------------------------------------------------------------------

    async def commit_kernel(self, kernel_id: str, image: str, tag: str = "latest",
                            ) -> dict[str, Any]:
        """Start committing a running kernel to ``image:tag``; its status (with
        ``commit_id``) at once. The end is an ``image_commit_finished`` event."""
        return dict(await self.call("commit_kernel", kernel_id=kernel_id, image=image, tag=tag))

    async def get_commit_status(self, commit_id: str | None = None,
                                kernel_id: str | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {k: v for k, v in (("commit_id", commit_id),
                                                  ("kernel_id", kernel_id)) if v}
        return dict(await self.call("get_commit_status", **args))

    async def commit(self, kernel_id: str, image: str, tag: str = "latest",
                     timeout: float = 3600.0,
                     on_progress: Progress | None = None) -> dict[str, Any]:
        """commit_kernel, then wait for its end; the final status (``image_id``)."""
        started: dict[str, str] = {}

        async def start() -> dict[str, Any]:
            res = await self.commit_kernel(kernel_id, image, tag)
            started["id"] = res["commit_id"]
            if on_progress is not None:
                on_progress(res)
            return res

        _, end = await self._job(start, lambda p: p.get("commit_id") == started.get("id"),
                                 "image_commit_started", "image_commit_finished", None, timeout)
        assert end is not None
        return await self.get_commit_status(end["commit_id"])

    # -- push, purge, list --------------------------------------------------------------------

    async def push_image(self, image: str, registry: str = "") -> dict[str, Any]:
        """Start pushing ``image`` (to ``registry``, or the one its name names); at once."""
        return dict(await self.call("push_image", image=image, registry=registry))

    async def push(self, image: str, registry: str = "", timeout: float = 7200.0,
                   on_progress: Progress | None = None) -> dict[str, Any]:
        """push_image, then wait for its image_pushed event; raises its typed error."""
        target: dict[str, str] = {}

        async def start() -> dict[str, Any]:
            res = await self.push_image(image, registry)
            target["image"] = res["image"]
            return res

        res, end = await self._job(start, lambda p: p.get("image") == target.get("image"),
                                   "image_push_progress", "image_pushed", on_progress,
                                   timeout + 5)
        assert end is not None
        return {"image": res["image"], "status": "pushed", "digest": end["digest"]}

    async def purge_images(self, images: list[str], force: bool = False) -> dict[str, Any]:
        """Remove images no live kernel runs: ``{removed: [...], refused: {name: error}}``."""
        return dict(await self.call("purge_images", images=images, force=force))

    async def list_images(self) -> list[dict[str, Any]]:
        """The node's kernel images (id, tags, digests, size, labels), freshly rescanned."""
        return list((await self.call("list_images"))["images"])
