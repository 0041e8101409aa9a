"""The diffusion model runner: one confidence-gated unmask step per request.

Built on vLLM's V1 runner (``GPUModelRunner``, or ``CPUModelRunner`` on CPU).
What it relies on, and what it changes:

* ``_update_states`` (stock) keeps the persistent batch; we add the family's
  canvas per request on admission (with its grammar, if any) and resume it
  after a preemption.
* ``_prepare_inputs``: the canvas tokens of the scheduled window are written
  into ``input_batch.token_ids_cpu`` before the stock code gathers
  ``input_ids``; positions and slot mapping come from the stock code, and
  ``seq_lens`` is set to the window's key end (a window may attend beyond
  its last query).  The returned ``logits_indices`` select only the rows
  that decide.
* ``execute_model`` (stock) runs the forward and computes logits for those
  rows only.
* ``sample_tokens`` replaces vLLM's sampler with the batched decision of
  ``vllm_dllm_plugin.decoding``; each canvas commits, emits what is final
  and chooses its next window, which goes back to the scheduler.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from vllm.logger import init_logger
from vllm.platforms import current_platform
from vllm.v1.outputs import LogprobsLists, ModelRunnerOutput

from vllm_dllm_plugin.canvas import segments
from vllm_dllm_plugin.canvas.base import CanvasTokens, Window
from vllm_dllm_plugin.decoding.rules import (
    commit_mask,
    edits,
    num_to_commit,
    sort_candidates,
)
from vllm_dllm_plugin.options import engine_defaults, resolve_options
from vllm_dllm_plugin.registry import family_for
from vllm_dllm_plugin.worker.grammars import Grammars

logger = init_logger(f"vllm.{__name__}")  # under vLLM's log handler

if current_platform.is_cpu():
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner as _BaseRunner
else:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner as _BaseRunner


@dataclasses.dataclass
class _StepRows:
    """Which logits row belongs to which request and block offset."""

    canvases: list[CanvasTokens]
    row_request: np.ndarray   # [N] request slot of each logits row
    row_offset: np.ndarray    # [N] offset of the row inside its block
    row_bounds: np.ndarray    # [R + 1] rows of request r: row_bounds[r]:row_bounds[r+1]
    row_token: np.ndarray     # [N] the position's token now (MASK: a candidate)
    row_masked: np.ndarray    # [N] bool: a candidate; else a decided token it may edit

    @property
    def candidates(self) -> np.ndarray:
        return np.bincount(self.row_request[self.row_masked],
                           minlength=len(self.canvases))


@dataclasses.dataclass
class DiffusionRunnerOutput(ModelRunnerOutput):
    """vLLM's runner output plus, indexed like ``req_ids``: how many tokens
    each request committed this step and whether it finished a block (for the
    scheduler's counters), and the window each request's canvas runs next
    (which the scheduler reserves); and the requests that failed here."""

    num_committed: list[int] = dataclasses.field(default_factory=list)
    # Requests that failed in the worker (a grammar that would not compile):
    # request id -> reason; the scheduler finishes them with an error.
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    finished_blocks: list[bool] = dataclasses.field(default_factory=list)
    next_windows: list[Window] = dataclasses.field(default_factory=list)


def _stop_token_ids(sampling_params) -> set[int]:
    """Exactly the ids vLLM's ``check_stop`` stops on."""
    ids = set(sampling_params.stop_token_ids or ())
    if sampling_params.eos_token_id is not None:
        ids.add(sampling_params.eos_token_id)
    return ids


class DiffusionModelRunner(_BaseRunner):

    def __init__(self, vllm_config, device):
        super().__init__(vllm_config, device)
        model_config = vllm_config.model_config
        self.mask_token_id: int = model_config.hf_config.mask_token_id
        self.family = family_for(model_config.hf_config)
        self.compare_dtype = self.family.compare_dtype(model_config.dtype)
        self.diffusion_defaults = engine_defaults(
            vllm_config.additional_config, self.family.option_space(model_config.hf_config))
        self.canvases: dict[str, CanvasTokens] = {}
        self.grammars = Grammars(vllm_config)
        # Requests asking logprobs: position -> (ids, logprobs, rank) of the
        # forward that committed it, until the position is emitted.
        self.position_logprobs: dict[str, dict[int, tuple]] = {}
        self.failed: dict[str, str] = {}   # reported with the next output
        self._step_rows: _StepRows | None = None
        self._segment_plan: segments.SegmentPlan | None = None

    # -- request state -------------------------------------------------------

    def _update_states(self, scheduler_output):
        corrections = super()._update_states(scheduler_output)
        for new in scheduler_output.scheduled_new_reqs:
            self._new_canvas(new.req_id)
        for req_id in scheduler_output.scheduled_cached_reqs.resumed_req_ids:
            canvas, output = self.canvases[req_id], self.requests[req_id].output_token_ids
            canvas.resume(output)
            if canvas.grammar is not None:
                self.grammars.replay(req_id, canvas.grammar, output)
        return corrections

    def _new_canvas(self, req_id: str) -> None:
        state = self.requests[req_id]
        params = state.sampling_params
        canvas = self.family.canvas_cls(
            resolve_options(params.extra_args, self.diffusion_defaults),
            state.prompt_token_ids, state.output_token_ids, params.max_tokens,
            self.mask_token_id, _stop_token_ids(params), temperature=params.temperature,
            top_p=params.top_p, generator=state.generator, top_k=params.top_k)
        canvas.min_tokens = params.min_tokens
        try:
            canvas.grammar = self.grammars.compile(params)
        except Exception as e:   # only this request fails (as in vLLM's engine core)
            logger.exception("Failed to compile the grammar of request %s", req_id)
            self.failed[req_id] = f"structured output: {type(e).__name__}: {e}"
        self.canvases[req_id] = canvas
        if params.logprobs is not None:
            self.position_logprobs[req_id] = {}

    def _on_request_state_removed(self, req_id, req_state):
        self.canvases.pop(req_id, None)
        self.position_logprobs.pop(req_id, None)
        super()._on_request_state_removed(req_id, req_state)

    # -- inputs --------------------------------------------------------------

    def _prepare_inputs(self, scheduler_output, num_scheduled_tokens):
        batch = self.input_batch
        num_reqs = batch.num_reqs
        starts = batch.num_computed_tokens_cpu[:num_reqs].copy()
        canvases = [self.canvases[req_id] for req_id in batch.req_ids]
        for i, canvas in enumerate(canvases):
            # All of the window, or whole blocks of a prefill (after a
            # prefix-cache hit, within the token budget).
            canvas.reserve(int(starts[i]), int(num_scheduled_tokens[i]))
            window = canvas.window
            batch.token_ids_cpu[i, window.start:window.end] = canvas.input_tokens()

        super()._prepare_inputs(scheduler_output, num_scheduled_tokens)
        # A window may attend beyond its last query (a dual-cache step, a
        # sub-block): each request's keys end where its canvas says; a
        # block-causal write is one attention segment per block.
        windows = [c.window for c in canvases]
        keys_end = np.array([w.keys_end for w in windows], dtype=np.int64)
        self.optimistic_seq_lens_cpu[:num_reqs] = torch.from_numpy(keys_end)
        self.seq_lens[:num_reqs] = torch.from_numpy(keys_end).to(self.seq_lens.device)
        self._segment_plan = segments.SegmentPlan.of_windows(windows)

        # Logits only for the rows that decide: masked positions of the block,
        # and those it may edit (Dream reads position p's prediction from row
        # p - 1).
        query_start = self.query_start_loc.np[:num_reqs]
        offsets = [c.decision_offsets() for c in canvases]
        counts = np.array([len(o) for o in offsets], dtype=np.int64)
        row_offset = np.concatenate(offsets)
        row_request = np.repeat(np.arange(num_reqs), counts)
        block_starts = np.array([c.block_start for c in canvases], dtype=np.int64)
        block_row0 = query_start + block_starts - starts
        rows = block_row0[row_request] + row_offset - self.family.logit_shift
        bounds = np.concatenate(([0], np.cumsum(counts)))
        row_token = np.concatenate(
            [c.tokens[b + o] for c, b, o in zip(canvases, block_starts, offsets)])
        row_masked = row_token == self.mask_token_id
        self._step_rows = _StepRows(canvases, row_request, row_offset, bounds, row_token,
                                    row_masked)
        if rows.size == 0:
            # Nothing decides (every request writes prompt blocks): one row
            # anyway, dropped later; some CPU GEMM kernels fault on zero rows.
            rows = np.zeros(1, dtype=np.int64)
        logits_indices = torch.from_numpy(rows).to(self.device, non_blocking=True)
        return logits_indices, None, 1

    def _build_attention_metadata(self, *args, **kwargs):
        # The step's segment plan reaches the layers' metadata builders
        # (models/attention.py) for this build only; dummy runs have none.
        plan, self._segment_plan = self._segment_plan, None
        with segments.planned(plan):
            return super()._build_attention_metadata(*args, **kwargs)

    # -- the decision --------------------------------------------------------

    @torch.inference_mode()
    def sample_tokens(self, grammar_output):
        if self.execute_model_state is None:
            return super().sample_tokens(grammar_output)
        step, self._step_rows = self._step_rows, None
        logits = self.execute_model_state.logits[:int(step.row_bounds[-1])]
        self.execute_model_state = None
        canvases = step.canvases

        constrained = [i for i, c in enumerate(canvases)
                       if c.constrained and step.row_bounds[i + 1] > step.row_bounds[i]]
        if constrained:
            self._mask_first_rows(step, logits, constrained)
        suppressed = self._suppress_early_ends(step, logits)
        pred, conf = self.family.predict(logits, self.mask_token_id,
                                         *self._sampling_inputs(step, logits))
        self._logits_argmax_tokens(step, logits, pred)
        device = logits.device
        num_reqs = len(canvases)
        width = int(step.row_offset.max()) + 1 if step.row_offset.size else 1
        row_request = torch.from_numpy(step.row_request).to(device)
        row_offset = torch.from_numpy(step.row_offset).to(device)
        row_masked = torch.from_numpy(step.row_masked).to(device)
        conf_grid = torch.full((num_reqs, width), float("-inf"), dtype=torch.float64,
                               device=device)
        conf_grid[row_request, row_offset] = torch.where(
            row_masked, conf.to(torch.float64), float("-inf"))
        pred_grid = torch.zeros((num_reqs, width), dtype=torch.int64, device=device)
        pred_grid[row_request, row_offset] = pred

        # A step whose canvas offers one candidate (Dream's refresh, a
        # block-diffusion write) commits it: every rule commits at least one.
        per_request = torch.tensor(
            [[c.rule_id, n, c.schedule_masks, c.schedule_step, c.step_quota, c.positional]
             for c, n in zip(canvases, step.candidates.tolist())],
            dtype=torch.int64).to(device)
        rule_values = torch.tensor([c.options.rule_value for c in canvases],
                                   dtype=torch.float64).to(device)
        sorted_conf, sorted_index = sort_candidates(conf_grid, per_request[:, 5].bool())
        count = num_to_commit(sorted_conf, per_request[:, 1], per_request[:, 0],
                              rule_values, per_request[:, 2], per_request[:, 3],
                              self.compare_dtype, self.family.strict_threshold,
                              quota=per_request[:, 4])
        commit = commit_mask(sorted_index, count)
        if not step.row_masked.all():   # some rows are decided tokens a request may edit
            commit |= self._edits(step, conf, pred, row_request, row_offset, row_masked,
                                  (num_reqs, width))

        # One device->host copy: the committed token per position, else -1.
        decided = torch.where(commit, pred_grid, -1).cpu().numpy()
        if constrained:
            self._constrained_runs(step, decided, pred_grid, constrained)
        committed = decided >= 0
        if self.position_logprobs:
            if suppressed is not None:   # logprobs are taken before min_tokens
                rows, ids, values = suppressed
                logits[rows, ids] = values
            self._store_logprobs(step, logits, decided)
        sampled: list[list[int]] = [[] for _ in range(num_reqs)]
        failed, self.failed = self.failed, {}
        for i, canvas in enumerate(canvases):
            offsets = np.flatnonzero(committed[i])
            emitted = canvas.commit(offsets, decided[i, offsets])
            if emitted and self.input_batch.req_ids[i] not in failed:
                self._record_output(i, emitted)
                sampled[i] = emitted

        return DiffusionRunnerOutput(
            req_ids=list(self.input_batch.req_ids),
            req_id_to_index=dict(self.input_batch.req_id_to_index),
            sampled_token_ids=sampled,
            logprobs=self._emitted_logprobs(sampled) if self.position_logprobs else None,
            prompt_logprobs_dict={},
            kv_connector_output=self.kv_connector_output,
            num_committed=committed.sum(axis=1).tolist(),
            finished_blocks=[c.finished_block for c in canvases],
            next_windows=[c.window for c in canvases],
            failed=failed,
        )

    def _mask_first_rows(self, step: _StepRows, logits: torch.Tensor,
                         constrained: list[int]) -> None:
        """The row deciding each constrained request's first masked position
        (its first row) allows only what its grammar accepts next (in place)."""
        rows = torch.from_numpy(step.row_bounds[constrained]).to(logits.device)
        allowed = self.grammars.allowed([step.canvases[i].grammar for i in constrained],
                                        logits.device)
        width = min(allowed.shape[1], logits.shape[1])
        first = logits[rows]
        first[:, :width].masked_fill_(~allowed[:, :width], float("-inf"))
        first[:, width:] = float("-inf")
        logits[rows] = first

    def _constrained_runs(self, step: _StepRows, decided: np.ndarray, pred_grid: torch.Tensor,
                          constrained: list[int]) -> None:
        """Keep, per constrained request, only the left-to-right run: its
        first masked position (decided under the grammar), then the next
        positions in order while the rule committed them and the grammar
        accepts them; advance the grammar by that run (in place)."""
        preds = pred_grid[constrained].cpu().numpy()
        req_ids = self.input_batch.req_ids
        for pred, i in zip(preds, constrained):
            lo, hi = int(step.row_bounds[i]), int(step.row_bounds[i + 1])
            offsets = step.row_offset[lo:hi]          # masked, ascending
            p0 = int(offsets[0])
            following = (offsets[1:] == p0 + np.arange(1, offsets.size)) & (
                decided[i, offsets[1:]] >= 0)
            run = 1 + int(np.cumprod(following).sum())
            count = self.grammars.accept_run(req_ids[i], step.canvases[i].grammar,
                                             pred[p0:p0 + run])
            decided[i] = -1
            decided[i, p0:p0 + count] = pred[p0:p0 + count]

    def _store_logprobs(self, step: _StepRows, logits: torch.Tensor,
                        decided: np.ndarray) -> None:
        """For the requests asking logprobs, each committed position's token
        log probability, rank and top alternatives, from the logits row that
        committed it (log-softmax in float32, the mask token excluded),
        kept until the position is emitted."""
        wanted, rows, positions = [], [], []
        for i, canvas in enumerate(step.canvases):
            store = self.position_logprobs.get(self.input_batch.req_ids[i])
            offsets = np.flatnonzero(decided[i] >= 0)
            if store is None or not offsets.size:
                continue
            lo, hi = int(step.row_bounds[i]), int(step.row_bounds[i + 1])
            rows.append(lo + np.searchsorted(step.row_offset[lo:hi], offsets))
            positions.append(canvas.block_start + offsets)
            wanted.append((i, store, offsets))
        if not wanted:
            return
        num = [self.requests[self.input_batch.req_ids[i]].sampling_params.logprobs
               for i, _, _ in wanted]
        vocab = logits.shape[1]
        k = min(max(vocab if n == -1 else n for n in num), vocab - 1)
        rows_t = torch.from_numpy(np.concatenate(rows)).to(logits.device)
        tokens = torch.from_numpy(np.concatenate(
            [decided[i, o] for i, _, o in wanted])).to(logits.device)
        row_logits = logits[rows_t].float()
        row_logits[:, self.mask_token_id] = float("-inf")
        logprobs = torch.log_softmax(row_logits, dim=-1)
        chosen = logprobs.gather(-1, tokens[:, None])
        ranks = (logprobs >= chosen).sum(-1)
        top = logprobs.topk(k, dim=-1) if k > 0 else None
        ids = torch.cat([tokens[:, None]] + ([top.indices] if top else []), dim=1)
        values = torch.cat([chosen] + ([top.values] if top else []), dim=1)
        ids, values, ranks = ids.cpu().numpy(), values.cpu().numpy(), ranks.cpu().numpy()
        n = 0
        for (_, store, _), pos in zip(wanted, positions):
            for p in pos.tolist():
                store[p] = (ids[n], values[n], int(ranks[n]))
                n += 1

    def _emitted_logprobs(self, sampled: list[list[int]]) -> LogprobsLists | None:
        """The stored entries of this step's emitted tokens, in vLLM's
        layout (one row per emitted token; a request's rows start at
        ``cu_num_generated_tokens[index]``)."""
        entries, starts = [], [0]
        for i, tokens in enumerate(sampled):
            req_id = self.input_batch.req_ids[i]
            store = self.position_logprobs.get(req_id)
            if store is not None and tokens:
                end = self.canvases[req_id].prompt_len + len(self.requests[req_id].output_token_ids)
                entries += [store.pop(p) for p in range(end - len(tokens), end)]
            starts.append(len(entries))
        if not entries:
            return None
        width = max(len(e[0]) for e in entries)
        ids = np.zeros((len(entries), width), dtype=np.int64)
        values = np.full((len(entries), width), float("-inf"), dtype=np.float32)
        for r, (e_ids, e_values, _) in enumerate(entries):
            ids[r, :len(e_ids)] = e_ids
            values[r, :len(e_values)] = e_values
        ranks = np.array([e[2] for e in entries], dtype=np.int64)
        return LogprobsLists(ids, values, ranks, starts)

    def _suppress_early_ends(self, step: _StepRows, logits: torch.Tensor):
        """``min_tokens`` (vLLM's meaning, every family): a row deciding one
        of the first ``min_tokens`` generated positions never takes an end
        or stop token; its logits for them are ``-inf`` (in place).  Returns
        ``(rows, ids, former values)``, or None when nothing was suppressed."""
        rows, ids = [], []
        for i, canvas in enumerate(step.canvases):
            if canvas.min_tokens <= 0 or not canvas.stop_token_ids.size:
                continue
            lo, hi = int(step.row_bounds[i]), int(step.row_bounds[i + 1])
            generated = canvas.block_start + step.row_offset[lo:hi] - canvas.prompt_len
            early = np.flatnonzero(generated < canvas.min_tokens) + lo
            rows.append(np.repeat(early, canvas.stop_token_ids.size))
            ids.append(np.tile(canvas.stop_token_ids, early.size))
        if rows:
            rows, ids = np.concatenate(rows), np.concatenate(ids)
            if rows.size:
                rows = torch.from_numpy(rows).to(logits.device)
                ids = torch.from_numpy(ids).to(logits.device)
                former = logits[rows, ids]
                logits[rows, ids] = float("-inf")
                return rows, ids, former
        return None

    def _edits(self, step: _StepRows, conf, pred, row_request, row_offset, row_masked,
               shape) -> torch.Tensor:
        """Token editing (LLaDA2.1): decided positions whose prediction
        differs and passes the request's editing threshold."""
        thresholds = np.array([np.inf if c.edit_threshold is None else c.edit_threshold
                               for c in step.canvases], dtype=np.float64)
        row_threshold = torch.from_numpy(thresholds[step.row_request]).to(conf.device)
        current = torch.from_numpy(step.row_token).to(conf.device)
        edit = edits(conf, pred, current, ~row_masked, row_threshold, self.compare_dtype)
        grid = torch.zeros(shape, dtype=torch.bool, device=conf.device)
        grid[row_request, row_offset] = edit
        return grid

    def _sampling_inputs(self, step: _StepRows, logits: torch.Tensor) -> tuple:
        """Per-row temperature and uniforms (and, for top-p sampling, per-row
        top-p) for sampling requests; empty when every row is greedy.

        Gumbel sampling draws one uniform per vocabulary entry of a row, top-p
        sampling one per row; each request draws from its own generator."""
        temps = np.array([c.temperature for c in step.canvases], dtype=np.float64)
        if not (temps > 0).any():
            return ()
        sampler = self.family.options.sampler
        top_p = sampler in ("top_p", "top_k_top_p")
        shape = logits.shape[:1] if top_p else logits.shape
        uniforms = torch.empty(shape, dtype=torch.float64, device=logits.device)
        bounds = step.row_bounds
        for i, canvas in enumerate(step.canvases):
            rows = slice(int(bounds[i]), int(bounds[i + 1]))
            if canvas.temperature > 0 and rows.stop > rows.start:
                uniforms[rows].uniform_(generator=canvas.generator)
        row_temps = torch.from_numpy(temps[step.row_request]).to(logits.device)
        if not top_p:
            return row_temps, uniforms.clamp_(min=1e-300)
        top_ps = np.array([c.top_p for c in step.canvases], dtype=np.float64)
        inputs = (row_temps, uniforms,
                  torch.from_numpy(top_ps[step.row_request]).to(logits.device))
        if sampler == "top_k_top_p":
            top_ks = np.array([c.top_k for c in step.canvases], dtype=np.int64)
            inputs += (torch.from_numpy(top_ks[step.row_request]).to(logits.device),)
        return inputs

    def _logits_argmax_tokens(self, step: _StepRows, logits: torch.Tensor,
                              pred: torch.Tensor) -> None:
        """Rows whose canvas commits the logits' argmax (a block-diffusion
        write's next token) rather than ``predict``'s choice."""
        writes = [i for i, c in enumerate(step.canvases) if c.argmax_of_logits]
        if not writes:
            return
        rows = torch.from_numpy(np.concatenate(
            [np.arange(step.row_bounds[i], step.row_bounds[i + 1]) for i in writes])
        ).to(logits.device)
        if rows.numel():
            masked = logits[rows].clone()
            masked[:, self.mask_token_id] = float("-inf")
            pred[rows] = masked.argmax(-1)

    def _record_output(self, slot: int, token_ids: list[int]) -> None:
        """What the stock bookkeeping does for sampled tokens."""
        batch = self.input_batch
        start = batch.num_tokens_no_spec[slot]
        end = start + len(token_ids)
        batch.token_ids_cpu[slot, start:end] = token_ids
        batch.is_token_ids[slot, start:end] = True
        batch.num_tokens_no_spec[slot] = end
        self.requests[batch.req_ids[slot]].output_token_ids.extend(token_ids)
