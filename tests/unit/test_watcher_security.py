"""The watcher's HTTP security: constant-time token checks, the same-origin rule for anything
that may change something, no CORS headers, and every refusal counted in /metrics."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_watcher import OPERATIONS, AppRig, FakeAgent, FakeHandle, _rig

from kernlet.actors.loop import LoopThread
from kernlet.config import AgentConfig, ConfigError, load_config, parse_origin
from kernlet.store import MemoryEventLog
from kernlet.watcher import Watcher, check_token
from kernlet.watcher._guard import REASONS, origin_refusal, own_origin, token_refusal

OK = {"X-Kernlet-Token": "s3cret"}
ALLOWED = "https://ops.example"


@pytest.fixture
async def rig() -> AsyncIterator[AppRig]:
    async for r in _rig("s3cret", (ALLOWED,)):
        yield r


@pytest.fixture
async def rig_no_token() -> AsyncIterator[AppRig]:
    async for r in _rig(None):
        yield r


def _own(rig: AppRig) -> str:
    server: Any = rig.client.server
    return f"http://{server.host}:{server.port}"


async def _failures(rig: AppRig) -> dict[str, float]:
    text = await (await rig.client.get("/metrics")).text()
    found = re.findall(r'^kernlet_watcher_auth_failures_total\{reason="([a-z-]+)"\} (\S+)$',
                       text, re.MULTILINE)
    return {reason: float(n) for reason, n in found}


async def _nothing_happened(rig: AppRig) -> None:
    assert rig.fake.destroyed.get() == [] and rig.shutdowns == []


# -- the rules alone ------------------------------------------------------------------------------


def test_origins_are_canonical() -> None:
    assert parse_origin("HTTPS://Ops.Example") == "https://ops.example:443"
    assert parse_origin("http://127.0.0.1") == "http://127.0.0.1:80"
    assert parse_origin("http://[::1]:6009/") == "http://[::1]:6009"
    for bad in ("null", "*", "ops.example", "ftp://a", "http://a/b", "http://u@a", "http://a?x",
                "http://a:99999", "http://"):
        with pytest.raises(ValueError, match="not an origin"):
            parse_origin(bad)
    assert own_origin("http", "127.0.0.1:6009") == "http://127.0.0.1:6009"
    assert own_origin("http", "a/b") is None


def test_allowed_origins_config(tmp_path: Any) -> None:
    assert AgentConfig().watcher.allowed_origins == ()
    w = AgentConfig.model_validate(
        {"watcher": {"allowed-origins": ["https://Ops.Example", "http://h:8080"]}}).watcher
    assert w.allowed_origins == ("https://ops.example:443", "http://h:8080")
    etcd = AgentConfig.model_validate({"watcher": {"allowed-origins": "https://a, http://b:1"}})
    assert etcd.watcher.allowed_origins == ("https://a:443", "http://b:1")
    f = tmp_path / "agent.toml"
    f.write_text('[watcher]\nallowed-origins = ["*"]\n')
    with pytest.raises(ConfigError, match=r"watcher\.allowed-origins: .*not an origin: '\*'"):
        load_config(f)


def test_origin_rule() -> None:
    own = "http://127.0.0.1:6009"
    allowed = {"https://ops.example:443"}
    for origin, site in ((None, None), (None, "same-origin"), (None, "none"),
                         ("http://127.0.0.1:6009", "cross-site"), ("https://ops.example", None),
                         ("HTTPS://OPS.EXAMPLE:443", None)):
        assert origin_refusal(origin, site, own, allowed) is None, (origin, site)
    for origin, site in ((None, "cross-site"), (None, "Same-Site"), ("null", None),
                         ("http://127.0.0.1:6010", None), ("https://127.0.0.1:6009", None),
                         ("http://localhost:6009", None), ("https://ops.example:8443", None),
                         ("http://evil.example", "same-origin"), ("garbage", None)):
        refusal = origin_refusal(origin, site, own, allowed)
        assert refusal is not None and refusal.status == 403, (origin, site)
        assert refusal.reason == "cross-origin" and "cross-origin" in refusal.message
    # a Host that is no origin matches nothing
    assert origin_refusal("http://a:80", None, None, ()) is not None


def test_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert check_token("s3cret", "s3cret") is None
    assert check_token("s3cret", "s3cres") == (403, "wrong X-Kernlet-Token")
    assert calls == [(b"s3cret", b"s3cret"), (b"s3cres", b"s3cret")]
    r = token_refusal("s3cret", "s3cret\udcff")  # a header byte that is not UTF-8
    assert r is not None and r.reason == "bad-token"
    assert calls[-1] == (b"s3cret\xff", b"s3cret")


# -- over HTTP ------------------------------------------------------------------------------------


async def test_every_token_check_over_http_is_constant_time(
    rig: AppRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for path in OPERATIONS:
        assert (await rig.client.post(path, headers={"X-Kernlet-Token": "nope"})).status == 403
    assert calls == [(b"nope", b"s3cret")] * len(OPERATIONS)
    assert (await rig.client.post("/agent/reset", headers=OK)).status == 200
    assert calls[-1] == (b"s3cret", b"s3cret")


async def test_failed_tokens_are_refused_and_counted(rig: AppRig) -> None:
    assert await _failures(rig) == dict.fromkeys(REASONS, 0.0)  # every series from the start
    for path in OPERATIONS:
        r = await rig.client.post(path)
        assert r.status == 401
        assert (await r.json())["error"]["type"] == "Unauthorized"
        r = await rig.client.post(path, headers={"X-Kernlet-Token": "nope"})
        assert r.status == 403
        assert (await r.json())["error"] == {"type": "Forbidden",
                                             "message": "wrong X-Kernlet-Token"}
    await _nothing_happened(rig)
    assert await _failures(rig) == {"bad-token": 3.0, "cross-origin": 0.0, "missing-token": 3.0,
                                    "no-token-configured": 0.0}


async def test_a_token_that_is_not_utf8_is_wrong_not_a_crash(rig: AppRig) -> None:
    server: Any = rig.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"POST /agent/reset HTTP/1.1\r\nHost: x\r\nX-Kernlet-Token: s3\xffcret\r\n"
                 b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ")
    assert json.loads(payload)["error"]["message"] == "wrong X-Kernlet-Token"
    assert (await _failures(rig))["bad-token"] == 1.0


async def test_operations_disabled_are_counted(rig_no_token: AppRig) -> None:
    r = await rig_no_token.client.post("/agent/reset", headers={"X-Kernlet-Token": "x"})
    assert r.status == 403
    assert (await _failures(rig_no_token))["no-token-configured"] == 1.0


async def test_cross_origin_operations_are_refused_even_with_the_token(rig: AppRig) -> None:
    own = _own(rig)
    foreign = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": own.replace("http://", "https://")},
        {"Origin": own.rsplit(":", 1)[0] + ":1"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"},
    ]
    for path in OPERATIONS:
        for headers in foreign:
            r = await rig.client.post(path, headers={**OK, **headers}, json={"reason": "x"})
            assert r.status == 403, (path, headers)
            err = (await r.json())["error"]
            assert err["type"] == "Forbidden" and "cross-origin" in err["message"]
    # also without a token (the origin is judged first), on any method, on any path
    for method, path in (("POST", "/agent/reset"), ("PUT", "/kernels/k1"),
                         ("DELETE", "/kernels/k1"), ("PATCH", "/status"), ("POST", "/nowhere")):
        r = await rig.client.request(method, path, headers={"Origin": "http://evil.example"})
        assert r.status == 403, (method, path)
    await _nothing_happened(rig)
    n = len(OPERATIONS) * len(foreign) + 5
    assert await _failures(rig) == {"bad-token": 0.0, "cross-origin": float(n),
                                    "missing-token": 0.0, "no-token-configured": 0.0}
    # reading stays open to any page: without CORS headers the browser hides the answer
    assert (await rig.client.get("/status", headers={"Origin": "http://evil.example"})).status \
        == 200


async def test_same_origin_and_allowed_origins_work_with_the_token(rig: AppRig) -> None:
    own = _own(rig)
    for headers in ({}, {"Origin": own}, {"Origin": own.replace("http:", "HTTP:")},
                    {"Origin": own, "Sec-Fetch-Site": "same-origin"},
                    {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"},
                    {"Origin": ALLOWED}, {"Origin": ALLOWED + ":443"},
                    {"Host": "watcher.local", "Origin": "http://Watcher.Local:80"}):
        r = await rig.client.post("/kernels/k1/destroy", headers={**OK, **headers},
                                  json={"reason": "same-origin"})
        assert r.status == 200, headers
    assert len(rig.fake.destroyed.get()) == 9
    # the right origin still needs the right token
    r = await rig.client.post("/agent/reset", headers={"Origin": own})
    assert r.status == 401
    assert (await _failures(rig))["cross-origin"] == 0.0


async def test_no_cors_header_is_ever_sent(rig: AppRig) -> None:
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "x-kernlet-token"}
    seen: list[tuple[str, str, int]] = []
    for path in ("/", "/status", "/metrics", "/healthz", "/kernels", "/kernels/k1",
                 "/openapi.json", "/static/app.js", *OPERATIONS):
        for method, headers in (("GET", {"Origin": "http://evil.example"}),
                                ("OPTIONS", preflight), ("OPTIONS", {**preflight,
                                                                     "Origin": _own(rig)}),
                                ("OPTIONS", {}), ("POST", {**OK, "Origin": "http://evil.ex"})):
            r = await rig.client.request(method, path, headers=headers)
            leaked = [h for h in r.headers if h.lower().startswith("access-control-")]
            assert leaked == [], (method, path, leaked)
            seen.append((method, path, r.status))
            r.release()
    # a preflight never succeeds
    assert all(status >= 400 for method, _, status in seen if method == "OPTIONS")
    await _nothing_happened(rig)


# -- the whole watcher --------------------------------------------------------------------------


def _post(url: str, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_watcher_applies_the_configured_allowed_origins() -> None:
    loop = LoopThread().start()
    store = MemoryEventLog()
    loop.run(store.open())
    ref = FakeAgent.start({})
    cfg = AgentConfig.model_validate({"agent": {"id": "unit"}, "watcher": {
        "port": 0, "token": "s3cret", "allowed-origins": ["https://ops.example"]}})
    handle = FakeHandle(cfg=cfg, loop=loop, store=store, agent=ref)
    w = Watcher(handle, capacity={"cpu": 1.0, "mem": 1.0})
    try:
        url = w.start() + "agent/reset"
        assert _post(url, {**OK, "Origin": "https://ops.example"}) == 200
        assert _post(url, {**OK, "Origin": url.rsplit("/", 2)[0]}) == 200
        assert _post(url, {**OK, "Origin": "https://other.example"}) == 403
        assert _post(url, OK) == 200
    finally:
        w.stop()
        ref.stop()
        loop.run(store.close())
        loop.stop()
