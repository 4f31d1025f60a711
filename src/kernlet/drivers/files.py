"""Files in a kernel's work dir (``/home/work`` in the container), confined by construction.

The work dir is a host directory bind-mounted into the container, and code in the kernel owns
it: it can swap any directory under it for a symlink at any moment. So no path is ever
checked and then used. Every operation starts from a directory fd of the work dir and walks
one component at a time with ``openat(..., O_NOFOLLOW)`` (``O_DIRECTORY`` for the parents), so
a symlink, wherever and whenever it appears, makes the walk fail instead of leading out.
Parents that an upload makes are made with ``mkdirat`` and then opened the same way, so a
directory swapped right after its creation is refused too. The last component is opened with
``O_NOFOLLOW | O_NONBLOCK`` and must be a regular file (a planted FIFO or device cannot block
or redirect the agent). Symlinks under the work dir are never followed, even those that stay
inside: the agent cannot tell those apart safely. ``..`` may not climb above the work dir.

Any such refusal is an InvalidRequest naming the path. Blocking file calls run in a worker
thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import errno
import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernlet.errors import InvalidRequest
from kernlet.layout import WORK_IN_CONTAINER

__all__ = ["CHUNK_MAX", "WorkDir"]

#: largest chunk one download call returns (NATS messages are capped at 1 MiB)
CHUNK_MAX = 768 * 1024
#: files a listing returns at most
LIST_MAX = 10_000

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

#: path components under the work dir (WorkDir.list shadows ``list`` in the class body)
Parts = list[str]


def split(path: str) -> Parts:
    """The components of a path under /home/work, with ``.`` and ``..`` folded lexically.

    Lexical folding is sound because no symlink is ever followed afterwards."""
    if "\x00" in path:
        raise InvalidRequest("path contains a NUL byte")
    if path.startswith("/"):
        rel = posixpath.normpath(path)
        if rel == WORK_IN_CONTAINER:
            return []
        if not rel.startswith(WORK_IN_CONTAINER + "/"):
            raise InvalidRequest(f"{path!r} is outside {WORK_IN_CONTAINER}")
        rel = rel[len(WORK_IN_CONTAINER) + 1:]
    else:
        rel = posixpath.normpath(path) if path else "."
    if rel == ".":
        return []
    parts = rel.split("/")
    if parts[0] == "..":
        raise InvalidRequest(f"{path!r} is outside /home/work")
    return parts


@dataclass(frozen=True, slots=True)
class WorkDir:
    root: Path
    uid: int
    gid: int
    #: the largest file an upload may make (bytes)
    max_file: int = 64 * 1024 * 1024

    # -- the walk ---------------------------------------------------------------------------

    @contextmanager
    def _dir(self, parts: Parts, path: str, make: bool = False) -> Iterator[int]:
        """A directory fd for ``parts`` under the root, every step without following links.

        With ``make``, missing directories are made (owned by the kernel's uid)."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for name in parts:
                try:
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not make:
                        raise InvalidRequest(f"no such directory: {path!r}") from None
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass  # made meanwhile, by the kernel: opened (and checked) below
                    except OSError as exc:  # e.g. the parent was removed under us
                        raise _refusal(exc, path) from None
                    nxt = self._open_dir(name, fd, path)
                    os.fchown(nxt, self.uid, self.gid)
                except OSError as exc:
                    raise _refusal(exc, path) from None
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def _open_dir(name: str, dir_fd: int, path: str) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise _refusal(exc, path) from None

    def _parent(self, path: str) -> tuple[Parts, str]:
        parts = split(path)
        if not parts:
            raise InvalidRequest("cannot use the work dir itself as a file")
        return parts[:-1], parts[-1]

    # -- upload -----------------------------------------------------------------------------

    async def upload(self, path: str, data: bytes, append: bool = False) -> dict[str, Any]:
        parents, name = self._parent(path)
        return await asyncio.to_thread(self._write, parents, name, path, data, append)

    def _write(self, parents: Parts, name: str, path: str, data: bytes,
               append: bool) -> dict[str, Any]:
        if len(data) > self.max_file:
            raise InvalidRequest(f"file would exceed the upload limit of {self.max_file} bytes")
        with self._dir(parents, path, make=True) as dir_fd:
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | _FILE_FLAGS, 0o644, dir_fd=dir_fd)
            except OSError as exc:
                raise _refusal(exc, path) from None
            try:
                st = _regular(fd, path)
                size = st.st_size if append else 0
                if size + len(data) > self.max_file:
                    raise InvalidRequest(
                        f"file would exceed the upload limit of {self.max_file} bytes")
                if append:
                    os.lseek(fd, 0, os.SEEK_END)
                else:
                    os.ftruncate(fd, 0)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fchown(fd, self.uid, self.gid)
            finally:
                os.close(fd)
        return {"path": "/".join([*parents, name]), "size": size + len(data)}

    # -- download ---------------------------------------------------------------------------

    async def download(self, path: str, offset: int, length: int) -> dict[str, Any]:
        parents, name = self._parent(path)
        return await asyncio.to_thread(self._read, parents, name, path, offset,
                                       min(length, CHUNK_MAX))

    def _read(self, parents: Parts, name: str, path: str, offset: int,
              length: int) -> dict[str, Any]:
        with self._dir(parents, path) as dir_fd:
            try:
                fd = os.open(name, os.O_RDONLY | _FILE_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                raise InvalidRequest(f"no such file: {path!r}") from None
            except OSError as exc:
                raise _refusal(exc, path) from None
            try:
                size = _regular(fd, path).st_size
                data = os.pread(fd, length, offset)
            finally:
                os.close(fd)
        return {"data": data, "offset": offset, "size": size,
                "eof": offset + len(data) >= size}

    # -- listing ----------------------------------------------------------------------------

    async def list(self, path: str) -> dict[str, Any]:
        parts = split(path)
        return await asyncio.to_thread(self._list, parts, path)

    def _list(self, parts: Parts, path: str) -> dict[str, Any]:
        files: list[dict[str, Any]] = []
        with self._dir(parts, path) as fd, os.scandir(fd) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed by the kernel while we listed
                kind = ("dir" if stat.S_ISDIR(st.st_mode) else
                        "link" if stat.S_ISLNK(st.st_mode) else "file")
                files.append({"name": entry.name, "type": kind, "size": st.st_size,
                              "mode": stat.filemode(st.st_mode), "mtime": st.st_mtime})
                if len(files) >= LIST_MAX:
                    break
        files.sort(key=lambda f: str(f["name"]))
        return {"path": "/".join([WORK_IN_CONTAINER, *parts]), "files": files}


def _regular(fd: int, path: str) -> os.stat_result:
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise InvalidRequest(f"{path!r} is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidRequest(f"{path!r} is not a regular file")
    return st


def _refusal(exc: OSError, path: str) -> InvalidRequest:
    """The typed error for a failed step of the walk."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return InvalidRequest(f"{path!r} goes through a symlink or a non-directory; "
                              "file operations never follow links under /home/work")
    if exc.errno == errno.EISDIR:
        return InvalidRequest(f"{path!r} is a directory")
    if exc.errno == errno.ENOENT:
        return InvalidRequest(f"no such file or directory: {path!r}")
    return InvalidRequest(f"{path!r}: {os.strerror(exc.errno or 0)}")
