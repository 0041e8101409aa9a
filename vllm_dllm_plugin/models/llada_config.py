"""LLaDA's hub config (``model_type: llada``) without its remote code.

Registered with ``AutoConfig`` so that hub checkpoints load offline, with or
without ``--trust-remote-code`` (a registered class wins over ``auto_map``).
The OLMo-style key names are mapped onto the names vLLM reads, and the keys
vLLM's ``LlamaForCausalLM`` reads (``hidden_act``, ``attention_bias``,
``qkv_bias``, ``mlp_bias``) are derived from LLaDA's: ``include_bias`` puts
biases on every projection, ``include_qkv_bias`` on q/k/v only.
"""

from transformers import PretrainedConfig


class LLaDAConfig(PretrainedConfig):
    model_type = "llada"
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "num_key_value_heads": "n_kv_heads",
        "max_position_embeddings": "max_sequence_length",
        "intermediate_size": "mlp_hidden_size",
        "hidden_act": "activation_type",
    }

    def __init__(self, d_model=4096, n_heads=32, n_kv_heads=None, n_layers=32,
                 mlp_hidden_size=12288, vocab_size=126464, embedding_size=None,
                 max_sequence_length=4096, rope_theta=500000.0, rms_norm_eps=1e-5,
                 mask_token_id=126336, include_bias=False, include_qkv_bias=False,
                 weight_tying=False, activation_type="silu", **kwargs):
        self.d_model = d_model
        self.n_heads = n_heads
        # OLMo configs write null for "same as n_heads".
        self.n_kv_heads = n_kv_heads if n_kv_heads is not None else n_heads
        self.n_layers = n_layers
        self.mlp_hidden_size = mlp_hidden_size
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size if embedding_size is not None else vocab_size
        self.max_sequence_length = max_sequence_length
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.mask_token_id = mask_token_id
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.weight_tying = weight_tying
        self.activation_type = activation_type  # the SiLU of the llama block's SwiGLU
        kwargs.setdefault("tie_word_embeddings", weight_tying)
        super().__init__(**kwargs)
        # What vLLM's Llama class reads (derived, so set after any saved copies).
        self.attention_bias = bool(include_bias)          # q/k/v and o
        self.qkv_bias = bool(include_bias or include_qkv_bias)
        self.mlp_bias = bool(include_bias)
