"""``kernlet demo``: start an agent, create a kernel, run Python that prints and plots, save the
plot as a PNG file, show the kernel's event history, destroy the kernel, stop the agent.

Needs the halfstack (``kernlet halfstack up``) and the image (``kernlet image build python``).
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from kernlet.client import KernletClient
from kernlet.config import load_config
from kernlet.service import AgentService

__all__ = ["DEMO_CODE", "run_demo"]

DEMO_CODE = """\
import math, platform
print(f"hello from kernel {platform.node()} running Python {platform.python_version()}")
for i in range(5):
    print(f"  step {i}: sin({i}) = {math.sin(i):+.3f}", flush=True)
import matplotlib.pyplot as plt
xs = [x / 10 for x in range(0, 63)]
plt.figure(figsize=(6, 3))
plt.plot(xs, [math.sin(x) for x in xs], label="sin")
plt.plot(xs, [math.cos(x) for x in xs], label="cos")
plt.legend(); plt.title("drawn inside a kernlet kernel")
plt.show()
"""


async def _demo(client: KernletClient, image: str, out_dir: Path) -> Path | None:
    t0 = time.monotonic()
    kernel = await client.create_kernel(image, cpu=1, mem=512 * 1024**2)
    kid = kernel["id"]
    click.secho(f"created kernel {kid} in {time.monotonic() - t0:.2f} s "
                f"(container {kernel['container_id'][:12]})", fg="green")
    saved: list[Path] = []

    def on_output(kind: str, data: Any) -> None:
        if kind == "stdout":
            click.echo(data, nl=False)
        elif kind == "stderr":
            click.secho(data, nl=False, fg="red", err=True)
        elif kind == "media" and isinstance(data, dict) and data.get("type") == "image/png":
            path = out_dir / f"plot-{len(saved) + 1}.png"
            path.write_bytes(base64.b64decode(str(data["data"]).split(",", 1)[1]))
            saved.append(path)
            click.secho(f"[plot saved to {path}]", fg="cyan")

    result = await client.run(kid, DEMO_CODE, on_output=on_output)
    click.secho(f"run finished: status {result['status']}, exit code {result['exitCode']}",
                fg="green")
    click.echo("event history from the agent's log:")
    for ev in await client.events(kid):
        click.echo(f"  #{ev['seq']:<3} {ev['type']}")
    gone = await client.destroy_kernel(kid)
    click.secho(f"destroyed kernel {kid} ({gone['reason']})", fg="green")
    return saved[0] if saved else None


def run_demo(image: str, out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kernlet-demo-") as var:
        cfg = load_config(overrides={"agent": {"id": "demo-agent", "var_dir": var},
                                     "container": {"stop_grace": 3}})
        service = AgentService(cfg)
        service.start()
        click.secho(f"agent {cfg.agent.id} started (event log {cfg.log_path})", fg="green")
        try:

            async def main() -> Path | None:
                async with KernletClient(cfg.nats.url, agent_id=cfg.agent.id) as client:
                    return await _demo(client, image, out_dir)

            png = asyncio.run(main())
        finally:
            service.stop()
    if png is None:
        click.secho("no plot was produced", fg="red", err=True)
        return 1
    click.secho(f"demo done: {png}", fg="green", bold=True)
    return 0
