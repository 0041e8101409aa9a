"""Hub-format Dream checkpoints: the files, and loading them offline.

Dream-v0-7B's hub config and tokenizer are remote code (``auto_map`` to
``configuration_dream`` / ``tokenization_dream``, ``tokenizer_class``
"DreamTokenizer"). The checkpoint writer reproduces that layout without any
``.py`` file; the plugin's :func:`register_dream_config` and
:func:`register_dream_tokenizer` must make it load with and without
``trust_remote_code`` (``HF_HUB_OFFLINE=1`` is set by conftest, and so is the
``dream_dir`` fixture: ``write_dream_checkpoint(..., seed=0)``, the tiny preset).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vllm_dllm_plugin.testing.checkpoints import (
    DREAM_CHAT_TEMPLATE,
    DREAM_SPECIALS,
    build_dream_tokenizer,
    dream_weight_shapes,
    write_dream_checkpoint,
    write_dream_config,
)

from vllm_dllm_plugin.models.dream_config import DreamConfig, register_dream_config
from vllm_dllm_plugin.models.dream_tokenizer import DreamTokenizer, register_dream_tokenizer

VOCAB = 512
N_BASE = VOCAB - len(DREAM_SPECIALS)
EOS, IM_START, IM_END = N_BASE, N_BASE + 1, N_BASE + 2
BOS, MASK = VOCAB - 2, VOCAB - 1
TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    "Numbers 3.14 and 2024; ümlauts, café, naïve, 日本語 ✓ 🙂",
    "def add(a, b):\n    return a + b\n",
    "Special <|im_start|>user\nHi<|im_end|> and <|mask|> stay whole.",
]


@pytest.fixture(scope="module")
def registered():
    register_dream_config()
    register_dream_tokenizer()
    register_dream_config()  # idempotent
    register_dream_tokenizer()


# --------------------------------------------------------------------------------------
# The files the writer produces
# --------------------------------------------------------------------------------------


def test_checkpoint_files_follow_the_hub_layout(dream_dir):
    names = {p.name for p in dream_dir.iterdir()}
    assert names == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
    }
    assert not any(n.endswith(".py") for n in names) and "tokenizer.json" not in names

    cfg = json.loads((dream_dir / "config.json").read_text())
    assert cfg["model_type"] == "Dream" and cfg["architectures"] == ["DreamModel"]
    assert cfg["auto_map"] == {
        "AutoConfig": "configuration_dream.DreamConfig",
        "AutoModel": "modeling_dream.DreamModel",
    }
    assert (cfg["rope_theta"], cfg["rms_norm_eps"], cfg["hidden_act"]) == (1e6, 1e-6, "silu")
    assert cfg["tie_word_embeddings"] is False and cfg["use_cache"] is False
    assert cfg["use_sliding_window"] is False and cfg["sliding_window"] is None
    assert (cfg["mask_token_id"], cfg["eos_token_id"], cfg["pad_token_id"], cfg["bos_token_id"]) == (
        MASK, EOS, EOS, EOS)
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    assert head_dim in (32, 64, 80, 96, 112, 128)
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # GQA

    gen = json.loads((dream_dir / "generation_config.json").read_text())
    assert (gen["eos_token_id"], gen["pad_token_id"], gen["bos_token_id"]) == (EOS, EOS, EOS)
    assert gen["mask_token_id"] is None and gen["alg"] == "origin"

    tok_cfg = json.loads((dream_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "DreamTokenizer"
    assert tok_cfg["auto_map"] == {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]}
    assert tok_cfg["chat_template"] == DREAM_CHAT_TEMPLATE
    added = json.loads((dream_dir / "added_tokens.json").read_text())
    assert added == {s: N_BASE + i for i, (s, _) in enumerate(DREAM_SPECIALS)}
    assert added["<|mask|>"] == MASK and added["<|endoftext|>"] == EOS
    vocab = json.loads((dream_dir / "vocab.json").read_text())
    assert sorted(vocab.values()) == list(range(N_BASE))
    assert (dream_dir / "merges.txt").read_text().startswith("#version: 0.2\n")


def test_weights_have_qwen2_names_and_shapes(dream_dir):
    cfg = json.loads((dream_dir / "config.json").read_text())
    tensors = load_file(str(dream_dir / "model.safetensors"))
    sizes = {k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                 "num_key_value_heads", "intermediate_size", "vocab_size")}
    expected = dream_weight_shapes(**sizes)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == expected
    assert "model.layers.0.self_attn.k_proj.bias" in tensors
    assert "model.layers.0.self_attn.o_proj.bias" not in tensors
    assert tensors["model.layers.1.self_attn.k_proj.weight"].shape == (2 * 32, 128)
    head = tensors["lm_head.weight"]
    assert torch.count_nonzero(head[MASK]) == 0  # the mask token is never predicted
    assert not torch.equal(head, tensors["model.embed_tokens.weight"])  # untied
    assert all(v.dtype == torch.float32 for v in tensors.values())


def test_writer_is_deterministic_and_validates(tmp_path):
    a = write_dream_checkpoint(tmp_path / "a", seed=3)
    b = write_dream_checkpoint(tmp_path / "b", seed=3)
    for name in ("model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    bf16 = write_dream_checkpoint(tmp_path / "bf16", dtype="bfloat16")
    assert load_file(str(bf16 / "model.safetensors"))["lm_head.weight"].dtype == torch.bfloat16
    assert json.loads((bf16 / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with pytest.raises(ValueError):
        write_dream_checkpoint(tmp_path / "hd", hidden_size=96, num_attention_heads=4)  # head_dim 24
    with pytest.raises(ValueError):
        write_dream_checkpoint(tmp_path / "kv", num_key_value_heads=3)


# --------------------------------------------------------------------------------------
# Config and tokenizer through transformers' Auto classes, offline
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("trust", [False, True, None])
def test_autoconfig_gives_dream_config(dream_dir, registered, trust):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(dream_dir, trust_remote_code=trust)
    assert type(cfg) is DreamConfig and cfg.model_type == "Dream"
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (128, 4, 2)
    assert (cfg.mask_token_id, cfg.pad_token_id, cfg.eos_token_id) == (MASK, EOS, EOS)
    assert cfg.rope_parameters["rope_theta"] == 1e6 and cfg.rms_norm_eps == 1e-6
    assert cfg.tie_word_embeddings is False


def test_dream_config_defaults():
    cfg = DreamConfig()
    assert cfg.model_type == "Dream" and cfg.mask_token_id == 151666 and cfg.pad_token_id == 151643
    assert cfg.use_cache is False


def test_config_of_the_7b_sizes(tmp_path, registered):
    """config.json with Dream-v0-7B's sizes and ids parses to what vLLM reads."""
    from transformers import AutoConfig

    ids = {"<|endoftext|>": 151643, "<|mask|>": 151666}
    write_dream_config(tmp_path, hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, intermediate_size=18944, vocab_size=152064,
                       max_position_embeddings=131072, dtype="bfloat16", ids=ids)
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert type(cfg) is DreamConfig
    assert cfg.hidden_size // cfg.num_attention_heads == 128 and cfg.num_key_value_heads == 4
    assert (cfg.vocab_size, cfg.mask_token_id, cfg.eos_token_id) == (152064, 151666, 151643)
    assert cfg.sliding_window is None and set(cfg.layer_types) == {"full_attention"}


@pytest.mark.parametrize("trust", [False, True, None])
def test_autotokenizer_loads_without_remote_code(dream_dir, registered, trust):
    from transformers import AutoTokenizer

    assert not (dream_dir / "tokenization_dream.py").exists()
    tok = AutoTokenizer.from_pretrained(dream_dir, trust_remote_code=trust)
    assert isinstance(tok, DreamTokenizer) and type(tok).__name__ == "DreamTokenizer"
    assert len(tok) == VOCAB
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token_id) == ("<|endoftext|>", EOS, EOS)
    assert (tok.bos_token, tok.bos_token_id) == ("<|beginoftext|>", BOS)
    assert (tok.mask_token, tok.mask_token_id) == ("<|mask|>", MASK)
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [IM_START, IM_END]


@pytest.fixture(scope="module")
def tokenizer(dream_dir, registered):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(dream_dir)


def test_round_trip_and_every_id_decodes(tokenizer):
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
        assert all(0 <= i < VOCAB for i in ids)
    # no bos/eos is added by encoding
    assert tokenizer.encode("Hello") == tokenizer.encode("Hello", add_special_tokens=False)
    # specials are single tokens, and skip_special_tokens drops them
    ids = tokenizer.encode("<|im_start|>user\nHi<|im_end|><|mask|>")
    assert ids[0] == IM_START and ids[-2:] == [IM_END, MASK]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nHi"
    # every id is the trained tokenizer's token and decodes as it does
    trained, _ = build_dream_tokenizer(VOCAB)
    every_id = list(range(VOCAB))
    assert tokenizer.convert_ids_to_tokens(every_id) == [trained.id_to_token(i) for i in every_id]
    assert tokenizer.decode(every_id) == trained.decode(every_id, skip_special_tokens=False)
    assert tokenizer.decode([IM_START, IM_END, MASK]) == "<|im_start|><|im_end|><|mask|>"


def test_encoding_matches_the_trained_bpe(tokenizer):
    """The hub files (vocab.json + merges.txt + Qwen2 pre-tokenization) give
    the same ids as the tokenizer the writer trained."""
    trained, _ = build_dream_tokenizer(VOCAB)
    for text in TEXTS[:4]:
        assert tokenizer.encode(text) == trained.encode(text).ids


def test_chat_template(tokenizer):
    messages = [{"role": "user", "content": "What is two plus three?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is two plus three?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *messages,
                   {"role": "assistant", "content": "Five."}]
    text = tokenizer.apply_chat_template(with_system, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is two plus three?<|im_end|>\n"
        "<|im_start|>assistant\nFive.<|im_end|>\n"
    )
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert ids[0] == IM_START and BOS not in ids  # no bos token in Dream's template
    assert ids.count(IM_START) == 3 and ids.count(IM_END) == 2
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("trust", [False, True])
def test_vllm_tokenizer_loader(dream_dir, registered, trust):
    from vllm.tokenizers import get_tokenizer

    tok = get_tokenizer(str(dream_dir), trust_remote_code=trust)
    assert isinstance(tok, DreamTokenizer)
    assert tok.eos_token_id == EOS and tok.mask_token_id == MASK and tok.max_token_id == VOCAB - 1
    assert tok.decode(tok.encode(TEXTS[0])) == TEXTS[0]
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_registration_is_what_makes_it_load(dream_dir):
    """In a fresh interpreter: without the registration transformers wants the
    missing remote code; after ``register_dream_tokenizer()`` alone (which also
    registers the config) both Auto classes load, whatever trust_remote_code."""
    script = textwrap.dedent(f"""
        from transformers import AutoConfig, AutoTokenizer
        path = {str(dream_dir)!r}
        for trust in (False, True):
            try:
                AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
            except (OSError, ValueError):
                pass
            else:
                raise SystemExit(f"loaded without registration (trust_remote_code={{trust}})")
        from vllm_dllm_plugin.models.dream_tokenizer import register_dream_tokenizer
        register_dream_tokenizer()
        for trust in (False, True, None):
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
            cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust)
            assert type(tok).__name__ == "DreamTokenizer", type(tok)
            assert type(cfg).__name__ == "DreamConfig", type(cfg)
        print("ok")
    """)
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
