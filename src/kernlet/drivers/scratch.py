"""A kernel's scratch filesystem on the host, and the free space of a filesystem.

The kernel's ``/home/work`` is the host dir ``<var>/scratch/<kid>/work``, bind-mounted into its
container. ``container.scratch-type`` and ``scratch-size`` choose what that dir is:

============ ============ =====================================================================
type         size         the host dir is
============ ============ =====================================================================
``hostdir``  0            a plain dir on var-dir's filesystem (bounded only by it)
``hostdir``  N            an ext4 image of N bytes (``<var>/scratch/<kid>/scratch.img``, sparse:
                          about 4 MiB on disk for 8 GiB until written) loop-mounted on it:
                          ENOSPC past N (85-160 ms to make and mount, about 110 ms to undo)
``tmpfs``    N            a tmpfs of N bytes mounted on it: ENOSPC past N; its pages count
                          against the kernel's memory (about 16 ms to mount)
============ ============ =====================================================================

The agent mounts these itself (it runs as root), before the container is created, so the
files commands (:mod:`kernlet.drivers.files`) and the kernel see the same filesystem, and the
mount outlives an agent restart. Each mount is its own filesystem, never the event log's.
:func:`mount` and :func:`unmount` are blocking (run them with ``asyncio.to_thread``) and safe
to run twice; failures raise :class:`~kernlet.errors.DriverError` with the command's message.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from kernlet.errors import DriverError

__all__ = ["IMAGE_NAME", "free_bytes", "mount", "unmount"]

#: the ext4 image of a sized hostdir scratch, beside its work dir
IMAGE_NAME = "scratch.img"


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DriverError(f"{what}: {argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise DriverError(f"{what}: {' '.join(argv)}: {(done.stderr or done.stdout).strip()}")


def mount(work: Path, kind: str, size: int, uid: int, gid: int) -> None:
    """Make ``work`` (an existing, empty dir) the scratch of that type and size, owned by
    ``uid:gid``; nothing for a plain hostdir, nothing if it is mounted already."""
    if (kind == "hostdir" and not size) or os.path.ismount(work):
        return
    what = f"scratch {work} ({kind}, {size} bytes)"
    if kind == "tmpfs":
        _run(["mount", "-t", "tmpfs", "-o",
              f"size={size},uid={uid},gid={gid},mode=0755,nosuid,nodev", "tmpfs", str(work)],
             what)
        return
    image = work.parent / IMAGE_NAME
    with image.open("wb") as f:  # sparse: the host's disk is used as the kernel writes
        f.truncate(size)
    _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
          "-E", f"root_owner={uid}:{gid},lazy_itable_init=1", str(image)], what)
    # noinit_itable: no background zeroing of the inode tables (it would fill the sparse
    # image with zeros and load the disk; uninitialised tables are marked as such)
    _run(["mount", "-o", "loop,nosuid,nodev,noinit_itable", str(image), str(work)], what)
    with contextlib.suppress(OSError):
        (work / "lost+found").rmdir()


def unmount(work: Path) -> None:
    """Unmount a kernel's scratch if it is mounted (lazily when still busy); the image file
    is left for the caller's removal of the kernel's dir."""
    if not os.path.ismount(work):
        return
    try:
        _run(["umount", str(work)], f"scratch {work}")
    except DriverError:
        _run(["umount", "-l", str(work)], f"scratch {work}")


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still write on the filesystem that holds ``path`` (or
    would hold it: its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
