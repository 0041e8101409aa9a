"""One request's canvas as the model runner sees it.

The canvas is ``prompt ++ [MASK] * max_tokens``.  Blocks are decoded left to
right; tokens committed inside the current block live only here until the
block is finished, then they are handed to vLLM as the step's output.
"""

from __future__ import annotations

import numpy as np

from vllm_dllm_plugin.decoding.rules import RULE_IDS
from vllm_dllm_plugin.options import DiffusionOptions


class CanvasTokens:
    """What every family's canvas holds: ``length`` tokens (the prompt, then
    MASK), the request's end tokens, its rule and its sampling settings."""

    def __init__(self, options: DiffusionOptions, prompt_ids, length: int,
                 mask_token_id: int, stop_token_ids, temperature: float, generator):
        self.options = options
        self.mask_token_id = mask_token_id
        self.prompt_len = len(prompt_ids)
        self.tokens = np.full(length, mask_token_id, dtype=np.int64)
        self.tokens[:self.prompt_len] = prompt_ids
        self.stop_token_ids = np.asarray(sorted(stop_token_ids), dtype=np.int64)
        self.rule_id = RULE_IDS[options.rule]
        self.temperature = temperature
        self.generator = generator

    @property
    def length(self) -> int:
        return len(self.tokens)

    def _end_token_stop(self, start: int, end: int) -> int | None:
        """The position after the first end token in ``[start, end)`` when
        nothing before it there is masked (later positions can no longer
        change what a client sees); else None."""
        if not self.stop_token_ids.size:
            return None
        span = self.tokens[start:end]
        stops = np.flatnonzero(np.isin(span, self.stop_token_ids))
        if stops.size and not (span[:stops[0]] == self.mask_token_id).any():
            return start + int(stops[0]) + 1
        return None


class Canvas(CanvasTokens):

    def __init__(self, options: DiffusionOptions, prompt_ids, output_ids,
                 max_tokens: int, mask_token_id: int, stop_token_ids,
                 temperature: float = 0.0, generator=None,
                 first_step_commits_first: bool = False):
        super().__init__(options, prompt_ids, len(prompt_ids) + max_tokens, mask_token_id,
                         stop_token_ids, temperature, generator)
        # Dream: a block's first forward commits only its first position.
        self.first_step_commits_first = first_step_commits_first
        self.restart(output_ids)

    def restart(self, output_ids) -> None:
        """(Re)start at the block after ``output_ids`` (admission, preemption)."""
        committed = self.prompt_len + len(output_ids)
        self.tokens[self.prompt_len:committed] = output_ids
        self.tokens[committed:] = self.mask_token_id
        self._start_block(committed)

    def _start_block(self, start: int) -> None:
        self.block_start = start
        self.block_end = min(start + self.options.block_length, self.length)
        self.step_in_block = 0
        self.masks_at_block_start = self.block_end - start

    def keys_end(self, start: int) -> int | None:
        """Where a step starting at ``start`` stops attending, when that is
        not its last query: a dual-cache step attends to the whole canvas."""
        return self.length if self.options.cache == "dual" and start > 0 else None

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
        if self.first_only:
            return np.zeros(1, dtype=np.int64)
        block = self.tokens[self.block_start:self.block_end]
        return np.flatnonzero(block == self.mask_token_id)

    def commit(self, offsets: np.ndarray, token_ids: np.ndarray) -> list[int] | None:
        """Write this step's decisions; return tokens to emit, if any.

        Emits the whole block once it has no MASK left, or, earlier, the block
        up to the first end token once everything before it is committed
        (later positions can no longer change what a client sees).
        """
        self.tokens[self.block_start + offsets] = token_ids
        self.step_in_block += 1
        stop = self._end_token_stop(self.block_start, self.block_end)
        if stop is not None:
            return self.tokens[self.block_start:stop].tolist()
        block = self.tokens[self.block_start:self.block_end]
        if (block == self.mask_token_id).any():
            return None
        emitted = block.tolist()
        self._start_block(self.block_end)
        return emitted
