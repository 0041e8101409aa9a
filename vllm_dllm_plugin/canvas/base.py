"""What every family's canvas holds, and the window it asks for.

A canvas is one request's tokens as the model runner sees them (the prompt,
then MASK), its end tokens, rule and sampling settings.  It owns its window:
after each step it says what its next forward is (:class:`Window`), and the
scheduler only reserves that window in vLLM's terms.  The first window is a
class method, because the scheduler (engine core) asks for it at admission
and after preemption, before any runner holds the canvas.

Pure numpy: imported by the worker (which holds canvases) and by the engine
core (first windows), never importing either.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from vllm_dllm_plugin.decoding.rules import RULE_IDS
from vllm_dllm_plugin.options import DiffusionOptions

# What a forward is, for the counters (vllm:diffusion_*) and the docs' tables.
REFRESH = "refresh"     # a full forward over the canvas (bidirectional families)
CACHED = "cached"       # a step reusing block-approximate K/V
PREFILL = "prefill"     # block diffusion: write blocks of known tokens (prompt, resumption)
DENOISE = "denoise"     # block diffusion: a step over the current block or sub-block
COMMIT = "commit"       # block diffusion: write the block just decoded
KINDS = (REFRESH, CACHED, PREFILL, DENOISE, COMMIT)


class Window(NamedTuple):
    """One forward of one request: queries ``[start, end)`` attending to the
    request's K/V slots ``[0, keys_end)``.

    ``block > 0``: the window writes several blocks of known tokens in one
    forward, block-causally: the queries of the block at ``a`` attend to
    ``[0, a + block)`` (each block is its own attention segment), and the
    scheduler may reserve only whole blocks of it (a prefix cache hit, a
    token budget).  ``final``: once this forward ran, the K/V of
    ``[0, final)`` is final (exact, never rewritten) and may be published to
    the prefix cache."""

    start: int
    end: int
    keys_end: int
    kind: str
    block: int = 0
    final: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start

    def segments(self) -> list[tuple[int, int, int]]:
        """``(start, end, keys_end)`` of each attention segment."""
        if not self.block or self.size <= self.block:
            return [(self.start, self.end, self.keys_end)]
        return [(a, min(a + self.block, self.end), min(a + self.block, self.keys_end))
                for a in range(self.start, self.end, self.block)]

    def reserved(self, start: int, size: int) -> "Window":
        """The part ``[start, start + size)`` the scheduler reserved: all of
        the window, or whole blocks of a divisible one."""
        if (start, size) == (self.start, self.size):
            return self
        end = start + size
        whole = (self.block and self.start <= start < end <= self.end
                 and (start - self.start) % self.block == 0
                 and (end == self.end or size % self.block == 0))
        if not whole:
            raise ValueError(f"{self} cannot run as [{start}, {end})")
        return self._replace(start=start, end=end, keys_end=end, final=end)


class CanvasTokens:
    """``length`` tokens (the prompt, then MASK), the request's end tokens,
    its rule and sampling settings; subclasses add the block walk."""

    # The step's committed token is the logits' argmax, not ``predict``'s.
    argmax_of_logits = False
    # Every window may span the whole canvas (the engine's token budget must
    # hold ``max_model_len``); else windows are at most a block, or divisible
    # into whole blocks.
    whole_canvas_windows = True
    # The runner's per-request decision inputs (see decoding/rules.py): the
    # step's quota, candidates ranked by position instead of confidence, and
    # the token-editing threshold (None: committed tokens never change).
    step_quota = 1
    positional = False
    edit_threshold: float | None = None
    # vLLM's ``min_tokens``: the first that many generated positions never
    # take an end or stop token (set by the runner from SamplingParams).
    min_tokens = 0
    # The request's grammar (a vLLM ``StructuredOutputGrammar``), held for
    # the runner, which commits only left-to-right runs under it; the canvas
    # then emits its committed prefix at once (docs/options.md).
    grammar = None

    def __init__(self, options: DiffusionOptions, prompt_ids, length: int,
                 mask_token_id: int, stop_token_ids, temperature: float = 0.0,
                 top_p: float = 1.0, generator=None, top_k: int = 0):
        self.options = options
        self.mask_token_id = mask_token_id
        self.prompt_len = len(prompt_ids)
        self.tokens = np.full(length, mask_token_id, dtype=np.int64)
        self.tokens[:self.prompt_len] = prompt_ids
        self.stop_token_ids = np.asarray(sorted(stop_token_ids), dtype=np.int64)
        self.rule_id = RULE_IDS[options.rule]
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = max(int(top_k), 0)
        self.generator = generator
        self.window: Window | None = None
        self.finished_block = False   # the last commit finished a block

    @property
    def length(self) -> int:
        return len(self.tokens)

    def resume(self, output_ids) -> None:
        """Resumption after preemption (its K/V was freed).  A constrained
        request emitted every token it committed, often inside a block: it
        keeps its block and step counters (so it continues exactly where it
        was) and only rebuilds its K/V; any other request restarts at the
        block after its output."""
        if self.constrained and self.prompt_len + len(output_ids) == self.emitted:
            self._rebuild_kv()
        else:
            self.restart(output_ids)

    def restart(self, output_ids) -> None:
        raise NotImplementedError

    def _rebuild_kv(self) -> None:
        raise NotImplementedError

    def input_tokens(self) -> np.ndarray:
        """The tokens the window's forward reads."""
        return self.tokens[self.window.start:self.window.end]

    def reserve(self, start: int, num_scheduled: int) -> None:
        """The scheduler reserved ``[start, start + num_scheduled)`` of the
        window: all of it, or whole blocks of a divisible one."""
        self.window = self.window.reserved(start, num_scheduled)

    @property
    def constrained(self) -> bool:
        return self.grammar is not None

    def _emit(self, end: int) -> list[int]:
        """Hand ``[emitted, end)`` to vLLM."""
        tokens = self.tokens[self.emitted:end].tolist()
        self.emitted = max(self.emitted, end)
        return tokens

    def _emit_committed_prefix(self, end: int) -> list[int] | None:
        """A constrained request's committed tokens are final: emit up to the
        first MASK before ``end``."""
        span = self.tokens[self.emitted:end]
        masked = np.flatnonzero(span == self.mask_token_id)
        first = self.emitted + (int(masked[0]) if masked.size else span.size)
        return self._emit(first) or None

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
