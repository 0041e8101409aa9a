"""LLaDA2.x's hub config (``model_type: llada2_moe``) without its remote code.

inclusionAI/LLaDA2.0-mini, -flash and LLaDA2.1-* ship
``configuration_llada2_moe.py`` / ``modeling_llada2_moe.py`` that import only
under transformers 4.x (under 5: ImportError ``is_torch_fx_available``), so
the config cannot come from ``auto_map``.  :class:`LLaDA2MoeConfig` holds
every key of the hub config.json (defaults: LLaDA2.0-mini's values);
registered with ``AutoConfig`` it wins over ``auto_map``.

The attribute names are those vLLM's ``BailingMoeV2ForCausalLM``
(``vllm/model_executor/models/bailing_moe.py``) reads: ``head_dim``,
``use_qk_norm`` with ``use_rmsnorm`` (False would give LayerNorm q/k norms;
LLaDA2's are RMSNorms), ``rotary_dim`` / ``partial_rotary_factor`` and
``rope_parameters``, ``first_k_dense_replace``, ``n_group`` / ``topk_group``,
``score_function`` (sigmoid) with ``moe_router_enable_expert_bias``,
``routed_scaling_factor``, ``norm_topk_prob``, ``num_shared_experts``,
``moe_intermediate_size``, ``router_dtype`` ("fp32"), ``use_bias`` /
``use_qkv_bias``, ``embedding_dropout``, ``norm_head``,
``tie_word_embeddings``.

The config has neither a mask id nor an eos id: the published ``generate``
hard-codes MASK 156895 (``<|mask|>``) and EOS 156892 (``<|endoftext|>``, the
``pad_token_id``).  ``mask_token_id`` is replaced at start-up by the
tokenizer's ``<|mask|>`` id (the registry entry's ``mask_token``).
"""

from __future__ import annotations

from transformers import PretrainedConfig


class LLaDA2MoeConfig(PretrainedConfig):
    model_type = "llada2_moe"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, vocab_size=157184, hidden_size=2048, intermediate_size=5120,
                 num_hidden_layers=20, num_attention_heads=16, num_key_value_heads=4,
                 head_dim=None, hidden_act="silu", use_qkv_bias=False, use_bias=False,
                 use_qk_norm=True, use_rmsnorm=True, rms_norm_eps=1e-6, norm_head=False,
                 norm_softmax=False, tie_word_embeddings=False, embedding_dropout=0.0,
                 attention_dropout=0.0, output_dropout=0.0, initializer_range=0.02,
                 max_position_embeddings=16384, rope_theta=600000.0, rope_scaling=None,
                 partial_rotary_factor=0.5, rotary_dim=None, use_cache=True,
                 use_sliding_window=False, sliding_window=4096, max_window_layers=20,
                 pad_token_id=156892, num_experts=256, num_shared_experts=1,
                 num_experts_per_tok=8, n_group=8, topk_group=4, routed_scaling_factor=2.5,
                 moe_intermediate_size=512, first_k_dense_replace=1, norm_topk_prob=True,
                 score_function="sigmoid", moe_router_enable_expert_bias=True,
                 router_dtype="fp32", output_router_logits=False,
                 using_split_qkv_in_self_attention=False, mask_token_id=156895, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.hidden_act = hidden_act
        self.use_qkv_bias = use_qkv_bias
        self.use_bias = use_bias
        self.use_qk_norm = use_qk_norm
        self.use_rmsnorm = use_rmsnorm
        self.rms_norm_eps = rms_norm_eps
        self.norm_head = norm_head
        self.norm_softmax = norm_softmax
        self.embedding_dropout = embedding_dropout
        self.attention_dropout = attention_dropout
        self.output_dropout = output_dropout
        self.initializer_range = initializer_range
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.partial_rotary_factor = partial_rotary_factor
        # hub configs write rotary_dim (64) beside partial_rotary_factor (0.5);
        # vLLM prefers rotary_dim when set
        self.rotary_dim = rotary_dim
        self.use_cache = use_cache
        self.use_sliding_window = use_sliding_window
        self.sliding_window = sliding_window
        self.max_window_layers = max_window_layers
        self.num_experts = num_experts
        self.num_shared_experts = num_shared_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.n_group = n_group
        self.topk_group = topk_group
        self.routed_scaling_factor = routed_scaling_factor
        self.moe_intermediate_size = moe_intermediate_size
        self.first_k_dense_replace = first_k_dense_replace
        self.norm_topk_prob = norm_topk_prob
        self.score_function = score_function
        self.moe_router_enable_expert_bias = moe_router_enable_expert_bias
        self.router_dtype = router_dtype
        self.output_router_logits = output_router_logits
        self.using_split_qkv_in_self_attention = using_split_qkv_in_self_attention
        self.mask_token_id = mask_token_id
        # vLLM's BailingAttention writes partial_rotary_factor into
        # rope_parameters and passes it to get_rope; transformers 5 keeps rope
        # settings there (rope_theta alone is legacy).
        rope = dict(kwargs.pop("rope_parameters", None) or rope_scaling or {})
        rope.setdefault("rope_type", rope.pop("type", "default"))
        rope.setdefault("rope_theta", rope_theta)
        self.rope_parameters = rope
        super().__init__(pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs)
