"""LLaDA (``LLaDAModelLM``): OLMo-style names on the shared bidirectional transformer.

Hub weight names -> modules:
  ``transformer.wte``              -> ``embed_tokens``
  ``blocks.{i}.attn_norm``         -> ``layers.{i}.input_layernorm``
  ``blocks.{i}.{q,k,v}_proj``      -> ``layers.{i}.self_attn.qkv_proj`` (fused)
  ``blocks.{i}.attn_out``          -> ``layers.{i}.self_attn.o_proj``
  ``blocks.{i}.ff_norm``           -> ``layers.{i}.post_attention_layernorm``
  ``blocks.{i}.ff_proj``           -> ``layers.{i}.mlp.gate_up_proj`` shard 0 (SiLU branch)
  ``blocks.{i}.up_proj``           -> ``layers.{i}.mlp.gate_up_proj`` shard 1
  ``blocks.{i}.ff_out``            -> ``layers.{i}.mlp.down_proj`` (inside a block)
  ``transformer.ln_f``             -> ``norm``
  ``transformer.ff_out``           -> ``lm_head`` (the output head, top level)
"""

import torch

from vllm_dllm_plugin.models.transformer import DiffusionLM, ModelSpec


class LLaDAModelLM(DiffusionLM):

    WEIGHT_NAME_MAP = (
        (r"^model\.transformer\.ff_out\.", "lm_head."),
        (r"^model\.transformer\.wte\.", "model.embed_tokens."),
        (r"^model\.transformer\.ln_f\.", "model.norm."),
        (r"^model\.transformer\.blocks\.", "model.layers."),
        (r"\.attn_norm\.", ".input_layernorm."),
        (r"\.ff_norm\.", ".post_attention_layernorm."),
        (r"\.(q_proj|k_proj|v_proj)\.", r".self_attn.\1."),
        (r"\.attn_out\.", ".self_attn.o_proj."),
        (r"\.ff_out\.", ".mlp.down_proj."),
        (r"\.ff_proj\.", ".mlp.gate_proj."),
        (r"\.up_proj\.", ".mlp.up_proj."),
    )

    @classmethod
    def spec_from_config(cls, config) -> ModelSpec:
        return ModelSpec(
            hidden_size=config.d_model, num_heads=config.n_heads,
            num_kv_heads=config.n_kv_heads, num_layers=config.n_layers,
            intermediate_size=config.mlp_hidden_size, vocab_size=config.vocab_size,
            embedding_size=config.embedding_size,
            max_position=config.max_sequence_length, rope_theta=config.rope_theta,
            rms_norm_eps=config.rms_norm_eps,
            qkv_bias=bool(config.include_bias or config.include_qkv_bias),
            o_bias=bool(config.include_bias), mlp_bias=bool(config.include_bias),
            tie_embeddings=bool(config.weight_tying),
            rope_dtype=torch.float32)  # LLaDA's rope_full_precision
