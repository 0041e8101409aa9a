"""``SchedulerStats.plugin_stats``: the channel for the diffusion counters.

Why: the plugin's scheduler counts denoising steps, forwards by kind and
committed tokens in the engine process; the ``vllm:diffusion_*`` series are
exported in the API process.  ``SchedulerStats`` crosses between them through
msgspec, which decodes into the declared dataclass fields only, so a
subclass's extra field would be dropped on the way.

What: declares ``plugin_stats: dict[str, Any] | None = None`` on
``vllm.v1.metrics.stats.SchedulerStats`` (in ``__dataclass_fields__``, what
msgspec reads); the scheduler fills ``plugin_stats[PLUGIN_STATS_KEY]``.
Record: ``patches/0001-scheduler-stats-plugin-stats.patch``.  Without it the
series exist, all zero, and the stat logger warns.

When it can go: once vLLM's ``SchedulerStats`` carries a field for plugins.
Applied from ``register()`` in every process, before the first engine-output
decoder is built; idempotent, and a no-op on a vLLM that has the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Key of this plugin's entry in SchedulerStats.plugin_stats.
PLUGIN_STATS_KEY = "dllm"


def apply() -> None:
    from vllm.v1.metrics.stats import SchedulerStats

    if "plugin_stats" in SchedulerStats.__dataclass_fields__:
        return
    field = dataclasses.field(default=None)
    field.name, field.type = "plugin_stats", dict[str, Any] | None
    field._field_type = dataclasses._FIELD  # what dataclass() sets on a plain field
    SchedulerStats.__dataclass_fields__["plugin_stats"] = field
    SchedulerStats.__annotations__["plugin_stats"] = field.type
    SchedulerStats.plugin_stats = None


def available() -> bool:
    """True once ``SchedulerStats`` has ``plugin_stats``."""
    from vllm.v1.metrics.stats import SchedulerStats

    return "plugin_stats" in {f.name for f in dataclasses.fields(SchedulerStats)}
