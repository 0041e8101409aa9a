"""Changes to vLLM that the plugin makes at run time, in every process.

vLLM has no hook for these; each is recorded as a reviewable diff in
``patches/`` (see patches/README.md), and applied here from the plugin's
``register()`` so that ``pip install`` is the whole set-up: there is no step
to forget.  Each change is idempotent and a no-op on a vLLM that already has it.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def add_scheduler_stats_plugin_field() -> None:
    """patches/0001: ``SchedulerStats.plugin_stats``, the channel that carries
    the scheduler's diffusion counters from the engine process to the API
    process's stat logger.  msgspec (de)serializes a dataclass by its
    ``__dataclass_fields__``, so the field is declared there (default None;
    the scheduler sets it after construction).  Must run before the first
    engine-output decoder is built, which ``register()`` does."""
    from vllm.v1.metrics.stats import SchedulerStats

    if "plugin_stats" in SchedulerStats.__dataclass_fields__:
        return
    field = dataclasses.field(default=None)
    field.name, field.type = "plugin_stats", dict[str, Any] | None
    field._field_type = dataclasses._FIELD  # what dataclass() sets on a plain field
    SchedulerStats.__dataclass_fields__["plugin_stats"] = field
    SchedulerStats.__annotations__["plugin_stats"] = field.type
    SchedulerStats.plugin_stats = None
