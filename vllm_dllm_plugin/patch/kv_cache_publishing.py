"""Only final K/V reaches vLLM's prefix cache.

Why: vLLM publishes a request's full KV pages to the prefix cache as soon as
their tokens are hashed and scheduled (``KVCacheManager.allocate_slots`` ->
``KVCacheCoordinator.cache_blocks``).  Under block diffusion the slots of the
prompt tail (prompt tokens, hence hashed) are rewritten by every denoising
step of the current block until its commit forward; publishing them would
hand later requests stale K/V.  (The scheduler also pads windows with MASK
placeholders, which have no hashes.)

What: wraps ``cache_blocks`` of one scheduler's own KV cache coordinator (an
instance attribute; vLLM's classes are untouched): the number of tokens to
publish is capped at ``final_end(request)``, where the request's K/V is final
(the end of its last prefill or commit forward, counted by its canvas).

When it can go: once vLLM lets a scheduler say how far a request's K/V may
be cached (e.g. a ``num_cacheable_tokens`` hook on the request).
"""

from __future__ import annotations

from collections.abc import Callable

_MARK = "__dllm_final_kv_only__"


def apply(kv_cache_manager, final_end: Callable[[object], int]) -> None:
    coordinator = kv_cache_manager.coordinator
    original = coordinator.cache_blocks
    if getattr(original, _MARK, False):
        return

    def cache_blocks(request, num_computed_tokens: int) -> None:
        original(request, min(num_computed_tokens, final_end(request)))

    setattr(cache_blocks, _MARK, True)
    coordinator.cache_blocks = cache_blocks
