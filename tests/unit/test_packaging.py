"""The sdist carries the licence, the docs, the tests and contrib; the version has one
source (kernlet.__version__)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from kernlet import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_sdist_holds_docs_tests_contrib_and_licence(tmp_path: Path) -> None:
    code = ("import sys; from setuptools import build_meta as b; "
            "print(b.build_sdist(sys.argv[1]))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, text=True,
                         capture_output=True, timeout=240, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 0, out.stderr[-3000:]
    name = out.stdout.strip().splitlines()[-1]
    assert name == f"kernlet-{__version__}.tar.gz"  # the version comes from kernlet/__init__
    with tarfile.open(tmp_path / name) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for must in ("LICENSE", "COPYING", "README.md", "pyproject.toml", "docs/manager.md",
                 "docs/img/dashboard.png", "tests/unit/test_packaging.py",
                 "tests/integration/conftest.py", "tests/fixtures/payloads_v1.json",
                 "contrib/systemd/kernlet-agent.service", "scripts/lowest-deps.sh",
                 "src/kernlet/watcher/static/charts.js", "src/kernlet/__main__.py"):
        assert must in names, must
    assert not any("__pycache__" in n for n in names)
