"""The diffusion scheduler: one denoising iteration per running request per step.

vLLM's scheduler thinks in "computed tokens" and "speculative tokens".  We
steer it through both instead of rewriting it (names the internals relied on):

* ``Request.num_computed_tokens`` is set before every ``schedule()`` to the
  first canvas position this step recomputes: ``0`` for a refresh (a full
  forward over the canvas), the block start ``s`` for a cached step.
* ``Request.spec_token_ids`` holds MASK placeholders for the not-yet-committed
  canvas positions, so vLLM schedules query slots (and KV slots) for them.
  The runner returns ``[]`` until a block is complete, then the block's
  tokens; vLLM's spec-decode bookkeeping then rolls ``num_computed_tokens``
  back to the committed length (``num_sampled_tokens_per_step = 0``).
* A new request is admitted with its whole canvas: its token list is padded
  with MASK ids for the duration of ``schedule()``, so the admission forward
  is the first block's refresh, not a prompt-only prefill.

The canvas of a request (prompt + ``max_tokens``) is allocated whole at
admission, so a running request never needs new KV blocks.

Block diffusion (Fast-dLLM v2) runs one block-sized window per step, chosen
by the runner's canvas (``DiffusionRunnerOutput.next_windows``; every
request starts, and restarts after preemption, at ``[0, B)``).  The token
list is shaped to the window end for the duration of ``schedule()``
(MASK-padded, or cut when the window is a prompt block with more prompt
after it), so vLLM schedules exactly the window and allocates KV blocks as
the canvas grows, as it does for autoregressive decoding.
"""

from __future__ import annotations

import dataclasses

from vllm import envs
from vllm.logger import init_logger
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
from vllm.v1.request import Request, RequestStatus

from vllm_dllm_plugin.decoding.family import family_for
from vllm_dllm_plugin.engine.stats import PLUGIN_STATS_KEY, DiffusionStats
from vllm_dllm_plugin.options import DiffusionOptions, engine_defaults, resolve_options

logger = init_logger(f"vllm.{__name__}")  # under vLLM's log handler


@dataclasses.dataclass
class CanvasPlan:
    """What the scheduler needs to know about one request's canvas."""

    options: DiffusionOptions
    canvas_len: int
    steps_in_block: int = 0
    forwards: int = 0
    refreshes: int = 0
    # block diffusion: the window the runner's canvas runs next
    window: tuple[int, int] | None = None

    @property
    def needs_refresh(self) -> bool:
        """A block starts with a full forward; without a cache, every step does."""
        return self.steps_in_block == 0 or self.options.cache == "none"


class DiffusionScheduler(Scheduler):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Nothing is sampled "after" the scheduled slots; see module docstring.
        self.num_sampled_tokens_per_step = 0
        model_config = self.vllm_config.model_config
        self.mask_token_id: int = model_config.hf_config.mask_token_id
        self.family = family_for(model_config.hf_config, model_config.dtype)
        self.defaults = engine_defaults(self.vllm_config.additional_config,
                                        self.family.options)
        self.plans: dict[str, CanvasPlan] = {}
        self._rejected: list[Request] = []
        self.diffusion_stats = DiffusionStats(envs.VLLM_LOG_STATS_INTERVAL)

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
        plan = CanvasPlan(options or self.defaults, canvas_len)
        if self.family.block_causal:
            plan.window = self._first_window(plan)
        self.plans[request.request_id] = plan
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
        if self.family.block_causal:
            shaped = self._shape_block_windows()
        else:
            shaped = self._pad_waiting_canvases()
            self._plan_running_requests()
        try:
            output = super().schedule(*args, **kwargs)
        finally:
            for request, keep, tail in shaped:
                del request._all_token_ids[keep:]
                request._all_token_ids.extend(tail)
        for req_id in output.num_scheduled_tokens:
            plan = self.plans[req_id]
            self.diffusion_stats.observe_forward(
                plan.needs_refresh and not self.family.block_causal)
            plan.forwards += 1
            plan.refreshes += plan.steps_in_block == 0
            plan.steps_in_block += 1
        return output

    def _shape_tokens(self, request: Request, end: int) -> tuple[Request, int, list[int]]:
        """Make the request's token list ``end`` long for ``schedule()``: cut
        it, or pad it with MASKs.  Returns what restores it: the request, the
        length kept, the tokens cut."""
        tokens = request._all_token_ids
        keep = min(end, len(tokens))
        tail = tokens[keep:]
        del tokens[keep:]
        tokens.extend([self.mask_token_id] * (end - keep))
        return request, keep, tail

    def _pad_waiting_canvases(self) -> list[tuple[Request, int, list[int]]]:
        """Make admission schedule the full canvas (prompt + remaining MASKs)."""
        padded = []
        for queue in (self.waiting, self.kv_holding_waiting):
            for request in queue:
                plan = self.plans.get(request.request_id)
                if plan is None or request.num_computed_tokens != 0:
                    continue
                padded.append(self._shape_tokens(request, plan.canvas_len))
        return padded

    def _first_window(self, plan: CanvasPlan) -> tuple[int, int]:
        return 0, plan.options.block_length

    def _shape_block_windows(self) -> list[tuple[Request, int, list[int]]]:
        """Block diffusion: make vLLM schedule each request's window whole.

        The window ``[start, end)`` is the canvas's choice; the token list is
        padded with MASKs or cut to ``end`` (restored after ``schedule()``),
        ``num_computed_tokens`` is set to ``start``.  A window that does not
        fit the remaining token budget waits a step.
        """
        shaped = []
        budget = min(self.max_num_scheduled_tokens,
                     self.scheduler_config.max_num_batched_tokens)
        requests = list(self.running)
        requests += [r for q in (self.waiting, self.kv_holding_waiting) for r in q
                     if r.num_computed_tokens == 0]
        for request in requests:
            plan = self.plans.get(request.request_id)
            if plan is None or request.is_finished():
                continue
            if request.status != RequestStatus.RUNNING:
                plan.window = self._first_window(plan)   # admission or resumption
            start, end = plan.window
            if request.status == RequestStatus.RUNNING:
                if end - start > budget:
                    end = start   # waits: nothing to schedule this step
                else:
                    budget -= end - start
                request.num_computed_tokens = start
                request.spec_token_ids = []
            shaped.append(self._shape_tokens(request, end))
        return shaped

    def _plan_running_requests(self) -> None:
        """Choose each running request's query window, all-or-nothing.

        vLLM would otherwise hand a request a partial window when the token
        budget runs out; a request that does not fit whole waits a step.
        """
        budget = min(self.max_num_scheduled_tokens,
                     self.scheduler_config.max_num_batched_tokens)
        for request in self.running:
            plan = self.plans[request.request_id]
            committed = request.num_tokens
            start, end = self._query_window(plan, committed)
            if end - start > budget or end <= committed:
                request.num_computed_tokens = committed
                request.spec_token_ids = []
                continue
            budget -= end - start
            request.num_computed_tokens = start
            request.spec_token_ids = [self.mask_token_id] * (end - committed)

    @staticmethod
    def _query_window(plan: CanvasPlan, block_start: int) -> tuple[int, int]:
        """Canvas positions ``[start, end)`` this step feeds as queries."""
        if plan.needs_refresh:
            return 0, plan.canvas_len
        if plan.options.cache == "dual":
            return block_start, min(block_start + plan.options.block_length,
                                    plan.canvas_len)
        return block_start, plan.canvas_len  # prefix cache: x[s:]

    # -- results -----------------------------------------------------------

    def update_from_output(self, scheduler_output, model_runner_output):
        sampled = model_runner_output.sampled_token_ids
        index = model_runner_output.req_id_to_index
        windows = getattr(model_runner_output, "next_windows", None)
        for req_id in scheduler_output.num_scheduled_tokens:
            plan = self.plans.get(req_id)
            if plan is not None and windows:
                plan.window = tuple(windows[index[req_id]])
            if plan is not None and sampled and sampled[index[req_id]]:
                plan.steps_in_block = 0  # the block is complete
                self.diffusion_stats.observe_block()
        num_committed = getattr(model_runner_output, "num_committed", None)
        if num_committed:
            self.diffusion_stats.observe_commits(num_committed)
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

    def _preempt_request(self, request: Request, *args, **kwargs):
        # The runner drops the partial block; it is decoded again from its
        # refresh, which reproduces the same tokens.
        plan = self.plans.get(request.request_id)
        if plan is not None:
            plan.steps_in_block = 0
            if plan.window is not None:
                plan.window = self._first_window(plan)
        request.spec_token_ids = []
        return super()._preempt_request(request, *args, **kwargs)

    def _free_request(self, request: Request, *args, **kwargs):
        plan = self.plans.pop(request.request_id, None)
        if plan is not None:
            self.diffusion_stats.observe_finished(request, plan)
        return super()._free_request(request, *args, **kwargs)

    def make_stats(self, *args, **kwargs):
        # ``plugin_stats``: added by ``register()`` (runtime_patches, patches/0001).
        stats = super().make_stats(*args, **kwargs)
        if stats is not None and hasattr(stats, "plugin_stats"):
            stats.plugin_stats = {PLUGIN_STATS_KEY: self.diffusion_stats.take_interval()}
        return stats

    def make_spec_decoding_stats(self, *args, **kwargs):
        # Our MASK placeholders are not drafts: no spec-decode metrics.
        return None
