"""Counters of the diffusion engine, kept by the scheduler (engine process).

They feed three consumers: the periodic log line (here), the Prometheus
metrics (``engine/metrics.py``, in the API process, reached through
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

# Key of this plugin's entry in SchedulerStats.plugin_stats.
PLUGIN_STATS_KEY = "dllm"


@dataclasses.dataclass
class RequestCounts:
    forwards: int
    refreshes: int


@dataclasses.dataclass
class IntervalCounts:
    """What happened since the last ``take_interval`` (metric deltas)."""

    denoising_steps: int = 0      # request-forwards: one per scheduled request
    refresh_forwards: int = 0     # of those, forwards over the whole canvas
    committed_tokens: int = 0
    # tokens committed in one request's step -> how many such steps
    tokens_per_step: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    requests: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # by cache mode

    def as_dict(self) -> dict:
        """Plain types only: it travels to the API process via msgpack."""
        return {
            "denoising_steps": self.denoising_steps,
            "refresh_forwards": self.refresh_forwards,
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

    def observe_forward(self, full_canvas: bool) -> None:
        self.forwards += 1
        self.interval.denoising_steps += 1
        self.interval.refresh_forwards += full_canvas

    def observe_commits(self, num_committed) -> None:
        """Tokens committed by each request in one engine step."""
        self.interval.tokens_per_step.update(num_committed)
        total = sum(num_committed)
        self.interval.committed_tokens += total
        self.committed_tokens += total

    def observe_block(self) -> None:
        self.blocks += 1

    def observe_finished(self, request, plan) -> None:
        self.finished[request.request_id] = RequestCounts(plan.forwards, plan.refreshes)
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
