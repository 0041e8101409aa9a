"""Counters of the diffusion engine, kept by the scheduler (engine process)."""

from __future__ import annotations

import collections
import dataclasses
import time

from vllm.logger import init_logger

logger = init_logger(f"vllm.{__name__}")  # under vLLM's log handler

# Finished requests whose forward counts are remembered (for inspection/tests).
_FINISHED_HISTORY = 4096


@dataclasses.dataclass
class RequestCounts:
    forwards: int
    refreshes: int


class DiffusionStats:

    def __init__(self, log_interval_s: float = 10.0) -> None:
        self.log_interval_s = log_interval_s
        self._last_log = (time.monotonic(), 0, 0, 0)
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

    def maybe_log(self) -> None:
        """One line per interval, in the style of vLLM's stats lines."""
        now = time.monotonic()
        last_time, last_forwards, last_tokens, last_blocks = self._last_log
        if now - last_time < self.log_interval_s or self.forwards == last_forwards:
            return
        forwards = self.forwards - last_forwards
        tokens = self.committed_tokens - last_tokens
        logger.info(
            "Diffusion decoding: %.1f committed tokens/s, mean tokens per denoising "
            "step: %.2f, denoising steps: %d, blocks: %d",
            tokens / (now - last_time), tokens / forwards, forwards,
            self.blocks - last_blocks)
        self._last_log = (now, self.forwards, self.committed_tokens, self.blocks)
