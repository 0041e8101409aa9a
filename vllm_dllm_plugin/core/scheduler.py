"""The diffusion scheduler: one denoising iteration per running request per step.

Each request's canvas (runner side) says what its next forward is, a
:class:`~vllm_dllm_plugin.canvas.base.Window` ``[start, end)`` with its key
end; the scheduler only reserves that window in vLLM's terms, without
rewriting vLLM's scheduler (names the internals relied on):

* ``Request.num_computed_tokens`` is set to ``start`` before every
  ``schedule()``, and the request's token list (``Request._all_token_ids``)
  is shaped to ``end`` for the duration of ``schedule()`` (MASK-padded, or
  cut), so vLLM schedules exactly ``end - start`` query slots and allocates
  KV blocks up to ``end``.  A window that does not fit the step's remaining
  token budget waits whole (vLLM would otherwise cut it).
* The runner returns ``[]`` until tokens are final, then those tokens;
  vLLM's bookkeeping appends them, detokenizes, checks stops and streams.
  ``num_sampled_tokens_per_step = 0``: nothing is sampled after the window.
* Admission and resumption after preemption start at the canvas class's
  ``first_window`` (its K/V was freed); then the window comes back with each
  step's output (``DiffusionRunnerOutput.next_windows``).
* Prefix caching (block-causal families): a hit is rounded down to whole
  diffusion blocks (``_get_local_prefix_cache_hit``), so a prefill starts on
  a block boundary after it, and only K/V that is final is published
  (``patch/kv_cache_publishing.py``).
"""

from __future__ import annotations

import dataclasses
import math

from vllm import envs
from vllm.logger import init_logger
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
from vllm.v1.request import Request, RequestStatus

from vllm_dllm_plugin.canvas.base import Window
from vllm_dllm_plugin.core.stats import DiffusionStats
from vllm_dllm_plugin.options import DiffusionOptions, engine_defaults, resolve_options
from vllm_dllm_plugin.patch.kv_cache_publishing import apply as publish_only_final_kv
from vllm_dllm_plugin.patch.scheduler_stats import PLUGIN_STATS_KEY
from vllm_dllm_plugin.patch.structured_output_manager import apply as grammars_in_workers
from vllm_dllm_plugin.registry import family_for

logger = init_logger(f"vllm.{__name__}")  # under vLLM's log handler


@dataclasses.dataclass
class CanvasPlan:
    """What the scheduler knows of one request's canvas: its options, its
    length, the window it runs next and how many forwards it ran."""

    options: DiffusionOptions
    canvas_len: int
    window: Window
    forwards: int = 0


class DiffusionScheduler(Scheduler):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Nothing is sampled "after" the scheduled slots; see module docstring.
        self.num_sampled_tokens_per_step = 0
        model_config = self.vllm_config.model_config
        self.mask_token_id: int = model_config.hf_config.mask_token_id
        self.family = family_for(model_config.hf_config)
        self.defaults = engine_defaults(
            self.vllm_config.additional_config,
            self.family.option_space(model_config.hf_config))
        self.plans: dict[str, CanvasPlan] = {}
        # During schedule(): request id -> (request, length kept, tokens cut)
        self._shaped: dict[str, tuple[Request, int, list[int]]] = {}
        self._rejected: list[Request] = []
        self.diffusion_stats = DiffusionStats(envs.VLLM_LOG_STATS_INTERVAL)
        if self.cache_config.enable_prefix_caching:
            publish_only_final_kv(self.kv_cache_manager, self._final_kv_end)
        grammars_in_workers(self.structured_output_manager)

    # -- admission ---------------------------------------------------------

    def add_request(self, request: Request) -> None:
        problem = None
        try:
            options = resolve_options(request.sampling_params.extra_args, self.defaults)
        except ValueError as e:  # validated by the front end; defensive here
            problem, options = str(e), None
        canvas_len = request.num_prompt_tokens + request.max_tokens
        if canvas_len > self.max_model_len:
            problem = (f"prompt ({request.num_prompt_tokens} tokens) + max_tokens "
                       f"({request.max_tokens}) exceeds max_model_len "
                       f"({self.max_model_len})")
        elif self.mask_token_id in (request.prompt_token_ids or ()):
            problem = f"the prompt contains the mask token id {self.mask_token_id}"
        options = options or self.defaults
        if request.structured_output_request is not None:
            # The workers hold the grammar (worker/grammars.py): vLLM neither
            # waits for one here nor fills bitmasks.
            request.structured_output_request = None
            if request.status == RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR:
                request.status = RequestStatus.WAITING
        self.plans[request.request_id] = CanvasPlan(
            options, canvas_len, self._first_window(options, request, canvas_len))
        super().add_request(request)
        if problem is None:
            self.diffusion_stats.observe_admitted(options.cache)
        else:
            # Finish it now (nothing is allocated); its output, carrying the
            # reason as stop_reason, goes out with the next step's outputs.
            logger.error("Rejecting request %s: %s", request.request_id, problem)
            self.finish_requests(request.request_id, RequestStatus.FINISHED_ERROR)
            request.stop_reason = problem
            self._rejected.append(request)

    # -- one step ----------------------------------------------------------

    def schedule(self, *args, **kwargs):
        self._reserve_windows()
        try:
            output = super().schedule(*args, **kwargs)
        finally:
            for request, keep, tail in self._shaped.values():
                del request._all_token_ids[keep:]
                request._all_token_ids.extend(tail)
            self._shaped.clear()
        for req_id, num_scheduled in output.num_scheduled_tokens.items():
            plan = self.plans[req_id]
            # What vLLM reserved: the window, or whole blocks of a prefill
            # (an admitted request's window already starts after its hit,
            # ``_get_local_prefix_cache_hit``); the runner's canvas does the
            # same (``reserve``).
            start = self.requests[req_id].num_computed_tokens - num_scheduled
            plan.window = plan.window.reserved(start, num_scheduled)
            plan.forwards += 1
            self.diffusion_stats.observe_forward(plan.window.kind)
        return output

    def _get_local_prefix_cache_hit(self, request: Request):
        """A prefix-cache hit in whole diffusion blocks: the request's first
        window (a block-causal prefill) starts on a block boundary after it,
        and never writes into the KV pages it shares."""
        blocks, hit, boundary, diverged = super()._get_local_prefix_cache_hit(request)
        usable = self._usable_hit(request, hit)
        if usable < hit:
            blocks = self.kv_cache_manager.truncate_computed_blocks(blocks, usable)
        plan = self.plans.get(request.request_id)
        shaped = self._shaped.get(request.request_id)
        if plan is not None and shaped is not None and usable != plan.window.start:
            # The hit is not the one the window was shaped for (pages cached
            # or evicted earlier in this step): start after this one.
            _, keep, tail = shaped
            plan.window = self._first_window(plan.options, request, plan.canvas_len, usable,
                                             num_tokens=keep + len(tail))
            if plan.window.end != request.num_tokens:
                self._shape_tokens(request, plan.window.end)
        return blocks, usable, boundary, diverged

    def _final_kv_end(self, request: Request) -> int:
        plan = self.plans.get(request.request_id)
        return plan.window.final if plan is not None else 0

    def _first_window(self, options: DiffusionOptions, request: Request, canvas_len: int,
                      cached: int = 0, num_tokens: int | None = None) -> Window:
        """``num_tokens``: the request's known tokens, when its token list is
        shaped at the time."""
        known = request.num_tokens if num_tokens is None else num_tokens
        return self.family.canvas_cls.first_window(options, known, canvas_len, cached)

    def _usable_hit(self, request: Request, hit: int) -> int:
        """A prefix-cache hit in whole diffusion blocks (of the request's
        block length) and whole KV pages."""
        plan = self.plans.get(request.request_id)
        block = plan.options.block_length if plan is not None else self.defaults.block_length
        granularity = math.lcm(block, self.block_size)
        return hit // granularity * granularity

    def _expected_hit(self, request: Request) -> int:
        """The prefix-cache hit vLLM will find at admission (read-only lookup
        on the request's real tokens): the first window starts after it, so
        that its shaped token list lets vLLM find all of it."""
        if not self.cache_config.enable_prefix_caching:
            return 0
        _, hit, _ = self.kv_cache_manager.get_computed_blocks(request)
        return self._usable_hit(request, hit)

    def _reserve_windows(self) -> None:
        """Make vLLM schedule each request's window whole.

        Running requests: ``num_computed_tokens = start``; a window that does
        not fit the remaining token budget waits a step, except a divisible
        one (a block-causal prefill), which runs as many whole blocks as fit.
        Waiting requests (new, or resumed after preemption) start at their
        first window, cut the same way; vLLM admits them if it fits.
        ``self._shaped`` keeps what restores the token lists after ``schedule()``.
        """
        budget = min(self.max_num_scheduled_tokens,
                     self.scheduler_config.max_num_batched_tokens)
        requests = list(self.running)
        requests += [r for q in (self.waiting, self.kv_holding_waiting) for r in q
                     if r.num_computed_tokens == 0]
        for request in requests:
            plan = self.plans.get(request.request_id)
            if plan is None or request.is_finished():
                continue
            running = request.status == RequestStatus.RUNNING
            if not running:
                plan.window = self._first_window(plan.options, request, plan.canvas_len,
                                                 self._expected_hit(request))
            window = _fit(plan.window, budget)
            if window is not None:
                plan.window = window
                budget -= window.size
            end = plan.window.end
            if running:
                if window is None:
                    end = plan.window.start   # waits: nothing to schedule this step
                request.num_computed_tokens = plan.window.start
                request.spec_token_ids = []
            self._shape_tokens(request, end)

    def _shape_tokens(self, request: Request, end: int) -> None:
        """Make the request's token list ``end`` long for ``schedule()``: cut
        it, or pad it with MASKs (again, if it is shaped already).  What
        restores it (the length kept, the tokens cut) goes to ``_shaped``."""
        tokens = request._all_token_ids
        if request.request_id in self._shaped:
            _, keep, tail = self._shaped.pop(request.request_id)
            del tokens[keep:]
            tokens.extend(tail)
        keep = min(end, len(tokens))
        tail = tokens[keep:]
        del tokens[keep:]
        tokens.extend([self.mask_token_id] * (end - keep))
        self._shaped[request.request_id] = (request, keep, tail)

    # -- results -----------------------------------------------------------

    def update_from_output(self, scheduler_output, model_runner_output):
        index = model_runner_output.req_id_to_index
        windows = getattr(model_runner_output, "next_windows", None) or []
        for req_id in scheduler_output.num_scheduled_tokens:
            plan = self.plans.get(req_id)
            if plan is not None and windows:
                plan.window = Window(*windows[index[req_id]])
        self.diffusion_stats.observe_step(
            getattr(model_runner_output, "num_committed", None) or [],
            getattr(model_runner_output, "finished_blocks", None) or [])
        for req_id, reason in (getattr(model_runner_output, "failed", None) or {}).items():
            self._fail(req_id, reason)
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        for request in self._rejected:
            batch = outputs.setdefault(request.client_index, EngineCoreOutputs())
            batch.outputs.append(EngineCoreOutput(
                request_id=request.request_id, new_token_ids=[],
                finish_reason=request.get_finished_reason(),
                stop_reason=request.stop_reason, events=request.take_events(),
                trace_headers=request.trace_headers))
        self._rejected.clear()
        if self.log_stats:
            self.diffusion_stats.maybe_log()
        return outputs

    def _fail(self, req_id: str, reason: str) -> None:
        """Finish a request the worker could not serve (its grammar did not
        compile) with an error; the others go on."""
        request = self.requests.get(req_id)
        if request is None or request.is_finished():
            return
        logger.error("Request %s failed: %s", req_id, reason)
        self.finish_requests(req_id, RequestStatus.FINISHED_ERROR)
        request.stop_reason = reason
        self._rejected.append(request)

    def _preempt_request(self, request: Request, *args, **kwargs):
        # Its K/V is freed: on resumption it starts at its canvas's first
        # window (``_reserve_windows``), which reproduces the same tokens (a
        # constrained request's canvas resumes inside its block and rebuilds
        # its K/V, ``CanvasTokens.resume``).
        request.spec_token_ids = []
        return super()._preempt_request(request, *args, **kwargs)

    def _free_request(self, request: Request, *args, **kwargs):
        plan = self.plans.pop(request.request_id, None)
        if plan is not None:
            self.diffusion_stats.observe_finished(request, plan)
        return super()._free_request(request, *args, **kwargs)

    def make_stats(self, *args, **kwargs):
        # ``plugin_stats``: added at start-up (patch/scheduler_stats.py, patches/0001).
        stats = super().make_stats(*args, **kwargs)
        if stats is not None and hasattr(stats, "plugin_stats"):
            stats.plugin_stats = {PLUGIN_STATS_KEY: self.diffusion_stats.take_interval()}
        return stats

    def make_spec_decoding_stats(self, *args, **kwargs):
        # Our MASK placeholders are not drafts: no spec-decode metrics.
        return None


def _fit(window: Window, budget: int) -> Window | None:
    """``window``, or its first whole blocks if it is divisible, within
    ``budget`` tokens; None if nothing of it fits."""
    if window.size <= budget:
        return window
    if window.block and budget >= window.block:
        return window.reserved(window.start, budget // window.block * window.block)
    return None
