"""Sizes the command line offers per family: ``tiny`` for unit tests, about
100M parameters for serving checks, and the real models' shapes for GPU
throughput checks."""

PRESETS: dict[str, dict] = {
    # About 0.45M parameters, < 2 MB in float32: fast enough for unit tests.
    "tiny": dict(
        d_model=128,
        n_layers=2,
        n_heads=4,
        mlp_hidden_size=256,
        vocab_size=512,
        max_sequence_length=1024,
    ),
    # About 100M parameters, LLaDA-shaped (MHA, head_dim 64, MLP 3x d_model
    # like the 8B model's 12288 / 4096), for serving and throughput checks.
    # The vocabulary stays near what BPE can learn from CORPUS (~1000 tokens),
    # so few ids are reserved fillers that decode to nothing.
    "small-100m": dict(
        d_model=768,
        n_layers=13,
        n_heads=12,
        mlp_hidden_size=2304,
        vocab_size=1024,
        max_sequence_length=4096,
    ),
    # LLaDA-8B-Instruct's shapes exactly (8,015,581,184 parameters, 16.0 GB
    # in bfloat16, written as shards with an index like the hub's), for GPU
    # throughput checks (scripts/gpu_acceptance.py); write it with
    # ``--dtype bfloat16``.  The tokenizer is the smaller presets' BPE
    # (~1000 tokens) padded with reserved fillers to the full vocabulary, so
    # the special ids (mask 126454, eos 997) differ from the hub's (126336,
    # 126081).
    "8b": dict(
        d_model=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=32,
        mlp_hidden_size=12288,
        vocab_size=126464,
        max_sequence_length=4096,
    ),
}

DREAM_PRESETS: dict[str, dict] = {
    # About 0.4M parameters: head_dim 32, grouped-query attention (4 query
    # heads share 2 kv heads), like the 7B model's 28 / 4.
    "tiny": dict(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        vocab_size=512,
        max_position_embeddings=1024,
    ),
    # About 100M parameters, Qwen2.5-shaped (head_dim 64, 6:1 GQA, MLP about
    # 5.3x hidden like 18944 / 3584), for serving and throughput checks.
    "small-100m": dict(
        hidden_size=768,
        num_hidden_layers=9,
        num_attention_heads=12,
        num_key_value_heads=2,
        intermediate_size=4096,
        vocab_size=1024,
        max_position_embeddings=4096,
    ),
}

V2_PRESETS: dict[str, dict] = {
    # About 0.4M parameters, the Dream tiny shapes (head_dim 32 is the
    # smallest the CPU attention backend takes) with a context long enough
    # for many 32-token blocks.  The head has 16 rows past the tokenizer,
    # as the real ones are padded (152064 / 151936 rows for 151666 tokens).
    "tiny": dict(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        vocab_size=512,
        tokenizer_size=496,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    ),
    # Fast_dLLM_v2_7B's shapes (Qwen2.5-7B-Instruct's: untied lm_head) and
    # Fast_dLLM_v2_1.5B's (Qwen2.5-1.5B-Instruct's: tied embeddings).  The
    # tokenizer is a 1024-id BPE like the small-100m presets', so the ids
    # past it are padding (zero head rows).
    "7b": dict(
        hidden_size=3584,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        intermediate_size=18944,
        vocab_size=152064,
        tokenizer_size=1024,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    ),
    "1.5b": dict(
        hidden_size=1536,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        intermediate_size=8960,
        vocab_size=151936,
        tokenizer_size=1024,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    ),
}

SDAR_PRESETS: dict[str, dict] = {
    # About 0.4M parameters: the Fast-dLLM v2 tiny shapes (head_dim 32, 4
    # query heads on 2 kv heads) with Qwen3's q/k norms, block 4 as the real
    # checkpoints; 16 head rows past the tokenizer, as the real head is padded
    # (151936 rows for 151670 tokens).
    "tiny": dict(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        vocab_size=512,
        tokenizer_size=496,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    ),
    # SDAR-8B-Chat's and SDAR-4B-Chat's shapes (untied lm_head; head_dim 128
    # apart from the hidden size) and SDAR-1.7B-Chat's (Qwen3-1.7B's, tied).
    # The tokenizer is a 1024-id BPE, so the ids past it are padding.
    "8b": dict(
        hidden_size=4096,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=12288,
        vocab_size=151936,
        tokenizer_size=1024,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    ),
    "4b": dict(
        hidden_size=2560,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=9728,
        vocab_size=151936,
        tokenizer_size=1024,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    ),
    "1.7b": dict(
        hidden_size=2048,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=6144,
        vocab_size=151936,
        tokenizer_size=1024,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    ),
}


LLADA2_PRESETS: dict[str, dict] = {
    # About 0.2M parameters: LLaDA2.0-mini's structure shrunk (layer 0 dense,
    # then MoE layers of 8 experts in 4 groups, top-2 of 2 groups, one shared
    # expert; 4 query heads on 2 kv heads of 32 dims, wider than hidden/heads
    # as mini's 128 are), fast on CPU; 16 head rows past the tokenizer.
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_experts=8,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        vocab_size=512,
        tokenizer_size=496,
        max_position_embeddings=4096,
    ),
    # inclusionAI/LLaDA2.0-mini's shapes (16B total, ~1.4B active); the
    # tokenizer is a 1024-id BPE, so the ids past it are padding.
    "mini": dict(
        hidden_size=2048,
        num_hidden_layers=20,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=128,
        intermediate_size=5120,
        moe_intermediate_size=512,
        num_experts=256,
        num_experts_per_tok=8,
        n_group=8,
        topk_group=4,
        vocab_size=157184,
        tokenizer_size=1024,
        max_position_embeddings=16384,
    ),
}
