"""The Python kernel image that `kernlet image build python` makes: labels, user, modules."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from kernlet import images

pytestmark = pytest.mark.integration

TAG = os.environ.get("KERNLET_TEST_IMAGE", images.DEFAULT_PYTHON_TAG)


@pytest.fixture(scope="module")
def image_id() -> str:
    found = images.image_id(TAG)
    if found is None:
        pytest.fail(f"image {TAG} missing: run `kernlet image build python`")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    argv = ["docker", "run", "--rm", "--network", "none", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_image_has_kernlet_labels_and_env(image_id: str) -> None:
    [info] = json.loads(subprocess.check_output(["docker", "image", "inspect", image_id]))
    config = info["Config"]
    assert config["Labels"] == {
        "ai.kernlet.kernelspec": "1",
        "ai.kernlet.runtime-type": "python",
        "ai.kernlet.runtime-path": "/usr/bin/python3",
        "ai.kernlet.features": "query,batch,input,interrupt,complete",
        "ai.kernlet.service-ports": "jupyter:http:8888,terminal:http:7681",
        "ai.kernlet.built-by": "kernlet image build",
        # what went into the build, so a changed recipe is rebuilt (see images.ensure_image)
        "ai.kernlet.recipe": images.KINDS["python"].recipe,
    }
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["LANG"] == "C.UTF-8"
    assert env["HOME"] == "/home/work"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["MPLBACKEND"] == "module://matplotlib_inline.backend_inline"
    assert config["WorkingDir"] == "/home/work"


def test_python_imports_kernel_modules_as_uid_1000(image_id: str) -> None:
    code = (
        "import os, ipykernel, jupyter_client, msgpack, matplotlib, matplotlib.pyplot as plt\n"
        "plt.plot([1, 2])\n"  # the inline backend from MPLBACKEND loads
        "open(os.path.expanduser('~/probe'), 'w').write('x')\n"  # home is writable
        "print(os.getuid(), os.getgid(), os.getcwd(), matplotlib.get_backend(),"
        " jupyter_client.__version__.split('.')[0])\n"
    )
    result = _run("--user", "1000:1000", image_id, "python3", "-c", code)
    assert result.returncode == 0, result.stderr
    uid, gid, cwd, backend, jc_major = result.stdout.split()
    assert (uid, gid, cwd) == ("1000", "1000", "/home/work")
    assert backend == "module://matplotlib_inline.backend_inline"
    assert int(jc_major) >= 7


def test_work_user_exists_in_image(image_id: str) -> None:
    result = _run(image_id, "sh", "-c", "grep '^work:' /etc/passwd /etc/group; stat -c %u:%g ~")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert "/etc/passwd:work:x:1000:1000:kernlet:/home/work:/bin/bash" in lines
    assert "/etc/group:work:x:1000:" in lines
    assert lines[-1] == "1000:1000"


def test_ensure_reuses_existing_image_and_lists_it(image_id: str) -> None:
    phases: list[str] = []
    assert images.ensure_python_image(TAG, on_phase=phases.append) == image_id
    assert phases == []  # nothing was built
    listed = {item["id"]: item for item in images.list_images()}
    assert TAG in listed[image_id]["tags"]
    assert listed[image_id]["labels"]["ai.kernlet.runtime-type"] == "python"
