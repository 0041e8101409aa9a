"""One request's canvas under full bidirectional attention (LLaDA, Dream).

The canvas is ``prompt ++ [MASK] * max_tokens`` (length ``L``), decoded in
blocks left to right.  The K/V of the other blocks is approximate (Fast-dLLM's
block cache) and the cache policy is this class's :meth:`_next_window`:

| step | window | keys |
| --- | --- | --- |
| a block's first step (every step with ``none``) | refresh ``[0, L)`` | ``[0, L)`` |
| later steps, ``prefix`` | ``[s, L)`` | ``[0, L)``: prefix K/V from the refresh |
| later steps, ``dual`` | ``[s, e)`` | ``[0, L)``: stale prefix and suffix K/V |

Tokens committed inside the current block stay here until the block is
finished (or, earlier, up to an end token with nothing masked before it);
then they are handed to vLLM as the step's output.
"""

from __future__ import annotations

import numpy as np

from vllm_dllm_plugin.canvas.base import CACHED, REFRESH, CanvasTokens, Window
from vllm_dllm_plugin.options import DiffusionOptions


class Canvas(CanvasTokens):

    # Dream: a block's first forward commits only the block's first position.
    first_step_commits_first = False

    def __init__(self, options: DiffusionOptions, prompt_ids, output_ids,
                 max_tokens: int, mask_token_id: int, stop_token_ids,
                 temperature: float = 0.0, top_p: float = 1.0, generator=None,
                 top_k: int = 0):
        super().__init__(options, prompt_ids, len(prompt_ids) + max_tokens, mask_token_id,
                         stop_token_ids, temperature, top_p, generator, top_k)
        self.restart(output_ids)

    @classmethod
    def first_window(cls, options: DiffusionOptions, num_tokens: int,
                     canvas_len: int, cached: int = 0) -> Window:
        """Admission and resumption: the refresh of the block after the
        ``num_tokens`` committed ones (the whole canvas; nothing is cached)."""
        return Window(0, canvas_len, canvas_len, REFRESH)

    def restart(self, output_ids) -> None:
        """(Re)start at the block after ``output_ids`` (admission, preemption)."""
        committed = self.prompt_len + len(output_ids)
        self.tokens[self.prompt_len:committed] = output_ids
        self.tokens[committed:] = self.mask_token_id
        self.emitted = committed   # handed to vLLM
        self._start_block(committed)
        self.window = self.first_window(self.options, committed, self.length)

    # A forward that only rebuilds the block's approximate K/V after a
    # resumption (see ``_rebuild_kv``); it decides nothing.
    rebuilding = False

    def _rebuild_kv(self) -> None:
        """The cached steps of a block read the K/V its first forward (a
        refresh) wrote.  After a preemption inside a block that K/V is
        rebuilt by the same refresh: the canvas as it was then (MASK from the
        block on), deciding nothing; the block then goes on with its next
        cached step.  Without a cache every step is a refresh anyway."""
        self.rebuilding = self.options.cache != "none" and self.step_in_block > 0
        self.window = self.first_window(self.options, self.emitted, self.length)

    def input_tokens(self) -> np.ndarray:
        if not self.rebuilding:
            return super().input_tokens()
        tokens = self.tokens.copy()
        tokens[self.block_start:] = self.mask_token_id
        return tokens[self.window.start:self.window.end]

    def _start_block(self, start: int) -> None:
        self.block_start = start
        self.block_end = min(start + self.options.block_length, self.length)
        self.step_in_block = 0
        self.masks_at_block_start = self.block_end - start

    def _next_window(self) -> Window:
        if self.step_in_block == 0 or self.options.cache == "none":
            return Window(0, self.length, self.length, REFRESH)
        if self.options.cache == "dual":
            return Window(self.block_start, self.block_end, self.length, CACHED)
        return Window(self.block_start, self.length, self.length, CACHED)

    @property
    def first_only(self) -> bool:
        """This step commits exactly the block's first position."""
        return self.first_step_commits_first and self.step_in_block == 0

    @property
    def schedule_masks(self) -> int:
        """``m`` of the fixed schedule: masks left once the rule takes over."""
        return self.masks_at_block_start - int(self.first_step_commits_first)

    @property
    def schedule_step(self) -> int:
        """The fixed schedule's step counter (0 at the rule's first step)."""
        return self.step_in_block - int(self.first_step_commits_first)

    def decision_offsets(self) -> np.ndarray:
        """Block offsets whose logits this step needs: the masked positions
        (only the first one when this step commits just that)."""
        if self.rebuilding:
            return np.zeros(0, dtype=np.int64)
        if self.first_only:
            return np.zeros(1, dtype=np.int64)
        block = self.tokens[self.block_start:self.block_end]
        return np.flatnonzero(block == self.mask_token_id)

    def commit(self, offsets: np.ndarray, token_ids: np.ndarray) -> list[int] | None:
        """Write this step's decisions, choose the next window; return tokens
        to emit, if any.

        Emits the whole block once it has no MASK left, or, earlier, the block
        up to the first end token once everything before it is committed
        (later positions can no longer change what a client sees); a
        constrained request its committed prefix at once.
        """
        self.finished_block = False
        if self.rebuilding:
            self.rebuilding = False
            self.window = self._next_window()
            return None
        self.tokens[self.block_start + offsets] = token_ids
        self.step_in_block += 1
        stop = self._end_token_stop(self.emitted, self.block_end)
        block = self.tokens[self.block_start:self.block_end]
        if stop is not None:
            emitted = self._emit(stop)
        elif (block == self.mask_token_id).any():
            emitted = self._emit_committed_prefix(self.block_end) if self.constrained else None
        else:
            emitted = self._emit(self.block_end)
            self.finished_block = True
            self._start_block(self.block_end)
        self.window = self._next_window()
        return emitted


class FirstPositionFirstCanvas(Canvas):
    """Dream's loop: the refresh that opens a block commits only the block's
    first position (its argmax); the rule decides from the next step on."""

    first_step_commits_first = True
