"""LLaDA2.x (``LLaDA2MoeModelLM``): vLLM's ``BailingMoeV2ForCausalLM``, attention block-causal.

LLaDA2.0 / 2.1 are Ling-2.0 (BailingMoeV2) MoE checkpoints decoded as block
diffusion (blocks of 32): the hub tensor names (``model.word_embeddings``,
``attention.query_key_value``, ``attention.{query,key}_layernorm``,
``attention.dense``, ``mlp.gate.weight`` / ``mlp.gate.expert_bias``,
``mlp.experts.E.{gate,up,down}_proj``, ``mlp.shared_experts.*``,
``model.norm``, ``lm_head``) and the layer math (per-head q/k RMSNorm,
rotary on the first half of each head, a dense first layer, grouped sigmoid
routing with an expert-score bias, one shared expert) are vLLM's
``vllm.model_executor.models.bailing_moe`` as they stand: no weight renaming.
The one change is the attention layer: the class is built under
:func:`~vllm_dllm_plugin.patch.non_causal_attention.non_causal_attention`
with :class:`~vllm_dllm_plugin.models.attention.BlockCausalAttention`, which
``BailingAttention`` builds from the module's global ``Attention``.  As for
Fast-dLLM v2, every forward is a window whose keys end at a block boundary
(or a prefill of whole blocks, one attention segment each), where non-causal
paged attention is exactly block-causal; finished blocks' K/V is exact, so
prefix caching stays on.

The MoE runs through vLLM's ``FusedMoE``; on the CPU build routing is
``CPURouter``'s ``_grouped_topk`` (fp32 sigmoid, bias for selection only,
sum-of-top-2 group scores, unbiased weights renormalised and scaled by
``routed_scaling_factor``) and the experts ``cpu_fused_moe``.  The router
logits reach it in float32 as the published model routes on them
(:mod:`~vllm_dllm_plugin.patch.bailing_moe_router_logits`: vLLM rounds them to
the hidden dtype, bf16, first).
"""

from vllm.config import VllmConfig
from vllm.model_executor.models import bailing_moe
from vllm.model_executor.models.bailing_moe import BailingMoeV2ForCausalLM

from vllm_dllm_plugin.models.attention import BlockCausalAttention, check_layers
from vllm_dllm_plugin.patch.bailing_moe_router_logits import route_on_router_dtype
from vllm_dllm_plugin.patch.non_causal_attention import non_causal_attention


class LLaDA2MoeModelLM(BailingMoeV2ForCausalLM):
    """vLLM's ``BailingMoeV2ForCausalLM`` with block-causal paged attention,
    routing on float32 router logits."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        with non_causal_attention(bailing_moe, layer_cls=BlockCausalAttention):
            super().__init__(vllm_config=vllm_config, prefix=prefix)
        check_layers(self)
        route_on_router_dtype(self)
