"""Confidence-gated unmasking rules, batched over requests.

Every rule of Fast-dLLM accepts a *prefix* of the candidates sorted by
confidence (highest first, ties to the lower position), so each rule reduces
to "how many to commit" per request.  All functions work on a padded batch:
``conf`` is ``[R, B]`` (one row per request, one column per block position)
with ``-inf`` where a position is not a candidate (not masked, or padding).
"""

from __future__ import annotations

import torch

RULE_THRESHOLD = 0
RULE_FACTOR = 1
RULE_FIXED = 2
RULE_QUOTA = 3   # exactly the step's quota (SDAR's static and sequential strategies)
RULE_IDS = {"threshold": RULE_THRESHOLD, "factor": RULE_FACTOR, "fixed": RULE_FIXED,
            "quota": RULE_QUOTA}


def sort_candidates(conf: torch.Tensor, positional: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row descending; equal confidences keep the lower position first.

    ``positional`` [R] bool: those rows rank their candidates by position
    instead (SDAR's ``sequential``: the first masked positions first)."""
    if positional is not None and bool(positional.any()):
        by_position = -torch.arange(conf.shape[-1], device=conf.device, dtype=conf.dtype)
        key = torch.where(torch.isfinite(conf), by_position.expand_as(conf), conf)
        conf = torch.where(positional[:, None], key, conf)
    return torch.sort(conf, dim=-1, descending=True, stable=True)


def _in_dtype(bar: torch.Tensor, compare_dtype: torch.dtype | None) -> torch.Tensor:
    """Round a bar to the dtype confidences are compared in (exactly as a
    low-precision tensor compared with a Python float would)."""
    if compare_dtype is None:
        return bar
    return bar.to(compare_dtype).to(bar.dtype)


def threshold_count(sorted_conf: torch.Tensor, tau: torch.Tensor,
                    compare_dtype: torch.dtype | None = None,
                    strict: bool = False) -> torch.Tensor:
    """Candidates with ``conf >= tau`` (``conf > tau`` when ``strict``): a
    prefix of the sorted row."""
    bar = _in_dtype(tau, compare_dtype)[:, None]
    passes = sorted_conf > bar if strict else sorted_conf >= bar
    return passes.sum(-1)


def factor_count(sorted_conf: torch.Tensor, factor: torch.Tensor,
                 num_candidates: torch.Tensor,
                 compare_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Accept ranks ``r = 1, 2, ...`` while ``c_r >= 1 - f / (r + 1)``.

    Rank 1 always passes.  Quirk kept from the published code: when the first
    failing rank is the last candidate, it is accepted as well.
    """
    ranks = torch.arange(1, sorted_conf.shape[-1] + 1, device=sorted_conf.device,
                         dtype=sorted_conf.dtype)
    bar = _in_dtype(1.0 - factor[:, None].to(sorted_conf.dtype) / (ranks + 1.0),
                    compare_dtype)
    passes = sorted_conf >= bar
    passes[:, 0] = True
    accepted = passes.to(torch.int64).cumprod(-1).sum(-1)
    return torch.where(accepted == num_candidates - 1, num_candidates, accepted)


def fixed_count(masks_at_block_start: torch.Tensor, steps: torch.Tensor,
                step_index: torch.Tensor) -> torch.Tensor:
    """LLaDA's schedule: step ``i`` of ``k`` commits ``m // k + (i < m % k)``.

    ``k`` is capped at ``m`` so a short last block never has empty steps.
    """
    m = masks_at_block_start
    k = torch.minimum(steps, m).clamp(min=1)
    return m // k + (step_index < m % k).to(m.dtype)


def step_quota(block_length: int, steps: int, step_index: int) -> int:
    """The step schedule of SDAR and LLaDA2.0: step ``s`` of ``S`` commits at
    least ``B // S + (s < B % S)`` tokens (computed from the block length,
    not from the masks left; the quotas sum to ``B``)."""
    return block_length // steps + int(step_index < block_length % steps)


def num_to_commit(sorted_conf: torch.Tensor, num_candidates: torch.Tensor,
                  rule: torch.Tensor, value: torch.Tensor,
                  masks_at_block_start: torch.Tensor,
                  step_index: torch.Tensor,
                  compare_dtype: torch.dtype | None = None,
                  strict_threshold: bool = False,
                  quota: torch.Tensor | None = None) -> torch.Tensor:
    """Per request, how many of the top candidates to commit (at least one,
    at most every candidate).

    ``rule`` holds a ``RULE_*`` id per request and ``value`` its parameter
    (threshold, factor, or steps per block).  ``compare_dtype``: the dtype the
    confidences were computed in, when thresholds must be compared in it.
    ``strict_threshold``: the threshold rule commits ``conf > tau``.
    ``quota`` [R] (default 1): the threshold rule commits the passing
    candidates when at least ``quota`` pass, else the ``quota`` best, i.e.
    ``max(passing, quota)``; ``RULE_QUOTA`` commits exactly ``quota``.
    """
    if quota is None:
        quota = torch.ones_like(num_candidates)
    by_threshold = threshold_count(sorted_conf, value.to(sorted_conf.dtype), compare_dtype,
                                   strict_threshold)
    by_factor = factor_count(sorted_conf, value, num_candidates, compare_dtype)
    by_schedule = fixed_count(masks_at_block_start, value.to(torch.int64), step_index)
    count = torch.where(rule == RULE_THRESHOLD, torch.maximum(by_threshold, quota),
                        torch.where(rule == RULE_FACTOR, by_factor,
                                    torch.where(rule == RULE_QUOTA, quota, by_schedule)))
    return torch.minimum(count.clamp(min=1), num_candidates)


def edits(conf: torch.Tensor, pred: torch.Tensor, current: torch.Tensor,
          editable: torch.Tensor, edit_threshold: torch.Tensor,
          compare_dtype: torch.dtype | None = None) -> torch.Tensor:
    """LLaDA2.1's token editing, per row: an already decided position takes
    the prediction when it differs from its token and ``conf > threshold``
    (``edit_threshold`` per row; ``inf`` for rows of requests that do not
    edit)."""
    bar = _in_dtype(edit_threshold.to(conf.dtype), compare_dtype)
    return editable & (pred != current) & (conf > bar)


def commit_mask(sorted_index: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Scatter "top ``count`` of the sorted order" back to block positions."""
    ranks = torch.arange(sorted_index.shape[-1], device=sorted_index.device)
    take_sorted = ranks[None, :] < count[:, None]
    return torch.zeros_like(take_sorted).scatter(-1, sorted_index, take_sorted)
