"""The attention every family's layers get, and the backends it may not run on.

Each family class is a vLLM model class built under
:func:`vllm_dllm_plugin.patch.non_causal_attention.non_causal_attention`, so
its layers are ``PrefillPrefixLMAttention`` (paged KV cache, each query row
attends to KV slots ``[0, seq_len)`` of its request).  :func:`check_layers`
runs once the model is built: every attention layer must be that class, and
the backend each layer actually got must not be FlashInfer, whose non-causal
path is not verified for a bidirectional canvas with mid-canvas queries (vLLM
itself avoids it for non-causal attention).  The start-up checks
(``--attention-backend``) refuse the same backends by the same function.
"""

from __future__ import annotations

from torch import nn

from vllm_dllm_plugin.patch.non_causal_attention import non_causal_layers


class UnsupportedDeployment(ValueError):
    """A start-up setting diffusion decoding cannot run under."""


def refuse_backend(name: str) -> None:
    """Raise for an attention backend diffusion decoding must not use."""
    if "FLASHINFER" in name.upper():
        raise UnsupportedDeployment(
            f"attention backend {name} is not supported for diffusion models: "
            "FlashInfer's non-causal path is not verified for a bidirectional canvas "
            "with mid-canvas queries (vLLM avoids it for non-causal attention too). "
            "Use --attention-backend FLASH_ATTN (fp16/bf16) or TRITON_ATTN.")


def check_layers(model: nn.Module) -> None:
    """Every attention layer of ``model`` is non-causal and on an allowed backend."""
    for layer in non_causal_layers(model):
        refuse_backend(layer.attn_backend.get_name())


__all__ = ["UnsupportedDeployment", "check_layers", "refuse_backend"]
