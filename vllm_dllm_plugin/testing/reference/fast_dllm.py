"""Reference Fast-dLLM decoding (arXiv 2505.22618, NVlabs/Fast-dLLM), batch 1, plain loops.

The engine's outputs are compared token for token against :func:`generate`.
Layout of this module:

1. commit rules (pure functions on a confidence vector): which positions of the
   current block to unmask at one step;
2. families: how logits become (prediction, confidence) for a model family,
   with the Dream differences as switches;
3. the block loop with its three cache modes and the early stop.

Decisions that the paper and its code leave open (or that the engine's options,
docs/options.md, add), and how they are fixed here:

* ``gen_length`` not a multiple of ``block_length``: blocks of ``block_length``
  from the start of the generation, the last one shorter; the canvas is exactly
  ``prompt + gen_length`` masks.
* Fixed schedule: each block uses ``k = min(steps_per_block, m)`` steps (``m`` =
  masks in the block at its start); ``q_i = m // k + (1 if i < m % k else 0)``.
  For ``m >= k`` this is Fast-dLLM's even split; for ``m < k`` it is what that
  split yields anyway (one token per step, then nothing left).
* Fixed schedule for Dream: the refresh commits position ``s`` on its own, so
  the schedule covers what is left. With ``m' = m - 1`` masks after the
  refresh, the following steps ``i = 0, 1, ...`` use
  ``k = min(steps_per_block, m')`` steps and commit
  ``q_i = m' // k + (1 if i < m' % k else 0)``; if ``m' == 0`` the block is
  done after the refresh. (Fast-dLLM's Dream code has no fixed-schedule mode
  with the block cache; this is the project's definition.)
* Dream's shift inside cached steps: the rows of a prefix/dual step start at
  ``s``, so block position ``s + j`` uses step row ``j - 1``; position ``s``
  (committed by the refresh) keeps row 0. Dream's confidence is the max of a
  softmax taken in the model dtype, so its threshold/factor comparisons see
  the bars rounded to that dtype (see the item on confidence comparisons).
* Mask-logit suppression (``suppress_mask_logit=True`` by default): the logit
  of the mask id is set to ``-inf`` before argmax/softmax, because the engine
  does the same so that a random model cannot "unmask" into MASK. Fast-dLLM does
  not do this; with a real checkpoint the mask id is never the argmax, so the
  outputs agree. With ``suppress_mask_logit=False`` a predicted MASK is written
  back as MASK, i.e. the position stays masked (Fast-dLLM tests ``x == mask``);
  a block that then cannot finish raises ``RuntimeError``.
* Temperature > 0: the uniform noise is drawn from ``generator`` for the block's
  rows only (``[e - s, vocab]`` float64, once per step). Fast-dLLM draws it for
  every row of the forward (and twice per prefix-cache step), so sampled outputs
  are only comparable to an implementation that draws exactly like this one.
* Confidence comparisons (``>= threshold``, factor thresholds) are tensor vs.
  Python float, as in Fast-dLLM, so a low-precision confidence (Dream, bf16)
  is compared with the threshold rounded to that precision.
* Grammar (``grammar=``, docs/options.md "Structured output"; the engine's
  rule, not Fast-dLLM's): each step masks the row deciding the block's first
  MASK ``p0`` with the grammar's allowed set (after the mask-logit and
  ``min_tokens`` suppressions), picks ``C`` with the unchanged rule, and
  commits ``p0``, ``p0 + 1``, ... while in ``C`` and accepted by the grammar
  (:func:`grammar_run`). A fixed schedule then may run out with masks left;
  each further step takes ``m // k`` (the engine's ``fixed_count``).
* Logprobs (``logprobs=True``, docs/options.md "``logprobs`` and
  ``top_logprobs``"): for each committed position, the float32 log-softmax
  of the logits row that committed it (:func:`logprob_row`: the mask id's
  logit excluded; after the grammar's mask on the row deciding ``p0``;
  before the ``min_tokens`` suppression and temperature), in
  ``Result.logprob_rows`` keyed by absolute canvas index (prompt included:
  generated token ``g`` is key ``len(prompt_ids) + g``). Dream's rows are
  the shifted ones (position ``p`` reads row ``p - 1``).
* Forward counting: a block ends as soon as it holds no MASK. Fast-dLLM's
  prefix/dual loops run one more (useless, commit-nothing) forward when the
  refresh step alone finishes a block, so its ``nfe`` exceeds ``forwards`` by
  the number of such blocks; the tokens are the same. (With a fixed schedule of
  one step per block those loops even index past the schedule and crash.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from .common import ReferenceModel

CACHE_MODES = ("none", "prefix", "dual")
DEFAULT_THRESHOLD = 0.9

# ---------------------------------------------------------------------------------------
# 1. Commit rules. ``conf`` is a 1-D tensor over the block's positions; positions that
#    are not candidates (already committed) hold -inf, as in Fast-dLLM. Each rule returns
#    the block-relative positions to commit, best first.
# ---------------------------------------------------------------------------------------


def ranked_candidates(conf: torch.Tensor) -> list[int]:
    """Candidate positions by descending confidence; equal confidences keep
    position order (stable sort), i.e. ties go to the lower position."""
    candidates = torch.nonzero(conf != float("-inf")).flatten()
    order = torch.sort(conf[candidates], descending=True, stable=True).indices
    return candidates[order].tolist()


def threshold_rule(conf: torch.Tensor, threshold: float) -> list[int]:
    """The best candidate always, plus every other candidate with ``conf >= threshold``."""
    ranked = ranked_candidates(conf)
    return ranked[:1] + [p for p in ranked[1:] if bool(conf[p] >= threshold)]


def factor_rule(conf: torch.Tensor, factor: float) -> list[int]:
    """Accept top ranks while ``c_r >= 1 - factor / (r + 1)`` (rank r from 1;
    rank 1 always), stopping at the first failing rank. (quirk) When that
    failing rank is the last one, it is accepted too."""
    ranked = ranked_candidates(conf)
    n = len(ranked)
    accepted = n  # no rank fails
    for r in range(2, n + 1):
        if bool(conf[ranked[r - 1]] < 1 - factor / (r + 1)):
            accepted = n if r == n else r - 1
            break
    return ranked[:accepted]


def top_rule(conf: torch.Tensor, count: int) -> list[int]:
    """The ``count`` most confident candidates (fixed schedule)."""
    ranked = ranked_candidates(conf)
    assert count <= len(ranked), "fixed schedule asks for more tokens than there are masks"
    return ranked[:count]


def fixed_schedule(masks: int, steps_per_block: int) -> list[int]:
    """Tokens to commit at each step of a block holding ``masks`` masks:
    ``k = min(steps_per_block, masks)`` steps, the remainder spread over the
    first steps."""
    k = min(steps_per_block, masks)
    return [masks // k + (1 if i < masks % k else 0) for i in range(k)]


@dataclass(frozen=True)
class Rule:
    """Exactly one of the three rules, resolved from the generate options."""

    threshold: float | None = None
    factor: float | None = None
    steps_per_block: int | None = None

    @classmethod
    def from_options(cls, threshold, factor, steps_per_block) -> "Rule":
        given = [o is not None for o in (threshold, factor, steps_per_block)]
        if sum(given) > 1:
            raise ValueError("give at most one of threshold, factor, steps_per_block")
        if steps_per_block is not None and steps_per_block < 1:
            raise ValueError("steps_per_block must be >= 1")
        if not any(given):
            threshold = DEFAULT_THRESHOLD
        return cls(threshold, factor, steps_per_block)

    def select(self, conf: torch.Tensor, step: int, masks_at_start: int,
               past_schedule: bool = False) -> list[int]:
        """Positions to commit at ``step`` (0 = the refresh step) of a block.
        ``past_schedule`` (a grammar commits shorter runs, so a block can
        outlast its fixed schedule): each step after it takes ``m // k``
        (the schedule's last count), at most the candidates left."""
        if self.threshold is not None:
            return threshold_rule(conf, self.threshold)
        if self.factor is not None:
            return factor_rule(conf, self.factor)
        schedule = fixed_schedule(masks_at_start, self.steps_per_block)
        if step >= len(schedule):
            if not past_schedule:
                raise RuntimeError("fixed schedule exhausted with masks left in the block")
            left = int((conf != float("-inf")).sum())
            return top_rule(conf, min(masks_at_start // len(schedule), left))
        return top_rule(conf, schedule[step])


# ---------------------------------------------------------------------------------------
# 2. Families.
# ---------------------------------------------------------------------------------------

# (block rows' logits [n, V], temperature, generator) -> (pred [n] long, conf [n])
ChooseFn = Callable[[torch.Tensor, float, torch.Generator | None], tuple[torch.Tensor, torch.Tensor]]


def gumbel_argmax(logits: torch.Tensor, temperature: float, generator) -> torch.Tensor:
    """Sample by argmax of ``exp(l) / (-log U)^T`` in float64, ``U ~ U[0,1)``."""
    l64 = logits.to(torch.float64)
    u = torch.rand(l64.shape, dtype=torch.float64, generator=generator)
    return torch.argmax(l64.exp() / (-torch.log(u)) ** temperature, dim=-1)


def dream_choose(logits: torch.Tensor, temperature: float, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream: ``probs = softmax(logits)`` in the logits' (model) dtype and
    ``conf, pred = probs.max(-1)`` (ties: the lowest token id). With T > 0,
    ``pred`` is the argmax of Gumbel-noised logits (as for LLaDA) and ``conf``
    the un-noised probability at ``pred``, still in the model dtype."""
    probs = torch.softmax(logits, dim=-1)
    if temperature == 0:
        conf, pred = probs.max(dim=-1)
        return pred, conf
    pred = gumbel_argmax(logits, temperature, generator)
    return pred, probs.gather(-1, pred[:, None]).squeeze(-1)


def llada_choose(logits: torch.Tensor, temperature: float, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaDA: pred = argmax (of the raw logits in their own dtype, or of the
    Gumbel-noised ones when T > 0); conf = float64 softmax of the *un-noised*
    logits at pred."""
    if temperature == 0:
        pred = torch.argmax(logits, dim=-1)
    else:
        pred = gumbel_argmax(logits, temperature, generator)
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    return pred, probs.gather(-1, pred[:, None]).squeeze(-1)


@dataclass(frozen=True)
class Family:
    """What differs between model families in the decoding loop.

    ``shift_logits``: the prediction for row i comes from output row i-1 of the
    same forward (row 0 keeps its own) — Dream.
    ``refresh_commits_first``: the refresh forward commits only the block's first
    position (its prediction), unconditionally; the rule runs from the next step —
    Dream.
    ``choose``: logits -> (pred, conf); Dream's takes the max of a softmax in the
    model dtype."""

    name: str
    choose: ChooseFn
    shift_logits: bool = False
    refresh_commits_first: bool = False


LLADA = Family("llada", llada_choose)
DREAM = Family("dream", dream_choose, shift_logits=True, refresh_commits_first=True)
FAMILIES: dict[str, Family] = {"llada": LLADA, "dream": DREAM}


def shift_right(logits: torch.Tensor) -> torch.Tensor:
    """Row i takes row i-1's logits; row 0 keeps its own."""
    return torch.cat([logits[:1], logits[:-1]], dim=0)


# ---------------------------------------------------------------------------------------
# 3. The block loop.
# ---------------------------------------------------------------------------------------


@dataclass
class Result:
    """``tokens``: what a client sees: the generated tokens up to and including
    the first end token (all ``gen_length`` if none). ``forwards``: model forward
    passes (refreshes and cached steps count 1 each). ``canvas``: the final
    canvas, prompt included (MASK where decoding stopped early). ``commits``:
    tokens committed by each forward, in order. ``logprob_rows`` (only with
    ``logprobs=True``): absolute canvas index -> the float32 log-softmax row
    [V] of the forward that committed it (the last one, if it was committed
    again: a LLaDA2.1 edit); see :func:`logprob_row`."""

    tokens: list[int]
    forwards: int
    canvas: list[int]
    commits: list[int] = field(default_factory=list)
    logprob_rows: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Request:
    """Mutable decoding state of one request."""

    model: ReferenceModel
    family: Family
    rule: Rule
    cache: str
    temperature: float
    generator: torch.Generator | None
    suppress_mask_logit: bool
    eos_ids: frozenset[int]
    prompt_len: int
    canvas: torch.Tensor
    min_tokens: int = 0
    grammar: object | None = None
    forwards: int = 0
    commits: list[int] = field(default_factory=list)
    logprob_rows: dict[int, torch.Tensor] | None = None   # None: not recorded

    @property
    def mask_id(self) -> int:
        return self.model.mask_id

    def end_position(self) -> int | None:
        """Canvas index of the first end token if every generated position
        before it is committed; None otherwise (also when no end token yet)."""
        for p in range(self.prompt_len, self.canvas.shape[0]):
            token = int(self.canvas[p])
            if token == self.mask_id:
                return None
            if token in self.eos_ids:
                return p
        return None


def block_bounds(prompt_len: int, gen_length: int, block_length: int) -> Iterable[tuple[int, int]]:
    """``[s, e)`` of each block, left to right; the last may be shorter."""
    for s in range(prompt_len, prompt_len + gen_length, block_length):
        yield s, min(s + block_length, prompt_len + gen_length)


def _block_logits(req: _Request, s: int, e: int, step: int, state: dict) -> torch.Tensor:
    """One forward; returns the logits of the block rows ``[s, e)`` (shifted
    for Dream within the forward's own rows). The first step of a block is the
    refresh: a full forward whose K/V becomes the block's cache."""
    model, canvas = req.model, req.canvas
    if step == 0 or req.cache == "none":
        out = model.full(canvas)
        if req.cache == "prefix":
            state["cache"] = [(k[:, :s], v[:, :s]) for k, v in out.kv]
        elif req.cache == "dual":
            state["cache"] = out.kv
        first_row = s
    elif req.cache == "prefix":
        out = model.with_prefix(canvas, s, state["cache"])
        first_row = 0
    else:
        out = model.with_dual(canvas, s, e, state["cache"])
        first_row = 0
    req.forwards += 1
    logits = shift_right(out.logits) if req.family.shift_logits else out.logits
    return logits[first_row : first_row + (e - s)]


def _commit_step(req: _Request, s: int, e: int, step: int, masks_at_start: int, logits: torch.Tensor) -> None:
    """Turn the block rows' logits into commits on the canvas."""
    raw = logits
    if req.suppress_mask_logit:
        logits = logits.clone()
        logits[:, req.mask_id] = float("-inf")
    logits = suppress_early_ends(logits, s - req.prompt_len, req.min_tokens, req.eos_ids)
    block = req.canvas[s:e]
    grammar = req.grammar
    p0 = prefix = None
    if grammar is not None:
        p0 = int(torch.nonzero(block == req.mask_id)[0])
        prefix = req.canvas[req.prompt_len : s + p0].tolist()
        logits = grammar_masked(logits, p0, grammar, prefix)
    pred, conf = req.family.choose(logits, req.temperature, req.generator)
    if step == 0 and req.family.refresh_commits_first:
        chosen = [0]
    else:
        conf = torch.where(block == req.mask_id, conf, torch.full_like(conf, float("-inf")))
        constrained = grammar is not None
        if req.family.refresh_commits_first:
            # the rule (and a fixed schedule) starts after the refresh's own commit
            chosen = req.rule.select(conf, step - 1, masks_at_start - 1, constrained)
        else:
            chosen = req.rule.select(conf, step, masks_at_start, constrained)
    assert chosen, "every step commits at least one token"
    if grammar is not None:
        chosen = grammar_run(grammar, prefix, p0, chosen, lambda p: int(pred[p]))
    for p in chosen:
        block[p] = pred[p]  # block is a view: writes the canvas
    req.commits.append(len(chosen))
    if req.logprob_rows is not None:
        for p in chosen:
            req.logprob_rows[s + p] = logprob_row(
                raw[p], req.mask_id, *((grammar, prefix) if p == p0 else ()))


def logprob_row(logits_row: torch.Tensor, mask_id: int, grammar=None,
                prefix: list[int] | None = None) -> torch.Tensor:
    """What ``logprobs`` reports for a position (docs/options.md): the
    float32 log-softmax of the logits row that committed it, the mask id's
    logit excluded (``-inf``), after ``grammar``'s mask when given (the row
    deciding a constrained request's first masked position, ``prefix`` the
    committed generated tokens before it). ``logits_row`` [V] is taken
    before the ``min_tokens`` suppression, temperature and any filter."""
    row = logits_row.detach().to(torch.float32).clone()
    if grammar is not None:
        row = grammar_masked(row[None], 0, grammar, prefix)[0]
    row[mask_id] = float("-inf")
    return torch.log_softmax(row, dim=-1)


def grammar_masked(logits: torch.Tensor, row: int, grammar, prefix: list[int]) -> torch.Tensor:
    """A copy of ``logits`` [n, V] whose row ``row`` (the one deciding the
    first masked position) is ``-inf`` for every token ``grammar`` rejects
    after the committed ``prefix`` (and for ids past the grammar's vocab)."""
    allowed = grammar.allowed(prefix).to(logits.device)
    width = min(allowed.shape[0], logits.shape[-1])
    logits = logits.clone()
    logits[row, :width] = logits[row, :width].masked_fill(~allowed[:width], float("-inf"))
    logits[row, width:] = float("-inf")
    return logits


def grammar_run(grammar, prefix: list[int], p0: int, chosen: Iterable[int], token_at) -> list[int]:
    """The positions a constrained step commits: ``p0`` (decided under the
    grammar's mask), then ``p0 + 1``, ``p0 + 2``, ... while the rule chose
    them (``chosen``) and the grammar accepts their tokens (``token_at(p)``)
    in order after ``prefix``; the first that fails ends the run, and so
    does an end token (vLLM's ``validate_tokens``)."""
    chosen = set(chosen)
    run = [p0]
    while run[-1] + 1 in chosen:
        run.append(run[-1] + 1)
    count = grammar.run(prefix, [token_at(p) for p in run])
    if count == 0:
        raise RuntimeError(f"{grammar!r} allows no token after {prefix} "
                           "(min_tokens forbids the only end token allowed?)")
    return run[:count]


def suppress_early_ends(logits: torch.Tensor, first_generated: int, min_tokens: int,
                        end_ids) -> torch.Tensor:
    """``min_tokens`` (vLLM's meaning): rows of generated positions
    ``first_generated + i < min_tokens`` never predict an end or stop id."""
    early = min(max(min_tokens - first_generated, 0), logits.shape[0])
    if not early or not end_ids:
        return logits
    logits = logits.clone()
    ids = torch.tensor(sorted(end_ids), dtype=torch.long)
    logits[:early, ids] = float("-inf")
    return logits


def _decode_block(req: _Request, s: int, e: int, stop_early: bool) -> bool:
    """Decode block ``[s, e)`` until it holds no MASK. Returns True when the
    request may stop (early stop) after one of its steps."""
    masks_at_start = int((req.canvas[s:e] == req.mask_id).sum())
    state: dict = {}
    step = 0
    while bool((req.canvas[s:e] == req.mask_id).any()):
        if step > 4 * (e - s):
            raise RuntimeError("block cannot finish (the model keeps predicting MASK?)")
        logits = _block_logits(req, s, e, step, state)
        _commit_step(req, s, e, step, masks_at_start, logits)
        step += 1
        if stop_early and req.end_position() is not None:
            return True
    return False


def generate(
    model: ReferenceModel,
    prompt_ids: list[int],
    *,
    gen_length: int,
    block_length: int = 32,
    cache: str = "prefix",
    threshold: float | None = None,
    factor: float | None = None,
    steps_per_block: int | None = None,
    temperature: float = 0.0,
    eos_ids: Iterable[int] | None = None,
    stop_early: bool = True,
    generator: torch.Generator | None = None,
    suppress_mask_logit: bool = True,
    family: Family | None = None,
    min_tokens: int = 0,
    grammar=None,
    logprobs: bool = False,
) -> Result:
    """Fast-dLLM decoding of one request.

    Rules: at most one of ``threshold`` / ``factor`` / ``steps_per_block``
    (fixed schedule); none means threshold 0.9. ``eos_ids`` defaults to the
    model's (config / generation_config ``eos_token_id``). ``family`` defaults
    to the model's. ``stop_early`` stops as soon as an end token is committed
    with everything before it committed; otherwise every block is decoded and
    the output is cut after the first end token — the tokens are the same.
    ``min_tokens``: no end token among the first that many generated tokens.
    ``grammar``: an acceptor (``grammar.Acceptor``): each step commits only a
    left-to-right run from the block's first masked position, which is
    decided under the grammar's mask (docs/options.md, "Structured output");
    None decodes exactly as without it. ``logprobs``: also record
    ``Result.logprob_rows`` (see the module docstring); decoding is the same."""
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    if gen_length < 1 or block_length < 1:
        raise ValueError("gen_length and block_length must be >= 1")
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    mask_id = model.mask_id
    if mask_id in prompt_ids:
        raise ValueError("the prompt contains the mask token; Fast-dLLM semantics do not cover it")
    if grammar is not None and not suppress_mask_logit:
        raise ValueError("a grammar needs suppress_mask_logit (a MASK cannot join a committed run)")
    req = _Request(
        model=model,
        family=family or FAMILIES[model.family],
        rule=Rule.from_options(threshold, factor, steps_per_block),
        cache=cache,
        temperature=temperature,
        generator=generator,
        suppress_mask_logit=suppress_mask_logit,
        eos_ids=frozenset(model.eos_ids if eos_ids is None else eos_ids),
        prompt_len=len(prompt_ids),
        canvas=torch.tensor(list(prompt_ids) + [mask_id] * gen_length, dtype=torch.long),
        min_tokens=min_tokens,
        grammar=grammar,
        logprob_rows={} if logprobs else None,
    )
    for s, e in block_bounds(len(prompt_ids), gen_length, block_length):
        if _decode_block(req, s, e, stop_early):
            break
    return Result(tokens=_visible_tokens(req), forwards=req.forwards, canvas=req.canvas.tolist(),
                  commits=req.commits, logprob_rows=req.logprob_rows or {})


def _visible_tokens(req: _Request) -> list[int]:
    """Generated tokens cut after the first end token (included)."""
    generated = req.canvas[req.prompt_len :].tolist()
    for i, token in enumerate(generated):
        if token in req.eos_ids:
            return generated[: i + 1]
    return generated
