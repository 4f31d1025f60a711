"""``kernlet kernel files`` and ``kernlet kernel cp``: a kernel's /home/work from the shell.

Paths in a kernel are relative to /home/work (or absolute under it); the agent never follows
a symlink there. ``cp`` copies single files and whole directories, both ways::

    kernlet kernel cp data.csv KID:inputs/data.csv      # to the kernel
    kernlet kernel cp -r results KID:results            # a directory, to the kernel
    kernlet kernel cp KID:out/model.pt .                 # from the kernel
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import click

from kernlet.cli._out import emit, iso, json_line, table
from kernlet.cli._remote import EX_IOERR, EX_NOINPUT, fail, go
from kernlet.cli.kernel import kernel, target
from kernlet.client import KernletClient
from kernlet.config import parse_size
from kernlet.errors import InvalidRequest
from kernlet.protocol import is_valid_id

__all__ = ["cp", "files", "split_remote"]


def split_remote(arg: str) -> tuple[str, str] | None:
    """``KID:PATH`` as (kernel id, path); None for a local path. A local path with a colon
    in its first component is written ``./a:b``."""
    head, sep, path = arg.partition(":")
    if not sep or "/" in head or not is_valid_id(head):
        return None
    return head, path or "."


@kernel.command("files")
@click.argument("kernel_id")
@click.argument("path", default=".")
@click.option("--json", "as_json", is_flag=True,
              help="print {path, files: [{name, type, size, mode, mtime}]} as JSON "
              "(mtime in epoch seconds)")
@click.pass_context
def files(ctx: click.Context, kernel_id: str, path: str, as_json: bool) -> None:
    """List a directory of the kernel's /home/work (PATH relative to it; default: itself)."""
    res = go(target(ctx), lambda c: c.list_files(kernel_id, path))
    if as_json:
        emit(True, res, "")
        return
    table(["MODE", "SIZE", "MODIFIED", "NAME"],
          [[f["mode"], f["size"], iso(f["mtime"]), f["name"] + ("/" if f["type"] == "dir"
                                                               else "")]
           for f in res["files"]], title=res["path"])


async def _remote_kind(c: KernletClient, kernel_id: str, path: str) -> str | None:
    """'file', 'dir', 'link' or None (missing) for a path in the kernel."""
    norm = posixpath.normpath(path)
    if norm in (".", "/home/work"):
        return "dir"
    parent, name = posixpath.split(norm)
    try:
        listing = await c.list_files(kernel_id, parent or ".")
    except InvalidRequest:
        return None
    for f in listing["files"]:
        if f["name"] == name:
            return str(f["type"])
    return None


async def _walk_remote(c: KernletClient, kernel_id: str, root: str) -> list[str]:
    """Every regular file under a directory of the kernel, relative to it."""
    out: list[str] = []
    todo = [""]
    while todo:
        rel = todo.pop()
        listing = await c.list_files(kernel_id, posixpath.join(root, rel) if rel else root)
        for f in listing["files"]:
            sub = posixpath.join(rel, f["name"]) if rel else f["name"]
            if f["type"] == "dir":
                todo.append(sub)
            elif f["type"] == "file":
                out.append(sub)
    return sorted(out)


def _write_local(dest: Path, data: bytes) -> None:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    except OSError as exc:
        fail("LocalError", f"cannot write {dest}: {exc.strerror or exc}", EX_IOERR)


async def _download(c: KernletClient, kernel_id: str, src: str, dest: Path,
                    recursive: bool, dest_is_dir: bool) -> list[dict[str, Any]]:
    kind = await _remote_kind(c, kernel_id, src)
    if kind is None:
        raise InvalidRequest(f"no such file or directory in kernel {kernel_id}: {src!r}")
    if kind == "dir":
        if not recursive:
            raise InvalidRequest(f"{src!r} is a directory (use -r to copy it)")
        base = dest / posixpath.basename(posixpath.normpath(src)) if dest_is_dir else dest
        done = []
        for rel in await _walk_remote(c, kernel_id, src):
            data = await c.download(kernel_id, posixpath.join(src, rel))
            _write_local(base / rel, data)
            done.append({"from": f"{kernel_id}:{posixpath.join(src, rel)}",
                         "to": str(base / rel), "size": len(data)})
        return done
    target_path = dest / posixpath.basename(src) if dest_is_dir else dest
    data = await c.download(kernel_id, src)
    _write_local(target_path, data)
    return [{"from": f"{kernel_id}:{src}", "to": str(target_path), "size": len(data)}]


def _local_files(src: Path, recursive: bool) -> list[tuple[Path, str]]:
    """(local file, path relative to what is copied) for a file or a directory."""
    if not src.exists():
        fail("LocalError", f"no such file or directory: {src}", EX_NOINPUT)
    if src.is_dir():
        if not recursive:
            fail("LocalError", f"{src} is a directory (use -r to copy it)", EX_NOINPUT)
        return [(p, p.relative_to(src).as_posix()) for p in sorted(src.rglob("*"))
                if p.is_file() and not p.is_symlink()]
    return [(src, "")]


async def _upload(c: KernletClient, kernel_id: str, items: list[tuple[Path, str]],
                  dest: str, into_dir: bool, chunk: int) -> list[dict[str, Any]]:
    done = []
    for local, rel in items:
        remote = posixpath.normpath(posixpath.join(dest, rel) if rel else (
            posixpath.join(dest, local.name) if into_dir else dest))
        try:
            data = local.read_bytes()
        except OSError as exc:
            fail("LocalError", f"cannot read {local}: {exc.strerror or exc}", EX_NOINPUT)
        await c.upload(kernel_id, remote, data, chunk=chunk)
        done.append({"from": str(local), "to": f"{kernel_id}:{remote}", "size": len(data)})
    return done


@kernel.command("cp")
@click.argument("src")
@click.argument("dest")
@click.option("-r", "--recursive", is_flag=True, help="copy directories (and what they hold)")
@click.option("--chunk", default="192k", show_default=True,
              help="bytes per upload request; must stay under the agent's "
              "limits.max-request (default 1m)")
@click.option("--json", "as_json", is_flag=True,
              help='JSON lines: one {"from", "to", "size"} per file copied')
@click.pass_context
def cp(ctx: click.Context, src: str, dest: str, recursive: bool, chunk: str,
       as_json: bool) -> None:
    """Copy files between here and a kernel: SRC or DEST is KERNEL_ID:PATH.

    \b
    kernlet kernel cp LOCAL KID:PATH     to the kernel (parent directories are made)
    kernlet kernel cp KID:PATH LOCAL     from the kernel (into LOCAL if it is a directory)
    """
    r_src, r_dest = split_remote(src), split_remote(dest)
    try:
        chunk_bytes = parse_size(chunk)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--chunk") from exc
    if chunk_bytes < 1024:
        raise click.BadParameter("at least 1k", param_hint="--chunk")
    if (r_src is None) == (r_dest is None):
        raise click.UsageError("exactly one of SRC and DEST must be KERNEL_ID:PATH")
    if r_dest is not None:
        kid, path = r_dest
        items = _local_files(Path(src), recursive)
        into = dest.endswith("/") or path == "."
        name = Path(src).resolve().name

        async def up(c: KernletClient) -> list[dict[str, Any]]:
            is_dir = into or await _remote_kind(c, kid, path) == "dir"
            if items and items[0][1] and is_dir:  # a directory into an existing directory
                base = posixpath.join(path, name)
                return await _upload(c, kid, items, base, True, chunk_bytes)
            return await _upload(c, kid, items, path, is_dir, chunk_bytes)

        done = go(target(ctx), up)
    else:
        assert r_src is not None
        kid, path = r_src
        local = Path(dest)
        done = go(target(ctx), lambda c: _download(c, kid, path, local, recursive,
                                                   local.is_dir()))
    for item in done:
        if as_json:
            json_line(item)
        else:
            click.echo(f"{item['from']} -> {item['to']} ({item['size']} bytes)")
