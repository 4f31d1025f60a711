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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernlet.layout import WORK_IN_CONTAINER

__all__ = [
    "DEFAULT_PYTHON_TAG",
    "DEFAULT_R_TAG",
    "JUPYTER_KERNEL_ENV",
    "JUPYTER_KERNEL_LABEL",
    "KERNELSPEC_LABEL",
    "KINDS",
    "PYTHON_IMAGE_LABELS",
    "PYTHON_PACKAGES",
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

DEFAULT_PYTHON_TAG = "kernlet/python:3.11"  # bookworm's python3 is 3.11
SUITE = "bookworm"
KERNELSPEC_LABEL = "ai.kernlet.kernelspec"
SERVICE_PORTS_LABEL = "ai.kernlet.service-ports"  # format: kernlet.runner.services
#: The Jupyter kernelspec (a name under /usr/share/jupyter/kernels) whose kernel query mode
#: drives; absent: the runtime's own ipykernel spec. The build also sets it as the image's
#: environment variable :data:`JUPYTER_KERNEL_ENV`, which is how the runtime reads it.
JUPYTER_KERNEL_LABEL = "ai.kernlet.jupyter-kernel"
JUPYTER_KERNEL_ENV = "KERNLET_JUPYTER_KERNEL"
DEFAULT_R_TAG = "kernlet/r:4.2"  # bookworm's r-base-core is 4.2
WORK_UID = WORK_GID = 1000
WORK_HOME = WORK_IN_CONTAINER

PYTHON_PACKAGES: tuple[str, ...] = (
    "python3",
    "python3-ipykernel",
    "python3-jupyter-client",
    "python3-matplotlib-inline",
    "python3-msgpack",
    "python3-matplotlib",
    "python3-numpy",
    # python3-fonttools (for matplotlib) needs "python3-scipy | python3-munkres": naming munkres
    # keeps scipy out, and with it pythran, gcc and the C headers (about 400 MB).
    "python3-munkres",
    # In-container services (docs/services.md): Jupyter Notebook 6 for "jupyter"; it brings
    # tornado and terminado, which kernlet's own web terminal ("terminal") uses.
    "python3-notebook",
    # xterm.js for the terminal page: bookworm's libjs-xterm ships a broken stub as xterm.js,
    # node-xterm (1.4 MB, no nodejs) the CommonJS modules that runner/terminal.py bundles.
    "node-xterm",
    "ca-certificates",
    "procps",
    # ssh between the kernels of a session (docs/sessions.md): dropbear's server runs as the
    # kernel's user on the session network; OpenSSH's client is the `ssh` users type.
    "dropbear-bin", "openssh-client",
)

PYTHON_IMAGE_LABELS: dict[str, str] = {
    KERNELSPEC_LABEL: "1",
    "ai.kernlet.runtime-type": "python",
    "ai.kernlet.runtime-path": "/usr/bin/python3",
    "ai.kernlet.features": "query,batch,input,interrupt,complete",
    SERVICE_PORTS_LABEL: "jupyter:http:8888,terminal:http:7681",
    "ai.kernlet.built-by": "kernlet image build",
}

PYTHON_IMAGE_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": WORK_HOME,
    "PYTHONUNBUFFERED": "1",
    # python3-matplotlib-inline is installed, and the build checks that the module is there.
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
}

#: The R image: IRkernel from Debian, and the Python that the runtime itself needs.
R_PACKAGES: tuple[str, ...] = (
    "python3",
    "python3-jupyter-client",
    "python3-msgpack",
    "r-base-core",
    "r-cran-irkernel",
    "ca-certificates",
    "procps",
)

R_IMAGE_LABELS: dict[str, str] = {
    KERNELSPEC_LABEL: "1",
    JUPYTER_KERNEL_LABEL: "ir",
    "ai.kernlet.runtime-type": "r",
    "ai.kernlet.runtime-path": "/usr/bin/R",
    "ai.kernlet.features": "query,batch,input,interrupt,complete",
    "ai.kernlet.built-by": "kernlet image build",
}

R_IMAGE_ENV: dict[str, str] = {
    "PATH": PYTHON_IMAGE_ENV["PATH"],
    "LANG": "C.UTF-8",
    "HOME": WORK_HOME,
    JUPYTER_KERNEL_ENV: R_IMAGE_LABELS[JUPYTER_KERNEL_LABEL],
}

# Shell run by mmdebstrap on the host once the tree is complete; $1 is the tree's root.
_ADD_WORK_USER = f"""
set -e
grep -q '^work:' "$1/etc/group" || echo 'work:x:{WORK_GID}:' >> "$1/etc/group"
grep -q '^work:' "$1/etc/passwd" ||
  echo 'work:x:{WORK_UID}:{WORK_GID}:kernlet:{WORK_HOME}:/bin/bash' >> "$1/etc/passwd"
if [ -e "$1/etc/shadow" ] && ! grep -q '^work:' "$1/etc/shadow"; then
  echo 'work:*:19000:0:99999:7:::' >> "$1/etc/shadow"
fi
mkdir -p "$1{WORK_HOME}"
chown {WORK_UID}:{WORK_GID} "$1{WORK_HOME}"
"""
_CHECK_MODULES = " && ".join(
    f'test -e "$1{path}"'
    for path in (
        "/usr/lib/python3/dist-packages/matplotlib_inline",
        "/usr/lib/python3/dist-packages/notebook",
        "/usr/lib/python3/dist-packages/terminado",
        "/usr/share/nodejs/xterm/lib/public/Terminal.js",  # runner/terminal.py's XTERM_LIB
    )
)
# Debian's r-cran-irkernel ships the R code, not a kernelspec: write the one that
# IRkernel::installspec() would (its argv, display name and language).
_IR_SPEC = json.dumps({
    "argv": ["/usr/bin/R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],
    "display_name": "R", "language": "R", "interrupt_mode": "signal",
})
_ADD_IR_SPEC = (
    'test -e "$1/usr/share/jupyter/kernels/ir/kernel.json" || '
    '{ mkdir -p "$1/usr/share/jupyter/kernels/ir" && '
    f"printf '%s' '{_IR_SPEC}' > \"$1/usr/share/jupyter/kernels/ir/kernel.json\"; }}"
)
_CHECK_R = 'test -e "$1/usr/lib/R/site-library/IRkernel" && test -e "$1/usr/bin/R"'
_TRIM = 'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/apt/* "$1"/tmp/*'
_EXCLUDED_PATHS = (
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/doc/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
)


@dataclass(frozen=True, slots=True)
class ImageKind:
    """What ``kernlet image build KIND`` makes: packages, labels, environment, checks."""

    name: str
    default_tag: str
    packages: tuple[str, ...]
    labels: dict[str, str]
    env: dict[str, str]
    hooks: tuple[str, ...]  # mmdebstrap customize hooks after the work user is added
    describe: str


KINDS: dict[str, ImageKind] = {
    "python": ImageKind(
        "python", DEFAULT_PYTHON_TAG, PYTHON_PACKAGES, PYTHON_IMAGE_LABELS, PYTHON_IMAGE_ENV,
        (_CHECK_MODULES,),
        "Python 3.11 on ipykernel, with IPython display, matplotlib, numpy, notebook",
    ),
    "r": ImageKind(
        "r", DEFAULT_R_TAG, R_PACKAGES, R_IMAGE_LABELS, R_IMAGE_ENV, (_ADD_IR_SPEC, _CHECK_R),
        "R 4.2 on IRkernel (Debian's r-base-core, r-cran-irkernel); png plots as images",
    ),
}


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
    changes = [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in kind.labels.items()]
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

    An existing image with that tag is reused unless ``rebuild``. ``on_phase`` is told
    "bootstrapping", then "importing"; ``on_log`` gets each line mmdebstrap prints. The whole
    log is written to ``log_file`` (default: /var/lib/kernlet/images/build-KIND.log, or
    under $KERNLET_IMAGE_DIR).
    """
    spec = KINDS[kind]
    tag = tag or spec.default_tag
    state = _state_dir()
    with _build_lock(state):
        old = image_id(tag)
        if old is not None and not rebuild:
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
