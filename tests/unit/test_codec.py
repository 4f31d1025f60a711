"""The codec: every event type round-trips, frames survive any split, bad bytes are CodecError."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernlet.events.codec import (
    EVENT_TYPES,
    MAX_FRAME,
    MAX_PAYLOAD,
    CodecError,
    FrameReader,
    body_from_payload,
    body_to_payload,
    decode_event,
    encode_event,
    event_from_dict,
    event_to_dict,
    frame,
    pack,
    unpack,
)
from kernlet.events.types import (
    Envelope,
    EventBody,
    ImagePulled,
    KernelCreating,
    KernelTerminated,
)
from kernlet.store.records import to_envelope, to_record

FIXTURES = Path(__file__).parents[1] / "fixtures"

#: plain data that msgpack carries unchanged (no tuples, no NaN: they do not compare equal)
plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

#: a strategy per field annotation used in kernlet.events.types
FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "str": st.text(max_size=30),
    "int | None": st.none() | st.integers(-(2**31), 2**31),
    "int": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(allow_nan=False, allow_infinity=False),
    "float | None": st.none() | st.floats(allow_nan=False, allow_infinity=False),
    "bool": st.booleans(),
    "tuple[int, ...]": st.lists(st.integers(0, 65535), max_size=8).map(tuple),
    "tuple[str, ...]": st.lists(st.text(max_size=10), max_size=5).map(tuple),
    "dict[str, str]": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5),
    "dict[str, dict[str, str]]": st.dictionaries(
        st.text(max_size=10),
        st.dictionaries(st.text(max_size=5), st.text(max_size=8), max_size=3),
        max_size=3,
    ),
    "dict[str, Any]": st.dictionaries(st.text(max_size=10), plain, max_size=5),
}


def bodies(cls: type[EventBody]) -> st.SearchStrategy[EventBody]:
    fields = {f.name: FIELD_STRATEGIES[str(f.type)] for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


def envelopes(cls: type[EventBody]) -> st.SearchStrategy[Envelope]:
    return st.builds(
        Envelope,
        kernel_id=st.text(min_size=1, max_size=20),
        seq=st.integers(1, 2**63 - 1),
        event_id=st.uuids().map(lambda u: u.hex),
        time=st.floats(0, 4e9),
        body=bodies(cls),
    )


def test_every_field_type_has_a_strategy() -> None:
    for cls in EVENT_TYPES.values():
        for f in dataclasses.fields(cls):
            assert str(f.type) in FIELD_STRATEGIES, f"{cls.__name__}.{f.name}: {f.type}"


@pytest.mark.parametrize("cls", EVENT_TYPES.values(), ids=lambda c: c.TYPE)
@settings(max_examples=40)
@given(data=st.data())
def test_every_event_type_round_trips(cls: type[EventBody], data: st.DataObject) -> None:
    env = data.draw(envelopes(cls))
    assert decode_event(encode_event(env)) == env
    assert event_from_dict(event_to_dict(env)) == env
    assert to_envelope(to_record(env)) == env  # the event log's record
    assert body_from_payload(env.type, cls.VERSION, body_to_payload(env.body)) == env.body


def test_saved_version_1_payloads_still_decode() -> None:
    saved = json.loads((FIXTURES / "payloads_v1.json").read_text())["payloads"]
    assert {p["type"] for p in saved} == set(EVENT_TYPES)
    for p in saved:
        fields = unpack(bytes.fromhex(p["payload_hex"]))
        body = body_from_payload(p["type"], p["version"], fields)
        assert type(body) is EVENT_TYPES[p["type"]]
        if p["version"] == body.VERSION:
            assert body_to_payload(body) == fields


@settings(max_examples=100)
@given(
    messages=st.lists(st.dictionaries(st.text(max_size=8), plain, max_size=4), max_size=6),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
)
def test_frames_survive_any_split(messages: list[dict[str, Any]], cuts: list[int]) -> None:
    stream = b"".join(frame(m) for m in messages)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    reader = FrameReader()
    got = [m for piece in pieces for m in reader.feed(piece)]
    assert got == messages


def test_frames_byte_by_byte() -> None:
    msgs: list[dict[str, Any]] = [{"op": "out", "data": "x" * 300}, {"op": "done", "code": 0}]
    reader = FrameReader()
    stream = b"".join(frame(m) for m in msgs)
    assert [m for i in range(len(stream)) for m in reader.feed(stream[i : i + 1])] == msgs


@settings(max_examples=300)
@given(data=st.binary(max_size=64))
def test_random_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    try:
        unpack(data)
    except CodecError:
        pass
    try:
        FrameReader().feed(data)
    except CodecError:
        pass


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\x92\x01", b"\x01\x02", b"\x81\x01\x02", b"\xd9\x05ab"],
    ids=["empty", "reserved", "truncated", "extra-data", "int-key", "short-str"],
)
def test_malformed_msgpack_is_a_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        unpack(data)


def test_oversized_input_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="exceeds"):
        unpack(pack("x" * MAX_PAYLOAD))
    with pytest.raises(CodecError, match="exceeds"):
        FrameReader().feed((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(CodecError, match="exceeds"):
        frame({"data": b"x" * MAX_FRAME})


def test_frame_must_hold_a_map() -> None:
    body = pack([1, 2])
    with pytest.raises(CodecError, match="map"):
        FrameReader().feed(len(body).to_bytes(4, "big") + body)


def test_unencodable_values_are_a_codec_error() -> None:
    with pytest.raises(CodecError):
        pack({"x": object()})
    with pytest.raises(CodecError):
        pack({"x": 2**65})


def test_bad_events_are_codec_errors() -> None:
    good = event_to_dict(Envelope("k", 1, "e" * 32, 1.0, KernelTerminated(reason="r", exit_code=1)))
    with pytest.raises(CodecError, match="must be a map"):
        decode_event(pack([good]))
    with pytest.raises(CodecError, match="unknown event type"):
        event_from_dict({**good, "type": "kernel_exploded"})
    with pytest.raises(CodecError, match="newer"):
        event_from_dict({**good, "version": 2})
    with pytest.raises(CodecError, match="no upgrade"):
        event_from_dict({**good, "version": 0})
    with pytest.raises(CodecError, match="bad payload"):
        event_from_dict({**good, "payload": {}})  # reason is required
    with pytest.raises(CodecError, match="bad event record"):
        event_from_dict({k: v for k, v in good.items() if k != "seq"})
    with pytest.raises(CodecError):
        event_from_dict({**good, "seq": "three"})


def test_tuples_come_back_as_tuples() -> None:
    body = KernelCreating(cpuset=(1, 2), ports=(30000,))
    back = body_from_payload(body.TYPE, 1, unpack(pack(body_to_payload(body))))
    assert back == body
    assert isinstance(back, KernelCreating)
    assert isinstance(back.cpuset, tuple)


@settings(max_examples=300)
@given(
    key=st.sampled_from(["id", "kernel_id", "seq", "time", "type", "version", "payload"]),
    value=plain,
)
@example(key="version", value=float("inf"))
@example(key="seq", value=float("-inf"))
def test_event_with_a_wrong_header_decodes_or_raises_codec_error(key: str, value: Any) -> None:
    good = event_to_dict(Envelope("k", 1, "e" * 32, 1.0, KernelTerminated(reason="r")))
    try:
        decode_event(pack({**good, key: value}))
    except CodecError:
        pass


def test_image_pulled_v1_failure_upgrades_to_a_docker_error() -> None:
    failed = body_from_payload("image_pulled", 1, {"image": "x", "ok": False, "image_id": "",
                                                   "error": "pull x: boom"})
    assert failed == ImagePulled(image="x", ok=False, error="pull x: boom",
                                 error_type="DockerError")
    ok = body_from_payload("image_pulled", 1, {"image": "x", "ok": True, "image_id": "sha256:a",
                                               "error": ""})
    assert ok == ImagePulled(image="x", ok=True, image_id="sha256:a")
