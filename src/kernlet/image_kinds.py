"""The kernel images kernlet can build: each kind's packages, labels, environment and build
hooks, as data (the build itself is :mod:`kernlet.images`, which re-exports these)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from kernlet.layout import WORK_IN_CONTAINER

DEFAULT_PYTHON_TAG = "kernlet/python:3.11"  # bookworm's python3 is 3.11
SUITE = "bookworm"
KERNELSPEC_LABEL = "ai.kernlet.kernelspec"
RECIPE_LABEL = "ai.kernlet.recipe"
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
    # kernlet.helpers.install() (docs/runtime.md): pip installs into the kernel's user site
    "python3-pip",
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

    @property
    def recipe(self) -> str:
        """A digest of what the build puts in (packages, labels, environment, hooks): an
        image whose ``ai.kernlet.recipe`` label differs was built from another recipe."""
        text = json.dumps([self.packages, self.labels, self.env, self.hooks], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


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
