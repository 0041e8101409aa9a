"""Reference Fast-dLLM v2 decoding (arXiv 2509.26328), batch 1, plain loops.

Fast-dLLM v2 is a Qwen2.5 model (``qwen2.Qwen2``) decoded as a *block
diffusion* model: attention is block-causal (a query at position q sees a key
at position k iff ``q // bs >= k // bs``, ``bs`` = ``bd_size`` = 32), so the
K/V of a finished block is exact and is cached for good. The engine is
compared against :func:`generate` token for token (greedy) and forward for
forward.

Layout: loading (:class:`FastDLLMv2`, mask and end ids from the tokenizer),
the three kinds of forward with their explicit attention rule, the commit rule
(pure functions), and the block loop.

Forwards (every one counts in ``Result.forwards`` and is listed in ``trace``):

* ``prefill``: the ``bs * (P // bs)`` tokens of the whole prompt blocks in ONE
  forward with the block-causal mask (the engine runs them block by block;
  the reference must not, so that the two are independent). Its K/V is the
  exact cache of ``[0, base)``.
* ``block``: the ``bs`` tokens of the current block as queries against the
  exact cache of the earlier blocks plus themselves (bidirectional inside).
* ``sub_block`` (``block_cache=True`` only): the sub-block's tokens as queries
  against the exact cache plus the block's side cache (see below).
* ``commit``: a ``block`` forward over the finished block whose K/V is
  appended to the exact cache; the greedy argmax of its last row is the next
  block's offset 0.

Decisions that the paper and its published code leave open (docs/options.md,
"Fast-dLLM v2", has the engine's side), and how they are fixed here:

* ``max_tokens`` counts generated tokens (the engine's meaning), not the
  published ``max_new_tokens // 32`` blocks. Blocks are decoded whole; the
  loop stops at a block boundary once the generated part holds
  ``>= max_tokens`` tokens: before starting a new block, and before a commit
  forward (whose token would lie beyond ``max_tokens``). The output is then
  cut to ``max_tokens``. Because attention is block-causal, a later block
  never changes an earlier token, so the output for ``M`` is a prefix of the
  output for any larger ``max_tokens``.
* End-token stop: checked before every forward (denoising or commit), as at
  the top of each loop of the published ``mdm_sample_with_visualization``:
  an end token in the generated part ``x[P:]`` with no MASK before its first
  occurrence stops decoding at once. ``x[P:]`` includes offset 0 of every
  block (the prefill's or a commit forward's argmax), so an end token there is
  seen before the next forward. (The published function treats the prefill's
  argmax as part of the prompt: it is never checked and never returned; not
  reproduced, the engine returns it as the first generated token.)
* Output: ``x[P:]`` cut after the first end token (included), then cut to
  ``max_tokens``. End ids default to the tokenizer's ``<|im_end|>`` only (the
  published loop's single stop token), not config/generation_config
  ``eos_token_id``.
* Prediction and confidence (greedy): ``probs = softmax(logits)`` in the model
  dtype, ``conf, pred = probs.max(-1)`` (the published ``sample_with_top_p``
  takes the argmax of the probabilities, so ties, including bf16 ties of
  distinct logits, go to the lowest token id). The threshold is compared as
  tensor vs Python float, i.e. rounded to the model dtype (bf16: 0.8 becomes
  0.80078125, so a confidence of 0.80078125 does *not* pass 0.8), strictly
  (``>``); the highest-confidence candidate always commits (ties: leftmost).
* Mask-logit suppression (``suppress_mask_logit=True``): the mask id's logit is
  set to ``-inf`` before every choice, including the prefill / commit argmax,
  as the engine does (the published code does not; a trained model never
  predicts the mask). With ``False`` a predicted MASK is written back as MASK
  (the position stays masked), and a MASK at offset 0 becomes a candidate of
  sub-block 0 (reading its own row 0), as in the published code.
* Sampling (``temperature > 0``): ``softmax(logits / T)`` in the model dtype,
  top-p filter (keep the smallest prefix of the sorted probabilities whose sum
  reaches ``top_p``, always the first), renormalise, one ``torch.multinomial``
  draw per row of the sub-block from ``generator``; the confidence is the
  renormalised probability of the drawn token. Every row of the batch is
  sampled (the published code samples batch row 0 only: a bug). The prefill
  and commit-forward tokens stay greedy. Exact sampled parity with an engine
  is not expected; the reference is reproducible with its generator.
* Sub-block cache (``block_cache=True``), resolved from the published
  ``batch_sample`` and the checkpoint's attention code (the paper's
  description alone leaves it open):

  - at each step of a sub-block, if the block has no side cache yet, or the
    sub-block's FIRST token is still MASK, the step is a full ``block``
    forward, and the block rows of that forward's K/V *replace* the side
    cache (a fresh one each time, not an update);
  - otherwise (the first token is decided) only the sub-block's tokens are
    fed; their fresh K/V overwrite their slots of the side cache in place
    (kept for later steps), and they attend, without any mask, to the exact
    prefix plus the whole side cache (stale rest of the block, fresh
    sub-block). So "while the first token of the current sub-block is
    decoded" (the published description of the cache) means "once it has
    been committed";
  - shift inside a ``sub_block`` forward: row i reads row i-1 of that forward
    (row 0 keeps its own, never a candidate there since that token is
    decided);
  - the side cache is reset at each block and kept across its sub-blocks: a
    sub-block whose first token is a prompt-tail token starts with the stale
    side cache of the previous sub-block's last full forward, partially
    overwritten by that sub-block's ``sub_block`` forwards.
* Quirks of the published code: ``quirks=True`` reproduces Q1 only: with
  ``P == bs`` the prefill is skipped, the prompt is never attended to, and
  positions restart at 0 for the first generated block (the exact cache then
  holds generated blocks only). Q2 (denoising masks on a fixed grid of 32
  whatever ``block_size``) is not reproduced: all masks follow
  ``block_size``.
* Logprobs (``logprobs=True``): ``Result.logprob_rows`` maps each
  committed canvas index (absolute: generated token ``g`` is
  ``len(prompt_ids) + g``) to ``fast_dllm.logprob_row`` of the row that
  committed it: the shifted row of a denoising forward (the grammar's mask
  on the sub-block's ``p0`` row), or a write forward's (prefill, commit)
  last row for the next block's first token (the grammar's mask on it when
  constrained), before the ``min_tokens`` suppression.
* A prompt containing the mask id, an empty prompt, or ``block_size`` not a
  multiple of ``sub_block_length`` is rejected (``ValueError``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from .block_causal import BlockCausalForwards, append_kv, block_causal, empty_cache
from .common import ForwardOutput, KVCache, dual_keys, load_checkpoint
from .fast_dllm import (Result, grammar_masked, grammar_run, logprob_row, shift_right,
                        suppress_early_ends)
from .qwen2 import Qwen2, Qwen2Config, qwen2_fields

ARCHITECTURE = "Fast_dLLM_QwenForCausalLM"
MASK_TOKEN = "|<MASK>|"
END_TOKEN = "<|im_end|>"
DEFAULT_THRESHOLD = 0.9
DEFAULT_SUB_BLOCK = 8

# ---------------------------------------------------------------------------------------
# Loading.
# ---------------------------------------------------------------------------------------


def read_added_tokens(path) -> dict[str, int]:
    """Content -> id of the tokenizer's added tokens, from tokenizer.json's
    ``added_tokens`` list and tokenizer_config.json's ``added_tokens_decoder``
    (whichever exist; where both name a token they must agree)."""
    path = Path(path)
    found: dict[str, int] = {}

    def add(content: str, token_id: int, source: str) -> None:
        if found.setdefault(content, int(token_id)) != int(token_id):
            raise ValueError(f"{content!r} is {found[content]} elsewhere but {token_id} in {source}")

    tok_json = path / "tokenizer.json"
    if tok_json.exists():
        for entry in json.loads(tok_json.read_text()).get("added_tokens", []):
            add(entry["content"], entry["id"], tok_json.name)
    tok_cfg = path / "tokenizer_config.json"
    if tok_cfg.exists():
        for token_id, entry in (json.loads(tok_cfg.read_text()).get("added_tokens_decoder") or {}).items():
            add(entry["content"], int(token_id), tok_cfg.name)
    return found


@dataclass(frozen=True)
class FastDLLMv2Config(Qwen2Config):
    """Qwen2 keys plus ``bd_size``; the mask and end ids come from the tokenizer."""

    bd_size: int = 32
    mask_token_id: int = -1
    end_token_id: int = -1

    @classmethod
    def from_dict(cls, cfg: dict, added_tokens: dict[str, int] | None = None) -> "FastDLLMv2Config":
        if ARCHITECTURE not in (cfg.get("architectures") or []):
            raise ValueError(f"not a Fast-dLLM v2 checkpoint: architectures {cfg.get('architectures')}")
        if cfg.get("use_sliding_window"):
            raise ValueError("reference Fast-dLLM v2 has no sliding window")
        added = added_tokens or {}
        missing = [t for t in (MASK_TOKEN, END_TOKEN) if t not in added]
        if missing:
            raise ValueError(f"tokenizer has no added token(s) {missing}")
        return cls(
            **qwen2_fields(cfg),
            bd_size=int(cfg["bd_size"]),
            mask_token_id=added[MASK_TOKEN],
            end_token_id=added[END_TOKEN],
        )


class FastDLLMv2(BlockCausalForwards, Qwen2):
    """Fast-dLLM v2 (Qwen2 weights) with block-causal forwards. ``eos_ids`` is
    ``{<|im_end|>}`` read from the tokenizer."""

    family = "fast_dllm_v2"  # not a ``fast_dllm.FAMILIES`` family: decode with this module's generate
    config_class = FastDLLMv2Config

    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype | None = None) -> "FastDLLMv2":
        """config.json (Qwen2 keys + ``bd_size``), the safetensors shards
        (``dtype`` casts them; default: as stored), the mask id ``|<MASK>|``
        and the end id ``<|im_end|>`` from the tokenizer files."""
        cfg, weights, _ = load_checkpoint(path, dtype)
        config = FastDLLMv2Config.from_dict(cfg, read_added_tokens(path))
        model = cls(config, weights, eos_ids={config.end_token_id})
        model.checkpoint = Path(path)
        return model

    # --- the three kinds of forward, each with its attention rule spelled out ----------

    def prefill(self, ids, block_size: int | None = None) -> ForwardOutput:
        """The block-causal forward over ``ids`` at positions ``0..n`` (blocks of ``bd_size``)."""
        return BlockCausalForwards.prefill(self, ids, block_size or self.config.bd_size)

    def block_forward(self, ids, start: int, cache: KVCache, block_size: int | None = None) -> ForwardOutput:
        """Queries ``ids`` at ``start..`` over the exact cache of ``[0, start)`` (blocks of ``bd_size``)."""
        return BlockCausalForwards.block_forward(self, ids, start, cache, block_size or self.config.bd_size)

    @torch.no_grad()
    def sub_block_forward(self, ids, start: int, side: KVCache, block_size: int | None = None) -> ForwardOutput:
        """Queries ``ids`` at positions ``start..start+n`` over ``side``, the
        exact prefix followed by the current block's side cache; the queries'
        fresh K/V overwrite rows ``[start, start+n)`` of ``side`` in place."""
        bs = block_size or self.config.bd_size
        n, keys_len = len(ids), side[0][0].shape[1]
        allowed = block_causal(torch.arange(start, start + n), torch.arange(keys_len), bs)
        return self.forward(torch.as_tensor(ids), start, dual_keys(side, start), allowed)


# ---------------------------------------------------------------------------------------
# Commit rule (pure functions).
# ---------------------------------------------------------------------------------------


def choose(
    logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows' logits ``[n, V]`` (model dtype) -> ``(pred [n], conf [n])``, conf
    in the model dtype. Greedy: the max of ``softmax(logits)``. Sampled:
    ``softmax(logits / T)``, top-p filter, renormalise, one multinomial draw
    per row; conf = the drawn token's renormalised probability."""
    if temperature == 0:
        conf, pred = torch.softmax(logits, dim=-1).max(dim=-1)
        return pred, conf
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    beyond = sorted_probs.cumsum(dim=-1) > top_p
    # keep the first token whose running sum reaches top_p, drop the ones after it
    drop_sorted = torch.cat([torch.zeros_like(beyond[:, :1]), beyond[:, :-1]], dim=-1)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    probs = probs.masked_fill(drop, 0)
    probs = probs / probs.sum(dim=-1, keepdim=True)
    pred = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return pred, probs.gather(-1, pred[:, None]).squeeze(-1)


def commit_positions(conf: torch.Tensor, candidates: torch.Tensor, threshold: float) -> list[int]:
    """Indices to commit: every candidate with ``conf > threshold`` (tensor vs
    Python float: the threshold is rounded to conf's dtype), and always the
    most confident candidate (ties: the leftmost)."""
    conf = torch.where(candidates, conf, torch.full_like(conf, float("-inf")))
    chosen = conf > threshold
    chosen[int(torch.argmax(conf))] = True
    return torch.nonzero(chosen & candidates).flatten().tolist()


def greedy_token(logits_row: torch.Tensor, mask_id: int, suppress_mask_logit: bool) -> int:
    """The prefill / commit-forward token: argmax of one row (always greedy)."""
    if suppress_mask_logit:
        logits_row = logits_row.clone()
        logits_row[mask_id] = float("-inf")
    return int(torch.argmax(logits_row))


# ---------------------------------------------------------------------------------------
# The block loop.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forward:
    """One forward of a run: ``kind`` (prefill / block / sub_block / commit),
    ``start`` (canvas index of its first query token), ``position`` (the
    rotary position of that token; differs from ``start`` only under quirk
    Q1), ``tokens`` (the query tokens as fed) and ``committed`` (canvas
    indices it decided: the denoising commits, or the appended argmax)."""

    kind: str
    start: int
    position: int
    tokens: tuple[int, ...]
    committed: tuple[int, ...] = ()


@dataclass
class V2Result(Result):
    """``fast_dllm.Result`` (tokens, forwards, canvas, commits per denoising
    forward) plus ``trace``: every forward, in order."""

    trace: list[Forward] = field(default_factory=list)


@dataclass
class _Decoder:
    """Mutable decoding state of one request. The canvas ``x`` is a list of
    token ids; canvas index ``i`` sits at rotary position ``i - origin``."""

    model: FastDLLMv2
    x: list[int]
    max_tokens: int
    threshold: float
    sub: int
    bs: int
    block_cache: bool
    temperature: float
    top_p: float
    generator: torch.Generator | None
    eos_ids: frozenset[int]
    suppress_mask_logit: bool
    quirks: bool
    min_tokens: int = 0
    grammar: object | None = None
    prompt_len: int = 0
    origin: int = 0
    cache: KVCache = field(default_factory=list)
    side: KVCache | None = None
    commits: list[int] = field(default_factory=list)
    trace: list[Forward] = field(default_factory=list)
    logprob_rows: dict[int, torch.Tensor] | None = None   # None: not recorded

    @property
    def mask(self) -> int:
        return self.model.mask_id

    def generated(self) -> int:
        return len(self.x) - self.prompt_len

    def end_reached(self) -> bool:
        """An end token in ``x[P:]`` with no MASK before its first occurrence."""
        for token in self.x[self.prompt_len :]:
            if token == self.mask:
                return False
            if token in self.eos_ids:
                return True
        return False

    def prefix_complete(self) -> bool:
        """A constrained request emits its committed prefix at once: the
        engine stops once that prefix holds every wanted token."""
        end = self.prompt_len + self.max_tokens
        return (self.grammar is not None and len(self.x) >= end
                and self.mask not in self.x[self.prompt_len:end])

    def done(self) -> bool:
        return self.end_reached() or self.generated() >= self.max_tokens

    def record(self, kind: str, start: int, tokens, committed=()) -> None:
        self.trace.append(Forward(kind, start, start - self.origin, tuple(tokens), tuple(committed)))

    # --- the loop -----------------------------------------------------------------

    def run(self) -> None:
        self.prompt_len = len(self.x)
        self.prefill()
        while not self.done():
            s = self.bs * (len(self.x) // self.bs)
            self.x.extend([self.mask] * (s + self.bs - len(self.x)))
            self.side = None  # the sub-block cache lives for one block
            for a in range(s, s + self.bs, self.sub):
                if not self.decode_sub_block(s, a, a + self.sub):
                    return
            if self.done():
                return
            self.commit_forward(s)

    def prefill(self) -> None:
        P, bs = len(self.x), self.bs
        self.cache = empty_cache(self.model)
        if self.quirks and P == bs:  # Q1: no prefill, positions restart at 0
            self.origin = bs
            return
        if P < bs:  # the whole prompt is the first block's tail
            return
        base = bs * (P // bs)
        out = self.model.prefill(self.x[:base], bs)
        self.cache = out.kv
        committed = ()
        if P % bs == 0:
            self.x.append(self.next_token(out.logits[-1]))
            committed = (P,)
        self.record("prefill", 0, self.x[:base], committed)

    def decode_sub_block(self, s: int, a: int, b: int) -> bool:
        """Denoise ``x[a:b]`` until it holds no MASK; False when the end-token
        stop fires (before a forward)."""
        steps = 0
        while self.mask in self.x[a:b]:
            if self.end_reached() or self.prefix_complete():
                return False
            if steps > 4 * (b - a):
                raise RuntimeError("sub-block cannot finish (the model keeps predicting MASK?)")
            self.denoise(s, a, b)
            steps += 1
        return True

    def denoise(self, s: int, a: int, b: int) -> None:
        """One denoising forward for sub-block ``[a, b)`` of block ``[s, s+bs)``
        and its commits."""
        x, model = self.x, self.model
        if not self.block_cache or self.side is None or x[a] == self.mask:
            kind, start, tokens = "block", s, x[s : s + self.bs]
            out = model.block_forward(tokens, s - self.origin, self.cache, self.bs)
            if self.block_cache:  # a fresh side cache: exact prefix + this block's K/V
                self.side = append_kv(self.cache, out.kv)
            logits = shift_right(out.logits)[a - s : b - s]
        else:
            kind, start, tokens = "sub_block", a, x[a:b]
            out = model.sub_block_forward(tokens, a - self.origin, self.side, self.bs)
            logits = shift_right(out.logits)
        raw, p0, prefix = logits, None, None
        if self.suppress_mask_logit:
            logits = logits.clone()
            logits[:, self.mask] = float("-inf")
        logits = suppress_early_ends(logits, a - self.prompt_len, self.min_tokens, self.eos_ids)
        if self.grammar is not None:  # the sub-block's first MASK is decided under the grammar
            p0 = x[a:b].index(self.mask)
            prefix = x[self.prompt_len : a + p0]
            logits = grammar_masked(logits, p0, self.grammar, prefix)
        pred, conf = choose(logits, self.temperature, self.top_p, self.generator)
        candidates = torch.tensor([t == self.mask for t in x[a:b]])
        chosen = commit_positions(conf, candidates, self.threshold)
        if self.grammar is not None:
            chosen = grammar_run(self.grammar, prefix, p0, chosen, lambda i: int(pred[i]))
        for i in chosen:
            x[a + i] = int(pred[i])
            if self.logprob_rows is not None:
                self.logprob_rows[a + i] = logprob_row(
                    raw[i], self.mask, *((self.grammar, prefix) if i == p0 else ()))
        self.commits.append(len(chosen))
        self.record(kind, start, tokens, [a + i for i in chosen])

    def commit_forward(self, s: int) -> None:
        """The finished block's K/V joins the exact cache; its last row's
        greedy argmax opens the next block."""
        tokens = self.x[s : s + self.bs]
        out = self.model.block_forward(tokens, s - self.origin, self.cache, self.bs)
        self.cache = append_kv(self.cache, out.kv)
        self.x.append(self.next_token(out.logits[-1]))
        self.record("commit", s, tokens, [s + self.bs])

    def next_token(self, row: torch.Tensor) -> int:
        """A write forward's greedy token for position ``len(x)``."""
        if self.logprob_rows is not None:
            self.logprob_rows[len(self.x)] = logprob_row(
                row, self.mask, *((self.grammar, self.x[self.prompt_len:])
                                  if self.grammar is not None else ()))
        row = suppress_early_ends(row[None], len(self.x) - self.prompt_len, self.min_tokens,
                                  self.eos_ids)[0]
        if self.grammar is not None:  # the next block's first position, after a decided prefix
            row = grammar_masked(row[None], 0, self.grammar, self.x[self.prompt_len :])[0]
        return greedy_token(row, self.mask, self.suppress_mask_logit)

    def output(self) -> list[int]:
        generated = self.x[self.prompt_len :]
        for i, token in enumerate(generated):
            if token in self.eos_ids:
                generated = generated[: i + 1]
                break
        return generated[: self.max_tokens]


def generate(
    model: FastDLLMv2,
    prompt_ids: list[int],
    *,
    max_tokens: int,
    threshold: float = DEFAULT_THRESHOLD,
    sub_block_length: int = DEFAULT_SUB_BLOCK,
    block_cache: bool = False,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    eos_ids: Iterable[int] | None = None,
    block_size: int | None = None,
    suppress_mask_logit: bool = True,
    quirks: bool = False,
    min_tokens: int = 0,
    grammar=None,
    logprobs: bool = False,
) -> V2Result:
    """Fast-dLLM v2 decoding of one request (see the module docstring).

    ``max_tokens``: generated tokens wanted (whole blocks are decoded, the
    output is cut). ``threshold``: strict confidence bar (1.0: one token per
    forward). ``block_cache``: the sub-block ("DualCache") forwards.
    ``eos_ids``: default the model's (``<|im_end|>``). ``block_size``: default
    the config's ``bd_size``. ``quirks``: reproduce the published code's Q1.
    ``grammar``: an acceptor (``grammar.Acceptor``): each denoising forward
    commits only a left-to-right run from the sub-block's first MASK, which
    is decided under the grammar's mask, as is a write forward's token
    (docs/options.md, "Structured output"); None decodes as without it.
    ``logprobs``: also record ``logprob_rows`` (module docstring)."""
    bs = block_size or model.config.bd_size
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    if sub_block_length < 1 or bs % sub_block_length:
        raise ValueError("block_size must be a multiple of sub_block_length")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError("need temperature >= 0 and 0 < top_p <= 1")
    if not prompt_ids:
        raise ValueError("empty prompt")
    if model.mask_id in prompt_ids:
        raise ValueError("the prompt contains the mask token")
    if grammar is not None and not suppress_mask_logit:
        raise ValueError("a grammar needs suppress_mask_logit (a MASK cannot join a committed run)")
    dec = _Decoder(
        model=model,
        x=[int(t) for t in prompt_ids],
        max_tokens=max_tokens,
        threshold=threshold,
        sub=sub_block_length,
        bs=bs,
        block_cache=block_cache,
        temperature=temperature,
        top_p=top_p,
        generator=generator,
        eos_ids=frozenset(model.eos_ids if eos_ids is None else eos_ids),
        suppress_mask_logit=suppress_mask_logit,
        quirks=quirks,
        min_tokens=min_tokens,
        grammar=grammar,
        logprob_rows={} if logprobs else None,
    )
    dec.run()
    return V2Result(
        tokens=dec.output(),
        forwards=len(dec.trace),
        canvas=list(dec.x),
        commits=dec.commits,
        logprob_rows=dec.logprob_rows or {},
        trace=dec.trace,
    )
