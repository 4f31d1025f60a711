"""Slot types, their quanta, and the conversion of amounts to whole quanta.

A slot is one kind of resource a kernel asks for (``cpu``, ``mem``, ``cuda.device``,
``cuda.shares``). Amounts travel as decimal strings; inside the allocator every amount is an
integer number of the slot's quantum, so that no arithmetic ever rounds.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from kernlet.errors import InvalidRequest

__all__ = [
    "CPU",
    "CUDA_DEVICE",
    "CUDA_SHARES",
    "KNOWN_SLOTS",
    "MEM",
    "AllocMap",
    "Amount",
    "SlotSpec",
    "SlotType",
    "format_amount",
    "parse_amount",
]

#: What callers may pass as an amount: a Decimal, a decimal string, an int (or a float,
#: converted through its shortest repr, so 0.1 means Decimal("0.1")).
Amount = Decimal | str | int | float


class SlotType(StrEnum):
    """How the manager reads a slot's amount (the reference's slot types)."""

    COUNT = "count"
    BYTES = "bytes"


class AllocMap(StrEnum):
    """How an amount is placed on a slot's devices.

    discrete:   devices of exactly one unit each (a core, a GPU); a request takes whole free
                devices, and a non-integer remainder (cpu only) shares one more device.
    fractional: devices of any capacity (the node's memory, the shares of a GPU); a request
                goes to the one device it fits best, or is filled across several.
    """

    DISCRETE = "discrete"
    FRACTIONAL = "fractional"


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """One slot: its name, type, allocation map and quantum (smallest unit held)."""

    name: str
    type: SlotType
    map: AllocMap
    quantum: Decimal

    def to_quanta(self, amount: Decimal) -> int:
        """``amount`` as a whole number of quanta; InvalidRequest if it is not one."""
        q, r = divmod(amount, self.quantum)
        if r != 0:
            raise InvalidRequest(
                f"{self.name}: {format_amount(amount)} is not a multiple of "
                f"{format_amount(self.quantum)}"
            )
        return int(q)

    def from_quanta(self, n: int) -> Decimal:
        return self.quantum * n

    @property
    def unit(self) -> int:
        """Quanta in one device of a discrete slot (cpu: 1000 millicores; a GPU: 1)."""
        return int(1 / self.quantum)


CPU = SlotSpec("cpu", SlotType.COUNT, AllocMap.DISCRETE, Decimal("0.001"))
MEM = SlotSpec("mem", SlotType.BYTES, AllocMap.FRACTIONAL, Decimal(1))
CUDA_DEVICE = SlotSpec("cuda.device", SlotType.COUNT, AllocMap.DISCRETE, Decimal(1))
CUDA_SHARES = SlotSpec("cuda.shares", SlotType.COUNT, AllocMap.FRACTIONAL, Decimal("0.1"))

KNOWN_SLOTS: dict[str, SlotSpec] = {s.name: s for s in (CPU, MEM, CUDA_DEVICE, CUDA_SHARES)}


def parse_amount(slot: str, value: Amount) -> Decimal:
    """A request amount as a finite, non-negative Decimal; InvalidRequest names the slot."""
    try:
        if isinstance(value, bool):
            raise TypeError("bool")
        if isinstance(value, float):
            value = repr(value)
        amount = Decimal(value)
    except (decimal.InvalidOperation, TypeError, ValueError) as exc:
        raise InvalidRequest(f"{slot}: not an amount: {value!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise InvalidRequest(f"{slot}: amount must be finite and >= 0, got {value!r}")
    return amount


def format_amount(amount: Decimal) -> str:
    """The canonical string of an amount: no exponent, no trailing zeros ("1", "0.5")."""
    text = format(amount.normalize(), "f")
    return text if text != "-0" else "0"
