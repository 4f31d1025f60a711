"""kernlet's web terminal: an xterm.js page and a terminado shell, behind a token.

Runs inside a kernel container as the ``terminal`` service (see docs/services.md and
services.json), from the read-only lib mount:

    KERNLET_SERVICE_TOKEN=... python3 /opt/kernlet/lib/kernlet/runner/terminal.py --port 7681

Needs the standard library, tornado and terminado (Debian: python3-terminado, which
python3-notebook brings) and, for the page, xterm.js 3.8 as CommonJS modules (Debian:
node-xterm; bookworm's libjs-xterm ships only a stub that cannot load in a browser), which
this module bundles into one script at start.

- ``GET /`` the page (200 with the token, 403 without); a valid token also sets a cookie,
  ``kernlet-terminal-<hash of the token>``, so that a reload without ``?token=`` still works.
- ``GET /websocket`` terminado's protocol (JSON arrays: ``["stdin", text]``,
  ``["set_size", rows, cols]`` in; ``["setup", {}]``, ``["stdout", text]``,
  ``["disconnect", 1]`` out); one new shell per connection, in the work dir; token required.
- ``GET /xterm.js``, ``GET /xterm.css`` the terminal's code and style (public Debian files).

The token comes from $KERNLET_SERVICE_TOKEN (preferred: argv is readable by every user of the
host) or ``--token``, and is accepted as ``?token=``, the cookie, or ``Authorization: token
T``. It is removed from the environment the shells inherit. SIGTERM ends every shell and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import tornado.web
from terminado import TermSocket, UniqueTermManager  # type: ignore[import-untyped,unused-ignore]
from terminado.management import MaxTerminalsReached  # type: ignore[import-untyped,unused-ignore]

TOKEN_ENV = "KERNLET_SERVICE_TOKEN"  # noqa: S105 (a variable name, not a secret)
XTERM_LIB = Path("/usr/share/nodejs/xterm/lib")  # node-xterm
XTERM_FIT = Path("/usr/share/javascript/xterm/addons/fit/fit.js")  # libjs-xterm
XTERM_CSS = Path("/usr/share/javascript/xterm/xterm.css")  # libjs-xterm
log = logging.getLogger("kernlet.terminal")

_SOURCE_MAP_RE = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)
_LOADER = """\
(function () {
  "use strict";
  var cache = {};
  function resolve(dir, request) {
    var parts = request.charAt(0) === "." ? dir.split("/").filter(Boolean) : [];
    request.split("/").forEach(function (p) {
      if (p === "..") parts.pop(); else if (p && p !== ".") parts.push(p);
    });
    var base = parts.join("/");
    var tries = [base, base + ".js", base + "/index.js"];
    for (var i = 0; i < tries.length; i++) if (defs[tries[i]]) return tries[i];
    throw new Error("xterm bundle: cannot find " + request + " from " + (dir || "/"));
  }
  function load(id) {
    if (cache[id]) return cache[id].exports;
    var module = cache[id] = {exports: {}};
    var dir = id.split("/").slice(0, -1).join("/");
    defs[id].call(module.exports, function (r) { return load(resolve(dir, r)); },
                  module, module.exports);
    return module.exports;
  }
  window.Terminal = load("public/Terminal.js").Terminal;
  window.xtermFit = load("addons/fit/fit.js");
})();
"""


def bundle_xterm(lib: Path = XTERM_LIB, fit: Path = XTERM_FIT) -> str:
    """xterm.js's CommonJS modules (and the fit addon) as one browser script.

    The script sets ``window.Terminal`` (xterm.js 3.8's public Terminal) and
    ``window.xtermFit`` (for ``Terminal.applyAddon``). Tests and source maps are left out.
    """
    entry = lib / "public" / "Terminal.js"
    if not entry.is_file():
        raise FileNotFoundError(f"{entry} is missing (Debian package node-xterm)")
    modules = {
        path.relative_to(lib).as_posix(): path
        for path in sorted(lib.rglob("*.js"))
        if not path.name.endswith(".test.js") and "addons" not in path.relative_to(lib).parts
    }
    modules["addons/fit/fit.js"] = fit
    parts = ["var defs = {};\n"]
    for name, path in modules.items():
        source = _SOURCE_MAP_RE.sub("", path.read_text(encoding="utf-8"))
        parts.append(
            f"defs[{json.dumps(name)}] = function (require, module, exports) {{\n{source}\n}};\n"
        )
    return "(function () {\n" + "".join(parts) + _LOADER + "})();\n"


PAGE = """\
<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>kernlet terminal</title>
<link rel="stylesheet" href="xterm.css">
<style>
  html, body { margin: 0; height: 100%; background: #000; }
  #terminal { position: absolute; inset: 4px; }
  #status { position: fixed; right: 8px; bottom: 4px; color: #aaa; font: 12px sans-serif; }
</style>
</head>
<body>
<div id="terminal"></div>
<div id="status">connecting</div>
<script src="xterm.js"></script>
<script>
(function () {
  "use strict";
  var status = document.getElementById("status");
  var query = new URLSearchParams(location.search);
  var token = query.get("token");
  if (token) {  // the cookie now holds it: keep it out of the address bar and the history
    query.delete("token");
    var rest = query.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
  if (typeof Terminal === "undefined") {
    status.textContent = "xterm.js could not be loaded (see the service's log)";
    return;
  }
  Terminal.applyAddon(xtermFit);
  var term = new Terminal({cursorBlink: true, scrollback: 5000});
  term.open(document.getElementById("terminal"));
  term.fit();
  var url = new URL("websocket", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = token ? "?token=" + encodeURIComponent(token) : "";
  url.hash = "";
  var ws = new WebSocket(url.href);
  function send(msg) { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); }
  function sendSize() {
    send(["set_size", term.rows, term.cols, window.innerHeight, window.innerWidth]);
  }
  ws.onopen = function () { status.textContent = ""; sendSize(); term.focus(); };
  ws.onmessage = function (event) {
    var msg = JSON.parse(event.data);
    if (msg[0] === "stdout") term.write(msg[1]);
    else if (msg[0] === "disconnect") status.textContent = "the shell has ended";
  };
  ws.onclose = function () {
    if (!status.textContent) status.textContent = "disconnected";
  };
  term.on("data", function (data) { send(["stdin", data]); });
  window.addEventListener("resize", function () { term.fit(); sendSize(); });
  window.kernletTerminal = {term: term, socket: ws};
})();
</script>
</body>
</html>
"""


class Auth:
    """The service's token, and the cookie that carries it after the first visit."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.cookie = "kernlet-terminal-" + hashlib.sha256(token.encode()).hexdigest()[:16]

    def given(self, handler: tornado.web.RequestHandler) -> str | None:
        header = handler.request.headers.get("Authorization", "")
        if header.lower().startswith("token "):
            return header[6:].strip()
        return handler.get_query_argument("token", None) or handler.get_cookie(self.cookie)

    def check(self, handler: tornado.web.RequestHandler) -> bool:
        given = self.given(handler)
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


class PageHandler(tornado.web.RequestHandler):
    def initialize(self, auth: Auth) -> None:
        self.auth = auth

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")  # the URL may hold the token

    def get(self) -> None:
        if not self.auth.check(self):
            raise tornado.web.HTTPError(403, reason="token required")
        self.set_cookie(self.auth.cookie, self.auth.token, httponly=True, samesite="Strict")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(PAGE)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")


class AssetHandler(tornado.web.RequestHandler):
    """xterm.js (bundled at start) and its stylesheet: public files, no token needed."""

    def initialize(self, body: bytes | None, content_type: str, error: str = "") -> None:
        self.body = body
        self.content_type = content_type
        self.error = error

    def get(self) -> None:
        if self.body is None:
            self.set_status(404)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(self.error + "\n")
            return
        self.set_header("Content-Type", self.content_type)
        self.set_header("Cache-Control", "max-age=3600")
        self.finish(self.body)


class ShellSocket(TermSocket):  # type: ignore[misc]
    """terminado's websocket, refused (403, before the upgrade) without the token."""

    def initialize(self, term_manager: UniqueTermManager, auth: Auth) -> None:
        super().initialize(term_manager)
        self.auth = auth

    def get(self, *args: Any, **kwargs: Any) -> Any:
        if not self.auth.check(self):
            raise tornado.web.HTTPError(403, reason="token required")
        return super().get(*args, **kwargs)

    def open(self, url_component: str | None = None) -> None:
        try:
            super().open(url_component)
        except MaxTerminalsReached as exc:
            self.close(1013, str(exc))


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Access log without query strings (they may hold the token)."""
    request = handler.request
    log.info(
        "%d %s %s (%s) %.1fms", handler.get_status(), request.method, request.path,
        request.remote_ip, 1000.0 * request.request_time(),
    )  # fmt: skip


def make_app(
    token: str, workdir: str, shell: list[str], max_terminals: int = 8
) -> tuple[tornado.web.Application, UniqueTermManager]:
    """The tornado application and its terminal manager (one shell per websocket)."""
    auth = Auth(token)
    manager = UniqueTermManager(
        shell_command=shell, max_terminals=max_terminals, term_settings={"cwd": workdir}
    )
    try:
        script: bytes | None = bundle_xterm().encode()
        error = ""
    except (OSError, UnicodeDecodeError) as exc:
        log.error("no xterm.js for the page: %s", exc)
        script, error = None, f"xterm.js is not available in this image: {exc}"
    try:
        css: bytes | None = XTERM_CSS.read_bytes()
    except OSError:
        css = None
    app = tornado.web.Application(
        [
            (r"/", PageHandler, {"auth": auth}),
            (r"/websocket", ShellSocket, {"term_manager": manager, "auth": auth}),
            (r"/xterm\.js", AssetHandler,
             {"body": script, "content_type": "text/javascript; charset=utf-8", "error": error}),
            (r"/xterm\.css", AssetHandler,
             {"body": css, "content_type": "text/css; charset=utf-8", "error": "no xterm.css"}),
        ],
        log_function=_log_request,
        websocket_ping_interval=30,
    )  # fmt: skip
    return app, manager


def default_shell() -> list[str]:
    for candidate in ("/bin/bash", "/bin/sh"):
        if Path(candidate).exists():
            return [candidate]
    return [shutil.which("sh") or "sh"]


async def serve(
    port: int, token: str, workdir: str, shell: list[str], address: str = "0.0.0.0"
) -> None:
    """Serve until SIGTERM or SIGINT, then end every shell."""
    app, manager = make_app(token, workdir, shell)
    server = app.listen(port, address=address)
    log.info("kernlet terminal on %s:%d, shells %s in %s", address, port, shell, workdir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    server.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(manager.shutdown(), 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kernlet's web terminal (xterm.js + terminado)")
    parser.add_argument("--port", type=int, default=7681)
    parser.add_argument("--address", default="0.0.0.0")
    parser.add_argument("--token", default=None, help=f"default: ${TOKEN_ENV}")
    parser.add_argument("--workdir", default=os.environ.get("HOME") or str(Path.cwd()))
    parser.add_argument("--shell", default=None, help="default: /bin/bash, else /bin/sh")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    token = args.token or os.environ.get(TOKEN_ENV, "")
    os.environ.pop(TOKEN_ENV, None)  # the shells need not inherit it
    if not token:
        print(f"terminal: no token (set ${TOKEN_ENV} or pass --token)", file=sys.stderr)
        return 2
    shell = [args.shell] if args.shell else default_shell()
    asyncio.run(serve(args.port, token, args.workdir, shell, args.address))
    return 0


if __name__ == "__main__":
    sys.exit(main())
