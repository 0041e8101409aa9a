"""Reference SDAR decoding (JetAstra/SDAR ``block_diffusion_generate``), batch 1.

Restated in ``shared/docs/sdar-semantics.md`` section 3; the model is
``sdar.SDAR`` (Qwen3 with q/k norm, block-causal forwards). The loop, as
published:

1. ``x`` = prompt + MASK up to ``nb * B`` with ``nb = ceil((P + max_tokens) / B)``.
2. The prompt's whole blocks in one block-causal forward; their K/V is cached.
3. Per block from ``P // B``: at most ``S`` denoising forwards (the block over
   the cache, nothing written) while it holds a MASK, then a commit forward
   (the finished block, its K/V appended). Step ``s`` commits at least
   ``B // S + (s < B % S)`` of the block's MASK positions: ``dynamic`` every
   one with ``conf > threshold`` (in the logits' dtype) if at least that many
   pass, else the most confident; ``static`` the most confident; ``sequential``
   the first. No logit shift.
4. After each commit forward: stop if a stop id is in ``x[P:]``.
5. Output: ``x[P:]`` cut after the first stop id, then to ``max_tokens``.

Decisions (the engine's side is docs/options.md, "SDAR"): ties between equal
confidences go to the lowest position (the published ``torch.topk`` leaves
them to the implementation); a quota larger than the MASKs left commits them
all, never overwriting a known token (the published Q1 quirk is not
reproduced); the mask id's logit is suppressed; temperature 0 is the
evaluation harness's greedy (argmax, unfiltered softmax confidence).

Logprobs (``logprobs=True``): ``logprob_rows`` maps each committed canvas
index (absolute: generated token ``g`` is ``P + g``) to
``fast_dllm.logprob_row`` of the denoising forward's row that committed it
(the grammar's mask on the ``p0`` row; before ``min_tokens``).
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable

import torch

from .block_causal import append_kv, empty_cache
from .fast_dllm import grammar_masked, grammar_run, logprob_row, suppress_early_ends
from .block_steps import ForwardTally, SteppedResult, choose, passes, quota, ranked

STRATEGIES = ("low_confidence_dynamic", "low_confidence_static", "sequential")


def generate(model, prompt_ids: list[int], *, max_tokens: int, block_size: int | None = None,
             steps: int | None = None, remasking: str = "low_confidence_dynamic",
             threshold: float = 0.85, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, generator: torch.Generator | None = None,
             eos_ids: Iterable[int] | None = None, min_tokens: int = 0,
             grammar=None, logprobs: bool = False) -> SteppedResult:
    """SDAR decoding of one request; ``forwards`` counts an engine's forwards
    (``block_steps.ForwardTally``), ``published_forwards`` the published loop's.
    ``grammar``: an acceptor (``grammar.Acceptor``): each step commits only a
    left-to-right run from the block's first MASK, decided under the
    grammar's mask, so a block may take more than ``steps`` steps (the
    quota of a step past them is ``B // S``); None decodes as without it.
    ``logprobs``: also record ``logprob_rows`` (module docstring)."""
    B = block_size or model.config.block_size
    S = steps or B
    if remasking not in STRATEGIES:
        raise ValueError(f"remasking must be one of {STRATEGIES}")
    if not 1 <= S <= B or max_tokens < 1 or not prompt_ids:
        raise ValueError("need 1 <= steps <= block, max_tokens >= 1, a prompt")
    mask = model.mask_id
    if mask in prompt_ids:
        raise ValueError("the prompt contains the mask token")
    stops = frozenset(model.eos_ids if eos_ids is None else eos_ids)
    P = len(prompt_ids)
    nb = math.ceil((P + max_tokens) / B)
    x = [int(t) for t in prompt_ids] + [mask] * (nb * B - P)
    tally, published, commits = ForwardTally(), 0, []
    rows: dict[int, torch.Tensor] = {}

    cache = empty_cache(model)
    base = B * (P // B)
    if base:
        cache = model.prefill(x[:base], B).kv
        published += 1
        tally.add("prefill")

    for s in range(base, nb * B, B):
        for step in range(S) if grammar is None else itertools.count():
            candidates = [i for i in range(B) if x[s + i] == mask]
            if not candidates:
                break
            logits = model.block_forward(x[s:s + B], s, cache, B).logits
            raw, p0, prefix = logits, None, None
            logits = suppress_early_ends(logits, s - P, min_tokens, stops)
            if grammar is not None:
                p0, prefix = candidates[0], x[P:s + candidates[0]]
                logits = grammar_masked(logits, p0, grammar, prefix)
            published += 1
            tally.add("denoise")
            tokens, conf = choose(logits, mask, conf_dtype=None, temperature=temperature,
                                  top_k=top_k, top_p=top_p, generator=generator)
            n = min(quota(B, S, step), len(candidates))
            if remasking == "sequential":
                chosen = candidates[:n]
            else:
                chosen = ranked(candidates, conf)[:n]
                if remasking == "low_confidence_dynamic":
                    over = [i for i in candidates if passes(conf[i], threshold)]
                    if len(over) >= n:
                        chosen = over
            if grammar is not None:
                chosen = grammar_run(grammar, prefix, p0, chosen, lambda i: tokens[i])
            for i in chosen:
                x[s + i] = tokens[i]
                if logprobs:
                    rows[s + i] = logprob_row(raw[i], mask,
                                              *((grammar, prefix) if i == p0 else ()))
            commits.append(len(chosen))
            # A constrained request emits its committed prefix at once: it
            # is final when that prefix holds every wanted token.
            final_end = s + B if grammar is None else min(s + B, P + max_tokens)
            if _final(x, P, final_end, max_tokens, mask, stops):
                tally.done = True
        if mask in x[s:s + B]:
            raise RuntimeError("block not finished after its steps")
        out = model.block_forward(x[s:s + B], s, cache, B)
        cache = append_kv(cache, out.kv)
        published += 1
        tally.add("commit")
        if any(t in stops for t in x[P:s + B]):
            break

    generated = x[P:]
    for i, t in enumerate(generated):
        if t in stops:
            generated = generated[:i + 1]
            break
    return SteppedResult(tokens=generated[:max_tokens], forwards=tally.count, canvas=x,
                         commits=commits, logprob_rows=rows, published_forwards=published,
                         kinds=tally.kinds)


def _final(x: list[int], P: int, block_end: int, max_tokens: int, mask: int, stops) -> bool:
    """The output can no longer change (tokens never change once committed):
    a stop id with nothing masked before it, or the block holding the last
    wanted token decided."""
    for t in x[P:block_end]:
        if t == mask:
            return False
        if t in stops:
            return True
    return block_end >= P + max_tokens
