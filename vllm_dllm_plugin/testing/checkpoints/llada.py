"""LLaDA checkpoints in the hub layout of ``GSAI-ML/LLaDA-8B-Instruct``
(``config.json``, ``generation_config.json``, ``model.safetensors``,
``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer

from .core import DEFAULT_LOGIT_SCALE, check_shapes, write_json, write_weights
from .tokenizers import (
    ADDITIONAL,
    BOS,
    CLS,
    EOS,
    GMASK,
    MASK,
    TokenizerFiles,
    build_llada_tokenizer,
    unreadable_ids,
    write_tokenizer,
)

# The chat template LLaDA-8B-Instruct ships in tokenizer_config.json
# (Llama-3 style).  Like the original it adds the bos only before the first
# message and always ends with the assistant header.
LLADA_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)


def unreadable_token_ids(tok: Tokenizer, ids: dict[str, int]) -> list[int]:
    """Ids a trained model would practically never emit on their own.

    These are the mask token and the byte tokens that alone decode to no
    readable text (a lone UTF-8 continuation byte gives U+FFFD, control bytes
    give control characters).  Their output-head rows are zeroed so a random
    model's argmax lands on word pieces, and its text reads like text.
    """
    return unreadable_ids(tok, ids, MASK)


# LLaDA-8B-Instruct's tokenizer files: PreTrainedTokenizerFast, bos
# <|startoftext|>, eos = pad <|endoftext|>, no mask_token entry (the mask id
# lives in config.json), so it loads with plain ``AutoTokenizer`` and no
# remote code.
LLADA_TOKENIZER = TokenizerFiles(
    roles={"bos_token": BOS, "cls_token": CLS, "eos_token": EOS, "pad_token": EOS},
    additional_special_tokens=ADDITIONAL,
    chat_template=LLADA_CHAT_TEMPLATE,
    config={
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "fast_tokenizer": True,
        "gmask_token": GMASK,
        "merges_file": None,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 1000000000000000019884624838656,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "trust_remote_code": True,
        "vocab_file": None,
    },
)


def write_tokenizer_files(out_dir: Path, tok: Tokenizer, ids: dict[str, int]) -> None:
    """LLaDA's tokenizer.json, tokenizer_config.json and special_tokens_map.json
    (the keys of LLaDA-8B-Instruct's, see ``LLADA_TOKENIZER``)."""
    write_tokenizer(out_dir, LLADA_TOKENIZER, tok, ids)


def write_llada_config(
    out_dir: Path,
    *,
    d_model: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    mlp_hidden_size: int,
    vocab_size: int,
    max_sequence_length: int,
    dtype: str,
    ids: dict[str, int],
) -> dict:
    """config.json: every key of LLaDA-8B-Instruct's, tiny sizes substituted.

    Values other than sizes and token ids are the 8B model's, including the
    ones that look odd (``mlp_ratio`` 4 next to an explicit
    ``mlp_hidden_size``, ``precision`` amp_bf16, ``init_device`` meta), so
    consumers are tested against what they will meet.  ``torch_dtype`` is
    added (the hub file has none) to say which dtype the weights are in.
    """
    config = {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "auto_map": {
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
            "AutoModel": "modeling_llada.LLaDAModelLM",
        },
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": d_model,
        "embedding_dropout": 0.0,
        "embedding_size": vocab_size,
        "eos_token_id": ids[EOS],
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_cutoff_factor": None,
        "init_device": "meta",
        "init_fn": "mitchell",
        "init_std": 0.02,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": ids[MASK],
        "max_sequence_length": max_sequence_length,
        "mlp_hidden_size": mlp_hidden_size,
        "mlp_ratio": 4,
        "model_type": "llada",
        "multi_query_attention": None,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "n_layers": n_layers,
        "pad_token_id": ids[EOS],
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": 500000.0,
        "scale_logits": False,
        "torch_dtype": dtype,
        "transformers_version": "4.46.3",
        "use_cache": False,
        "vocab_size": vocab_size,
        "weight_tying": False,
    }
    # The hub file keeps auto_map in this (unsorted) order; everything else is sorted.
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return config


def write_llada_generation_config(out_dir: Path, ids: dict[str, int]) -> None:
    """generation_config.json as LLaDA-8B-Instruct has it.

    The hub file names only <|endoftext|> as eos (and <|startoftext|> as
    bos); <|eot_id|> is not listed there, so a server that should stop on it
    must look it up in the tokenizer by name, as it would for the real model.
    """
    write_json(
        out_dir / "generation_config.json",
        {
            "_from_model_config": True,
            "bos_token_id": ids[BOS],
            "eos_token_id": ids[EOS],
            "transformers_version": "4.46.3",
        },
    )


def llada_weight_shapes(
    *,
    d_model: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    mlp_hidden_size: int,
    vocab_size: int,
) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of LLaDA's safetensors (block_type "llama", untied head)."""
    head_dim = d_model // n_heads
    kv_dim = n_kv_heads * head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.transformer.wte.weight": (vocab_size, d_model)}
    for i in range(n_layers):
        p = f"model.transformer.blocks.{i}."
        shapes[p + "attn_norm.weight"] = (d_model,)
        shapes[p + "q_proj.weight"] = (d_model, d_model)
        shapes[p + "k_proj.weight"] = (kv_dim, d_model)
        shapes[p + "v_proj.weight"] = (kv_dim, d_model)
        shapes[p + "attn_out.weight"] = (d_model, d_model)
        shapes[p + "ff_norm.weight"] = (d_model,)
        shapes[p + "ff_proj.weight"] = (mlp_hidden_size, d_model)  # SiLU (gate) branch
        shapes[p + "up_proj.weight"] = (mlp_hidden_size, d_model)
        shapes[p + "ff_out.weight"] = (d_model, mlp_hidden_size)  # down projection
    shapes["model.transformer.ln_f.weight"] = (d_model,)
    shapes["model.transformer.ff_out.weight"] = (vocab_size, d_model)  # output head
    return shapes


def _init_std(name: str, shape: tuple[int, ...], logit_scale: float) -> float:
    """Standard deviation of a random tensor (norm weights are ones instead).

    Projections use 1/sqrt(fan_in), so every sublayer sees and returns
    activations of order one.  Two departures make masked positions, which
    all share the mask embedding, predict different tokens: q and k are 3x
    larger, so attention is sharp and depends strongly on relative position
    (RoPE), and embeddings are small (0.3), so the sublayer outputs rather
    than the input token dominate the residual stream.  The head is scaled
    so that, after the final RMSNorm, logits have a standard deviation of
    about ``logit_scale``.
    """
    fan_in = shape[-1]
    if name.endswith("wte.weight"):
        return 0.3
    if name == "model.transformer.ff_out.weight":
        return logit_scale / math.sqrt(fan_in)
    if name.endswith(("q_proj.weight", "k_proj.weight")):
        return 3.0 / math.sqrt(fan_in)
    return 1.0 / math.sqrt(fan_in)


def write_llada_weights(
    out_dir: Path,
    shapes: dict[str, tuple[int, ...]],
    *,
    seed: int,
    dtype: str,
    logit_scale: float,
    silent_ids: Sequence[int] = (),
) -> int:
    """model.safetensors (shards when large) with deterministic random weights;
    returns the parameter count.

    One CPU generator, tensors drawn in the order of ``shapes``, so a seed
    always gives the same bytes on every machine.  Output-head rows of
    ``silent_ids`` are zero: their logit is 0 while the best token's is many
    ``logit_scale`` above, so they are (almost) never predicted.
    """

    def make_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
            return torch.ones(shape)
        return torch.randn(shape, generator=gen) * _init_std(name, shape, logit_scale)

    return write_weights(
        out_dir,
        shapes,
        make_tensor,
        seed=seed,
        dtype=dtype,
        head_name="model.transformer.ff_out.weight",
        silent_ids=silent_ids,
    )


def write_llada_checkpoint(
    out_dir,
    *,
    d_model: int = 128,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    mlp_hidden_size: int = 256,
    vocab_size: int = 512,
    max_sequence_length: int = 1024,
    seed: int = 0,
    dtype: str = "float32",
    logit_scale: float = DEFAULT_LOGIT_SCALE,
) -> Path:
    """Write a random LLaDA checkpoint in the hub layout into ``out_dir``; return its path.

    ``vocab_size`` is both ``vocab_size`` and ``embedding_size``; the
    tokenizer covers all of it.  ``logit_scale`` is the approximate standard
    deviation of the output logits (larger: more confident predictions).
    """
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    check_shapes(d_model, n_heads, n_kv_heads, dtype, names=("d_model", "n_heads", "n_kv_heads"))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = dict(
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        mlp_hidden_size=mlp_hidden_size,
        vocab_size=vocab_size,
    )
    tok, ids = build_llada_tokenizer(vocab_size)
    write_tokenizer_files(out, tok, ids)
    write_llada_config(out, **sizes, max_sequence_length=max_sequence_length, dtype=dtype, ids=ids)
    write_llada_generation_config(out, ids)
    write_llada_weights(
        out,
        llada_weight_shapes(**sizes),
        seed=seed,
        dtype=dtype,
        logit_scale=logit_scale,
        silent_ids=unreadable_token_ids(tok, ids),
    )
    return out
