#!/usr/bin/env bash
# kernlet's demo from a fresh Debian 12 machine (as root): installs kernlet in .venv, brings up
# the half stack (Docker, NATS with JetStream, etcd, Redis on loopback), builds the Python
# kernel image, then starts an agent, creates a kernel, runs Python that prints and draws a
# plot (saved as demo-output/plot-1.png), shows the kernel's history and destroys it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
bash scripts/ensure-venv.sh
.venv/bin/pip install --quiet --disable-pip-version-check -e .
.venv/bin/kernlet halfstack up
.venv/bin/kernlet image build python
.venv/bin/kernlet demo --out demo-output
