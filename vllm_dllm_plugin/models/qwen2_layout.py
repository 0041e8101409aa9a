"""The Qwen2 checkpoint layout on the shared bidirectional transformer.

Dream and Fast-dLLM v2 are both Qwen2.5 checkpoints run as diffusion models:
hub weight names already are Qwen2's (``model.layers.{i}.self_attn.q_proj``
...), which is the naming used here, so no renaming is needed.  q/k/v carry
biases, o_proj does not; grouped-query attention; an untied head (7B) or one
tied to the embeddings (Fast-dLLM v2 1.5B).
"""

from vllm_dllm_plugin.models.transformer import DiffusionLM, ModelSpec


def _rope_theta(config) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:  # transformers 5 keeps it in rope_parameters
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return float(theta)


class Qwen2LayoutLM(DiffusionLM):

    @classmethod
    def spec_from_config(cls, config) -> ModelSpec:
        return ModelSpec(
            hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads, num_layers=config.num_hidden_layers,
            intermediate_size=config.intermediate_size, vocab_size=config.vocab_size,
            embedding_size=config.vocab_size,
            max_position=config.max_position_embeddings, rope_theta=_rope_theta(config),
            rms_norm_eps=config.rms_norm_eps, qkv_bias=True,
            tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)))
