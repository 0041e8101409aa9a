"""Token predictions and their confidences from the block rows' logits.

Only the rows that decide (masked block positions) ever reach this module,
so the vocabulary-wide work is bounded by ``block_length`` rows per request.
"""

from __future__ import annotations

import torch

# Rows per float64 chunk: bounds the temporary to ~rows x vocab x 8 bytes.
_CHUNK_ROWS = 256


def _float64_max_prob(logits: torch.Tensor, pred_logit: torch.Tensor) -> torch.Tensor:
    """``softmax(logits.double())[argmax]`` = ``1 / sum(exp(l - l_max))``."""
    out = torch.empty(logits.shape[0], dtype=torch.float64, device=logits.device)
    for start in range(0, logits.shape[0], _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        shifted = logits[rows].double() - pred_logit[rows].double()[:, None]
        out[rows] = torch.exp(shifted).sum(-1).reciprocal()
    return out


def gumbel_argmax(logits: torch.Tensor, temperature: torch.Tensor,
                  uniforms: torch.Tensor) -> torch.Tensor:
    """Fast-dLLM's sampling: argmax of ``exp(l) / (-log U) ** T`` in float64.

    Written in log space (same argmax, no overflow): ``l - T * log(-log U)``.
    """
    noise = torch.log(-torch.log(uniforms.double()))
    return (logits.double() - temperature.double()[:, None] * noise).argmax(-1)


def llada_predict(logits: torch.Tensor, mask_token_id: int,
                  temperature: torch.Tensor | None = None,
                  uniforms: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaDA: ``pred = argmax``, ``conf = softmax(float64)[pred]``.

    The mask id's logit is suppressed so that a prediction is never MASK.
    With ``temperature > 0`` rows, the prediction is Gumbel-sampled while
    the confidence stays the un-noised probability of that prediction.
    Returns ``(pred [N] int64, conf [N] float64)``.
    """
    logits = logits.clone()
    logits[:, mask_token_id] = float("-inf")
    pred = logits.argmax(-1)
    if temperature is not None and uniforms is not None:
        sampled = gumbel_argmax(logits, temperature, uniforms)
        pred = torch.where(temperature > 0, sampled, pred)
    pred_logit = logits.gather(-1, pred[:, None]).squeeze(-1)
    row_max = logits.max(-1).values
    # conf = exp(l_pred - l_max) / sum(exp(l - l_max))
    conf = _float64_max_prob(logits, row_max) * torch.exp(
        pred_logit.double() - row_max.double())
    return pred, conf


def dream_predict(logits: torch.Tensor, mask_token_id: int,
                  temperature: torch.Tensor | None = None,
                  uniforms: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream: ``conf, pred = softmax(logits).max(-1)`` in the model dtype.

    With ``temperature > 0`` rows the prediction is Gumbel-sampled and the
    confidence is the (un-noised) probability of that prediction.
    Returns ``(pred [N] int64, conf [N] in the logits dtype)``.
    """
    logits = logits.clone()
    logits[:, mask_token_id] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    conf, pred = probs.max(-1)
    if temperature is not None and uniforms is not None:
        sampled = gumbel_argmax(logits, temperature, uniforms)
        pred = torch.where(temperature > 0, sampled, pred)
        conf = probs.gather(-1, pred[:, None]).squeeze(-1)
    return pred, conf


def top_p_predict(logits: torch.Tensor, mask_token_id: int,
                  temperature: torch.Tensor | None = None,
                  uniforms: torch.Tensor | None = None,
                  top_p: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast-dLLM v2: greedy rows as Dream (softmax maximum in the model dtype).

    Rows with ``temperature > 0`` sample from ``softmax(logits / T)`` kept to
    the smallest set of most likely tokens whose mass reaches ``top_p``,
    renormalised: one inverse-CDF draw per row (``uniforms`` [N]); the
    confidence is the renormalised probability of the draw.
    Returns ``(pred [N] int64, conf [N] in the logits dtype)``.
    """
    pred, conf = dream_predict(logits, mask_token_id)
    if temperature is None or uniforms is None:
        return pred, conf
    rows = torch.nonzero(temperature > 0).squeeze(-1)
    if rows.numel() == 0:
        return pred, conf
    scaled = logits[rows].float() / temperature[rows, None].float()
    scaled[:, mask_token_id] = float("-inf")
    sorted_p, order = torch.softmax(scaled, dim=-1).sort(dim=-1, descending=True)
    mass_before = sorted_p.cumsum(-1) - sorted_p
    nucleus = mass_before < top_p[rows, None].float()
    sorted_p = torch.where(nucleus, sorted_p, 0.0)
    sorted_p = sorted_p / sorted_p.sum(-1, keepdim=True)
    draw = torch.searchsorted(sorted_p.cumsum(-1), uniforms[rows, None].float())
    draw = torch.minimum(draw, nucleus.sum(-1, keepdim=True) - 1)
    pred[rows] = order.gather(-1, draw).squeeze(-1)
    conf[rows] = sorted_p.gather(-1, draw).squeeze(-1).to(conf.dtype)
    return pred, conf


def filtered_predict(logits: torch.Tensor, mask_token_id: int,
                     temperature: torch.Tensor | None = None,
                     uniforms: torch.Tensor | None = None,
                     top_p: torch.Tensor | None = None,
                     top_k: torch.Tensor | None = None,
                     conf_dtype: torch.dtype | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """SDAR and LLaDA2.x: greedy rows take the logits' argmax with its
    softmax probability computed in ``conf_dtype`` (None: the logits' dtype,
    SDAR; float32, LLaDA2.x).

    Rows with ``temperature > 0`` sample as the published samplers do:
    ``logits / T``, keep the ``top_k`` largest (0: all), softmax, keep the
    sorted prefix whose mass before each token is below ``top_p``,
    renormalise, one inverse-CDF draw per row (``uniforms`` [N]); the
    confidence is the drawn token's filtered probability.
    Returns ``(pred [N] int64, conf [N])``.
    """
    logits = logits.clone()
    logits[:, mask_token_id] = float("-inf")
    scores = logits if conf_dtype is None else logits.to(conf_dtype)
    pred = scores.argmax(-1)
    conf = torch.softmax(scores, dim=-1).gather(-1, pred[:, None]).squeeze(-1)
    if temperature is None or uniforms is None:
        return pred, conf
    rows = torch.nonzero(temperature > 0).squeeze(-1)
    if rows.numel() == 0:
        return pred, conf
    scaled = logits[rows].float() / temperature[rows, None].float()
    if top_k is not None:
        k = top_k[rows].to(torch.int64)
        kth = torch.sort(scaled, dim=-1, descending=True).values.gather(
            -1, (k.clamp(min=1) - 1)[:, None])
        scaled = torch.where((k[:, None] > 0) & (scaled < kth), float("-inf"), scaled)
    sorted_p, order = torch.softmax(scaled, dim=-1).sort(dim=-1, descending=True)
    if top_p is not None:
        mass_before = sorted_p.cumsum(-1) - sorted_p
        keep = (mass_before < top_p[rows, None].float()) | (top_p[rows, None] >= 1.0)
        sorted_p = torch.where(keep, sorted_p, 0.0)
    sorted_p = sorted_p / sorted_p.sum(-1, keepdim=True)
    draw = torch.searchsorted(sorted_p.cumsum(-1), uniforms[rows, None].float())
    draw = torch.minimum(draw, (sorted_p > 0).sum(-1, keepdim=True) - 1)
    pred[rows] = order.gather(-1, draw).squeeze(-1)
    conf[rows] = sorted_p.gather(-1, draw).squeeze(-1).to(conf.dtype)
    return pred, conf


def float32_filtered_predict(logits: torch.Tensor, mask_token_id: int, *sampling
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaDA2.x: :func:`filtered_predict` with the logits upcast to float32."""
    return filtered_predict(logits, mask_token_id, *sampling, conf_dtype=torch.float32)
