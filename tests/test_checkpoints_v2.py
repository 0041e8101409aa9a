"""Hub-format Fast-dLLM v2 checkpoints from ``vllm_dllm_plugin.testing.checkpoints``
(``scripts/make_checkpoints.py`` on the command line).

Efficient-Large-Model/Fast_dLLM_v2_7B (untied ``lm_head``) and _1.5B (tied
embeddings) are Qwen2.5-Instruct models: Qwen2 tensor names, Qwen2.5's
generation config, and a plain ``Qwen2Tokenizer`` with one added token,
``|<MASK>|``, right after Qwen's added tokens.  These tests check the tiny
checkpoints the writer produces (fixtures ``v2_dir``: untied, seed 0;
``v2_tied_dir``: tied, seed 1) against those facts, and that the weights
really are Qwen2's by loading them into transformers' ``Qwen2ForCausalLM``.
No vLLM engine is started.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vllm_dllm_plugin.testing.checkpoints import (
    QWEN2_ADDED,
    QWEN2_ADDITIONAL,
    V2_MASK,
    V2_PRESETS,
    V2_SPECIALS,
    V2_SYSTEM_PROMPT,
    qwen2_weight_shapes,
    write_fast_dllm_v2_checkpoint,
)
from vllm_dllm_plugin.testing.checkpoints.cli import main

TINY = V2_PRESETS["tiny"]
VOCAB = TINY["vocab_size"]  # embedding / head rows
TOKENIZER_SIZE = TINY["tokenizer_size"]  # ids the tokenizer covers; the rest is padding
N_BASE = TOKENIZER_SIZE - len(V2_SPECIALS)  # BPE tokens
ENDOFTEXT, IM_START, IM_END = N_BASE, N_BASE + 1, N_BASE + 2
MASK = TOKENIZER_SIZE - 1  # right after Qwen's 22 added tokens, as 151665 in the real models
SIZES = {k: TINY[k] for k in (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
    "vocab_size")}

FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
}
CONFIG_KEYS = {
    "architectures", "attention_dropout", "auto_map", "bd_size", "bos_token_id", "eos_token_id", "hidden_act",
    "hidden_size", "initializer_range", "intermediate_size", "max_position_embeddings", "max_window_layers",
    "model_type", "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "rms_norm_eps",
    "rope_scaling", "rope_theta", "sliding_window", "tie_word_embeddings", "torch_dtype",
    "transformers_version", "use_cache", "use_sliding_window", "vocab_size",
}


@pytest.fixture(params=["untied", "tied"])
def ckpt(request, v2_dir, v2_tied_dir):
    """(directory, tied) for both fixture checkpoints."""
    return (v2_tied_dir, True) if request.param == "tied" else (v2_dir, False)


def _json(path):
    return json.loads(path.read_text())


def _tokenizer(path):
    from transformers import AutoTokenizer

    # trust_remote_code=False: config.json's auto_map names remote code that
    # is not there; the tokenizer must not need it.
    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


# --------------------------------------------------------------------------------------
# Files and config.json
# --------------------------------------------------------------------------------------


def test_files_follow_the_hub_layout(ckpt):
    path, _ = ckpt
    names = {p.name for p in path.iterdir()}
    assert names == FILES
    assert not any(n.endswith(".py") for n in names)


def test_config_has_the_fast_dllm_qwen_keys(ckpt):
    path, tied = ckpt
    cfg = _json(path / "config.json")
    assert set(cfg) == CONFIG_KEYS
    assert "mask_token_id" not in cfg  # the real code hard-codes it
    assert cfg["architectures"] == ["Fast_dLLM_QwenForCausalLM"]
    assert cfg["model_type"] == "Fast_dLLM_Qwen"
    assert cfg["auto_map"] == {
        "AutoConfig": "configuration.Fast_dLLM_QwenConfig",
        "AutoModel": "modeling.Fast_dLLM_QwenModel",
        "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM",
    }
    assert cfg["bd_size"] == 32
    assert cfg["bos_token_id"] == ENDOFTEXT and cfg["eos_token_id"] == IM_END
    assert cfg["tie_word_embeddings"] is tied
    assert {k: cfg[k] for k in SIZES} == SIZES
    assert cfg["max_position_embeddings"] >= 2048
    assert cfg["max_window_layers"] == cfg["num_hidden_layers"]
    assert cfg["hidden_act"] == "silu" and cfg["attention_dropout"] == 0.0 and cfg["initializer_range"] == 0.02
    assert cfg["rms_norm_eps"] == 1e-6 and cfg["rope_theta"] == 1000000.0 and cfg["rope_scaling"] is None
    assert cfg["use_cache"] is True and cfg["use_sliding_window"] is False
    assert cfg["torch_dtype"] == "float32"


def test_bd_size_and_dtype_are_parameters(tmp_path):
    path = write_fast_dllm_v2_checkpoint(tmp_path, bd_size=16, dtype="bfloat16")
    cfg = _json(path / "config.json")
    assert cfg["bd_size"] == 16 and cfg["torch_dtype"] == "bfloat16"
    assert {t.dtype for t in load_file(path / "model.safetensors").values()} == {torch.bfloat16}


def test_generation_config_is_qwen_instructs(ckpt):
    """Qwen2.5-Instruct's sampling defaults, inherited by the real checkpoints
    (a diffusion server must not apply them by default)."""
    path, _ = ckpt
    gen = _json(path / "generation_config.json")
    assert gen.pop("transformers_version")
    assert gen == {
        "bos_token_id": ENDOFTEXT,
        "do_sample": True,
        "eos_token_id": [IM_END, ENDOFTEXT],
        "pad_token_id": ENDOFTEXT,
        "repetition_penalty": 1.05,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
    }


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


def test_weight_names_and_shapes_are_qwen2(ckpt):
    path, tied = ckpt
    tensors = load_file(path / "model.safetensors")
    assert {n: tuple(t.shape) for n, t in tensors.items()} == qwen2_weight_shapes(**SIZES, tie_word_embeddings=tied)
    assert ("lm_head.weight" in tensors) is not tied
    assert "model.layers.0.self_attn.o_proj.bias" not in tensors
    assert {t.dtype for t in tensors.values()} == {torch.float32}


def test_mask_and_padding_rows_of_the_head_are_zero(ckpt):
    """The head rows (the embeddings when tied) of the mask token and of the
    padding past the tokenizer are zero: the model (almost) never predicts them."""
    path, tied = ckpt
    tensors = load_file(path / "model.safetensors")
    head = tensors["model.embed_tokens.weight" if tied else "lm_head.weight"]
    assert head.shape[0] == VOCAB
    assert not head[MASK].any() and not head[TOKENIZER_SIZE:].any()
    assert head[ENDOFTEXT].any() and head[IM_END].any()
    # Besides them only BPE byte tokens that alone decode to no readable text
    # are silenced (about a third of this small vocabulary).
    assert head[:N_BASE].abs().sum(-1).gt(0).float().mean() > 0.5


def test_seed_determines_the_bytes(tmp_path, v2_dir):
    again = write_fast_dllm_v2_checkpoint(tmp_path / "again", seed=0)
    for name in FILES:
        assert (again / name).read_bytes() == (v2_dir / name).read_bytes(), name
    other = write_fast_dllm_v2_checkpoint(tmp_path / "other", seed=2)
    assert (other / "model.safetensors").read_bytes() != (v2_dir / "model.safetensors").read_bytes()


def test_weights_load_strictly_into_transformers_qwen2(ckpt):
    """The same tensors load into ``Qwen2ForCausalLM`` (config.json with only
    ``model_type`` replaced) with nothing missing, unexpected or mismatched,
    so the names and shapes are Qwen2's; tied checkpoints share the head."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path, tied = ckpt
    cfg = _json(path / "config.json")
    cfg["model_type"] = "qwen2"
    config = Qwen2Config(**cfg)
    assert config.tie_word_embeddings is tied
    model, info = Qwen2ForCausalLM.from_pretrained(path, config=config, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs") if k in info)

    tensors = load_file(path / "model.safetensors")
    state = model.state_dict()
    for name, t in tensors.items():
        assert torch.equal(state[name], t), name
    if tied:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    else:
        assert torch.equal(model.lm_head.weight, tensors["lm_head.weight"])

    with torch.no_grad():
        logits = model(torch.tensor([[IM_START, 10, 20, 30, MASK, MASK]])).logits
    assert logits.shape == (1, 6, VOCAB) and torch.isfinite(logits).all()
    assert not logits[..., MASK].any() and not logits[..., TOKENIZER_SIZE:].any()


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------


def test_tokenizer_files_are_qwen2_instructs_plus_the_mask(v2_dir):
    tok_cfg = _json(v2_dir / "tokenizer_config.json")
    assert tok_cfg["tokenizer_class"] == "Qwen2Tokenizer" and "auto_map" not in tok_cfg
    assert tok_cfg["bos_token"] is None and tok_cfg["add_bos_token"] is False
    assert tok_cfg["eos_token"] == "<|im_end|>" and tok_cfg["pad_token"] == "<|endoftext|>"
    assert tok_cfg["unk_token"] is None and "mask_token" not in tok_cfg
    assert tok_cfg["additional_special_tokens"] == QWEN2_ADDITIONAL
    decoder = tok_cfg["added_tokens_decoder"]
    assert [(int(i), e["content"], e["special"]) for i, e in decoder.items()] == [
        (N_BASE + k, s, special) for k, (s, special) in enumerate(V2_SPECIALS)
    ]
    assert decoder[str(MASK)]["content"] == V2_MASK and decoder[str(MASK)]["special"] is True

    added = _json(v2_dir / "added_tokens.json")
    assert added == {s: N_BASE + k for k, (s, _) in enumerate([*QWEN2_ADDED, (V2_MASK, True)])}
    vocab = json.loads((v2_dir / "vocab.json").read_text(encoding="utf-8"))
    assert sorted(vocab.values()) == list(range(N_BASE))
    assert (v2_dir / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")

    tok_json = _json(v2_dir / "tokenizer.json")
    assert [(t["id"], t["content"]) for t in tok_json["added_tokens"]] == [
        (N_BASE + k, s) for k, (s, _) in enumerate(V2_SPECIALS)
    ]

    special_map = _json(v2_dir / "special_tokens_map.json")
    assert set(special_map) == {"additional_special_tokens", "eos_token", "pad_token"}
    assert special_map["eos_token"]["content"] == "<|im_end|>"


def test_tokenizer_loads_without_remote_code(ckpt):
    path, _ = ckpt
    tok = _tokenizer(path)
    assert type(tok).__name__.startswith("Qwen2Tokenizer")
    assert len(tok) == TOKENIZER_SIZE
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == IM_END
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == ENDOFTEXT
    assert tok.bos_token is None
    ids = {s: tok.convert_tokens_to_ids(s) for s in (V2_MASK, "<|im_end|>", "<|endoftext|>", "<|im_start|>")}
    assert ids == {V2_MASK: MASK, "<|im_end|>": IM_END, "<|endoftext|>": ENDOFTEXT, "<|im_start|>": IM_START}
    # The mask is one added token, also inside text, and special when decoding.
    assert tok.encode(V2_MASK, add_special_tokens=False) == [MASK]
    text_ids = tok.encode(f"a{V2_MASK}b", add_special_tokens=False)
    assert text_ids.count(MASK) == 1 and len(text_ids) == 3
    assert tok.decode(text_ids, skip_special_tokens=True) == "ab"
    # No bos, no eos added around plain text; ordinary text round-trips.
    text = "The quick brown fox, 3.14 and café."
    assert tok.encode(text) == tok.encode(text, add_special_tokens=False)
    assert tok.decode(tok.encode(text)) == text
    assert all(i < N_BASE for i in tok.encode(text))


def test_chat_template_is_chatml_with_qwens_default_system_prompt(v2_dir):
    tok = _tokenizer(v2_dir)
    user = [{"role": "user", "content": "Hi there"}]
    prompt = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        f"<|im_start|>system\n{V2_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert V2_SYSTEM_PROMPT == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    assert not tok.apply_chat_template(user, tokenize=False).endswith("<|im_start|>assistant\n")

    own_system = [{"role": "system", "content": "Be brief."}, *user, {"role": "assistant", "content": "Hello"}]
    assert tok.apply_chat_template(own_system, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n"
    )

    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids[0] == IM_START and ids.count(IM_END) == 2 and ids.count(IM_START) == 3


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def test_cli_tiny_preset_writes_the_fixture_checkpoint(tmp_path, v2_dir, capsys):
    main(["fast-dllm-v2", str(tmp_path / "cli")])
    assert "wrote Fast-dLLM v2 checkpoint (tiny, float32)" in capsys.readouterr().out
    for name in FILES:
        assert (tmp_path / "cli" / name).read_bytes() == (v2_dir / name).read_bytes(), name


@pytest.mark.parametrize(
    "preset, n_params, head",
    [("7b", 7_615_616_512, "lm_head.weight"), ("1.5b", 1_543_714_304, "model.norm.weight")],
)
def test_cli_real_size_presets_print_their_plan(tmp_path, capsys, preset, n_params, head):
    """The 7B and 1.5B shapes (Qwen2.5-7B / 1.5B parameter counts; the 1.5B
    has no lm_head) are planned without writing anything."""
    main(["fast-dllm-v2", str(tmp_path / "plan"), "--preset", preset, "--dtype", "bfloat16", "--dry-run"])
    out = capsys.readouterr().out
    assert f"Fast-dLLM v2 {preset} (bfloat16)" in out and f"{n_params:,} parameters" in out
    assert out.rstrip().splitlines()[-1].strip().startswith(head)
    assert ("lm_head.weight" in out) is (preset == "7b")
    assert not (tmp_path / "plan").exists()
