"""One request's canvas under block diffusion (Fast-dLLM v2), runner side.

Attention is causal across blocks of ``B`` positions (counted from the first
prompt token) and bidirectional inside one, so the K/V of a finished block is
exact: it is written once and never refreshed.  Every forward is one window
``[start, end)`` whose queries attend to the request's slots
``[0, keys_end)``; with ``keys_end`` at a block end, non-causal attention
over that range is exactly block-causal.  The windows, in order:

* **prefill**: every whole block of known tokens (the prompt's; after
  preemption also the decoded ones) in one forward, each block its own
  attention segment (``Window.block``), so each sees exactly the blocks up
  to its own.  The scheduler may reserve whole blocks of it only: it starts
  after a prefix-cache hit, and a prompt over the step's token budget takes
  several steps.  When the known tokens end
  on the window's end, the greedy argmax of its last row is the next token.
* **denoise** the current block ``[k, k+B)`` (or, with the sub-block cache,
  only the current sub-block, attending to the block's stale K/V): the masked
  positions of the current sub-block are the candidates; position ``p`` reads
  logits row ``p - 1`` (the block's first token is never masked).
* **commit**: the block just decoded, written once (its final K/V); the
  argmax of its last row is the next block's first token.

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
                 temperature: float = 0.0, top_p: float = 1.0, generator=None,
                 top_k: int = 0):
        self.block = options.block_length
        self.sub_block = options.sub_block_length
        self.side_cache = options.cache == "dual"
        # Room for every block up to the one holding the last generated token.
        super().__init__(options, prompt_ids, len(prompt_ids) + max_tokens + 2 * self.block,
                         mask_token_id, stop_token_ids, temperature, top_p, generator, top_k)
        self.restart(output_ids)

    whole_canvas_windows = False
    # A write forward (prefill, commit) also gives the next token: the
    # argmax of its last row (Fast-dLLM v2's offset-0 token).
    next_token_after_write = True

    @classmethod
    def first_window(cls, options: DiffusionOptions, num_tokens: int,
                     canvas_len: int, cached: int = 0) -> Window:
        """Admission and resumption: the whole blocks of the ``num_tokens``
        known tokens after the ``cached`` ones (a prefix-cache hit of whole
        blocks), in one prefill; without any, the next block, denoised."""
        return cls._window_at(cached, num_tokens, options.block_length)

    @staticmethod
    def _window_at(kv_end: int, known: int, block: int) -> Window:
        """The window after ``[0, kv_end)`` is written: a prefill of the whole
        known blocks after it, else the block at ``kv_end``, denoised."""
        write_end = known // block * block
        if write_end > kv_end:
            return Window(kv_end, write_end, write_end, PREFILL, block, write_end)
        return Window(kv_end, kv_end + block, kv_end + block, DENOISE, final=kv_end)

    def reserve(self, start: int, num_scheduled: int) -> None:
        """As the scheduler reserved it: the first window starts after a
        prefix-cache hit (the final K/V of ``[0, start)``, whole blocks), and
        a prefill may end early (whole blocks)."""
        if self.kv_end == 0 and start > 0 and start != self.window.start:
            self.kv_end = start
            self.window = self.first_window(self.options, self.known, self.length, start)
            self._maybe_rebuild_side_cache()
        super().reserve(start, num_scheduled)

    def restart(self, output_ids) -> None:
        """(Re)start from position 0 (admission; preemption freed the K/V):
        the known tokens are written again."""
        self.known = self.prompt_len + len(output_ids)   # final tokens, contiguous
        self.tokens[self.prompt_len:self.known] = output_ids
        self.tokens[self.known:] = self.mask_token_id
        self.emitted = self.known                       # handed to vLLM
        self.kv_end = 0                                 # exact K/V of [0, kv_end)
        self.step_in_block = 0
        self.window = self.first_window(self.options, self.known, self.length)

    # A forward that only rebuilds the block's stale K/V after a resumption
    # (the sub-block cache, see ``_rebuild_kv``); it decides nothing.
    rebuilding = False
    side_tokens: np.ndarray | None = None   # the block as its last full forward read it

    def _rebuild_kv(self) -> None:
        """Resumption of a constrained request inside a block: the known
        tokens are written again (a prefill of their whole blocks) and the
        block goes on with its step counter.  With the sub-block cache, a
        step that would read the block's stale K/V first rebuilds it: the
        block as its last full forward read it, deciding nothing."""
        self.known = self.emitted
        self.kv_end = 0
        self.window = self.first_window(self.options, self.known, self.length)
        self._maybe_rebuild_side_cache()

    def _maybe_rebuild_side_cache(self) -> None:
        """A first denoise window after a resumption (``side_tokens`` is kept
        only by constrained requests with the sub-block cache)."""
        if self.window.kind != DENOISE or self.side_tokens is None:
            return
        start, _ = self._current_sub_block()
        self.rebuilding = self.step_in_block > 0 and self.tokens[start] != self.mask_token_id

    def input_tokens(self) -> np.ndarray:
        if not self.rebuilding:
            return super().input_tokens()
        return self.side_tokens

    # -- what this step runs ------------------------------------------------

    @property
    def block_start(self) -> int:
        return self.kv_end

    @property
    def block_end(self) -> int:
        return self.kv_end + self.block

    @property
    def writing(self) -> bool:
        """This step writes known tokens (a prefill or a commit forward)."""
        return self.window.kind in (PREFILL, COMMIT)

    @property
    def argmax_of_logits(self) -> bool:
        """A write forward's next token is the argmax of the logits (the
        published loop's), which in bf16 can differ from the argmax of the
        rounded softmax when two probabilities tie."""
        return self.writing

    @property
    def temperature(self) -> float:
        """A write forward's next token is always greedy."""
        return 0.0 if self.writing else self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = value

    # The fixed schedule is not a rule of this family (options refuse it).
    schedule_masks = 0
    schedule_step = 0

    def _block_window(self, kind: str) -> Window:
        final = self.block_end if kind == COMMIT else self.block_start
        return Window(self.block_start, self.block_end, self.block_end, kind, final=final)

    def _current_sub_block(self) -> tuple[int, int]:
        block = self.tokens[self.block_start:self.block_end]
        first_masked = int(np.argmax(block == self.mask_token_id))
        start = self.block_start + first_masked // self.sub_block * self.sub_block
        return start, start + self.sub_block

    def decision_offsets(self) -> np.ndarray:
        """Offsets from ``block_start`` whose logits this step needs."""
        if self.rebuilding:
            return np.zeros(0, dtype=np.int64)
        if self.writing:
            # The next token, read from the window's last row (shifted).
            if self.next_token_after_write and self.known == self.window.end:
                return np.array([self.window.size], dtype=np.int64)
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
            self.kv_end = self.window.end
            emitted = None
            if offsets.size:
                self.tokens[self.kv_end] = token_ids[0]
                self.known = self.kv_end + 1
                emitted = self._emit(self.known)
            self.window = self._window_at(self.kv_end, self.known, self.block)
            self._maybe_rebuild_side_cache()
            return emitted

        if self.rebuilding:
            self.rebuilding = False
            self.window = self._next_denoise_window()
            return None
        if self.constrained and self.side_cache and self.window.size == self.block:
            self.side_tokens = self.tokens[self.block_start:self.block_end].copy()
        self.tokens[self.block_start + offsets] = token_ids
        self.step_in_block += 1
        emitted = self._emit_decoded_block()
        self.window = self._next_denoise_window()
        return emitted

    def _emit_decoded_block(self) -> list[int] | None:
        """The block once no MASK is left, or earlier up to an end token that
        has nothing masked before it (decoding stops there); a constrained
        request's committed prefix at once."""
        stop = self._end_token_stop(self.emitted, self.block_end)
        if stop is not None:
            return self._emit(stop)
        if (self.tokens[self.emitted:self.block_end] == self.mask_token_id).any():
            return self._emit_committed_prefix(self.block_end) if self.constrained else None
        self.known = self.block_end
        self.finished_block = True
        self.step_in_block = 0
        self.side_tokens = None
        return self._emit(self.block_end)

    def _next_denoise_window(self) -> Window:
        if self.known >= self.block_end:
            return self._block_window(COMMIT)
        if not self.side_cache or self.step_in_block == 0:
            return self._block_window(DENOISE)
        start, end = self._current_sub_block()
        if self.tokens[start] == self.mask_token_id:
            return self._block_window(DENOISE)            # refresh the side cache
        # Sub-block cache: only the sub-block, against the block's stale K/V.
        return Window(start, end, self.block_end, DENOISE, final=self.block_start)
