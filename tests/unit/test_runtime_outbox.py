"""The runtime's outbox: sequence numbers, coalescing, bounded buffering, ack and replay."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kernlet.kernel.outbox import MERGE_LIMIT, Outbox


def out(kind: str, data: Any, run_id: str = "r") -> dict[str, Any]:
    return {"t": kind, "run_id": run_id, "data": data}


def drain(box: Outbox) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    while len(box):
        msgs += box.take(1024)
    return msgs


def test_consecutive_chunks_of_one_stream_merge() -> None:
    box = Outbox()
    for line in ("a\n", "b\n", "c\n"):
        box.push(out("stdout", line))
    box.push(out("stderr", "e\n"))
    box.push(out("stdout", "d\n"))
    box.push(out("stdout", "x\n", run_id="other"))
    box.push(out("finished", {"exitCode": 0}))
    msgs = drain(box)
    assert [(m["t"], m["data"]) for m in msgs] == [
        ("stdout", "a\nb\nc\n"),
        ("stderr", "e\n"),
        ("stdout", "d\n"),
        ("stdout", "x\n"),
        ("finished", {"exitCode": 0}),
    ]
    assert [m["seq"] for m in msgs] == [1, 2, 3, 4, 5]


def test_sent_messages_are_not_merged_into() -> None:
    box = Outbox()
    box.push(out("stdout", "a"))
    first = box.take(1024)
    box.push(out("stdout", "b"))
    assert first == [out("stdout", "a") | {"seq": 1}]
    assert box.take(1024) == [out("stdout", "b") | {"seq": 2}]


def test_big_chunks_are_split_and_merges_stay_under_the_limit() -> None:
    box = Outbox()
    box.push(out("stdout", "x" * (2 * MERGE_LIMIT + 5)))
    for _ in range(100):
        box.push(out("stdout", "y" * 1000))
    msgs = drain(box)
    assert all(len(m["data"]) <= MERGE_LIMIT for m in msgs)
    assert "".join(m["data"] for m in msgs) == "x" * (2 * MERGE_LIMIT + 5) + "y" * 100_000
    assert len(msgs) <= 5


def test_past_the_limit_the_oldest_output_is_dropped_with_a_note() -> None:
    box = Outbox(limit=10_000)
    box.push(out("waiting-input", {"is_password": False, "prompt": ""}))
    for i in range(100):
        box.push(out("stdout" if i % 2 else "stderr", f"{i:04d}" * 100))  # 400 chars each
    box.push(out("finished", {"exitCode": 0}))
    assert box.pending_bytes <= 10_000
    assert box.dropped_bytes > 0
    msgs = drain(box)
    kinds = [m["t"] for m in msgs]
    assert kinds[0] == "waiting-input" and kinds[-1] == "finished"
    note = msgs[1]
    assert note["t"] == "stderr" and "dropped" in note["data"]
    # What is left is the newest output, in order.
    rest = "".join(m["data"] for m in msgs[2:-1])
    assert rest.endswith("0099" * 100)
    seqs = [m["seq"] for m in msgs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_repeated_drops_update_one_note() -> None:
    box = Outbox(limit=5_000)
    for _ in range(50):
        box.push(out("stdout", "z" * 500))
        box.push(out("stderr", "w" * 500))
    msgs = drain(box)
    notes = [m for m in msgs if "dropped" in str(m["data"])]
    assert len(notes) == 1
    dropped = int(notes[0]["data"].split("kernlet: ")[1].split(" bytes")[0])
    assert dropped == box.dropped_bytes


def test_acknowledged_delivery_replays_what_was_not_acknowledged() -> None:
    box = Outbox()
    box.push(out("stdout", "a"))
    assert box.take(1024)[0]["seq"] == 1  # not acking yet: not retained
    box.ack(1)
    box.push(out("stdout", "b"))
    box.push(out("finished", {"exitCode": 0}))
    sent = box.take(1024)
    assert [m["seq"] for m in sent] == [2, 3]
    box.ack(2)
    box.rewind()  # a new connection
    assert box.take(1024) == [sent[1]]
    box.ack(3)
    box.rewind()
    assert len(box) == 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["stdout", "stderr", "media"]),
            st.sampled_from(["r1", "r2"]),
            st.text(max_size=50),
        ),
        max_size=60,
    ),
    st.lists(st.integers(min_value=1, max_value=200), max_size=10),
)
def test_nothing_is_lost_or_reordered_below_the_limit(
    pushes: list[tuple[str, str, str]], takes: list[int]
) -> None:
    box = Outbox()
    got: list[dict[str, Any]] = []
    for i, (kind, run_id, data) in enumerate(pushes):
        box.push(out(kind, {"type": "x", "data": data} if kind == "media" else data, run_id))
        if takes and i % 7 == 0:
            got += box.take(takes[i % len(takes)])
    got += drain(box)
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for kind in ("stdout", "stderr"):
        for run_id in ("r1", "r2"):
            want = "".join(d for k, r, d in pushes if (k, r) == (kind, run_id))
            have = "".join(m["data"] for m in got if (m["t"], m["run_id"]) == (kind, run_id))
            assert have == want
    assert len([m for m in got if m["t"] == "media"]) == len([p for p in pushes if p[0] == "media"])
