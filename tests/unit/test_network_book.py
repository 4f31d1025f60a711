"""The session networks' book (pure): one make for concurrent joins, one remove after the
last leave, the races between them, the manager's networks, recovery from the log."""

from __future__ import annotations

from typing import Any

from kernlet.actors.network_book import Answer, Make, NetworkBook, Remove, owned
from kernlet.actors.reconcile import OrphanNetwork, plan_networks
from kernlet.drivers.container_runtime import NetworkInfo
from kernlet.errors import DockerError, InvalidRequest
from kernlet.events import NetworkCreated, NetworkRemoved, new_envelope


class R:
    """A reply that remembers how it was answered."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def kinds(actions: list[Any]) -> list[str]:
    out = []
    for a in actions:
        if isinstance(a, Answer):
            out.append(f"{'err' if a.error else 'ok'}:{a.reply.name}")
        else:
            out.append(type(a).__name__)
    return out


def join(book: NetworkBook, k: str, members: tuple[str, ...] = ()) -> list[Any]:
    return book.join("n", k, "s", False, True, R(k), members=members)


def test_concurrent_joins_make_once_and_wait_for_it() -> None:
    book = NetworkBook()
    assert kinds(join(book, "k1")) == ["Make"]
    assert join(book, "k2") == [] and join(book, "k3") == []
    assert kinds(book.made("n", None)) == ["ok:k1", "ok:k2", "ok:k3"]
    assert kinds(join(book, "k4")) == ["ok:k4"]  # ready: at once
    assert book.holders("n") == {"k1", "k2", "k3", "k4"}


def test_only_the_last_leave_removes_and_waits_for_the_removal() -> None:
    book = NetworkBook()
    join(book, "k1"), join(book, "k2"), book.made("n", None)
    assert kinds(book.leave("n", "k1", R("l1"))) == ["ok:l1"]
    actions = book.leave("n", "k2", R("l2"))
    assert actions == [Remove("n", "s", "last-kernel-gone")]
    assert kinds(book.removed("n", None)) == ["ok:l2"]
    assert book.known() == set()
    assert kinds(book.leave("n", "k2", R("again"))) == ["ok:again"]  # idempotent


def test_a_join_during_the_removal_makes_it_again_afterwards() -> None:
    book = NetworkBook()
    join(book, "k1"), book.made("n", None)
    book.leave("n", "k1", R("l1"))
    assert join(book, "k2") == []  # waits for the removal
    actions = book.removed("n", None)
    assert kinds(actions) == ["ok:l1", "Make"]
    assert kinds(book.made("n", None)) == ["ok:k2"]
    assert book.holders("n") == {"k2"}


def test_every_holder_leaving_while_it_is_made_removes_it_once_made() -> None:
    book = NetworkBook()
    join(book, "k1")
    assert book.leave("n", "k1", R("l1")) == []
    assert kinds(book.made("n", None)) == ["ok:k1", "Remove"]
    assert kinds(book.removed("n", None)) == ["ok:l1"]


def test_a_failed_make_fails_every_kernel_of_the_create_even_late_joiners() -> None:
    book = NetworkBook()
    join(book, "k1", ("k1", "k2", "k3"))
    join(book, "k2", ("k1", "k2", "k3"))
    err = DockerError("no pool")
    assert kinds(book.made("n", err)) == ["err:k1", "err:k2", "Remove"]  # what half exists
    late = join(book, "k3", ("k1", "k2", "k3"))
    assert kinds(late) == ["err:k3"] and late[0].error is err
    assert kinds(book.leave("n", "k1", R("l1"))) == []  # the failed kernels' undo waits...
    assert join(book, "k9") == []  # ...and another create's try waits for the removal
    assert kinds(book.removed("n", None)) == ["ok:l1", "Make"]
    assert kinds(book.made("n", None)) == ["ok:k9"]


def test_a_failed_remove_leaves_it_to_the_reconciler() -> None:
    book = NetworkBook()
    join(book, "k1"), book.made("n", None), book.leave("n", "k1", R("l1"))
    assert kinds(book.removed("n", DockerError("busy"))) == ["err:l1"]
    assert book.known() == set()  # held by nobody: an orphan for plan_networks
    assert kinds(book.leave("n", "k1", R("l2"))) == ["ok:l2"]  # the teardown's retry


def test_the_managers_network_stays_without_kernels_until_destroyed() -> None:
    book = NetworkBook()
    assert kinds(book.create_owned("m", False, R("c"))) == ["Make"]
    assert kinds(book.made("m", None)) == ["ok:c"]
    assert kinds(book.create_owned("m", False, R("c2"))) == ["ok:c2"]  # idempotent
    assert kinds(book.join("m", "k1", "s", False, True, R("k1"), "manager")) == ["ok:k1"]
    refused = book.destroy_owned("m", R("d"))
    assert isinstance(refused[0].error, InvalidRequest)
    assert kinds(book.leave("m", "k1", R("l"))) == ["ok:l"]  # not removed: the manager's
    assert book.destroy_owned("m", R("d")) == [Remove("m", "", "manager-requested")]
    assert kinds(book.removed("m", None)) == ["ok:d"]
    unknown = book.join("x", "k2", "s", False, True, R("k2"), "manager")
    assert isinstance(unknown[0].error, InvalidRequest)


def test_recovery_from_the_log() -> None:
    events = [new_envelope("_agent", i + 1, b) for i, b in enumerate([
        NetworkCreated("m1", owner="manager"), NetworkCreated("m2", owner="manager"),
        NetworkCreated("s-net", "s", "agent"), NetworkRemoved("m2", "manager-requested")])]
    assert owned(events) == ["m1"]
    book = NetworkBook()
    book.restore("s-net", "k1", "s", True)
    book.adopt_owned("m1")
    assert book.phase("s-net") == "ready" and book.owner("m1") == "manager"
    assert book.leave("s-net", "k1", R("l")) == [Remove("s-net", "s", "last-kernel-gone")]


def test_orphan_networks_are_the_unknown_ones_past_the_grace() -> None:
    nets = [NetworkInfo("held", {}, 0.0), NetworkInfo("old", {"ai.kernlet.session-id": "s"}, 0.0),
            NetworkInfo("young", {}, 99.0)]
    assert plan_networks({"held"}, nets, now=100.0, grace=5.0) == [OrphanNetwork("old", "s")]


def test_make_carries_what_the_network_is() -> None:
    book = NetworkBook()
    assert book.join("n", "k", "s", True, False, R("k")) == [Make("n", "s", "agent", True, False)]
