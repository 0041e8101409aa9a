"""Hub-format LLaDA2.x checkpoints from ``vllm_dllm_plugin.testing.checkpoints``.

inclusionAI/LLaDA2.0-mini / LLaDA2.1-mini: BailingMoeV2 tensor names, a
config.json with no eos, mask or block-size key, ``<|mask|>`` an added token
found by name (no ``mask_token`` role), ``<|endoftext|>`` eos = pad, chat
turns ending in ``<|role_end|>``.  These tests check the tiny checkpoint
against those facts and the plugin's config class against the keys vLLM's
``BailingMoeV2ForCausalLM`` reads.  No vLLM engine is started.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vllm_dllm_plugin.testing.checkpoints import (
    LLADA2_ADDED,
    LLADA2_PRESETS,
    llada2_weight_shapes,
    write_llada2_checkpoint,
)
from vllm_dllm_plugin.testing.checkpoints.cli import main

TINY = LLADA2_PRESETS["tiny"]
N_BASE = TINY["tokenizer_size"] - len(LLADA2_ADDED)
ENDOFTEXT, MASK, ROLE_END = N_BASE + 1, N_BASE + 4, N_BASE + 7   # 489, 492, 495

FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json", "special_tokens_map.json"}
CONFIG_KEYS = {
    "architectures", "attention_dropout", "auto_map", "embedding_dropout", "first_k_dense_replace", "head_dim",
    "hidden_act", "hidden_size", "initializer_range", "intermediate_size", "max_position_embeddings",
    "max_window_layers", "model_type", "moe_intermediate_size", "moe_router_enable_expert_bias", "n_group",
    "norm_head", "norm_softmax", "norm_topk_prob", "num_attention_heads", "num_experts", "num_experts_per_tok",
    "num_hidden_layers", "num_key_value_heads", "num_shared_experts", "output_dropout", "output_router_logits",
    "pad_token_id", "partial_rotary_factor", "rms_norm_eps", "rope_scaling", "rope_theta", "rotary_dim",
    "routed_scaling_factor", "router_dtype", "score_function", "sliding_window", "tie_word_embeddings",
    "torch_dtype", "topk_group", "transformers_version", "use_bias", "use_cache", "use_qk_norm", "use_qkv_bias",
    "use_rmsnorm", "use_sliding_window", "using_split_qkv_in_self_attention", "vocab_size",
}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_llada2_checkpoint(tmp_path_factory.mktemp("llada2"), seed=0)


def _json(path):
    return json.loads(path.read_text())


def test_files_and_config_keys(ckpt):
    assert {p.name for p in ckpt.iterdir()} == FILES
    cfg = _json(ckpt / "config.json")
    assert set(cfg) == CONFIG_KEYS
    for absent in ("eos_token_id", "mask_token_id", "block_length", "block_size", "bd_size"):
        assert absent not in cfg
    assert cfg["architectures"] == ["LLaDA2MoeModelLM"] and cfg["model_type"] == "llada2_moe"
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_llada2_moe.LLaDA2MoeModelLM"
    assert cfg["pad_token_id"] == ENDOFTEXT
    assert cfg["use_qk_norm"] and cfg["use_rmsnorm"] and not cfg["tie_word_embeddings"]
    assert cfg["partial_rotary_factor"] == 0.5 and cfg["rotary_dim"] == cfg["head_dim"] // 2
    assert (cfg["first_k_dense_replace"], cfg["num_shared_experts"], cfg["routed_scaling_factor"]) == (1, 1, 2.5)
    assert cfg["score_function"] == "sigmoid" and cfg["moe_router_enable_expert_bias"] and cfg["norm_topk_prob"]
    assert (cfg["num_experts"], cfg["num_experts_per_tok"], cfg["n_group"], cfg["topk_group"]) == (8, 2, 4, 2)
    assert _json(ckpt / "generation_config.json")["eos_token_id"] == ENDOFTEXT
    assert _json(ckpt / "generation_config.json")["pad_token_id"] == ENDOFTEXT


def test_weights_are_named_and_shaped_as_on_the_hub(ckpt):
    weights = load_file(str(ckpt / "model.safetensors"))
    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    assert shapes == llada2_weight_shapes(**{k: v for k, v in TINY.items()
                                            if k not in ("tokenizer_size", "max_position_embeddings")})
    assert "model.layers.0.mlp.gate_proj.weight" in shapes and "model.layers.0.mlp.gate.weight" not in shapes
    for name in ("model.word_embeddings.weight", "model.layers.1.attention.query_key_value.weight",
                 "model.layers.1.attention.query_layernorm.weight", "model.layers.1.attention.dense.weight",
                 "model.layers.1.mlp.gate.weight", "model.layers.2.mlp.experts.7.down_proj.weight",
                 "model.layers.1.mlp.shared_experts.up_proj.weight", "model.norm.weight", "lm_head.weight"):
        assert name in shapes, name
    assert shapes["model.layers.1.attention.query_key_value.weight"] == ((4 + 2 * 2) * 32, 64)
    bias = weights["model.layers.1.mlp.gate.expert_bias"]
    assert bias.shape == (8,) and (bias != 0).all() and bias.std() > 0.05
    head = weights["lm_head.weight"]
    assert (head[MASK] == 0).all() and (head[TINY["tokenizer_size"]:] == 0).all()


def test_tokenizer_finds_the_mask_by_name_and_formats_chats(ckpt):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt, trust_remote_code=False)
    assert tok.mask_token is None
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|mask|>", "<|role_end|>"]) == [ENDOFTEXT, MASK, ROLE_END]
    assert tok.eos_token_id == tok.pad_token_id == ENDOFTEXT
    assert len(tok) == TINY["tokenizer_size"]
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == ("<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>Hi<|role_end|>"
                    "<role>ASSISTANT</role>")
    own = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                  tokenize=False, add_generation_prompt=False)
    assert own == "<role>SYSTEM</role>Be brief.<|role_end|><role>HUMAN</role>Hi<|role_end|>"


def test_plugin_config_has_what_vllm_bailing_moe_reads(ckpt):
    from vllm_dllm_plugin.models.llada2_config import LLaDA2MoeConfig

    cfg = LLaDA2MoeConfig.from_pretrained(ckpt)
    assert cfg.model_type == "llada2_moe" and cfg.mask_token_id == 156895
    assert (cfg.head_dim, cfg.rotary_dim, cfg.partial_rotary_factor) == (32, 16, 0.5)
    assert cfg.use_qk_norm and cfg.use_rmsnorm and not (cfg.use_bias or cfg.use_qkv_bias)
    assert (cfg.rope_parameters["rope_type"], cfg.rope_parameters["rope_theta"]) == ("default", 600000)
    assert (cfg.score_function, cfg.router_dtype, cfg.embedding_dropout) == ("sigmoid", "fp32", 0.0)
    assert cfg.pad_token_id == ENDOFTEXT and not cfg.tie_word_embeddings
    mini = LLaDA2MoeConfig()   # defaults: LLaDA2.0-mini's
    assert (mini.hidden_size, mini.num_experts, mini.head_dim, mini.pad_token_id) == (2048, 256, 128, 156892)


def test_bfloat16_option(tmp_path):
    path = write_llada2_checkpoint(tmp_path / "bf16", dtype="bfloat16", num_hidden_layers=2)
    weights = load_file(str(path / "model.safetensors"))
    assert {v.dtype for v in weights.values()} == {torch.bfloat16}
    assert _json(path / "config.json")["torch_dtype"] == "bfloat16"


def test_writer_rejects_what_vllm_cpu_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="head_dim"):
        write_llada2_checkpoint(tmp_path / "a", head_dim=16)
    with pytest.raises(ValueError, match="multiples of 32"):
        write_llada2_checkpoint(tmp_path / "b", moe_intermediate_size=48)


def test_cli_tiny_and_mini_plan(tmp_path, ckpt, capsys):
    main(["llada2", str(tmp_path / "cli")])
    assert "wrote LLaDA2.x checkpoint (tiny, float32)" in capsys.readouterr().out
    for name in FILES:
        assert (tmp_path / "cli" / name).read_bytes() == (ckpt / name).read_bytes(), name
    main(["llada2", str(tmp_path / "plan"), "--preset", "mini", "--dtype", "bfloat16", "--dry-run"])
    out = capsys.readouterr().out
    assert "LLaDA2.x mini (bfloat16): 14813 tensors, 16,255,643,392 parameters" in out
    assert not (tmp_path / "plan").exists()
