"""Reference LLaDA2.0 / LLaDA2.1 decoding (``LLaDA2MoeModelLM.generate``), batch 1.

Restated in ``shared/docs/llada2-semantics.md`` sections 4 and 5; the model is
``llada2.LLaDA2Moe``. As published, there is **no KV cache**: every forward
recomputes ``x[0 : end of the current block)`` with the block-causal mask, so
this loop is independent of any cache an engine keeps.

* ``x`` = prompt + MASK up to ``nb * B``, ``nb = ceil((P + max_tokens) / B)``;
  blocks ``P // B`` .. ``nb - 1`` are decoded in order. No logit shift;
  confidences in float32, compared with ``>`` in float32.
* LLaDA2.0 (``editing_threshold is None``): ``S' = min(steps, max_tokens)``
  steps at most per block while it holds a MASK; step ``s`` commits the
  MASKs with ``conf > threshold`` if at least ``B // S' + (s < B % S')``
  pass, else that many of the most confident.
* LLaDA2.1 (``editing_threshold`` set): each forward commits the MASKs over
  the threshold, at least the most confident one, and replaces every
  decided non-prompt token of the block whose prediction differs with
  ``conf > editing_threshold``. An iteration that starts without a MASK is a
  post step: the block ends when there are more than ``max_post_steps``, or
  after a post step that changed nothing.
* Stop after a block whose generated part holds a stop id (LLaDA2.0 always;
  LLaDA2.1 returns the same tokens either way, its output being cut after
  the first stop id). Output: ``x[P : P + max_tokens]`` cut after the first
  stop id.

Decisions (the engine's side is docs/options.md, "LLaDA2.x"): temperature 0
is greedy in both versions (the published 2.0 sampler samples at T = 0, a
bug fixed in 2.1); ties between equal confidences go to the lowest position;
the mask id's logit is suppressed; ``eos_early_stop``'s in-step return (and
its prompt quirk) is not reproduced (same tokens, fewer forwards).

Logprobs (``logprobs=True``): ``logprob_rows`` maps each committed canvas
index (absolute: generated token ``g`` is ``P + g``) to
``fast_dllm.logprob_row`` of the forward's row that committed it (the
grammar's mask on the ``p0`` row; before ``min_tokens``); a LLaDA2.1 edit
replaces the position's row with the editing forward's.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable

import torch

from .fast_dllm import grammar_masked, grammar_run, logprob_row, suppress_early_ends
from .block_steps import ForwardTally, SteppedResult, choose, passes, quota, ranked


def generate(model, prompt_ids: list[int], *, max_tokens: int, block_length: int = 32,
             steps: int = 32, threshold: float = 0.95, editing_threshold: float | None = None,
             max_post_steps: int = 16, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, generator: torch.Generator | None = None,
             eos_ids: Iterable[int] | None = None, min_tokens: int = 0,
             grammar=None, logprobs: bool = False) -> SteppedResult:
    """LLaDA2.x decoding of one request; ``forwards`` counts the forwards of
    an engine with an exact block cache (``block_steps.ForwardTally``),
    ``published_forwards`` this loop's own. ``grammar`` (LLaDA2.0 only: an
    edit would rewrite committed tokens): an acceptor
    (``grammar.Acceptor``); each step commits only a left-to-right run from
    the block's first MASK, decided under the grammar's mask, so a block may
    take more than ``S`` steps (the quota past them is ``B // S``); None
    decodes as without it. ``logprobs``: also record ``logprob_rows``
    (module docstring; the last commit or edit of a position wins)."""
    B = block_length
    if not 1 <= steps <= B or max_tokens < 1 or not prompt_ids:
        raise ValueError("need 1 <= steps <= block_length, max_tokens >= 1, a prompt")
    mask = model.mask_id
    if mask in prompt_ids:
        raise ValueError("the prompt contains the mask token")
    stops = frozenset(model.eos_ids if eos_ids is None else eos_ids)
    editing = editing_threshold is not None
    if editing and grammar is not None:
        raise ValueError("editing_threshold with a grammar: an edit would rewrite committed tokens")
    S = min(steps, max(1, max_tokens))
    P = len(prompt_ids)
    nb = math.ceil((P + max_tokens) / B)
    x = [int(t) for t in prompt_ids] + [mask] * (nb * B - P)
    tally, published, commits, edits, edited_at = ForwardTally(), 0, [], [], set()
    rows: dict[int, torch.Tensor] = {}
    last: dict = {}   # the latest forward's rows, for logprob_rows
    if P // B:
        tally.add("prefill")

    def forward(s: int, p0: int | None = None):
        nonlocal published
        published += 1
        tally.add("denoise")
        logits = model.prefill(x[:s + B], B).logits[s:s + B].float()
        last.update(s=s, raw=logits, p0=p0, prefix=None if p0 is None else x[P:s + p0])
        logits = suppress_early_ends(logits, s - P, min_tokens, stops)
        if p0 is not None:  # the block's first MASK is decided under the grammar
            logits = grammar_masked(logits, p0, grammar, x[P:s + p0])
        return choose(logits, mask, conf_dtype=torch.float32, temperature=temperature,
                      top_k=top_k, top_p=top_p, generator=generator)

    def record(offsets):
        """The latest forward's rows for the block offsets it committed or edited."""
        for i in offsets:
            rows[last["s"] + i] = logprob_row(
                last["raw"][i], mask,
                *((grammar, last["prefix"]) if i == last["p0"] else ()))

    for s in range(B * (P // B), nb * B, B):
        first_editable = max(P - s, 0)
        if not editing:
            for step in range(S) if grammar is None else itertools.count():
                candidates = [i for i in range(B) if x[s + i] == mask]
                if not candidates:
                    break
                p0 = None if grammar is None else candidates[0]
                tokens, conf = forward(s, p0)
                n = min(quota(B, S, step), len(candidates))
                over = [i for i in candidates if passes(conf[i], threshold)]
                chosen = over if len(over) >= n else ranked(candidates, conf)[:n]
                if grammar is not None:
                    chosen = grammar_run(grammar, x[P:s + p0], p0, chosen, lambda i: tokens[i])
                for i in chosen:
                    x[s + i] = tokens[i]
                if logprobs:
                    record(chosen)
                commits.append(len(chosen))
                # A constrained request emits its committed prefix at once:
                # it is final when that prefix holds every wanted token.
                final_end = s + B if grammar is None else min(s + B, P + max_tokens)
                if _final_2_0(x, P, final_end, max_tokens, mask, stops):
                    tally.done = True
            last_changed = True
        else:
            post = 0
            while True:
                candidates = [i for i in range(B) if x[s + i] == mask]
                if not candidates:
                    post += 1
                    if post > max_post_steps:
                        break
                tokens, conf = forward(s)
                over = [i for i in candidates if passes(conf[i], threshold)]
                chosen = over if over else ranked(candidates, conf)[:1]
                edited = [i for i in range(first_editable, B)
                          if x[s + i] != mask and tokens[i] != x[s + i]
                          and passes(conf[i], editing_threshold)]
                for i in chosen + edited:
                    x[s + i] = tokens[i]
                edited_at.update(s + i for i in edited)
                if logprobs:
                    record(chosen + edited)
                commits.append(len(chosen))
                edits.append(len(edited))
                last_changed = bool(chosen or edited)
                if not candidates and not edited:
                    break
        if mask in x[s:s + B]:
            raise RuntimeError("block not finished after its steps")
        block_final = any(t in stops for t in x[P:s + B]) or s + B >= P + max_tokens
        if block_final:
            tally.done = True
        elif last_changed:
            tally.add("commit")   # the engine writes the block's final K/V
        if any(t in stops for t in x[P:s + B]):
            break

    generated = x[P:P + max_tokens]
    for i, t in enumerate(generated):
        if t in stops:
            generated = generated[:i + 1]
            break
    return SteppedResult(tokens=generated, forwards=tally.count, canvas=x, commits=commits,
                         logprob_rows=rows, published_forwards=published, edits=edits,
                         kinds=tally.kinds, edited=edited_at)


def _final_2_0(x: list[int], P: int, block_end: int, max_tokens: int, mask: int, stops) -> bool:
    """LLaDA2.0 never changes a committed token: the output is final at a
    stop id with nothing masked before it, or once the block holding the
    last wanted token is decided."""
    for t in x[P:block_end]:
        if t == mask:
            return False
        if t in stops:
            return True
    return block_end >= P + max_tokens
