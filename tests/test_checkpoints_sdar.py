"""Hub-format SDAR checkpoints from ``vllm_dllm_plugin.testing.checkpoints``
(``scripts/make_checkpoints.py sdar`` on the command line).

JetLM/SDAR-{4B,8B}-Chat (untied ``lm_head``) and 1.7B (Qwen3-1.7B-shaped,
tied) are Qwen3 models (docs: sdar-semantics.md, section 1): Qwen3 tensor
names with per-head ``q_norm`` / ``k_norm`` and no biases, Qwen3's
generation config, and Qwen3's ``Qwen2Tokenizer`` with ``<|MASK|>`` added
after Qwen3's 26 added tokens (misnamed ``<MASK>`` in added_tokens.json and
special_tokens_map.json).  These tests check the tiny checkpoints the writer
produces against those facts, and that the weights really are Qwen3's by
loading them into transformers' ``Qwen3ForCausalLM``.  No vLLM engine.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vllm_dllm_plugin.testing.checkpoints import (
    QWEN2_ADDITIONAL,
    QWEN3_ADDED,
    SDAR_MASK,
    SDAR_MASK_MISNAMED,
    SDAR_PRESETS,
    SDAR_SPECIALS,
    qwen2_weight_shapes,
    write_sdar_checkpoint,
)
from vllm_dllm_plugin.testing.checkpoints.cli import main

TINY = SDAR_PRESETS["tiny"]
VOCAB = TINY["vocab_size"]
TOKENIZER_SIZE = TINY["tokenizer_size"]
N_BASE = TOKENIZER_SIZE - len(SDAR_SPECIALS)  # 469 BPE tokens
ENDOFTEXT, IM_START, IM_END = N_BASE, N_BASE + 1, N_BASE + 2  # 151643.. in the real tokenizer
THINK, END_THINK = N_BASE + 24, N_BASE + 25  # 151667, 151668
MASK = TOKENIZER_SIZE - 1  # 151669 in the real tokenizer
SIZES = {k: TINY[k] for k in (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
    "vocab_size")}

FILES = {
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json",
}
CONFIG_KEYS = {
    "architectures", "attention_bias", "attention_dropout", "attn_implementation", "auto_map", "block_size",
    "bos_token_id", "eos_token_id", "fuse_cross_entropy", "head_dim", "hidden_act", "hidden_size",
    "initializer_range", "intermediate_size", "mask_token_id", "max_position_embeddings", "max_window_layers",
    "model_type", "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "rms_norm_eps",
    "rope_scaling", "rope_theta", "sliding_window", "tie_word_embeddings", "torch_dtype",
    "transformers_version", "use_cache", "use_sliding_window", "vocab_size",
}


@pytest.fixture(scope="module")
def sdar_dir(tmp_path_factory):
    return write_sdar_checkpoint(tmp_path_factory.mktemp("sdar-tiny"), seed=0)


@pytest.fixture(scope="module")
def sdar_tied_dir(tmp_path_factory):
    return write_sdar_checkpoint(tmp_path_factory.mktemp("sdar-tied"), seed=1, tie_word_embeddings=True)


@pytest.fixture(params=["untied", "tied"])
def ckpt(request, sdar_dir, sdar_tied_dir):
    return (sdar_tied_dir, True) if request.param == "tied" else (sdar_dir, False)


@pytest.fixture(scope="module")
def registered():
    from transformers import AutoConfig

    from vllm_dllm_plugin.models.sdar_config import SDARConfig

    AutoConfig.register("sdar", SDARConfig, exist_ok=True)


def _json(path):
    return json.loads(path.read_text())


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


# --------------------------------------------------------------------------------------
# Files, config.json, generation_config.json
# --------------------------------------------------------------------------------------


def test_files_follow_the_hub_layout(ckpt):
    path, _ = ckpt
    assert {p.name for p in path.iterdir()} == FILES


def test_config_has_the_sdar_keys(ckpt):
    path, tied = ckpt
    cfg = _json(path / "config.json")
    assert set(cfg) == CONFIG_KEYS
    assert cfg["architectures"] == ["SDARForCausalLM"] and cfg["model_type"] == "sdar"
    assert cfg["auto_map"] == {
        "AutoConfig": "configuration_sdar.SDARConfig",
        "AutoModel": "modeling_sdar.SDARModel",
        "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM",
    }
    assert cfg["block_size"] == 4 and cfg["mask_token_id"] == MASK
    assert cfg["bos_token_id"] == ENDOFTEXT and cfg["eos_token_id"] == ENDOFTEXT
    assert cfg["tie_word_embeddings"] is tied and cfg["attention_bias"] is False
    assert cfg["head_dim"] == cfg["hidden_size"] // cfg["num_attention_heads"] == 32
    assert {k: cfg[k] for k in SIZES} == SIZES
    assert cfg["rms_norm_eps"] == 1e-6 and cfg["rope_theta"] == 1e6 and cfg["rope_scaling"] is None
    assert cfg["sliding_window"] is None and cfg["use_sliding_window"] is False
    assert cfg["torch_dtype"] == "float32"


def test_block_keys_can_be_omitted_and_default(tmp_path, registered):
    """The hub file may have neither ``block_size`` nor ``mask_token_id``:
    the config class then says 4 and 151669 (the engine takes the mask id
    from the tokenizer)."""
    from transformers import AutoConfig

    from vllm_dllm_plugin.models.sdar_config import SDARConfig

    path = write_sdar_checkpoint(tmp_path, omit_block_keys=True)
    cfg = _json(path / "config.json")
    assert "block_size" not in cfg and "mask_token_id" not in cfg
    assert set(cfg) == CONFIG_KEYS - {"block_size", "mask_token_id"}
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    assert type(config) is SDARConfig and (config.block_size, config.mask_token_id) == (4, 151669)


@pytest.mark.parametrize("trust", [False, None])
def test_autoconfig_gives_the_sdar_config(sdar_dir, registered, trust):
    from transformers import AutoConfig

    from vllm_dllm_plugin.models.sdar_config import SDARConfig

    config = AutoConfig.from_pretrained(sdar_dir, trust_remote_code=trust)
    assert type(config) is SDARConfig and config.model_type == "sdar"
    assert (config.block_size, config.mask_token_id, config.head_dim) == (4, MASK, 32)
    assert config.rope_parameters["rope_theta"] == 1e6 and config.attention_bias is False
    assert config.tie_word_embeddings is False


def test_block_size_and_dtype_are_parameters(tmp_path):
    path = write_sdar_checkpoint(tmp_path, block_size=16, dtype="bfloat16")
    cfg = _json(path / "config.json")
    assert cfg["block_size"] == 16 and cfg["torch_dtype"] == "bfloat16"
    assert {t.dtype for t in load_file(path / "model.safetensors").values()} == {torch.bfloat16}


def test_generation_config_is_the_hubs(ckpt):
    path, _ = ckpt
    gen = _json(path / "generation_config.json")
    assert gen.pop("transformers_version")
    assert gen == {
        "bos_token_id": ENDOFTEXT,
        "do_sample": True,
        "eos_token_id": [IM_END, ENDOFTEXT],
        "pad_token_id": ENDOFTEXT,
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
    }


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


def test_weight_names_and_shapes_are_qwen3(ckpt):
    path, tied = ckpt
    tensors = load_file(path / "model.safetensors")
    assert {n: tuple(t.shape) for n, t in tensors.items()} == qwen2_weight_shapes(
        **SIZES, tie_word_embeddings=tied, qwen3=True)
    assert tensors["model.layers.1.self_attn.q_norm.weight"].shape == (32,)
    assert tensors["model.layers.1.self_attn.k_norm.weight"].shape == (32,)
    assert not any(n.endswith(".bias") for n in tensors)
    assert ("lm_head.weight" in tensors) is not tied
    assert {t.dtype for t in tensors.values()} == {torch.float32}


def test_head_dim_apart_from_the_hidden_size(tmp_path):
    """Qwen3-4B's layout: head_dim 128 on a hidden size that is not heads x 128."""
    path = write_sdar_checkpoint(tmp_path, hidden_size=160, num_attention_heads=2, num_key_value_heads=1,
                                 head_dim=128, num_hidden_layers=1)
    cfg = _json(path / "config.json")
    assert cfg["head_dim"] == 128
    tensors = load_file(path / "model.safetensors")
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (256, 160)
    assert tensors["model.layers.0.self_attn.o_proj.weight"].shape == (160, 256)
    assert tensors["model.layers.0.self_attn.k_norm.weight"].shape == (128,)
    with pytest.raises(ValueError):
        write_sdar_checkpoint(tmp_path / "bad", head_dim=24)


def test_mask_and_padding_rows_of_the_head_are_zero(ckpt):
    path, tied = ckpt
    tensors = load_file(path / "model.safetensors")
    head = tensors["model.embed_tokens.weight" if tied else "lm_head.weight"]
    assert head.shape[0] == VOCAB
    assert not head[MASK].any() and not head[TOKENIZER_SIZE:].any()
    assert head[ENDOFTEXT].any() and head[IM_END].any()
    assert head[:N_BASE].abs().sum(-1).gt(0).float().mean() > 0.5


def test_seed_determines_the_bytes(tmp_path, sdar_dir):
    again = write_sdar_checkpoint(tmp_path / "again", seed=0)
    for name in FILES:
        assert (again / name).read_bytes() == (sdar_dir / name).read_bytes(), name
    other = write_sdar_checkpoint(tmp_path / "other", seed=2)
    assert (other / "model.safetensors").read_bytes() != (sdar_dir / "model.safetensors").read_bytes()


def test_weights_load_strictly_into_transformers_qwen3(ckpt):
    """The tensors load into ``Qwen3ForCausalLM`` (config.json with only
    ``model_type`` replaced) with nothing missing, unexpected or mismatched."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path, tied = ckpt
    cfg = _json(path / "config.json")
    cfg["model_type"] = "qwen3"
    config = Qwen3Config(**cfg)
    assert config.tie_word_embeddings is tied
    model, info = Qwen3ForCausalLM.from_pretrained(path, config=config, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs") if k in info)
    state = model.state_dict()
    for name, t in load_file(path / "model.safetensors").items():
        assert torch.equal(state[name], t), name
    if tied:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------


def test_tokenizer_files_are_qwen3s_plus_the_mask(sdar_dir):
    tok_cfg = _json(sdar_dir / "tokenizer_config.json")
    assert tok_cfg["tokenizer_class"] == "Qwen2Tokenizer" and "auto_map" not in tok_cfg
    assert tok_cfg["bos_token"] is None and tok_cfg["add_bos_token"] is False
    assert tok_cfg["eos_token"] == "<|endoftext|>" and tok_cfg["pad_token"] == "<|endoftext|>"
    assert tok_cfg["mask_token"] == SDAR_MASK == "<|MASK|>"
    assert tok_cfg["additional_special_tokens"] == [*QWEN2_ADDITIONAL, SDAR_MASK]
    decoder = tok_cfg["added_tokens_decoder"]
    assert [(int(i), e["content"], e["special"]) for i, e in decoder.items()] == [
        (N_BASE + k, s, special) for k, (s, special) in enumerate(SDAR_SPECIALS)]
    assert len(SDAR_SPECIALS) == 27 and SDAR_SPECIALS[:26] == QWEN3_ADDED
    assert decoder[str(MASK)] == {"content": SDAR_MASK, "lstrip": False, "normalized": False, "rstrip": False,
                                  "single_word": False, "special": False}
    assert (decoder[str(THINK)]["content"], decoder[str(END_THINK)]["content"]) == ("<think>", "</think>")

    tok_json = _json(sdar_dir / "tokenizer.json")
    assert [(t["id"], t["content"]) for t in tok_json["added_tokens"]] == [
        (N_BASE + k, s) for k, (s, _) in enumerate(SDAR_SPECIALS)]
    vocab = json.loads((sdar_dir / "vocab.json").read_text(encoding="utf-8"))
    assert sorted(vocab.values()) == list(range(N_BASE))


def test_slow_files_carry_the_hubs_mask_misnomer(sdar_dir):
    """added_tokens.json and special_tokens_map.json call the mask ``<MASK>``."""
    added = _json(sdar_dir / "added_tokens.json")
    assert added[SDAR_MASK_MISNAMED] == MASK and SDAR_MASK not in added
    assert added == {(SDAR_MASK_MISNAMED if s == SDAR_MASK else s): N_BASE + k
                     for k, (s, _) in enumerate(SDAR_SPECIALS)}
    special_map = _json(sdar_dir / "special_tokens_map.json")
    assert special_map["mask_token"]["content"] == SDAR_MASK_MISNAMED
    assert special_map["eos_token"]["content"] == special_map["pad_token"]["content"] == "<|endoftext|>"


def test_tokenizer_loads_and_finds_the_mask(ckpt, registered):
    path, _ = ckpt
    tok = _tokenizer(path)
    assert type(tok).__name__.startswith("Qwen2Tokenizer")
    assert len(tok) == TOKENIZER_SIZE
    assert (tok.mask_token, tok.mask_token_id) == (SDAR_MASK, MASK)
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token_id, tok.bos_token) == (
        "<|endoftext|>", ENDOFTEXT, ENDOFTEXT, None)
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<think>", "</think>"]) == [
        IM_START, IM_END, THINK, END_THINK]
    assert tok.convert_tokens_to_ids(SDAR_MASK_MISNAMED) != MASK  # the misnomer is no token
    # generate.py's ``tokenizer(tokenizer.mask_token)``: one id, inside text too.
    assert tok(tok.mask_token)["input_ids"] == [MASK]
    ids = tok.encode(f"a{SDAR_MASK}b<think>", add_special_tokens=False)
    assert ids.count(MASK) == 1 and ids[-1] == THINK and len(ids) == 4
    text = "The quick brown fox, 3.14 and café."
    assert tok.encode(text) == tok.encode(text, add_special_tokens=False)
    assert tok.decode(tok.encode(text)) == text and all(i < N_BASE for i in tok.encode(text))


def test_chat_template_is_qwen3s(sdar_dir, registered):
    tok = _tokenizer(sdar_dir)
    user = [{"role": "user", "content": "Hi there"}]
    assert tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    assert tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True, enable_thinking=False) == (
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    history = [{"role": "system", "content": "Be brief."}, *user,
               {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nHello"},
               {"role": "user", "content": "Again"}]
    assert tok.apply_chat_template(history, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n")
    last = [*user, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nHello"}]
    assert tok.apply_chat_template(last, tokenize=False).endswith("<think>\nhmm\n</think>\n\nHello<|im_end|>\n")


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def test_cli_tiny_preset_writes_the_fixture_checkpoint(tmp_path, sdar_dir, capsys):
    main(["sdar", str(tmp_path / "cli")])
    assert "wrote SDAR checkpoint (tiny, float32)" in capsys.readouterr().out
    for name in FILES:
        assert (tmp_path / "cli" / name).read_bytes() == (sdar_dir / name).read_bytes(), name


@pytest.mark.parametrize("preset, n_params, last", [
    ("8b", 8_190_735_360, "lm_head.weight"),       # Qwen3-8B's count
    ("4b", 4_411_424_256, "lm_head.weight"),       # Qwen3-4B's plus an untied head
    ("1.7b", 1_720_574_976, "model.norm.weight"),  # Qwen3-1.7B's, tied
])
def test_cli_real_size_presets_print_their_plan(tmp_path, capsys, preset, n_params, last):
    main(["sdar", str(tmp_path / "plan"), "--preset", preset, "--dtype", "bfloat16", "--dry-run"])
    out = capsys.readouterr().out
    assert f"SDAR {preset} (bfloat16)" in out and f"{n_params:,} parameters" in out
    assert out.rstrip().splitlines()[-1].strip().startswith(last)
    assert "model.layers.0.self_attn.q_norm.weight: (128,)" in out
    assert not (tmp_path / "plan").exists()
