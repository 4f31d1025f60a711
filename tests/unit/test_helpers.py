"""kernlet.helpers outside a kernel: what it says when it cannot help."""

from __future__ import annotations

import importlib.util

import pytest

from kernlet import helpers


def test_install_without_pip_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pip" else real(name, *a))
    with pytest.raises(helpers.HelperError, match="this image has no pip"):
        helpers.install("six")
