"""Build a vLLM model class with non-causal paged attention in its layers.

Why: a diffusion LLM is a stock decoder (Qwen2, Llama, Qwen3, ...) whose
attention runs bidirectionally over the canvas while still writing a paged KV
cache.  vLLM has the layer for that, ``PrefillPrefixLMAttention`` (decoder KV
cache, ``causal=False`` on every metadata build: each query row of a request
attends to KV slots ``[0, seq_len)`` of its request), but its model classes
build their attention with a hard-wired choice between ``Attention`` (causal
decoder) and ``EncoderOnlyAttention`` (non-causal, no KV cache); none takes an
attention class or a prefix-LM ``attn_type``.

What it changes: while :func:`non_causal_attention` is active (and only in
the calling process), the global name ``Attention`` of the given vLLM model
modules (e.g. ``vllm.model_executor.models.qwen2``) is bound to
``PrefillPrefixLMAttention`` (or the caller's subclass of it), so the model
class's own ``__init__`` builds
that layer where it would build a causal one, with the arguments it would
pass anyway (heads, scale, KV heads, cache and quant config, prefix).  Nothing
causal is built and replaced afterwards, so each layer registers itself in
``compilation_config.static_forward_context`` once, under its own prefix.  On
exit the name is bound back to vLLM's ``Attention``; construction is
serialised by a lock.  Model code outside the ``with`` block and other model
modules are unaffected.  :func:`non_causal_layers` checks the result: every
attention layer of the built model must be the non-causal one.

When it can go: once vLLM's model classes accept an attention class (or a
prefix-LM ``attn_type`` that keeps a KV cache) as a constructor argument;
then the family classes pass it instead of entering this context.
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Iterator

from torch import nn
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.attention.prefill_prefix_lm_attention import (
    PrefillPrefixLMAttention,
)

_LOCK = threading.RLock()


@contextlib.contextmanager
def non_causal_attention(*model_modules: types.ModuleType,
                         layer_cls: type = PrefillPrefixLMAttention) -> Iterator[None]:
    """While active, ``Attention`` in each of ``model_modules`` (vLLM model
    modules that build their layers from that global name) is ``layer_cls``,
    ``PrefillPrefixLMAttention`` or a subclass of it.

    Raises if a module does not bind ``Attention`` to vLLM's class (vLLM
    changed how the module builds attention: the rebinding would do nothing).
    """
    if not issubclass(layer_cls, PrefillPrefixLMAttention):
        raise TypeError(f"{layer_cls.__name__} is not a PrefillPrefixLMAttention")
    with _LOCK:
        for module in model_modules:
            if getattr(module, "Attention", None) is not Attention:
                raise RuntimeError(
                    f"{module.__name__} does not build its layers from vLLM's Attention "
                    "class; cannot make its attention non-causal")
        try:
            for module in model_modules:
                module.Attention = layer_cls
            yield
        finally:
            for module in model_modules:
                module.Attention = Attention


def non_causal_layers(model: nn.Module) -> list[PrefillPrefixLMAttention]:
    """The attention layers of ``model``; raises unless every one of them is
    ``PrefillPrefixLMAttention`` (and there is at least one)."""
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    causal = [type(m).__name__ for m in layers if not isinstance(m, PrefillPrefixLMAttention)]
    if not layers or causal:
        raise RuntimeError(
            f"{type(model).__name__}: expected only PrefillPrefixLMAttention layers, "
            f"found {len(layers)} attention layers ({causal or 'none'} not non-causal)")
    return layers


__all__ = ["non_causal_attention", "non_causal_layers"]
