"""One request's canvas under block diffusion (Fast-dLLM v2), runner side.

Attention is causal across blocks of ``B`` positions (counted from the first
prompt token) and bidirectional inside one, so the K/V of a finished block is
exact: it is written once and never refreshed.  Every forward is one window
``[start, end)`` that attends to every slot ``[0, keys_end)`` of the
request; with ``keys_end`` at a block end, non-causal attention over that
range is exactly block-causal.  Three kinds of forward:

* **write** ``[k, k+B)`` of a block whose tokens are all known (a whole
  prompt block, or a block just decoded: the "commit forward").  Its K/V is
  final.  When nothing is known after the block, the greedy argmax of its
  last row is the next block's first token.
* **denoise** the current block ``[k, k+B)`` (or, with the sub-block cache,
  only the current sub-block, attending to the block's stale K/V): the masked
  positions of the current sub-block are the candidates; position ``p`` reads
  logits row ``p - 1`` (the block's first token is never masked).
* the canvas decides the next window itself (``window``, a
  :class:`~vllm_dllm_plugin.canvas.base.Window`); the scheduler reserves it.

Tokens reach vLLM when they are final: a decoded block (or the part of it up
to an end token with nothing masked before it), and each next-block token.
"""

from __future__ import annotations

import numpy as np

from vllm_dllm_plugin.canvas.base import COMMIT, DENOISE, PREFILL, CanvasTokens, Window
from vllm_dllm_plugin.options import DiffusionOptions


class BlockCanvas(CanvasTokens):

    def __init__(self, options: DiffusionOptions, prompt_ids, output_ids,
                 max_tokens: int, mask_token_id: int, stop_token_ids,
                 temperature: float = 0.0, top_p: float = 1.0, generator=None):
        self.block = options.block_length
        self.sub_block = options.sub_block_length
        self.side_cache = options.cache == "dual"
        # Room for every block up to the one holding the last generated token.
        super().__init__(options, prompt_ids, len(prompt_ids) + max_tokens + 2 * self.block,
                         mask_token_id, stop_token_ids, temperature, top_p, generator)
        self.restart(output_ids)

    @classmethod
    def first_window(cls, options: DiffusionOptions, num_tokens: int,
                     canvas_len: int) -> Window:
        """Admission and resumption: the first block, written when its
        ``num_tokens`` known tokens fill it, else denoised."""
        block = options.block_length
        return Window(0, block, block, PREFILL if num_tokens >= block else DENOISE)

    def restart(self, output_ids) -> None:
        """(Re)start from position 0 (admission; preemption freed the K/V):
        the known tokens are written again block by block."""
        self.known = self.prompt_len + len(output_ids)   # final tokens, contiguous
        self.tokens[self.prompt_len:self.known] = output_ids
        self.tokens[self.known:] = self.mask_token_id
        self.emitted = self.known                       # handed to vLLM
        self.kv_end = 0                                 # exact K/V of [0, kv_end)
        self.step_in_block = 0
        self.window = self.first_window(self.options, self.known, self.length)

    # -- what this step runs ------------------------------------------------

    @property
    def block_start(self) -> int:
        return self.kv_end

    @property
    def block_end(self) -> int:
        return self.kv_end + self.block

    @property
    def writing(self) -> bool:
        """This step is a write forward (every token of the block is known)."""
        return self.known >= self.block_end

    @property
    def argmax_of_logits(self) -> bool:
        """A write forward's next token is the argmax of the logits (the
        published loop's), which in bf16 can differ from the argmax of the
        rounded softmax when two probabilities tie."""
        return self.writing

    @property
    def temperature(self) -> float:
        """The commit forward's next token is always greedy."""
        return 0.0 if self.writing else self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = value

    # The fixed schedule is not a rule of this family (options refuse it).
    schedule_masks = 0
    schedule_step = 0

    def _block_window(self, kind: str) -> Window:
        return Window(self.block_start, self.block_end, self.block_end, kind)

    def _current_sub_block(self) -> tuple[int, int]:
        block = self.tokens[self.block_start:self.block_end]
        first_masked = int(np.argmax(block == self.mask_token_id))
        start = self.block_start + first_masked // self.sub_block * self.sub_block
        return start, start + self.sub_block

    def decision_offsets(self) -> np.ndarray:
        """Block offsets whose logits this step needs."""
        if self.writing:
            # The next token, read from the block's last row (offset B, shifted).
            if self.known == self.block_end:
                return np.array([self.block], dtype=np.int64)
            return np.zeros(0, dtype=np.int64)
        start, end = self._current_sub_block()
        sub = self.tokens[start:end]
        return np.flatnonzero(sub == self.mask_token_id) + (start - self.block_start)

    # -- the step's result ----------------------------------------------------

    def commit(self, offsets: np.ndarray, token_ids: np.ndarray) -> list[int] | None:
        """Write this step's decisions, choose the next window; return tokens
        to emit, if any."""
        self.finished_block = False
        if self.writing:
            emitted = None
            if offsets.size:
                self.tokens[self.block_end] = token_ids[0]
                self.known = self.block_end + 1
                emitted = self._emit(self.known)
            self.kv_end = self.block_end
            self.step_in_block = 0
            self.window = self._block_window(PREFILL if self.writing else DENOISE)
            return emitted

        self.tokens[self.block_start + offsets] = token_ids
        self.step_in_block += 1
        emitted = self._emit_decoded_block()
        self.window = self._next_denoise_window()
        return emitted

    def _emit_decoded_block(self) -> list[int] | None:
        """The block once no MASK is left, or earlier up to an end token that
        has nothing masked before it (decoding stops there)."""
        stop = self._end_token_stop(self.emitted, self.block_end)
        if stop is not None:
            return self._emit(stop)
        if (self.tokens[self.emitted:self.block_end] == self.mask_token_id).any():
            return None
        self.known = self.block_end
        self.finished_block = True
        return self._emit(self.block_end)

    def _emit(self, end: int) -> list[int]:
        tokens = self.tokens[self.emitted:end].tolist()
        self.emitted = end
        return tokens

    def _next_denoise_window(self) -> Window:
        if self.writing:
            return self._block_window(COMMIT)
        if not self.side_cache or self.step_in_block == 0:
            return self._block_window(DENOISE)
        start, end = self._current_sub_block()
        if self.tokens[start] == self.mask_token_id:
            return self._block_window(DENOISE)            # refresh the side cache
        # Sub-block cache: only the sub-block, against the block's stale K/V.
        return Window(start, end, self.block_end, DENOISE)
