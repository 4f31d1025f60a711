"""``[pool."image"]``: the warm pool (docs/pool.md). Per image, how many kernels to keep
created, booted and unassigned, and the cpu, memory and /dev/shm they are made with (unset:
the ``[container]`` defaults). A create whose config fits an entry takes a pooled kernel
instead of making one. No entries (the default): no pool."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kernlet.config_values import parse_size

__all__ = ["PoolEntry"]


class PoolEntry(BaseModel):
    model_config = ConfigDict(alias_generator=lambda n: n.replace("_", "-"),
                              populate_by_name=True, extra="forbid", frozen=True)

    #: kernels kept warm for this image (0: none; each holds its cpu and memory while idle)
    size: int = Field(default=1, ge=0, le=64)
    #: CPU cores of each pool kernel (None: container.default-cpu)
    cpu: float | None = Field(default=None, gt=0, le=1024)
    #: memory of each pool kernel (None: container.default-mem); sizes take 512m, 1g...
    mem: int | None = None
    #: /dev/shm of each pool kernel (None: container.shm-size)
    shm_size: int | None = None

    @field_validator("mem", "shm_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int | None:
        return None if v is None else parse_size(v)
