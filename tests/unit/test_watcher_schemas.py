"""/openapi.json's schemas are generated from the response models, in OpenAPI 3.0 terms, and
the models describe what the watcher really answers."""

from __future__ import annotations

from typing import Any

from kernlet.watcher._history import UsageHistory
from kernlet.watcher._openapi import openapi_spec
from kernlet.watcher._schemas import MODELS, Status
from kernlet.watcher._schemas import UsageHistory as UsageHistoryModel
from kernlet.watcher._status import Identity, build_status
from kernlet.watcher._usage import HostUsage, KernelUsage, Usage

#: JSON Schema words that OpenAPI 3.0 does not have
NOT_30 = {"anyOf", "$defs", "prefixItems", "const", "title"}


def _walk(node: Any, path: str = "") -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def test_components_come_from_the_models_and_speak_openapi_30() -> None:
    spec = openapi_spec()
    schemas = spec["components"]["schemas"]
    assert {m.__name__ for m in MODELS} <= set(schemas)
    for path, key, value in _walk(schemas):
        if path.endswith("/properties"):
            continue  # a property may be called anything
        assert key not in NOT_30, f"{path}/{key}"  # a schema keyword must be one of 3.0's
        if key == "required":
            assert value, f"{path}: an empty required list is invalid in OpenAPI 3.0"
    for _path, key, value in _walk(spec):
        if key == "$ref":
            assert value.startswith("#/components/schemas/"), value
            assert value.rsplit("/", 1)[-1] in schemas, value
    assert schemas["Usage"]["nullable"] is True  # Kernel.usage is Usage | None
    assert schemas["Kernel"]["properties"]["exit_code"] == {"type": "integer", "nullable": True}
    assert schemas["DestroyRequest"]["additionalProperties"] is False


def test_the_models_describe_the_real_answers() -> None:
    usage = Usage(at=100.0, host=HostUsage(2, 0.5, 1000, 400),
                  kernels={"k1": KernelUsage("c1", 3.0, 0.25, 12345)})
    status = build_status(
        identity=Identity("ag", "0", "r", "g", "h"), started_at=0.0, now=10.0,
        capacity={"cpu": 2.0, "mem": 100.0}, live=[{"state": "running", "slots": {"cpu": "1"}}],
        kernels_total=3, log_figures=(5, 6, 7), nats=(True, 1, ""), heartbeat_at=4.0,
        reconcile_at=None, loop_lag=0.0, usage=usage,
    ).to_dict()
    assert Status.model_validate(status).model_dump(mode="json") == status
    history = UsageHistory()
    history.add(usage)
    answer = history.to_dict()
    assert UsageHistoryModel.model_validate(answer).model_dump() == answer


def test_usage_history_keeps_the_window_and_forgets_ended_kernels() -> None:
    history = UsageHistory(window=10.0)
    host = HostUsage(2, 0.5, 1000, 400)
    for t in range(0, 13, 2):  # samples at 0, 2, ... 12 s; k2 only until 4 s
        kernels = {"k1": KernelUsage("c1", float(t), 0.1 * t, 100 + t)}
        if t <= 4:
            kernels["k2"] = KernelUsage("c2", 0.0, 1.0, 5)
        history.add(Usage(at=float(t), host=host, kernels=kernels))
    out = history.to_dict()
    assert [p[0] for p in out["node"]] == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]  # 0 s fell out
    assert out["node"][-1] == [12.0, 0.5, 600]
    assert [p[0] for p in out["kernels"]["k1"]] == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    assert out["kernels"]["k2"] == [[2.0, 1.0, 5], [4.0, 1.0, 5]]
    history.add(Usage(at=15.0, host=host, kernels={}))
    assert "k2" not in history.to_dict()["kernels"]  # nothing left in the window: forgotten
    assert set(history.to_dict("k1")["kernels"]) == {"k1"}
    assert history.to_dict("nope")["kernels"] == {}
