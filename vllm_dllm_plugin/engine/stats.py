"""Counters of the diffusion engine, kept by the scheduler (engine process)."""

from __future__ import annotations

import collections
import dataclasses

# Finished requests whose forward counts are remembered (for inspection/tests).
_FINISHED_HISTORY = 4096


@dataclasses.dataclass
class RequestCounts:
    forwards: int
    refreshes: int


class DiffusionStats:

    def __init__(self) -> None:
        self.steps = 0            # engine steps that ran a forward
        self.forwards = 0         # request-forwards (one per scheduled request)
        self.blocks = 0           # completed blocks
        self.committed_tokens = 0
        self.finished: collections.OrderedDict[str, RequestCounts] = (
            collections.OrderedDict())

    def observe_schedule(self, scheduler_output) -> None:
        if scheduler_output.num_scheduled_tokens:
            self.steps += 1
            self.forwards += len(scheduler_output.num_scheduled_tokens)

    def observe_block(self, num_tokens: int) -> None:
        self.blocks += 1
        self.committed_tokens += num_tokens

    def observe_finished(self, request, plan) -> None:
        self.finished[request.request_id] = RequestCounts(plan.forwards, plan.refreshes)
        while len(self.finished) > _FINISHED_HISTORY:
            self.finished.popitem(last=False)
