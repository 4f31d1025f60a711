"""Storage mounts: directories under the node's storage roots, bound into kernels.

A mount (``KernelConfig.mounts``, :class:`kernlet.protocol.Mount`) names a root of
``[storage] roots`` and a relative path under it: ``{"source": "vfroot:alice/data",
"target": "/home/work/data", "mode": "rw"}``. Each refusal is an InvalidMount naming the mount
and field (``configs[0].mounts[1].source: ...``), in this order:

1. :func:`plan_mounts` (pure): the source is ``root:path``, the root is configured, the path is
   relative and has no ``..``; the target is under /home/work (neither /home/work itself nor
   any system path), and no two mounts share a target.
2. :func:`check_sources` (on disk): every component of the path is opened from the root's
   directory fd with ``O_NOFOLLOW | O_DIRECTORY`` (as :mod:`kernlet.drivers.files` walks a
   work dir), so a symlink anywhere on the way, even one that stays inside the root, or a
   non-directory is refused; a missing component is "missing source".

**Check then use (TOCTOU).** Docker mounts a bind source by path when the container *starts*,
well after any check; and a kernel with a rw mount of a parent directory can swap a checked
directory for a symlink to ``/`` at any moment. So Docker is never given the path that was
checked. :func:`pin` walks again and bind-mounts the directory it holds open
(``/proc/self/fd/N`` names that open directory itself, not a path to it) onto a staging
point ``<var>/mounts/<kernel>/<index>`` that only root can reach; Docker binds the staging
point. The kernel gets exactly the directory that was checked, whatever happens to its path
afterwards. The bind is not recursive: mounts below the source are not carried in. This needs
the agent to run as root in dockerd's mount namespace (the case on a host; the reference agent
runs so too). :func:`unpin` is the undo: it detaches every mount under the kernel's staging dir
and removes the (then empty) staging points with ``rmdir``, never recursively, so a mount that
failed to detach can never have its data deleted; safe to run again and for a kernel that
never got that far.

Blocking calls: :func:`check_sources`, :func:`pin` and :func:`unpin` touch the disk; run them
off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernlet.errors import DriverError, InvalidMount
from kernlet.layout import WORK_IN_CONTAINER

__all__ = [
    "MountPlan",
    "binds",
    "check_sources",
    "pin",
    "plan_mounts",
    "staging_dir",
    "unpin",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MS_BIND = 4096
_MNT_DETACH = 2


@dataclass(frozen=True, slots=True)
class MountPlan:
    """One mount after the lexical checks."""

    #: its place in the request (names it in errors; its staging point)
    index: int
    root: str
    #: the path under the root, one component each (empty: the root itself)
    parts: tuple[str, ...]
    target: str
    read_only: bool

    @property
    def source(self) -> str:
        return f"{self.root}:{'/'.join(self.parts)}"


def _refuse(where: str, index: int, field: str, why: str) -> InvalidMount:
    return InvalidMount(f"{where}[{index}].{field}: {why}")


def plan_mounts(roots: Mapping[str, Path], mounts: Sequence[Mapping[str, Any]],
                where: str = "mounts") -> list[MountPlan]:
    """The mounts checked without touching the disk (see the module's docstring, step 1)."""
    plans: list[MountPlan] = []
    seen: dict[str, int] = {}
    for i, m in enumerate(mounts):
        source, target = str(m.get("source", "")), str(m.get("target", ""))
        root, sep, rel = source.partition(":")
        if not sep or not root:
            raise _refuse(where, i, "source", f"{source!r} is not 'root:path'")
        if root not in roots:
            known = ", ".join(sorted(roots)) or "none configured ([storage] roots)"
            raise _refuse(where, i, "source", f"unknown storage root {root!r} (this agent "
                          f"has: {known})")
        if "\x00" in rel or rel.startswith("/"):
            raise _refuse(where, i, "source", f"{rel!r} must be a relative path under the "
                          f"root {root!r}")
        parts = tuple(p for p in rel.split("/") if p not in ("", "."))
        if ".." in parts:
            raise _refuse(where, i, "source", f"{rel!r} may not contain '..'")
        if "\x00" in target or ":" in target or not target.startswith("/"):
            raise _refuse(where, i, "target", f"{target!r} must be an absolute path under "
                          f"{WORK_IN_CONTAINER}, without ':'")
        norm = posixpath.normpath(target)
        if not norm.startswith(WORK_IN_CONTAINER + "/"):
            raise _refuse(where, i, "target", f"{target!r} must be under {WORK_IN_CONTAINER} "
                          f"(not {WORK_IN_CONTAINER} itself, nor a system path)")
        if norm in seen:
            raise _refuse(where, i, "target", f"{norm!r} is also the target of mount "
                          f"{seen[norm]}")
        seen[norm] = i
        plans.append(MountPlan(index=i, root=root, parts=parts, target=norm,
                               read_only=m.get("mode", "rw") == "ro"))
    return plans


def _open(roots: Mapping[str, Path], plan: MountPlan, where: str) -> int:
    """A directory fd of the mount's source, walked from its root without following links."""
    root = roots[plan.root]
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _refuse(where, plan.index, "source", f"storage root {plan.root!r} ({root}) "
                      f"cannot be opened: {os.strerror(exc.errno or 0)}") from None
    for n, name in enumerate(plan.parts):
        sub = "/".join(plan.parts[:n + 1])
        try:
            nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            raise _walk_refusal(exc, where, plan, sub) from None
        os.close(fd)
        fd = nxt
    return fd


def _walk_refusal(exc: OSError, where: str, plan: MountPlan, sub: str) -> InvalidMount:
    if exc.errno == errno.ENOENT:
        why = f"missing source: {plan.root}:{sub} does not exist"
    elif exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        why = (f"{plan.root}:{sub} is a symlink or not a directory (mount sources are "
               "directories; links are never followed)")
    else:
        why = f"{plan.root}:{sub}: {os.strerror(exc.errno or 0)}"
    return _refuse(where, plan.index, "source", why)


def check_sources(roots: Mapping[str, Path], plans: Sequence[MountPlan],
                  where: str = "mounts") -> None:
    """Refuse a mount whose source is missing or leads out (step 2); holds nothing."""
    for plan in plans:
        os.close(_open(roots, plan, where))


def staging_dir(var_dir: Path, kernel_id: str) -> Path:
    """Where a kernel's pinned mounts are: ``<var>/mounts/<kernel>/<index>``."""
    return var_dir / "mounts" / kernel_id


def binds(var_dir: Path, kernel_id: str,
          mounts: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, str, bool], ...]:
    """The container's binds of the pinned mounts (the config's ``mounts``, already
    checked): (staging point, target, read only). Needs no root: a restart binds what was
    pinned at create even if the roots changed since."""
    base = staging_dir(var_dir, kernel_id)
    return tuple((str(base / str(i)), posixpath.normpath(str(m["target"])),
                  m.get("mode", "rw") == "ro") for i, m in enumerate(mounts))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def pin(var_dir: Path, kernel_id: str, roots: Mapping[str, Path],
        plans: Sequence[MountPlan], where: str = "mounts") -> None:
    """Walk each source again and bind the directory held open onto its staging point.

    Idempotent: a staging point that is already a mount is left as it is (a retry)."""
    base = staging_dir(var_dir, kernel_id)
    base.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    base.parent.chmod(0o700)
    base.mkdir(mode=0o700, exist_ok=True)
    libc = _libc()
    mounted = set(_mounts_under(base))
    for plan in plans:
        point = base / str(plan.index)
        point.mkdir(mode=0o700, exist_ok=True)
        if os.path.realpath(point) in mounted:
            continue
        fd = _open(roots, plan, where)
        try:
            if libc.mount(f"/proc/self/fd/{fd}".encode(), str(point).encode(), None,
                          _MS_BIND, None) != 0:
                err = ctypes.get_errno()
                raise DriverError(f"{where}[{plan.index}].source: cannot bind {plan.source}: "
                                  f"{os.strerror(err)} (the agent needs root in dockerd's "
                                  "mount namespace)")
        finally:
            os.close(fd)


def _mounts_under(base: Path) -> list[str]:
    """Mount points at or under ``base`` (from /proc/self/mountinfo, which names them by
    their real paths), deepest first. A bind from the same filesystem keeps its st_dev, so
    os.path.ismount cannot tell."""
    prefix = os.path.realpath(base)
    found = []
    with Path("/proc/self/mountinfo").open(encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            point = _unescape(line.split(" ")[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def unpin(var_dir: Path, kernel_id: str) -> None:
    """Detach the kernel's pinned mounts and remove their staging points (never recursive:
    a point still mounted stays, and the error says so)."""
    base = staging_dir(var_dir, kernel_id)
    libc = _libc()
    for point in _mounts_under(base):
        if libc.umount2(point.encode(), _MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount
                raise OSError(err, f"cannot unmount {point}: {os.strerror(err)}")
    if not base.exists():
        return
    for entry in base.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            entry.rmdir()
        else:
            entry.unlink()
    base.rmdir()
