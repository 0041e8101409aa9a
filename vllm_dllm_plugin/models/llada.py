"""LLaDA (``LLaDAModelLM``): vLLM's ``LlamaForCausalLM``, attention non-causal.

LLaDA's ``block_type: llama`` is Llama-shaped: pre-norm RMSNorm, rotary
attention (NeoX style), a SwiGLU MLP, optional biases.  So the module is
vLLM's Llama class (weight loading, tied head, quantization methods, LoRA),
built under :func:`~vllm_dllm_plugin.patch.non_causal_attention.non_causal_attention`
so that its layers are ``PrefillPrefixLMAttention``.  Two things differ:

* rotary embedding in float32 whatever the model dtype (the checkpoints'
  ``rope_full_precision``): :class:`LLaDAAttention` overrides Llama's
  ``_init_rotary_emb`` hook to build it with ``dtype=torch.float32``;
* OLMo-style hub weight names, renamed onto Llama's by :data:`LLADA_NAMES`:

  ``model.transformer.wte``         -> ``model.embed_tokens``
  ``model.transformer.blocks.{i}``  -> ``model.layers.{i}``
  ``attn_norm`` / ``ff_norm``       -> ``input_layernorm`` / ``post_attention_layernorm``
  ``{q,k,v}_proj`` / ``attn_out``   -> ``self_attn.{q,k,v}_proj`` / ``self_attn.o_proj``
  ``ff_proj`` (SiLU branch) / ``up_proj`` / ``ff_out`` (in a block)
                                    -> ``mlp.gate_proj`` / ``mlp.up_proj`` / ``mlp.down_proj``
  ``model.transformer.ln_f``        -> ``model.norm``
  ``model.transformer.ff_out``      -> ``lm_head`` (the output head, top level)

  Llama's own mapper then fuses q/k/v and gate/up as for any Llama checkpoint.

The config keys Llama reads come from :class:`~.llada_config.LLaDAConfig`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from vllm.config import VllmConfig
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.models import llama
from vllm.model_executor.models.llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
)
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper

from vllm_dllm_plugin.models.attention import DiffusionAttention, check_layers
from vllm_dllm_plugin.patch.non_causal_attention import non_causal_attention

LLADA_NAMES = WeightsMapper(orig_to_new_regex={
    # Applied in this order (the top-level head before the in-block ff_out);
    # a name ends at "." or at the end, so module paths (a quantization
    # config's ignore list, LoRA targets) map like weight names.
    re.compile(r"^model\.transformer\.ff_out(?=\.|$)"): "lm_head",
    re.compile(r"^model\.transformer\.wte(?=\.|$)"): "model.embed_tokens",
    re.compile(r"^model\.transformer\.ln_f(?=\.|$)"): "model.norm",
    re.compile(r"^model\.transformer\.blocks\."): "model.layers.",
    re.compile(r"\.attn_norm(?=\.|$)"): ".input_layernorm",
    re.compile(r"\.ff_norm(?=\.|$)"): ".post_attention_layernorm",
    re.compile(r"\.(q_proj|k_proj|v_proj)(?=\.|$)"): r".self_attn.\1",
    re.compile(r"\.attn_out(?=\.|$)"): ".self_attn.o_proj",
    re.compile(r"\.ff_out(?=\.|$)"): ".mlp.down_proj",
    re.compile(r"\.ff_proj(?=\.|$)"): ".mlp.gate_proj",
    re.compile(r"(?<!\.mlp)\.up_proj(?=\.|$)"): ".mlp.up_proj",
})


class LLaDAAttention(LlamaAttention):
    """Llama attention whose rotary embedding runs in float32."""

    def _init_rotary_emb(self, config, quant_config) -> None:
        self.rotary_emb = get_rope(
            self.head_dim, max_position=self.max_position_embeddings, is_neox_style=True,
            rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)},
            dtype=torch.float32)


class LLaDADecoderLayer(LlamaDecoderLayer):

    def __init__(self, vllm_config: VllmConfig, prefix: str = "", config=None) -> None:
        super().__init__(vllm_config, prefix=prefix, config=config,
                         attn_layer_type=LLaDAAttention)


class LLaDAModelLM(LlamaForCausalLM):
    """vLLM's ``LlamaForCausalLM`` with non-causal paged attention, float32
    rotary embedding and LLaDA's weight names."""

    hf_to_vllm_mapper = LLADA_NAMES | LlamaModel.hf_to_vllm_mapper

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        config = vllm_config.model_config.hf_config
        if config.embedding_size != config.vocab_size:
            raise ValueError(
                f"LLaDA checkpoints with embedding_size ({config.embedding_size}) != "
                f"vocab_size ({config.vocab_size}) are not supported (vLLM's Llama class "
                "has one size for the embedding, the head and the logits)")
        with non_causal_attention(llama, layer_cls=DiffusionAttention):
            super().__init__(vllm_config=vllm_config, prefix=prefix,
                             layer_type=LLaDADecoderLayer)
        check_layers(self)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights, mapper=LLADA_NAMES)
