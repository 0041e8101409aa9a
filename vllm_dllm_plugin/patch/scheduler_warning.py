"""Drop vLLM's warning about the plugin's own scheduler class.

Why: vLLM warns about every ``scheduler_cls`` outside ``vllm.``: that its
interface may change and that async scheduling is off.  Both are by design
here (the plugin pins the tested vLLM versions; a step's output decides the
next step's window, docs/architecture.md), so the line only alarms users.

What: a ``logging.Filter`` on the ``vllm.config.scheduler`` logger that drops
the "Using custom scheduler class" record when it names a
``vllm_dllm_plugin.`` class; every other record passes.

When it can go: once vLLM lets a registered plugin scheduler opt out of the
warning.
"""

from __future__ import annotations

import logging


class PluginSchedulerWarning(logging.Filter):

    def filter(self, record) -> bool:
        return not (isinstance(record.msg, str)
                    and record.msg.startswith("Using custom scheduler class")
                    and "vllm_dllm_plugin." in str(record.args))


def apply() -> None:
    scheduler_logger = logging.getLogger("vllm.config.scheduler")
    if not any(isinstance(f, PluginSchedulerWarning) for f in scheduler_logger.filters):
        scheduler_logger.addFilter(PluginSchedulerWarning())
