"""Block diffusion with a step schedule (SDAR, LLaDA2.x), runner side.

The block walk is :class:`~vllm_dllm_plugin.canvas.block.BlockCanvas`'s:
the prompt's whole blocks in one prefill window, then each block denoised
over the exact K/V of the blocks before it, and written once.  What differs
from Fast-dLLM v2:

* no logit shift and no next token after a write: position ``p`` reads row
  ``p``, and a block starts fully masked (after the prompt's tail, if any);
* every denoise forward covers the whole block (no sub-blocks); its
  candidates are the block's masked positions;
* a step quota: step ``s`` of a block commits at least
  ``B // S + (s < B % S)`` (``S`` = ``diffusion_steps_per_block``, default
  ``B``); ``low_confidence_dynamic`` (and LLaDA2.x) commit every candidate
  over the threshold when at least the quota passes, else the quota best;
  ``low_confidence_static`` the quota best; ``sequential`` the quota first;
* LLaDA2.0 caps ``S`` at ``max_tokens`` (its published schedule does);
* LLaDA2.1 (an editing threshold): a quota of one, and the block's decided
  non-prompt tokens may be replaced (token editing) until the block ends:
  after the block has no MASK, post steps run while they edit, at most
  ``max_post_steps``.  A block's tokens reach vLLM only when it ends.

The published loops have no commit forward for LLaDA2 (they recompute the
prefix every step) and one per block for SDAR.  Here a finished block's
final K/V is written by a commit forward, except when the block's last
forward changed nothing (a LLaDA2.1 post step that edited nothing): that
forward already wrote the final K/V, so none is needed.
"""

from __future__ import annotations

import numpy as np

from vllm_dllm_plugin.canvas.base import COMMIT, DENOISE
from vllm_dllm_plugin.canvas.block import BlockCanvas
from vllm_dllm_plugin.decoding.rules import RULE_IDS, step_quota
from vllm_dllm_plugin.options import DiffusionOptions

_STRATEGY_RULES = {"low_confidence_dynamic": "threshold", "low_confidence_static": "quota",
                   "sequential": "quota"}


class SteppedBlockCanvas(BlockCanvas):

    next_token_after_write = False
    # LLaDA2.0: the schedule has at most max_tokens steps.
    steps_capped_by_max_tokens = False

    def __init__(self, options: DiffusionOptions, prompt_ids, output_ids,
                 max_tokens: int, mask_token_id: int, stop_token_ids,
                 temperature: float = 0.0, top_p: float = 1.0, generator=None,
                 top_k: int = 0):
        steps = options.steps or options.block_length
        if self.steps_capped_by_max_tokens:
            steps = min(steps, max(1, max_tokens))
        self.steps = steps
        self.editing = options.editing_threshold is not None
        super().__init__(options, prompt_ids, output_ids, max_tokens, mask_token_id,
                         stop_token_ids, temperature, top_p, generator, top_k)
        self.rule_id = RULE_IDS[_STRATEGY_RULES[options.remasking]]
        self.positional = options.remasking == "sequential"
        self.edit_threshold = options.editing_threshold

    def restart(self, output_ids) -> None:
        super().restart(output_ids)
        self.post_steps = 0

    @property
    def step_quota(self) -> int:
        if self.editing:
            return 1
        return step_quota(self.block, self.steps, self.step_in_block)

    def _editable_start(self) -> int:
        """The block's first position that is not the prompt's."""
        return max(self.prompt_len, self.block_start) - self.block_start

    def decision_offsets(self) -> np.ndarray:
        """The block's masked positions (with editing: every non-prompt one)."""
        if self.writing:
            return np.zeros(0, dtype=np.int64)
        if self.editing:
            return np.arange(self._editable_start(), self.block, dtype=np.int64)
        block = self.tokens[self.block_start:self.block_end]
        return np.flatnonzero(block == self.mask_token_id)

    def commit(self, offsets: np.ndarray, token_ids: np.ndarray) -> list[int] | None:
        if self.writing:
            return super().commit(offsets, token_ids)
        self.finished_block = False
        block = slice(self.block_start, self.block_end)
        had_masks = bool((self.tokens[block] == self.mask_token_id).any())
        positions = self.block_start + offsets
        changed = bool((self.tokens[positions] != token_ids).any())
        self.tokens[positions] = token_ids
        self.step_in_block += 1

        if (self.tokens[block] == self.mask_token_id).any():
            self.window = self._block_window(DENOISE)
            # Committed tokens never change without editing: up to an end
            # token with nothing masked before it, they are final.
            if not self.editing:
                stop = self._end_token_stop(self.emitted, self.block_end)
                if stop is not None:
                    return self._emit(stop)
                if self.constrained:
                    return self._emit_committed_prefix(self.block_end)
            return None
        if self.editing:
            if not had_masks and not changed:
                # A post step that edited nothing: its K/V is final.
                return self._finish_block(written=True)
            self.post_steps += 1
            if self.post_steps <= self.options.max_post_steps:
                self.window = self._block_window(DENOISE)
                return None
        return self._finish_block(written=False)

    def _finish_block(self, written: bool) -> list[int]:
        """The block is decided: hand it to vLLM; write its K/V unless the
        last forward already did."""
        self.known = self.block_end
        self.finished_block = True
        self.step_in_block = 0
        self.post_steps = 0
        emitted = self._emit(self.block_end)
        if written:
            self.kv_end = self.block_end
            self.window = self._window_at(self.kv_end, self.known, self.block)
        else:
            self.window = self._block_window(COMMIT)
        return emitted


class LLaDA2Canvas(SteppedBlockCanvas):
    """LLaDA2.x: LLaDA2.0's schedule has ``min(S, max_tokens)`` steps."""

    steps_capped_by_max_tokens = True
