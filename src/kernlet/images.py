"""Kernel images, built locally from Debian packages (no registry can be reached).

The Python kernel image is a Debian bookworm tree made by ``mmdebstrap`` (with the machine's
network access to Debian's mirrors) and turned into an image by ``docker import``, which also
sets its labels, environment and working directory. kernlet recognises its images by the
label ``ai.kernlet.kernelspec``.

The docker CLI is used through ``subprocess``: this runs before, and apart from, the agent's
event loop, and the CLI's error messages are already the clearest available.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kernlet.image_kinds import (
    _ADD_WORK_USER,
    _EXCLUDED_PATHS,
    _TRIM,
    DEFAULT_PYTHON_TAG,
    DEFAULT_R_TAG,
    JUPYTER_KERNEL_ENV,
    JUPYTER_KERNEL_LABEL,
    KERNELSPEC_LABEL,
    KINDS,
    PYTHON_IMAGE_LABELS,
    PYTHON_PACKAGES,
    R_IMAGE_LABELS,
    R_PACKAGES,
    RECIPE_LABEL,
    SERVICE_PORTS_LABEL,
    SUITE,
    WORK_HOME,
    ImageKind,
)

__all__ = [
    "DEFAULT_PYTHON_TAG",
    "DEFAULT_R_TAG",
    "JUPYTER_KERNEL_ENV",
    "JUPYTER_KERNEL_LABEL",
    "KERNELSPEC_LABEL",
    "KINDS",
    "PYTHON_IMAGE_LABELS",
    "PYTHON_PACKAGES",
    "RECIPE_LABEL",
    "R_IMAGE_LABELS",
    "R_PACKAGES",
    "SERVICE_PORTS_LABEL",
    "ImageError",
    "ImageKind",
    "build_commands",
    "build_log_path",
    "ensure_image",
    "ensure_python_image",
    "image_id",
    "list_images",
    "python_build_commands",
]

class ImageError(Exception):
    """An image could not be built or inspected; the message says why and where to look."""


def _state_dir() -> Path:
    return Path(os.environ.get("KERNLET_IMAGE_DIR") or "/var/lib/kernlet/images")


def build_log_path(kind: str = "python") -> Path:
    """Where ``ensure_image`` writes its build log unless told otherwise."""
    return _state_dir() / f"build-{kind}.log"


def _docker(*args: str, input_path: Path | None = None) -> str:
    if shutil.which("docker") is None:
        raise ImageError("the docker CLI is not installed; run `kernlet halfstack up`")
    with contextlib.ExitStack() as stack:
        stdin = stack.enter_context(input_path.open("rb")) if input_path else subprocess.DEVNULL
        proc = subprocess.run(["docker", *args], stdin=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"docker {args[0]} {args[1]}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def _label(tag: str, label: str) -> str | None:
    """A label of the local image ``tag`` (None when absent)."""
    try:
        out = _docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag)
    except ImageError:
        return None
    labels = json.loads(out or "null") or {}
    value = labels.get(label)
    return str(value) if value is not None else None


def image_id(tag: str) -> str | None:
    """The id of the local image ``tag``, or None when there is none."""
    try:
        return _docker("image", "inspect", "--format", "{{.Id}}", tag).strip() or None
    except ImageError as exc:
        if "no such image" in str(exc).lower():
            return None
        raise


def list_images() -> list[dict[str, Any]]:
    """kernlet's images (those with the label ai.kernlet.kernelspec), newest first: id, tags,
    repo digests, created, size, labels."""
    out = _docker("image", "ls", "--quiet", "--no-trunc", "--filter", f"label={KERNELSPEC_LABEL}")
    ids = list(dict.fromkeys(out.split()))
    if not ids:
        return []
    images = [
        {
            "id": info["Id"],
            "tags": info.get("RepoTags") or [],
            "digests": info.get("RepoDigests") or [],
            "created": info.get("Created", ""),
            "size": info.get("Size", 0),
            "labels": (info.get("Config") or {}).get("Labels") or {},
        }
        for info in json.loads(_docker("image", "inspect", *ids))
    ]
    return sorted(images, key=lambda image: image["created"], reverse=True)


def python_build_commands(tar: Path, tag: str) -> tuple[list[str], list[str]]:
    """The two commands that build the Python image: mmdebstrap into ``tar``, docker import."""
    return build_commands(KINDS["python"], tar, tag)


def build_commands(kind: ImageKind, tar: Path, tag: str) -> tuple[list[str], list[str]]:
    """The two commands that build ``kind``'s image: mmdebstrap into ``tar``, docker import."""
    mmdebstrap = [
        "mmdebstrap",
        "--variant=apt",
        "--format=tar",
        f"--include={','.join(kind.packages)}",
        '--aptopt=Acquire::Retries "3"',
        '--aptopt=APT::Install-Recommends "false"',  # recommends tripled the size (sympy, gcc)
        *(f"--dpkgopt=path-exclude={path}" for path in _EXCLUDED_PATHS),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        f"--customize-hook={_ADD_WORK_USER}",
        *(f"--customize-hook={hook}" for hook in kind.hooks),
        f"--customize-hook={_TRIM}",
        SUITE,
        str(tar),
    ]
    labels = {**kind.labels, RECIPE_LABEL: kind.recipe}
    changes = [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in labels.items()]
    changes += [f"ENV {k}={json.dumps(v)}" for k, v in kind.env.items()]
    changes += [f"WORKDIR {WORK_HOME}", 'CMD ["/usr/bin/python3"]']
    docker_import = [
        "docker", "import",
        *(arg for change in changes for arg in ("--change", change)),
        "--message", f"kernlet image build {kind.name} ({SUITE})",
        str(tar), tag,
    ]  # fmt: skip
    return mmdebstrap, docker_import


@contextlib.contextmanager
def _build_lock(state: Path) -> Iterator[None]:
    """One build at a time on this machine (two callers would otherwise build twice)."""
    state.mkdir(parents=True, exist_ok=True)
    with (state / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _nothing(_text: str) -> None:
    pass


def ensure_python_image(
    tag: str = DEFAULT_PYTHON_TAG,
    rebuild: bool = False,
    *,
    on_phase: Callable[[str], None] = _nothing,
    on_log: Callable[[str], None] = _nothing,
    log_file: Path | None = None,
) -> str:
    """:func:`ensure_image` of the Python kind."""
    return ensure_image("python", tag, rebuild, on_phase=on_phase, on_log=on_log,
                        log_file=log_file)


def ensure_image(
    kind: str,
    tag: str | None = None,
    rebuild: bool = False,
    *,
    on_phase: Callable[[str], None] = _nothing,
    on_log: Callable[[str], None] = _nothing,
    log_file: Path | None = None,
) -> str:
    """Return the id of the ``kind`` kernel image ``tag``, building it first when needed.

    An existing image with that tag is reused unless ``rebuild``, or unless it was built from
    another recipe (its ``ai.kernlet.recipe`` label: packages, labels, environment, hooks), so
    a changed package list is never hidden by an old image of the same tag. ``on_phase`` is told
    "bootstrapping", then "importing"; ``on_log`` gets each line mmdebstrap prints. The whole
    log is written to ``log_file`` (default: /var/lib/kernlet/images/build-KIND.log, or
    under $KERNLET_IMAGE_DIR).
    """
    spec = KINDS[kind]
    tag = tag or spec.default_tag
    state = _state_dir()
    with _build_lock(state):
        old = image_id(tag)
        if old is not None and not rebuild and _label(tag, RECIPE_LABEL) == spec.recipe:
            return old
        log_path = log_file or build_log_path(kind)
        for tool in ("mmdebstrap", "docker"):
            if shutil.which(tool) is None:
                raise ImageError(f"{tool} is not installed; run `kernlet halfstack up`")
        with tempfile.TemporaryDirectory(prefix="kernlet-image-", dir=state) as tmp:
            tar = Path(tmp) / "rootfs.tar"
            mmdebstrap, docker_import = build_commands(spec, tar, tag)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("w") as log:
                on_phase("bootstrapping")
                _run_logged(mmdebstrap, log, log_path, on_log)
                on_phase("importing")
                _run_logged(docker_import, log, log_path, on_log)
        new = image_id(tag)
        if new is None:
            raise ImageError(f"docker import did not create {tag}; see {log_path}")
        if old is not None and old != new:
            # The previous build is now untagged; drop it unless a container still uses it.
            with contextlib.suppress(ImageError):
                _docker("image", "rm", old)
        return new


def _run_logged(argv: list[str], log: Any, log_path: Path, on_log: Callable[[str], None]) -> None:
    """Run ``argv``, copying its output to ``log`` and ``on_log``; raise with the last lines."""
    started = time.monotonic()
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    tail: deque[str] = deque(maxlen=8)
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace", bufsize=1,
    )  # fmt: skip
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip())
            on_log(line.rstrip())
    log.write(f"# exit {proc.returncode} after {time.monotonic() - started:.1f}s\n")
    log.flush()
    if proc.returncode != 0:
        last = "\n  ".join(tail)
        raise ImageError(
            f"{argv[0]} {argv[1]} failed (exit {proc.returncode}); last lines:\n  {last}\n"
            f"full log: {log_path}"
        )
