#!/usr/bin/env bash
# The unit tests against the lowest versions pyproject.toml allows (every direct dependency,
# the test extra included, at its floor; what they pull in resolved normally), in a venv of
# its own (.venv-lowest), so that a lower bound the code does not work with fails CI.
#   bash scripts/lowest-deps.sh [PYTEST-ARGS...]
# Needs .venv (scripts/ensure-venv.sh); installs uv into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/pip install --quiet --disable-pip-version-check 'uv>=0.4'
[ -x .venv-lowest/bin/python ] || .venv/bin/uv venv --quiet --python "$(command -v python3)" .venv-lowest
# setuptools at the build-system floor too: the packaging test builds the sdist with it
VIRTUAL_ENV=$PWD/.venv-lowest .venv/bin/uv pip install --quiet --resolution lowest-direct -e '.[test]' \
    'setuptools>=68'
VIRTUAL_ENV=$PWD/.venv-lowest .venv/bin/uv pip list 2>/dev/null | \
    grep -i -E '^(pykka|aiodocker|nats-py|aetcd|redis|sqlalchemy|aiosqlite|msgpack|aiohttp|pydantic|click|rich|prometheus-client|nvidia-ml-py|pytest|pytest-asyncio|hypothesis) '
exec .venv-lowest/bin/pytest -q -p no:cacheprovider tests/unit "$@"
