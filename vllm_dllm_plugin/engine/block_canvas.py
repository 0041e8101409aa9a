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
* the canvas decides the next window itself (:meth:`next_window`); the
  scheduler reserves it (``DiffusionRunnerOutput.next_windows``).

Tokens reach vLLM when they are final: a decoded block (or the part of it up
to an end token with nothing masked before it), and each next-block token.
"""

from __future__ import annotations

import numpy as np

from vllm_dllm_plugin.engine.canvas import CanvasTokens
from vllm_dllm_plugin.options import DiffusionOptions


class BlockCanvas(CanvasTokens):

    first_step_commits_first = False

    def __init__(self, options: DiffusionOptions, prompt_ids, output_ids,
                 max_tokens: int, mask_token_id: int, stop_token_ids,
                 temperature: float = 0.0, generator=None, top_p: float = 1.0):
        self.block = options.block_length
        self.sub_block = options.sub_block_length
        self.side_cache = options.cache == "dual"
        # Room for every block up to the one holding the last generated token.
        super().__init__(options, prompt_ids, len(prompt_ids) + max_tokens + 2 * self.block,
                         mask_token_id, stop_token_ids, temperature, generator)
        self.top_p = top_p
        self.restart(output_ids)

    def restart(self, output_ids) -> None:
        """(Re)start from position 0 (admission; preemption freed the K/V):
        the known tokens are written again block by block."""
        self.known = self.prompt_len + len(output_ids)   # final tokens, contiguous
        self.tokens[self.prompt_len:self.known] = output_ids
        self.tokens[self.known:] = self.mask_token_id
        self.emitted = self.known                       # handed to vLLM
        self.kv_end = 0                                 # exact K/V of [0, kv_end)
        self.step_in_block = 0
        self._window = (0, self.block)

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
    def first_only(self) -> bool:
        """The step commits exactly one token: the write forward's next token."""
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

    def window(self) -> tuple[int, int]:
        return self._window

    def keys_end(self, start: int) -> int:
        """Keys ``[0, block end)``, also for a sub-block window."""
        return self.block_end

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
        """Write this step's decisions; return tokens to emit, if any, and
        choose the next window."""
        if self.writing:
            emitted = None
            if offsets.size:
                self.tokens[self.block_end] = token_ids[0]
                self.known = self.block_end + 1
                emitted = self._emit(self.known)
            self.kv_end = self.block_end
            self.step_in_block = 0
            self._window = (self.block_start, self.block_end)
            return emitted

        self.tokens[self.block_start + offsets] = token_ids
        self.step_in_block += 1
        emitted = self._emit_decoded_block()
        self._window = self._next_denoise_window()
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
        return self._emit(self.block_end)

    def _emit(self, end: int) -> list[int]:
        tokens = self.tokens[self.emitted:end].tolist()
        self.emitted = end
        return tokens

    def _next_denoise_window(self) -> tuple[int, int]:
        if self.writing:
            return self.block_start, self.block_end       # the commit forward
        if not self.side_cache or self.step_in_block == 0:
            return self.block_start, self.block_end
        start, end = self._current_sub_block()
        if self.tokens[start] == self.mask_token_id:
            return self.block_start, self.block_end       # refresh the side cache
        return start, end

    def next_window(self) -> tuple[int, int]:
        return self._window
