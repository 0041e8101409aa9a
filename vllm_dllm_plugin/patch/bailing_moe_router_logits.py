"""Route LLaDA2.x's MoE on its float32 router logits (not bf16-rounded ones).

Why: vLLM's ``BailingMoE.forward`` (``vllm/model_executor/models/bailing_moe.py``)
computes the router logits in ``router_dtype`` (float32 for LLaDA2.x:
``GateLinear`` with float32 weights and output) and then casts them to the
hidden states' dtype (``router_logits.to(hidden_states.dtype)``) before
``FusedMoE`` routes, although that ``FusedMoE`` is built with
``router_logits_dtype=router_dtype``.  The published model routes on the
float32 logits (``shared/docs/llada2-semantics.md`` section 2).  In bfloat16
the rounding changes routing: on the tiny test checkpoint (8 experts, top-2,
4 groups) 31 of 54,464 token-layer routings (0.06%) of
tests/test_stepped_bf16.py's runs would pick another expert set (9 of 11,520
in another run), and the weights of the others move by up to 2.7e-3 (mean
3e-4, on weights summing to the scaling factor 2.5).
``FusedMoE`` on CPU takes float32 logits with bf16 hidden states as they
are (``CPURouter``'s ``_grouped_topk`` upcasts to float32 anyway).

What: :func:`route_on_router_dtype` gives every ``BailingMoE`` module of one
model instance (those our ``LLaDA2MoeModelLM`` builds), whose router runs in
float32, a ``forward`` that is vLLM's without that cast.  An instance
attribute, not a class patch: vLLM's own ``BailingMoeForCausalLM`` /
``BailingMoeV2ForCausalLM`` (Ling) keep vLLM's behaviour.  With float32 hidden
states the cast was a no-op: nothing changes there.

When it can go: once vLLM's ``BailingMoE.forward`` hands ``FusedMoE`` the
logits in ``router_dtype`` (the function then finds no cast and changes
nothing).
"""

from __future__ import annotations

import inspect
import types

import torch

_CAST = "router_logits.to(hidden_states.dtype)"


def _forward_on_router_dtype(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """vLLM's ``BailingMoE.forward`` less the cast of the router logits."""
    num_tokens, hidden_size = hidden_states.shape
    hidden_states = hidden_states.view(-1, hidden_size)
    router_logits, _ = self.gate(hidden_states)   # in router_dtype (float32)
    final_hidden_states = self.experts(hidden_states=hidden_states,
                                       router_logits=router_logits)
    return final_hidden_states.view(num_tokens, hidden_size)


def needed() -> bool:
    """vLLM's ``BailingMoE.forward`` still rounds the router logits."""
    from vllm.model_executor.models.bailing_moe import BailingMoE

    return _CAST in inspect.getsource(BailingMoE.forward)


def route_on_router_dtype(model: torch.nn.Module) -> int:
    """Patch the float32-router ``BailingMoE`` modules of ``model`` (idempotent);
    returns how many now route on float32 logits."""
    from vllm.model_executor.models.bailing_moe import BailingMoE

    if not needed():
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, BailingMoE) and module.router_dtype == torch.float32:
            module.forward = types.MethodType(_forward_on_router_dtype, module)
            count += 1
    return count
