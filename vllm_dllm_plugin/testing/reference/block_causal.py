"""Block-causal forwards shared by the block-diffusion references
(Fast-dLLM v2, SDAR, LLaDA2.x).

Attention is causal across blocks of ``bs`` positions (counted from the
first prompt token) and bidirectional inside one: a query at position ``q``
reads a key at ``k`` iff ``q // bs >= k // bs``.  The mask is spelled out
here, never derived from an engine's windows, so the references stay
independent of the engine's paging and segments.

:class:`BlockCausalForwards` adds the two forwards every such loop uses to a
model with the :meth:`~common.ReferenceModel.forward` signature
``forward(ids, start, keys, allowed) -> ForwardOutput``.
"""

from __future__ import annotations

import torch

from .common import ForwardOutput, KVCache, fresh_keys, prefix_keys


def block_causal(q_pos: torch.Tensor, k_pos: torch.Tensor, block_size: int) -> torch.Tensor:
    """``allowed[i, j]``: query at position ``q_pos[i]`` may read key at ``k_pos[j]``."""
    return (q_pos[:, None] // block_size) >= (k_pos[None, :] // block_size)


def check_cache(cache: KVCache, length: int) -> None:
    assert all(k.shape[1] == length for k, _ in cache), f"exact cache must cover [0, {length})"


def empty_cache(model) -> KVCache:
    """An exact cache of no positions (``model.geometry`` gives its shape)."""
    g = model.geometry
    empty = torch.zeros(g.n_kv_heads, 0, g.head_dim, dtype=model.dtype)
    return [(empty, empty) for _ in model.layers]


def append_kv(cache: KVCache, kv: KVCache) -> KVCache:
    """The exact cache extended by a block's K/V, layer by layer."""
    return [(torch.cat([ck, k], dim=1), torch.cat([cv, v], dim=1)) for (ck, cv), (k, v) in zip(cache, kv)]


class BlockCausalForwards:
    """Mixin: the block-causal forwards of a reference model."""

    @torch.no_grad()
    def prefill(self, ids, block_size: int) -> ForwardOutput:
        """One forward over ``ids`` at positions ``0..n`` with the block-causal
        mask: the exact K/V (and logits) of every position."""
        pos = torch.arange(len(ids))
        return self.forward(torch.as_tensor(ids), 0, fresh_keys, block_causal(pos, pos, block_size))

    @torch.no_grad()
    def block_forward(self, ids, start: int, cache: KVCache, block_size: int) -> ForwardOutput:
        """Queries ``ids`` at positions ``start..start+n`` over the exact cache
        of ``[0, start)`` plus their own fresh K/V, block-causal (all pairs
        allowed when ``ids`` is one aligned block). ``kv``: the queries' K/V."""
        n = len(ids)
        check_cache(cache, start)
        allowed = block_causal(torch.arange(start, start + n), torch.arange(start + n), block_size)
        return self.forward(torch.as_tensor(ids), start, prefix_keys(cache), allowed)
