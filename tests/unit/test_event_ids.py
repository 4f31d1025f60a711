"""Event ids: version 7 UUIDs in hex, unique, and later ones sort later (the log's index
of them grows at its end)."""

from __future__ import annotations

import time
import uuid

from kernlet.events import new_envelope, new_event_id
from kernlet.events.types import KernelCreating


def test_an_event_id_is_a_version_7_uuid_in_hex() -> None:
    event_id = new_event_id()
    parsed = uuid.UUID(hex=event_id)
    assert parsed.hex == event_id
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_an_event_id_begins_with_the_unix_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    event_id = new_event_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(event_id[:12], 16) <= after


def test_ids_made_in_a_later_millisecond_sort_after_earlier_ones() -> None:
    earlier = [new_event_id() for _ in range(100)]
    time.sleep(0.002)
    later = [new_event_id() for _ in range(100)]
    assert max(earlier) < min(later)


def test_ids_are_unique_within_one_millisecond() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)


def test_new_envelope_takes_a_fresh_id() -> None:
    body = KernelCreating(slots={}, scratch_dir="/tmp/x")
    a, b = new_envelope("k", 1, body), new_envelope("k", 1, body)
    assert a.event_id != b.event_id
    assert uuid.UUID(hex=a.event_id).version == 7
