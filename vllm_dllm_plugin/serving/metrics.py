"""Prometheus metrics of diffusion decoding, ``vllm:diffusion_*`` on ``/metrics``.

Registered under the ``vllm.stat_logger_plugins`` entry point, so vLLM builds
it in the API process in place of its own ``PrometheusStatLogger``; it *is*
that logger (a subclass), plus the diffusion series.  (A separate logger
would lose its series: ``PrometheusStatLogger.__init__`` unregisters every
``vllm:`` collector it did not create.)  For other models it adds nothing.

The numbers come from the scheduler in the engine process, as interval deltas
in ``SchedulerStats.plugin_stats["dllm"]`` (the field added at run time by
``patch/scheduler_stats.py``, patches/0001); without it the series stay at
zero and a warning says why.
"""

from __future__ import annotations

from vllm.logger import init_logger
from vllm.v1.metrics.loggers import PrometheusStatLogger
from vllm.v1.metrics.utils import create_metric_per_engine

from vllm_dllm_plugin.canvas.base import COMMIT, PREFILL
from vllm_dllm_plugin.options import CACHE_MODES
from vllm_dllm_plugin.patch.scheduler_stats import PLUGIN_STATS_KEY
from vllm_dllm_plugin.patch.scheduler_stats import available as stats_channel_available
from vllm_dllm_plugin.registry import is_diffusion_architecture

logger = init_logger(f"vllm.{__name__}")  # under vLLM's log handler

# Tokens committed by one request in one denoising step: 1 .. block length.
TOKENS_PER_STEP_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128]


def is_diffusion_model(vllm_config) -> bool:
    model_config = vllm_config.model_config
    return model_config is not None and is_diffusion_architecture(model_config.architectures)


class DiffusionPrometheusStatLogger(PrometheusStatLogger):

    def __init__(self, vllm_config, engine_indexes: list[int] | None = None):
        super().__init__(vllm_config, engine_indexes)
        self.diffusion = None
        if not is_diffusion_model(vllm_config):
            return
        if not stats_channel_available():
            logger.warning("vllm:diffusion_* metrics stay at zero: SchedulerStats has no "
                           "plugin_stats field (vllm_dllm_plugin.register() did not run in "
                           "this process)")
        self.diffusion = _DiffusionSeries(self)

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
        super().record(scheduler_stats, iteration_stats, mm_cache_stats=mm_cache_stats,
                       engine_idx=engine_idx)
        if self.diffusion is None or scheduler_stats is None:
            return
        stats = (getattr(scheduler_stats, "plugin_stats", None) or {}).get(PLUGIN_STATS_KEY)
        if stats:
            self.diffusion.observe(stats, engine_idx)


class _DiffusionSeries:
    """The ``vllm:diffusion_*`` series, one child per engine (vLLM's labels)."""

    def __init__(self, owner: PrometheusStatLogger):
        labels = ["model_name", "engine"]
        per_engine = owner.per_engine_labelvalues

        def counter(name: str, doc: str):
            return create_metric_per_engine(
                owner._counter_cls(name=name, documentation=doc, labelnames=labels), per_engine)

        self.denoising_steps = counter(
            "vllm:diffusion_denoising_steps",
            "Denoising steps: one per request per engine step (request-forwards).")
        self.refresh_forwards = counter(
            "vllm:diffusion_refresh_forwards",
            "Denoising steps that recomputed the whole canvas (each block's first "
            "step; every step without a cache).")
        self.commit_forwards = counter(
            "vllm:diffusion_commit_forwards",
            "Block diffusion: forwards that write the block just decoded (its final "
            "K/V) and yield the next block's first token.")
        self.prefill_forwards = counter(
            "vllm:diffusion_prefill_forwards",
            "Block diffusion: forwards that write blocks of known tokens (the prompt; "
            "known blocks again after preemption).")
        self.committed_tokens = counter(
            "vllm:diffusion_committed_tokens",
            "Canvas tokens committed by the decoding rule.")
        self.tokens_per_step = create_metric_per_engine(
            owner._histogram_cls(
                name="vllm:diffusion_tokens_per_step",
                documentation="Tokens committed by one request in one denoising step.",
                buckets=TOKENS_PER_STEP_BUCKETS, labelnames=labels),
            per_engine)
        requests = owner._counter_cls(
            name="vllm:diffusion_requests",
            documentation="Admitted requests by KV-cache mode (diffusion_cache).",
            labelnames=[*labels, "cache_mode"])
        self.requests = {
            idx: {mode: requests.labels(*values, mode) for mode in CACHE_MODES}
            for idx, values in per_engine.items()
        }

    def observe(self, stats: dict, engine: int) -> None:
        self.denoising_steps[engine].inc(stats["denoising_steps"])
        self.refresh_forwards[engine].inc(stats["refresh_forwards"])
        by_kind = stats.get("forwards_by_kind", {})
        self.commit_forwards[engine].inc(by_kind.get(COMMIT, 0))
        self.prefill_forwards[engine].inc(by_kind.get(PREFILL, 0))
        self.committed_tokens[engine].inc(stats["committed_tokens"])
        histogram = self.tokens_per_step[engine]
        for tokens, steps in stats["tokens_per_step"].items():
            for _ in range(steps):  # prometheus_client has no weighted observe
                histogram.observe(int(tokens))
        for mode, count in stats["requests"].items():
            self.requests[engine][mode].inc(count)
