"""Counters of the diffusion engine, kept by the scheduler (engine process).

They feed three consumers: the periodic log line (here), the Prometheus
metrics (``serving/metrics.py``, in the API process, reached through
``SchedulerStats.plugin_stats``), and tests (per-request forward counts).
"""

from __future__ import annotations

import collections
import dataclasses
import time

from vllm.logger import init_logger

logger = init_logger(f"vllm.{__name__}")  # under vLLM's log handler

# Finished requests whose forward counts are remembered (for inspection/tests).
_FINISHED_HISTORY = 4096

from vllm_dllm_plugin.canvas.base import REFRESH


@dataclasses.dataclass
class RequestCounts:
    forwards: int


@dataclasses.dataclass
class IntervalCounts:
    """What happened since the last ``take_interval`` (metric deltas)."""

    denoising_steps: int = 0      # request-forwards: one per scheduled request
    # of those, by what the forward was (canvas.base.KINDS)
    forwards_by_kind: collections.Counter = dataclasses.field(
        default_factory=collections.Counter)
    committed_tokens: int = 0
    # tokens committed in one request's step -> how many such steps
    tokens_per_step: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    requests: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # by cache mode

    def as_dict(self) -> dict:
        """Plain types only: it travels to the API process via msgpack."""
        return {
            "denoising_steps": self.denoising_steps,
            "refresh_forwards": self.forwards_by_kind[REFRESH],
            "forwards_by_kind": dict(self.forwards_by_kind),
            "committed_tokens": self.committed_tokens,
            "tokens_per_step": {str(k): v for k, v in self.tokens_per_step.items()},
            "requests": dict(self.requests),
        }


class DiffusionStats:

    def __init__(self, log_interval_s: float = 10.0) -> None:
        self.log_interval_s = log_interval_s
        self.interval = IntervalCounts()
        self.forwards = 0         # request-forwards since start
        self.blocks = 0           # completed blocks
        self.committed_tokens = 0
        self._last_log = (time.monotonic(), 0, 0, 0)
        self.finished: collections.OrderedDict[str, RequestCounts] = (
            collections.OrderedDict())

    def observe_admitted(self, cache_mode: str) -> None:
        self.interval.requests[cache_mode] += 1

    def observe_forward(self, kind: str) -> None:
        """One request's forward this step, of ``kind`` (canvas.base.KINDS)."""
        self.forwards += 1
        self.interval.denoising_steps += 1
        self.interval.forwards_by_kind[kind] += 1

    def observe_step(self, num_committed, finished_blocks) -> None:
        """Tokens committed by each request in one engine step, and whether
        its step finished a block."""
        self.interval.tokens_per_step.update(num_committed)
        total = sum(num_committed)
        self.interval.committed_tokens += total
        self.committed_tokens += total
        self.blocks += sum(finished_blocks)

    def observe_finished(self, request, plan) -> None:
        self.finished[request.request_id] = RequestCounts(plan.forwards)
        while len(self.finished) > _FINISHED_HISTORY:
            self.finished.popitem(last=False)

    def take_interval(self) -> dict:
        """The counts since the last call, as a plain dict; then reset."""
        counts, self.interval = self.interval, IntervalCounts()
        return counts.as_dict()

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
