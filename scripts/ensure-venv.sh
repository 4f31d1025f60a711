#!/usr/bin/env bash
# Make .venv at the repository root if it is missing (installing Debian's python3-venv when
# ensurepip is absent). Used by .ci/run and scripts/demo.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x .venv/bin/python ] && exit 0
if ! python3 -m venv .venv; then
    rm -rf .venv
    apt-get install -y --no-install-recommends python3-venv ||
        { apt-get update && apt-get install -y --no-install-recommends python3-venv; }
    python3 -m venv .venv
fi
