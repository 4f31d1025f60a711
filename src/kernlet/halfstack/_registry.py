"""The local container registry of the half stack: Debian's ``docker-registry``
(distribution 2.8) on 127.0.0.1:5000, storing under the state directory.

Docker talks plain HTTP to registries on 127.0.0.0/8 without any daemon setting (its
insecure-registry list always holds the loopback network), so no TLS is needed on loopback.
:func:`registry_config` is also what tests use to start a second registry with htpasswd
authentication on another port.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path

from kernlet.halfstack._probes import LOOPBACK, Probe, _why

REGISTRY_PORT = 5000

__all__ = ["REGISTRY_PORT", "probe_registry", "registry_config", "write_registry_config"]


def registry_config(storage: Path, addr: str, htpasswd: Path | None = None) -> str:
    """docker-registry's YAML config (written as JSON, which YAML reads): filesystem storage,
    one listening address, and htpasswd (bcrypt) authentication when ``htpasswd`` is given."""
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": addr},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "kernlet", "path": str(htpasswd)}}
    return json.dumps(config, indent=1) + "\n"


def write_registry_config(data: Path) -> list[str]:
    """Write the half stack's registry config into its data directory; the arguments after
    the binary (``serve CONFIG``)."""
    data.mkdir(parents=True, exist_ok=True)
    path = data / "config.yml"
    path.write_text(registry_config(data / "storage", f"{LOOPBACK}:{REGISTRY_PORT}"))
    return ["serve", str(path)]


def probe_registry(host: str = LOOPBACK, port: int = REGISTRY_PORT,
                   timeout: float = 2.0) -> Probe:
    """``GET /v2/``: 200 (or 401 when it wants credentials) with Docker's API header."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/v2/")
        resp = conn.getresponse()
        resp.read()
    except OSError as exc:
        return Probe(False, _why(exc))
    finally:
        conn.close()
    api = resp.getheader("Docker-Distribution-Api-Version") or ""
    if resp.status in (200, 401) and api.startswith("registry/2"):
        return Probe(True, f"{api}{'' if resp.status == 200 else ', wants credentials'}")
    return Probe(False, f"/v2/ answered {resp.status} (not a registry?)")
