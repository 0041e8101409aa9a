"""LLaDA2.x checkpoints in the hub layout of ``inclusionAI/LLaDA2.0-mini`` /
``LLaDA2.1-mini`` (Ling-2.0 / BailingMoeV2 tensor names, ``LLaDA2MoeModelLM``).

What the real files say, and the tiny ones repeat: config.json has every
hub key (``auto_map`` to remote code that is not written) and **no**
``eos_token_id``, ``mask_token_id`` or block-size key; ``pad_token_id`` is
``<|endoftext|>``; generation_config.json has ``eos_token_id`` =
``pad_token_id`` = ``<|endoftext|>``; the tokenizer (``PreTrainedTokenizerFast``,
byte-level BPE) has ``<|mask|>`` as an added special token *without* a
``mask_token`` role (found by name), and chat turns end with ``<|role_end|>``.
The added tokens' order is the writer's choice, kept so that ``<|endoftext|>``
and ``<|mask|>`` are 3 apart as 156892 / 156895 are (the real tokenizer's
full order is not known here).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch

from .core import DEFAULT_LOGIT_SCALE, DTYPES, SUPPORTED_HEAD_DIMS, write_json, write_weights
from .tokenizers import TokenizerFiles, build_qwen2_tokenizer, unreadable_ids, write_tokenizer

LLADA2_BOS = "<|startoftext|>"
LLADA2_EOS = "<|endoftext|>"     # 156892: generate()'s stop token, pad, generation_config eos
LLADA2_MASK = "<|mask|>"         # 156895: generate()'s mask id; no mask_token role
LLADA2_ROLE_END = "<|role_end|>"  # ends a chat turn; not the loop's stop token
LLADA2_ADDED: list[tuple[str, bool]] = [
    (LLADA2_BOS, True),
    (LLADA2_EOS, True),
    ("<|arithmetic_start|>", True),
    ("<|arithmetic_end|>", True),
    (LLADA2_MASK, True),
    ("<role>", True),
    ("</role>", True),
    (LLADA2_ROLE_END, True),
]
LLADA2_SYSTEM_PROMPT = "detailed thinking off"

# Ling's chat format, e.g. for one user turn "Hi":
# "<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>Hi<|role_end|><role>ASSISTANT</role>".
# A leading system message replaces the default system text.  Written for
# these checkpoints (the hub template's text is not reproduced).
LLADA2_CHAT_TEMPLATE = (
    "{%- set names = {'system': 'SYSTEM', 'user': 'HUMAN', 'assistant': 'ASSISTANT'} -%}"
    "{%- set turns = messages -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system = '" + LLADA2_SYSTEM_PROMPT + "' -%}"
    "{%- endif -%}"
    "{{- '<role>SYSTEM</role>' + system + '<|role_end|>' -}}"
    "{%- for turn in turns -%}"
    "{{- '<role>' + names.get(turn['role'], turn['role'] | upper) + '</role>'"
    " + turn['content'] + '<|role_end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<role>ASSISTANT</role>' -}}{%- endif -%}"
)

LLADA2_TOKENIZER = TokenizerFiles(
    roles={"bos_token": LLADA2_BOS, "eos_token": LLADA2_EOS, "pad_token": LLADA2_EOS},
    additional_special_tokens=[LLADA2_ROLE_END, "<role>", "</role>"],
    chat_template=LLADA2_CHAT_TEMPLATE,
    config={
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
        "tokenizer_class": "PreTrainedTokenizerFast",
    },
)


def llada2_config(
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    head_dim: int,
    intermediate_size: int,
    moe_intermediate_size: int,
    num_experts: int,
    num_experts_per_tok: int,
    n_group: int,
    topk_group: int,
    num_shared_experts: int,
    first_k_dense_replace: int,
    vocab_size: int,
    max_position_embeddings: int,
    dtype: str,
    ids: dict[str, int],
) -> dict:
    """config.json: the keys of LLaDA2.0-mini's, sizes substituted; the rest
    of the values are mini's (``rope_theta`` 600000, sigmoid routing with
    expert bias, ``routed_scaling_factor`` 2.5, ``partial_rotary_factor``
    0.5 and ``rotary_dim`` = half the head, q/k RMSNorm, no biases,
    untied)."""
    return {
        "architectures": ["LLaDA2MoeModelLM"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
            "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
            "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM",
        },
        "embedding_dropout": 0.0,
        "first_k_dense_replace": first_k_dense_replace,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "max_window_layers": num_hidden_layers,
        "model_type": "llada2_moe",
        "moe_intermediate_size": moe_intermediate_size,
        "moe_router_enable_expert_bias": True,
        "n_group": n_group,
        "norm_head": False,
        "norm_softmax": False,
        "norm_topk_prob": True,
        "num_attention_heads": num_attention_heads,
        "num_experts": num_experts,
        "num_experts_per_tok": num_experts_per_tok,
        "num_hidden_layers": num_hidden_layers,
        "num_key_value_heads": num_key_value_heads,
        "num_shared_experts": num_shared_experts,
        "output_dropout": 0.0,
        "output_router_logits": False,
        "pad_token_id": ids[LLADA2_EOS],
        "partial_rotary_factor": 0.5,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 600000,
        "rotary_dim": head_dim // 2,
        "routed_scaling_factor": 2.5,
        "router_dtype": "fp32",
        "score_function": "sigmoid",
        "sliding_window": 4096,
        "tie_word_embeddings": False,
        "torch_dtype": dtype,
        "topk_group": topk_group,
        "transformers_version": "4.52.3",
        "use_bias": False,
        "use_cache": True,
        "use_qk_norm": True,
        "use_qkv_bias": False,
        "use_rmsnorm": True,
        "use_sliding_window": False,
        "using_split_qkv_in_self_attention": False,
        "vocab_size": vocab_size,
    }


def llada2_weight_shapes(
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    head_dim: int,
    intermediate_size: int,
    moe_intermediate_size: int,
    num_experts: int,
    vocab_size: int,
    num_shared_experts: int = 1,
    first_k_dense_replace: int = 1,
    **_: object,
) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a LLaDA2.x safetensors file: fused q|k|v,
    per-head q/k norms, a dense MLP in the first ``first_k_dense_replace``
    layers, then a router (``gate.weight`` and ``gate.expert_bias``), the
    routed experts one by one and the shared expert(s) fused into one MLP."""
    qkv = (num_attention_heads + 2 * num_key_value_heads) * head_dim
    shared = moe_intermediate_size * num_shared_experts
    shapes: dict[str, tuple[int, ...]] = {"model.word_embeddings.weight": (vocab_size, hidden_size)}
    for i in range(num_hidden_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (hidden_size,)
        shapes[p + "attention.query_key_value.weight"] = (qkv, hidden_size)
        shapes[p + "attention.query_layernorm.weight"] = (head_dim,)
        shapes[p + "attention.key_layernorm.weight"] = (head_dim,)
        shapes[p + "attention.dense.weight"] = (hidden_size, num_attention_heads * head_dim)
        shapes[p + "post_attention_layernorm.weight"] = (hidden_size,)
        mlps = [(p + "mlp.", intermediate_size)]
        if i >= first_k_dense_replace:
            shapes[p + "mlp.gate.weight"] = (num_experts, hidden_size)
            shapes[p + "mlp.gate.expert_bias"] = (num_experts,)
            mlps = [(f"{p}mlp.experts.{e}.", moe_intermediate_size) for e in range(num_experts)]
            if num_shared_experts:
                mlps.append((p + "mlp.shared_experts.", shared))
        for m, size in mlps:
            shapes[m + "gate_proj.weight"] = (size, hidden_size)
            shapes[m + "up_proj.weight"] = (size, hidden_size)
            shapes[m + "down_proj.weight"] = (hidden_size, size)
    shapes["model.norm.weight"] = (hidden_size,)
    shapes["lm_head.weight"] = (vocab_size, hidden_size)
    return shapes


# Standard deviation of the expert-score bias (the routing scores are
# sigmoids in (0, 1)): large enough to change some tokens' experts.
EXPERT_BIAS_STD = 0.3
# The q/k RMSNorm weights' scale: q and k leave their norms with unit RMS, so
# this sets how sharp (position-sensitive) attention is.
QK_NORM_SCALE = 2.0


def _llada2_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator, logit_scale: float) -> torch.Tensor:
    """One random tensor: norm weights ``1 + 0.1 N`` (q/k norms times
    :data:`QK_NORM_SCALE`), a random nonzero expert bias, 1/sqrt(fan_in)
    projections, a router 2x that (decisive routing), small (0.3)
    embeddings and a head giving logits of standard deviation about
    ``logit_scale``."""
    if name.endswith("expert_bias"):
        return EXPERT_BIAS_STD * torch.randn(shape, generator=gen)
    if name.endswith("norm.weight"):
        w = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        return w * QK_NORM_SCALE if name.endswith(("query_layernorm.weight", "key_layernorm.weight")) else w
    fan_in = shape[-1]
    if name == "lm_head.weight":
        std = logit_scale / math.sqrt(fan_in)
    elif name == "model.word_embeddings.weight":
        std = 0.3
    elif name.endswith("mlp.gate.weight"):
        std = 2.0 / math.sqrt(fan_in)
    else:
        std = 1.0 / math.sqrt(fan_in)
    return torch.randn(shape, generator=gen) * std


def _check_sizes(hidden_size, num_attention_heads, num_key_value_heads, head_dim, moe_intermediate_size,
                 num_experts, num_experts_per_tok, n_group, topk_group, dtype) -> None:
    """Reject what the plugin (vLLM's CPU build included) cannot load."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if num_attention_heads % num_key_value_heads:
        raise ValueError("num_attention_heads must divide by num_key_value_heads")
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {head_dim} is not one of {SUPPORTED_HEAD_DIMS}")
    if hidden_size % 32 or moe_intermediate_size % 32:
        # vLLM CPU's fused MoE kernel (cpu_fused_moe) tiles both by 32
        raise ValueError("hidden_size and moe_intermediate_size must be multiples of 32")
    if num_experts % n_group or topk_group > n_group or num_experts_per_tok > topk_group * (num_experts // n_group):
        raise ValueError("experts must split into n_group groups, and topk_group groups hold num_experts_per_tok")


def write_llada2_checkpoint(
    out_dir,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 3,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    head_dim: int = 32,
    intermediate_size: int = 128,
    moe_intermediate_size: int = 32,
    num_experts: int = 8,
    num_experts_per_tok: int = 2,
    n_group: int = 4,
    topk_group: int = 2,
    num_shared_experts: int = 1,
    first_k_dense_replace: int = 1,
    vocab_size: int = 512,
    tokenizer_size: int = 496,
    max_position_embeddings: int = 4096,
    seed: int = 0,
    dtype: str = "float32",
    logit_scale: float = DEFAULT_LOGIT_SCALE,
) -> Path:
    """Write a random LLaDA2.x checkpoint in the hub layout of
    ``inclusionAI/LLaDA2.0-mini`` into ``out_dir``; return its path.

    Files: config.json (see :func:`llada2_config`), generation_config.json
    (eos = pad = ``<|endoftext|>``), model.safetensors (see
    :func:`llada2_weight_shapes`), tokenizer.json, tokenizer_config.json,
    special_tokens_map.json (no remote-code ``.py`` files).  The tokenizer
    covers ids ``[0, tokenizer_size)``, :data:`LLADA2_ADDED` last; head rows
    of the mask, of unreadable byte tokens and of the padding past the
    tokenizer are zero.  One CPU generator seeded with ``seed``.
    """
    _check_sizes(hidden_size, num_attention_heads, num_key_value_heads, head_dim, moe_intermediate_size,
                 num_experts, num_experts_per_tok, n_group, topk_group, dtype)
    if tokenizer_size > vocab_size:
        raise ValueError(f"tokenizer_size={tokenizer_size} is larger than vocab_size={vocab_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = dict(
        hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads, head_dim=head_dim, intermediate_size=intermediate_size,
        moe_intermediate_size=moe_intermediate_size, num_experts=num_experts, num_shared_experts=num_shared_experts,
        first_k_dense_replace=first_k_dense_replace, vocab_size=vocab_size,
    )
    tok, ids = build_qwen2_tokenizer(LLADA2_ADDED, tokenizer_size)
    write_tokenizer(out, LLADA2_TOKENIZER, tok, ids)
    config = llada2_config(**sizes, num_experts_per_tok=num_experts_per_tok, n_group=n_group,
                           topk_group=topk_group, max_position_embeddings=max_position_embeddings,
                           dtype=dtype, ids=ids)
    write_json(out / "config.json", config)
    write_json(out / "generation_config.json", {
        "eos_token_id": ids[LLADA2_EOS], "pad_token_id": ids[LLADA2_EOS], "transformers_version": "4.52.3"})
    write_weights(
        out,
        llada2_weight_shapes(**sizes),
        partial(_llada2_tensor, logit_scale=logit_scale),
        seed=seed,
        dtype=dtype,
        head_name="lm_head.weight",
        silent_ids=unreadable_ids(tok, ids, LLADA2_MASK) + list(range(tokenizer_size, vocab_size)),
    )
    return out
