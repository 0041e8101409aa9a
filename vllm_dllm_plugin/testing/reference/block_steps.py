"""What the SDAR and LLaDA2.x reference loops share: the prediction, the
step quota, the commit choice, and the count of forwards an engine with an
exact block cache runs.

Plain loops over positions (batch 1), written from the published loops as
restated in ``shared/docs/sdar-semantics.md`` and ``llada2-semantics.md``;
the engine's batched rules are not used here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .fast_dllm import Result


def choose(logits: torch.Tensor, mask_id: int, *, conf_dtype: torch.dtype | None,
           temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> tuple[list[int], list[float]]:
    """Rows' logits -> (token, confidence) per row, the mask id never chosen.

    Greedy: the logits' argmax; its confidence is the softmax probability in
    ``conf_dtype`` (None: the logits' dtype; SDAR keeps the model dtype,
    LLaDA2.x upcasts to float32). Sampled: ``logits / T`` (float32), the
    ``top_k`` largest kept, softmax, the sorted prefix whose mass before each
    token is below ``top_p`` kept, renormalised, one multinomial draw per row;
    the confidence is the drawn token's filtered probability."""
    logits = logits.clone()
    logits[:, mask_id] = float("-inf")
    if temperature == 0:
        scores = logits if conf_dtype is None else logits.to(conf_dtype)
        probs = torch.softmax(scores, dim=-1)
        tokens = [int(torch.argmax(row)) for row in scores]
        return tokens, [probs[i, t] for i, t in enumerate(tokens)]
    tokens, confs = [], []
    for row in logits.float() / temperature:
        if top_k > 0:
            kth = torch.sort(row, descending=True).values[top_k - 1]
            row = torch.where(row < kth, torch.full_like(row, float("-inf")), row)
        probs = torch.softmax(row, dim=-1)
        if top_p < 1.0:
            ordered, order = torch.sort(probs, descending=True)
            before = torch.cumsum(ordered, 0) - ordered
            drop = order[before >= top_p]
            probs[drop] = 0.0
        probs = probs / probs.sum()
        token = int(torch.multinomial(probs, 1, generator=generator))
        tokens.append(token)
        confs.append(probs[token])
    return tokens, confs


def quota(block: int, steps: int, step: int) -> int:
    """At least this many commits at step ``step`` of ``steps`` (from the block length)."""
    return block // steps + (1 if step < block % steps else 0)


def ranked(candidates: list[int], conf: list) -> list[int]:
    """Candidate offsets, most confident first; ties to the lower position."""
    return sorted(candidates, key=lambda i: (-float(conf[i]), i))


def passes(value, threshold: float) -> bool:
    """``conf > threshold`` as a tensor compared with a Python float: the
    threshold is rounded to the confidence's dtype."""
    return bool(value > threshold)


@dataclass
class SteppedResult(Result):
    """``Result`` (``forwards`` = the count of an engine with an exact block
    cache: see :class:`ForwardTally`) plus the published loop's own count,
    the tokens each editing forward replaced, the forwards' kinds, and the
    canvas indices an edit replaced at least once (LLaDA2.1)."""

    published_forwards: int = 0
    edits: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    edited: set[int] = field(default_factory=set)


@dataclass
class ForwardTally:
    """Forwards of an engine that keeps finished blocks' exact K/V: one
    prefill for the prompt's whole blocks, every denoising forward, and a
    commit forward writing each finished block that the request goes on
    after (none when the block's last forward changed nothing: its K/V is
    already final). Counting stops once the output can no longer change."""

    kinds: list[str] = field(default_factory=list)
    done: bool = False

    def add(self, kind: str) -> None:
        if not self.done:
            self.kinds.append(kind)

    @property
    def count(self) -> int:
        return len(self.kinds)
