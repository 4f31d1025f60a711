"""The cluster description of create_kernels: defaults, bad input as typed errors naming the
field, the environment and cluster.json, the ssh keypair's format."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kernlet.cluster import cluster_env, cluster_json, new_keypair, plan_cluster, ssh_config
from kernlet.errors import InvalidRequest
from kernlet.protocol import CreateKernels, parse_request


def create(n: int, cluster: dict[str, Any] | None, **config: Any) -> CreateKernels:
    req = parse_request("create_kernels", {
        "session_id": "s1", "kernel_ids": [f"k{i}" for i in range(n)],
        "configs": [{"image": "img", **config}] * n,
        **({"cluster": cluster} if cluster is not None else {})})
    assert isinstance(req, CreateKernels)
    return req


def facts(n: int, **cluster: Any) -> list[dict[str, Any]]:
    req = create(n, cluster)
    assert req.cluster is not None
    return plan_cluster(req.session_id, req.kernel_ids, req.cluster, "a1")


def test_defaults_one_main_then_subs() -> None:
    got = facts(3)
    assert [(f["role"], f["idx"], f["host"]) for f in got] == [
        ("main", 1, "main1"), ("sub", 1, "sub1"), ("sub", 2, "sub2")]
    assert {f["network"] for f in got} == {"kernlet-a1-s1"}
    env = cluster_env(got[2])
    assert env["KERNLET_CLUSTER_ROLE"] == "sub" and env["KERNLET_CLUSTER_IDX"] == "2"
    assert env["KERNLET_CLUSTER_HOST"] == "sub2" and env["KERNLET_CLUSTER_SIZE"] == "3"
    assert env["KERNLET_CLUSTER_HOSTS"] == "main1,sub1,sub2"
    doc = json.loads(cluster_json(got[2]))
    assert doc["host"] == "sub2" and [h["kernel_id"] for h in doc["hosts"]] == ["k0", "k1", "k2"]
    assert "Host main1 sub1 sub2\n" in ssh_config(got[0])


def test_roles_and_hostnames_given() -> None:
    got = facts(3, roles=["main", "worker", "worker"], hostnames=["head", "w-a", "w-b"])
    assert [(f["role"], f["idx"], f["host"]) for f in got] == [
        ("main", 1, "head"), ("worker", 1, "w-a"), ("worker", 2, "w-b")]
    assert cluster_env({}) == {}


@pytest.mark.parametrize(("cluster", "says"), [
    ({"hostnames": ["a", "b", "a"]}, "cluster.hostnames repeat ['a']"),
    ({"hostnames": ["a"]}, "cluster.hostnames has 1 name(s) for 3 kernel(s)"),
    ({"roles": ["main", "sub"]}, "cluster.roles has 2 role(s) for 3 kernel(s)"),
    ({"mode": "galaxy"}, "cluster.mode: Input should be"),
    ({"mode": "multi-node"}, "cluster.mode 'multi-node' is not supported"),
    ({"hostnames": ["A", "b", "c"]}, "cluster.hostnames.0"),
    ({"size": 3}, "cluster.size: Extra inputs"),
])
def test_bad_cluster_input_is_a_typed_error_naming_the_field(cluster: dict[str, Any],
                                                             says: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        create(3, cluster)
    assert says in err.value.message


def test_preopen_ports_are_checked() -> None:
    assert create(1, None, preopen_ports=[8080, 9090]).configs[0].preopen_ports == [8080, 9090]
    with pytest.raises(InvalidRequest, match=r"configs\.0\.preopen_ports repeat a port"):
        create(1, None, preopen_ports=[8080, 8080])
    with pytest.raises(InvalidRequest, match=r"preopen_ports\.0"):
        create(1, None, preopen_ports=[0])


def test_keypair_is_ed25519_in_openssh_format() -> None:
    private, public = new_keypair("kernlet-s1")
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    kind, blob, comment = public.decode().split()
    assert (kind, comment) == ("ssh-ed25519", "kernlet-s1") and len(blob) == 68
    assert new_keypair("x")[0] != private
