"""Files in a kernel's work dir (``/home/work`` in the container), confined to it.

The work dir is a host directory bind-mounted into the container, so the agent reads and
writes it directly, as the kernel's uid. Every path is resolved (symlinks followed) and must
stay inside the work dir; anything else is refused with InvalidRequest. Blocking file calls
run in a worker thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kernlet.errors import InvalidRequest

__all__ = ["CHUNK_MAX", "WorkDir"]

#: largest chunk one download call returns (NATS messages are capped at 1 MiB)
CHUNK_MAX = 768 * 1024
#: files a listing returns at most
LIST_MAX = 10_000


@dataclass(frozen=True, slots=True)
class WorkDir:
    root: Path
    uid: int
    gid: int
    #: the largest file an upload may make (bytes)
    max_file: int = 64 * 1024 * 1024

    def resolve(self, path: str) -> Path:
        """The host path for a path relative to /home/work (or absolute under it)."""
        if "\x00" in path:
            raise InvalidRequest("path contains a NUL byte")
        p = PurePosixPath(path)
        if p.is_absolute():
            try:
                p = p.relative_to("/home/work")
            except ValueError as exc:
                raise InvalidRequest(f"{path!r} is outside /home/work") from exc
        root = self.root.resolve()
        target = (root / p).resolve()
        if target != root and root not in target.parents:
            raise InvalidRequest(f"{path!r} is outside /home/work")
        return target

    async def upload(self, path: str, data: bytes, append: bool = False) -> dict[str, Any]:
        target = self.resolve(path)
        return await asyncio.to_thread(self._write, target, data, append)

    def _write(self, target: Path, data: bytes, append: bool) -> dict[str, Any]:
        if target == self.root.resolve() or target.is_dir():
            raise InvalidRequest("cannot write to a directory")
        size = target.stat().st_size if append and target.exists() else 0
        if size + len(data) > self.max_file:
            raise InvalidRequest(f"file would exceed the upload limit of {self.max_file} bytes")
        parent = target.parent
        made = []
        while not parent.exists():
            made.append(parent)
            parent = parent.parent
        for d in reversed(made):
            d.mkdir()
            os.chown(d, self.uid, self.gid)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
        fd = os.open(target, flags, 0o644)
        try:
            os.write(fd, data)
            os.fchown(fd, self.uid, self.gid)
        finally:
            os.close(fd)
        return {"path": str(target.relative_to(self.root.resolve())), "size": size + len(data)}

    async def download(self, path: str, offset: int, length: int) -> dict[str, Any]:
        target = self.resolve(path)
        return await asyncio.to_thread(self._read, target, offset, min(length, CHUNK_MAX))

    def _read(self, target: Path, offset: int, length: int) -> dict[str, Any]:
        if not target.is_file():
            raise InvalidRequest(f"no such file: {target.relative_to(self.root.resolve())}")
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            size = os.fstat(fd).st_size
            os.lseek(fd, offset, os.SEEK_SET)
            data = os.read(fd, length)
        finally:
            os.close(fd)
        return {"data": data, "offset": offset, "size": size,
                "eof": offset + len(data) >= size}

    async def list(self, path: str) -> dict[str, Any]:
        target = self.resolve(path)
        return await asyncio.to_thread(self._list, target)

    def _list(self, target: Path) -> dict[str, Any]:
        if not target.is_dir():
            raise InvalidRequest(f"not a directory: {target.relative_to(self.root.resolve())}")
        files = []
        with os.scandir(target) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                kind = ("dir" if stat.S_ISDIR(st.st_mode) else
                        "link" if stat.S_ISLNK(st.st_mode) else "file")
                files.append({"name": entry.name, "type": kind, "size": st.st_size,
                              "mode": stat.filemode(st.st_mode), "mtime": st.st_mtime})
                if len(files) >= LIST_MAX:
                    break
        files.sort(key=lambda f: str(f["name"]))
        rel = target.relative_to(self.root.resolve())
        return {"path": "/home/work" + ("" if str(rel) == "." else f"/{rel}"), "files": files}
