"""The image kinds ``kernlet image build`` knows, and the commands that build each."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from kernlet import images
from kernlet.cli import main


def test_build_without_a_kind_lists_the_kinds() -> None:
    res = CliRunner().invoke(main, ["image", "build"])
    assert res.exit_code == 0, res.output
    for kind in images.KINDS.values():
        assert kind.name in res.output and kind.default_tag in res.output
    assert set(images.KINDS) == {"python", "r"}


def test_an_unknown_kind_is_a_usage_error() -> None:
    res = CliRunner().invoke(main, ["image", "build", "cobol"])
    assert res.exit_code == 2 and "cobol" in res.output


def test_r_image_commands_name_irkernel_and_its_kernelspec() -> None:
    mmdebstrap, docker_import = images.build_commands(images.KINDS["r"], Path("/t.tar"), "r:x")
    include = next(a for a in mmdebstrap if a.startswith("--include="))
    assert {"r-base-core", "r-cran-irkernel", "python3-jupyter-client", "python3-msgpack"} <= \
        set(include.removeprefix("--include=").split(","))
    assert 'LABEL "ai.kernlet.jupyter-kernel"="ir"' in docker_import
    assert 'ENV KERNLET_JUPYTER_KERNEL="ir"' in docker_import
    assert docker_import[-2:] == ["/t.tar", "r:x"]


def test_python_commands_are_unchanged_by_the_kinds() -> None:
    assert images.python_build_commands(Path("/t.tar"), "p:x") == \
        images.build_commands(images.KINDS["python"], Path("/t.tar"), "p:x")
    mmdebstrap, docker_import = images.python_build_commands(Path("/t.tar"), "p:x")
    assert f"--include={','.join(images.PYTHON_PACKAGES)}" in mmdebstrap
    assert not any("jupyter-kernel" in a or "KERNLET_JUPYTER_KERNEL" in a for a in docker_import)


def test_the_recipe_label_names_what_went_in() -> None:
    import dataclasses
    from pathlib import Path

    python = images.KINDS["python"]
    _, docker_import = images.build_commands(python, Path("/tmp/x.tar"), "t:1")
    assert f'LABEL "{images.RECIPE_LABEL}"="{python.recipe}"' in docker_import
    changed = dataclasses.replace(python, packages=(*python.packages, "less"))
    assert changed.recipe != python.recipe  # a changed package list rebuilds the image
    assert dataclasses.replace(python).recipe == python.recipe
