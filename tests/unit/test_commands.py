"""The agent's command table: one handler for every request type the protocol accepts."""

from __future__ import annotations

from kernlet import protocol
from kernlet.actors.commands import COMMANDS


def test_every_protocol_command_has_a_handler_and_no_handler_is_extra() -> None:
    assert set(COMMANDS) == set(protocol.COMMANDS.values())
