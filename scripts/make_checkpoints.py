#!/usr/bin/env python3
"""Write tiny diffusion-LLM checkpoints with random weights, for tests and demos.

Three families, each in the on-disk hub layout of its real model, so that code
written against them also works on the real checkpoint:

* ``llada``: ``GSAI-ML/LLaDA-8B-Instruct`` (``config.json``,
  ``generation_config.json``, ``model.safetensors``, ``tokenizer.json``,
  ``tokenizer_config.json``, ``special_tokens_map.json``);
* ``dream``: ``Dream-org/Dream-v0-Instruct-7B`` (``config.json``,
  ``generation_config.json``, ``model.safetensors`` with Qwen2 tensor names,
  and the files of its remote-code tokenizer: ``vocab.json``, ``merges.txt``,
  ``added_tokens.json``, ``special_tokens_map.json``,
  ``tokenizer_config.json``);
* ``fast-dllm-v2``: ``Efficient-Large-Model/Fast_dLLM_v2_7B`` (untied head)
  and ``_1.5B`` (tied embeddings): Qwen2 tensor names, Qwen2.5's generation
  config, and a plain ``Qwen2Tokenizer`` (``tokenizer.json`` and the files
  of the Dream list) with the mask token ``|<MASK>|`` added.

Dream and Fast-dLLM v2 are both Qwen2 layouts: one writer
(:func:`write_qwen2_checkpoint`) serves both, and what differs is data (a
:class:`Qwen2Family`).  Only the sizes differ from the real models: a small
vocabulary, few layers, a narrow model.  No remote-code ``.py`` files are
written and nothing is downloaded.

Usage::

    python scripts/make_checkpoints.py llada OUT_DIR [--preset tiny] [--seed 0] [--dtype float32]
    python scripts/make_checkpoints.py dream OUT_DIR [--preset tiny] [--seed 0] [--dtype float32]
    python scripts/make_checkpoints.py fast-dllm-v2 OUT_DIR [--preset tiny] [--seed 0] [--dtype float32]
    python scripts/make_checkpoints.py llada OUT_DIR --preset 8b --dtype bfloat16 --dry-run   # sizes only
    python scripts/make_checkpoints.py fast-dllm-v2 OUT_DIR --preset 1.5b --dtype bfloat16 --dry-run

or, from Python (e.g. a test that put ``scripts/`` on ``sys.path``)::

    from make_checkpoints import write_dream_checkpoint, write_fast_dllm_v2_checkpoint, write_llada_checkpoint
    path = write_llada_checkpoint(tmp_path / "llada")
    path = write_dream_checkpoint(tmp_path / "dream")
    path = write_fast_dllm_v2_checkpoint(tmp_path / "v2", tie_word_embeddings=True)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

# ---------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------

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

# Head sizes the vLLM CPU attention backend accepts; keeping to them lets the
# checkpoints be served on machines without a GPU.
SUPPORTED_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Weights larger than this are split into model-0000i-of-0000n.safetensors
# shards plus model.safetensors.index.json, as on the hub (the 8B preset
# gets six, like LLaDA-8B-Instruct); one shard is held in memory at a time.
MAX_SHARD_BYTES = 3_000_000_000

# Default standard deviation of the output logits.  Chosen (by measuring a
# plain forward pass of the tiny preset on random prompts) so that argmax
# confidences of masked positions spread over (0, 1): a fair share is above
# 0.7 and some above 0.9, so confidence-threshold decoding rules really fire.
DEFAULT_LOGIT_SCALE = 8.0

# ---------------------------------------------------------------------------
# Special tokens (names and relative order as in LLaDA-8B-Instruct)
# ---------------------------------------------------------------------------

BOS = "<|startoftext|>"  # 126080 in the 8B model
EOS = "<|endoftext|>"  # 126081; also pad, and pads the answer after <|eot_id|>
CLS = "[CLS]"  # 126082
GMASK = "[gMASK]"  # 126083
MASK = "<|mdm_mask|>"  # 126336, config.json mask_token_id
ADDITIONAL = [
    "<role>",
    "</role>",
    "<|arithmetic_start|>",
    "<|arithmetic_end|>",
    "<|number_start|>",
    "<|number_end|>",
]
START_HEADER = "<|start_header_id|>"  # 126346
END_HEADER = "<|end_header_id|>"  # 126347
EOT = "<|eot_id|>"  # 126348, ends a turn
MIN_RESERVED = 4  # at least this many <|reserved_token_N|> fillers

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

# A small English corpus to train the byte-level BPE on, so that token ids
# decode to real word pieces.  Written for this script; any change to it
# changes every tiny tokenizer.
CORPUS = """\
The quick brown fox jumps over the lazy dog. A small model can still learn to speak.
Once upon a time there was a little town by the sea. The people of the town were fishermen,
and every morning they went out in their boats before the sun came up. In the evening they
came back with fish, and the children ran down to the water to meet them.
What is the capital of France? The capital of France is Paris. What is two plus three? It is five.
Please write a short poem about the moon. The moon is bright tonight; it lights the road home.
Question: How many days are there in a week? Answer: There are seven days in a week.
Question: Which is larger, ten or twelve? Answer: Twelve is larger than ten.
The weather today is sunny with a light wind from the west. Tomorrow it will rain in the afternoon.
She opened the window and looked at the garden. The flowers were red, yellow, white and blue.
He said that he would come back later, but nobody believed him. They waited for an hour.
I think that the best way to learn something new is to practice a little every day.
You should always read the instructions carefully before you start working on a problem.
We are going to the market to buy bread, milk, eggs, apples, cheese and some vegetables.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 20 42 100 256 1000 2024 3.14 1/2 50% $5.
First, take the first number. Second, add the second number. Finally, write down the result.
Let us think step by step. If Tom has three apples and gives one to Mary, he has two apples left.
The computer program reads a file, counts the words and prints the number of lines.
def add(a, b):
    return a + b
for i in range(10):
    print(i)
A good answer is clear, correct and short. A bad answer is long, vague or wrong.
Thank you for your question. I am happy to help. Here is a simple explanation of the idea.
Diffusion language models generate text by filling in masked tokens over several steps.
At each step the model predicts every masked position at once and keeps the most confident ones.
Hello! How are you today? I am fine, thank you. What would you like to talk about?
The history of science is full of people who asked simple questions and found surprising answers.
Water boils at one hundred degrees and freezes at zero degrees on the Celsius scale.
The train leaves the station at nine o'clock and arrives in the city two hours later.
My favourite colours are green and orange, and my favourite animal is the cat.
They built a new house near the river, with a large kitchen and three small bedrooms.
The teacher asked the students to write an essay about their summer holidays.
In the end, everything worked out well, and they all lived happily together.
"""


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _write_json(path: Path, obj: dict) -> None:
    """Pretty-printed with sorted keys, like ``save_pretrained`` output."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


# Helpers shared by all families: each family's hub files differ in keys,
# but validation, the unreadable-id scan, the tokenizer files and the
# safetensors loop are the same code, kept once so the families cannot drift.


def _train_byte_level_bpe(tok: Tokenizer, vocab_size: int, lines: list[str]) -> None:
    """Train ``tok``'s BPE model on ``lines`` up to ``vocab_size`` tokens, every
    byte in the initial alphabet.  Training on a fixed list of lines makes the
    result depend only on the built-in corpora."""
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer=trainer)


def _check_special_ids(tok: Tokenizer, ids: dict[str, int], n_base: int, vocab_size: int) -> None:
    """The special tokens must fill ``[n_base, vocab_size)`` in order, so the
    tokenizer covers every id a model of ``vocab_size`` can emit."""
    assert list(ids.values()) == list(range(n_base, vocab_size)), "special ids not contiguous"
    assert tok.get_vocab_size() == vocab_size


def _check_shapes(hidden: int, heads: int, kv_heads: int, dtype: str, *, names: tuple[str, str, str]) -> None:
    """Reject a dtype or head layout the plugin cannot load.

    ``names`` are the family's own spellings of (hidden, heads, kv_heads), so
    the error message uses the same argument names as the caller's signature.
    """
    hidden_name, heads_name, kv_name = names
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if hidden % heads or heads % kv_heads:
        raise ValueError(f"{hidden_name} must divide by {heads_name}, and {heads_name} by {kv_name}")
    if hidden // heads not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {hidden // heads} is not one of {SUPPORTED_HEAD_DIMS}")


def _unreadable_ids(tok: Tokenizer, ids: dict[str, int], mask: str) -> list[int]:
    """``mask``'s id, then every non-special id that alone decodes to no
    readable text (see :func:`unreadable_token_ids` for why)."""
    special = set(ids.values())
    unreadable = [ids[mask]]
    for i in range(tok.get_vocab_size()):
        text = tok.decode([i]).replace("\n", "").replace("\t", "")
        if i not in special and ("\ufffd" in text or not text.isprintable()):
            unreadable.append(i)
    return unreadable


@dataclass(frozen=True)
class TokenizerFiles:
    """What one family's tokenizer files say beyond the tokenizer itself (its
    BPE and added tokens); :func:`write_tokenizer` writes any family's files
    from it.

    ``roles`` (``bos_token``, ``eos_token``, ...) go into
    tokenizer_config.json as given, ``None`` included, and the set ones into
    special_tokens_map.json; ``config`` holds the family's other
    tokenizer_config.json keys.  Every added token is "special" except those
    in ``not_special``.  ``tokenizer_json`` writes tokenizer.json (the fast
    tokenizer); ``slow_files`` writes vocab.json, merges.txt and
    added_tokens.json (a slow, Qwen2-style BPE).
    """

    roles: Mapping[str, str | None]
    additional_special_tokens: Sequence[str]
    chat_template: str
    config: Mapping[str, object]
    not_special: frozenset[str] = frozenset()
    tokenizer_json: bool = True
    slow_files: bool = False


def _token_entry(content: str) -> dict:
    """A special_tokens_map.json entry: the content with all flags False."""
    flags = dict(lstrip=False, normalized=False, rstrip=False, single_word=False)
    return {"content": content, **flags}


def _bpe_vocab_and_merges(tok: Tokenizer) -> tuple[dict[str, int], list[str]]:
    """The trained BPE model's vocabulary (without added tokens) and merges
    as ``merges.txt`` lines."""
    model = json.loads(tok.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def write_tokenizer(out_dir: Path, files: TokenizerFiles, tok: Tokenizer, ids: dict[str, int]) -> None:
    """The tokenizer files ``files`` describes, for ``tok`` whose added
    tokens have the ids ``ids``: tokenizer_config.json (with an
    ``added_tokens_decoder`` entry per added token), special_tokens_map.json,
    and tokenizer.json and/or vocab.json, merges.txt, added_tokens.json."""
    if files.tokenizer_json:
        tok.save(str(out_dir / "tokenizer.json"))
    if files.slow_files:
        vocab, merges = _bpe_vocab_and_merges(tok)
        (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
        (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        (out_dir / "added_tokens.json").write_text(
            json.dumps(ids, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )

    flags = dict(lstrip=False, normalized=False, rstrip=False, single_word=False)
    added_tokens_decoder = {
        str(i): {"content": s, **flags, "special": s not in files.not_special} for s, i in ids.items()
    }
    additional = list(files.additional_special_tokens)
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "added_tokens_decoder": added_tokens_decoder,
            "additional_special_tokens": additional,
            "chat_template": files.chat_template,
            **files.roles,
            **files.config,
        },
    )
    _write_json(
        out_dir / "special_tokens_map.json",
        {
            "additional_special_tokens": additional,
            **{role: _token_entry(s) for role, s in files.roles.items() if s is not None},
        },
    )


def _write_weights(
    out_dir: Path,
    shapes: dict[str, tuple[int, ...]],
    make_tensor: Callable[[str, tuple[int, ...], torch.Generator], torch.Tensor],
    *,
    seed: int,
    dtype: str,
    head_name: str,
    silent_ids: Sequence[int],
) -> int:
    """model.safetensors (or its shards, see :func:`shard_files`) from
    ``make_tensor`` (one CPU generator seeded with ``seed``, tensors drawn in
    the order of ``shapes``, so a seed gives the same bytes on every
    machine); rows ``silent_ids`` of ``head_name`` are zeroed.  Only one
    shard is in memory at a time.  Returns the parameter count."""
    gen = torch.Generator().manual_seed(seed)
    files = shard_files(shapes, dtype)
    weight_map = {}
    for file in dict.fromkeys(files.values()):
        tensors = {}
        for name in (n for n, f in files.items() if f == file):
            t = make_tensor(name, shapes[name], gen)
            if name == head_name:
                t[list(silent_ids)] = 0.0
            tensors[name] = t.to(DTYPES[dtype]).contiguous()
            weight_map[name] = file
        save_file(tensors, str(out_dir / file), metadata={"format": "pt"})
    n_params = sum(math.prod(s) for s in shapes.values())
    if len(set(files.values())) > 1:
        _write_json(
            out_dir / "model.safetensors.index.json",
            {"metadata": {"total_size": n_params * DTYPES[dtype].itemsize},
             "weight_map": weight_map},
        )
    return n_params


def shard_files(shapes: dict[str, tuple[int, ...]], dtype: str) -> dict[str, str]:
    """The file each tensor goes to: all in model.safetensors when they fit
    ``MAX_SHARD_BYTES``, else consecutive runs of tensors of at most that
    size (a larger tensor alone) in model-0000i-of-0000n.safetensors."""
    itemsize = DTYPES[dtype].itemsize
    shard_of, shard, size = {}, 0, 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * itemsize
        if size and size + nbytes > MAX_SHARD_BYTES:
            shard, size = shard + 1, 0
        shard_of[name] = shard
        size += nbytes
    n = shard + 1
    if n == 1:
        return dict.fromkeys(shapes, "model.safetensors")
    return {name: f"model-{i + 1:05d}-of-{n:05d}.safetensors" for name, i in shard_of.items()}


def build_llada_tokenizer(vocab_size: int, *, merges: bool = True) -> tuple[Tokenizer, dict[str, int]]:
    """Byte-level BPE trained on ``CORPUS``, plus LLaDA's special tokens.

    With ``merges=False`` the BPE has no merges: every character is its own
    token (the 256 byte symbols), as a model trained on digits wants.

    Layout mirrors the 8B tokenizer: ordinary BPE tokens first, then the
    special block <|startoftext|>, <|endoftext|>, [CLS], [gMASK],
    <|reserved_token_N|>..., <|mdm_mask|>, <role>..., <|start_header_id|>,
    <|end_header_id|>, <|eot_id|>.  Reserved fillers make the tokenizer cover
    every id in [0, vocab_size), so any id a random model emits decodes.
    Returns the tokenizer and the special token ids by content.
    """
    named_after_mask = [MASK, *ADDITIONAL, START_HEADER, END_HEADER, EOT]
    n_named = 4 + len(named_after_mask)
    n_base_target = vocab_size - n_named - MIN_RESERVED
    if n_base_target < 256 + (16 if merges else 0):
        raise ValueError(f"vocab_size={vocab_size} is too small for a byte-level BPE")

    if merges:
        tok = Tokenizer(models.BPE())
    else:
        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if merges:
        _train_byte_level_bpe(tok, n_base_target, CORPUS.splitlines(keepends=True))
    n_base = tok.get_vocab_size()  # may be below the target if CORPUS runs out

    n_reserved = vocab_size - n_base - n_named
    specials = [BOS, EOS, CLS, GMASK]
    specials += [f"<|reserved_token_{i}|>" for i in range(n_reserved)]
    specials += named_after_mask
    flags = dict(special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
    tok.add_special_tokens([AddedToken(s, **flags) for s in specials])
    ids = {s: tok.token_to_id(s) for s in specials}
    _check_special_ids(tok, ids, n_base, vocab_size)
    return tok, ids


def unreadable_token_ids(tok: Tokenizer, ids: dict[str, int]) -> list[int]:
    """Ids a trained model would practically never emit on their own.

    These are the mask token and the byte tokens that alone decode to no
    readable text (a lone UTF-8 continuation byte gives U+FFFD, control bytes
    give control characters).  Their output-head rows are zeroed so a random
    model's argmax lands on word pieces, and its text reads like text.
    """
    return _unreadable_ids(tok, ids, MASK)


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
    _write_json(
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

    return _write_weights(
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
    _check_shapes(d_model, n_heads, n_kv_heads, dtype, names=("d_model", "n_heads", "n_kv_heads"))

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


# ---------------------------------------------------------------------------
# Qwen2 layouts: Dream (Dream-org/Dream-v0-Instruct-7B) and Fast-dLLM v2
# (Efficient-Large-Model/Fast_dLLM_v2_7B and _1.5B)
# ---------------------------------------------------------------------------

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

# Qwen2.5's added tokens, in id order: in the real tokenizers they follow the
# 151643 BPE tokens, so <|endoftext|> is 151643, <|im_start|> 151644,
# <|im_end|> 151645, ..., <|file_sep|> 151664.  The flag says whether the
# token is "special" (Qwen2.5 marks the tool-call and fill-in-the-middle
# tokens as ordinary added tokens).  Each family appends its own tokens; the
# tiny tokenizers keep the order and put the block at the end of their small
# vocabulary.
QWEN2_ENDOFTEXT = "<|endoftext|>"
QWEN2_IM_START = "<|im_start|>"
QWEN2_IM_END = "<|im_end|>"  # ends a chat turn
QWEN2_ADDED: list[tuple[str, bool]] = [
    (QWEN2_ENDOFTEXT, True),
    (QWEN2_IM_START, True),
    (QWEN2_IM_END, True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
# "additional_special_tokens" of Qwen2.5 (the chat and vision markers).
QWEN2_ADDITIONAL = [s for s, _ in QWEN2_ADDED[1:14]]
QWEN2_NOT_SPECIAL = frozenset(s for s, special in QWEN2_ADDED if not special)
# tokenizer_config.json keys every Qwen2 BPE tokenizer has.
QWEN2_TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "clean_up_tokenization_spaces": False,
    "errors": "replace",
    "model_max_length": 131072,
    "split_special_tokens": False,
    "unk_token": None,
}

# Dream's tokenizer: Qwen2.5's tokens, then <|beginoftext|> (151665 in the
# 7B model) and <|mask|> (151666, config.json mask_token_id).
DREAM_EOS = QWEN2_ENDOFTEXT  # eos, pad and unk of the tokenizer; config eos/pad/bos id
DREAM_IM_START = QWEN2_IM_START
DREAM_IM_END = QWEN2_IM_END
DREAM_BOS = "<|beginoftext|>"  # the tokenizer's bos_token (Dream's own addition)
DREAM_MASK = "<|mask|>"  # Dream's own addition
DREAM_SPECIALS: list[tuple[str, bool]] = [*QWEN2_ADDED, (DREAM_BOS, True), (DREAM_MASK, True)]
DREAM_ADDITIONAL = QWEN2_ADDITIONAL

# The chat template of Dream-v0-Instruct-7B (tokenizer_config.json): the
# Qwen2 ChatML format with a default system turn and no bos token, e.g.
# "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n".
DREAM_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Fast-dLLM v2's tokenizer: Qwen2.5-Instruct's (no bos, eos <|im_end|>, pad
# <|endoftext|>) plus the mask token right after Qwen's added tokens (151665
# in both real checkpoints; config.json names no mask id, the model code
# hard-codes it).
V2_MASK = "|<MASK>|"
V2_SPECIALS: list[tuple[str, bool]] = [*QWEN2_ADDED, (V2_MASK, True)]
V2_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# ChatML with Qwen2.5's default system turn (used when the conversation does
# not start with its own) and no bos token, e.g. for one user turn "Hi":
# "<|im_start|>system\nYou are Qwen, ...<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n".
# Written for this script.
V2_CHAT_TEMPLATE = (
    "{%- set turns = messages -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system = '" + V2_SYSTEM_PROMPT + "' -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' -}}"
    "{%- for turn in turns -%}"
    "{{- '<|im_start|>' + turn['role'] + '\\n' + turn['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Qwen2's pre-tokenization: this split, then byte-level mapping without a
# regex of its own; NFC normalization first.  (The same regex as in the hub's
# tokenization_dream.py.)
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# More text for the Qwen2 BPE (Qwen2 pre-tokenization splits digits one by
# one, so CORPUS alone yields fewer merges than the larger presets need).
# Written for this script; changing it changes every Dream and v2 tokenizer.
DREAM_EXTRA_CORPUS = """\
The library opens at eight in the morning and closes at six in the evening, except on Sundays.
Students borrowed books about mountains, rivers, forests, deserts, islands and distant planets.
A careful engineer measures twice, writes the plan down, and only then starts to build the bridge.
The orchestra played a quiet melody while the audience listened without making a single sound.
Gardeners plant tomatoes in spring, harvest them in summer, and prepare the soil again in autumn.
Our neighbours have a friendly dog called Biscuit who loves chasing balls across the park.
The museum shows paintings, sculptures, ancient coins, old maps and a very large dinosaur skeleton.
Scientists observed that the temperature of the ocean changes slowly from season to season.
If you follow the path through the valley, you will reach the village before the sunset.
Cooking rice requires water, salt, patience and a pot with a tight lid; stir it gently.
The children built a castle of sand, decorated it with shells and watched the waves wash it away.
Every programmer knows that testing small functions first saves hours of debugging later.
Mathematics describes patterns: triangles, circles, squares, sequences, functions and probabilities.
Travellers should carry a passport, a ticket, comfortable shoes, a warm jacket and some snacks.
The mayor announced that the new hospital would open next month near the central station.
Birds migrate south when the days become shorter and the nights grow colder and longer.
"""


@dataclass(frozen=True)
class Qwen2Family:
    """Everything a Qwen2-layout family writes differently; the rest
    (Qwen2 tensor names and init, the Qwen2 BPE, the files) is
    :func:`write_qwen2_checkpoint`'s.

    ``added`` are the added tokens (content, "special") in id order after
    the BPE; ``mask`` is the one whose head row is zeroed.  ``config`` and
    ``generation_config`` are the family's keys of config.json and
    generation_config.json beyond the shared Qwen2 ones; the ``*_token_ids``
    maps name keys whose values are token ids, by token content (a list of
    contents gives a list of ids).
    """

    label: str
    added: Sequence[tuple[str, bool]]
    mask: str
    tokenizer: TokenizerFiles
    config: Mapping[str, object]
    config_token_ids: Mapping[str, str]
    generation_config: Mapping[str, object]
    generation_token_ids: Mapping[str, str | Sequence[str]]
    tie_word_embeddings: bool = False


DREAM = Qwen2Family(
    label="Dream",
    added=DREAM_SPECIALS,
    mask=DREAM_MASK,
    # Dream's remote-code tokenizer (``DreamTokenizer``, a slow Qwen2-style
    # BPE in ``tokenization_dream.py``, which is *not* written): no
    # tokenizer.json, as on the hub.  The ``auto_map`` to the remote module
    # keeps plain transformers from loading it: the plugin registers a class
    # of that name (``vllm_dllm_plugin.models.dream_tokenizer``).
    tokenizer=TokenizerFiles(
        roles={"bos_token": DREAM_BOS, "eos_token": DREAM_EOS, "mask_token": DREAM_MASK, "pad_token": DREAM_EOS},
        additional_special_tokens=QWEN2_ADDITIONAL,
        chat_template=DREAM_CHAT_TEMPLATE,
        config={
            **QWEN2_TOKENIZER_CONFIG,
            "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
            "tokenizer_class": "DreamTokenizer",
        },
        not_special=QWEN2_NOT_SPECIAL,
        tokenizer_json=False,
        slow_files=True,
    ),
    # As on the hub: bos, eos and pad ids are all <|endoftext|> (the
    # tokenizer's bos_token <|beginoftext|> is not what config.json names),
    # no sliding window, ``use_cache`` false.
    config={
        "architectures": ["DreamModel"],
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "model_type": "Dream",
        "sliding_window": None,
        "transformers_version": "4.46.2",
        "use_cache": False,
    },
    config_token_ids={
        "bos_token_id": DREAM_EOS,
        "eos_token_id": DREAM_EOS,
        "mask_token_id": DREAM_MASK,
        "pad_token_id": DREAM_EOS,
    },
    # The fields of Dream's own ``diffusion_generate`` (``alg`` "origin",
    # ``steps`` 512, ``eps``, ...) next to bos = eos = pad = <|endoftext|>.
    # Chat turns end with <|im_end|>, which is not listed (as on the hub).
    generation_config={
        "_from_model_config": True,
        "alg": "origin",
        "alg_temp": None,
        "eps": 0.001,
        "mask_token_id": None,
        "output_history": False,
        "steps": 512,
        "temperature": 0.0,
        "top_k": None,
        "top_p": None,
        "transformers_version": "4.46.2",
    },
    generation_token_ids={"bos_token_id": DREAM_EOS, "eos_token_id": DREAM_EOS, "pad_token_id": DREAM_EOS},
)

FAST_DLLM_V2 = Qwen2Family(
    label="Fast-dLLM v2",
    added=V2_SPECIALS,
    mask=V2_MASK,
    # Qwen2.5-Instruct's tokenizer files, as ``save_pretrained`` writes them:
    # a ``Qwen2Tokenizer`` that transformers ships (no remote code), no bos.
    # The mask token is an added special token without a role (no
    # ``mask_token``), as in the real checkpoints.
    tokenizer=TokenizerFiles(
        roles={"bos_token": None, "eos_token": QWEN2_IM_END, "pad_token": QWEN2_ENDOFTEXT},
        additional_special_tokens=QWEN2_ADDITIONAL,
        chat_template=V2_CHAT_TEMPLATE,
        config={**QWEN2_TOKENIZER_CONFIG, "add_bos_token": False, "tokenizer_class": "Qwen2Tokenizer"},
        not_special=QWEN2_NOT_SPECIAL,
        tokenizer_json=True,
        slow_files=True,
    ),
    # bd_size is the block-diffusion block length; no mask id.
    # ``transformers_version`` is this script's stamp (nothing reads it).
    config={
        "architectures": ["Fast_dLLM_QwenForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration.Fast_dLLM_QwenConfig",
            "AutoModel": "modeling.Fast_dLLM_QwenModel",
            "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM",
        },
        "bd_size": 32,
        "model_type": "Fast_dLLM_Qwen",
        "sliding_window": 131072,
        "transformers_version": "4.53.1",
        "use_cache": True,
    },
    config_token_ids={"bos_token_id": QWEN2_ENDOFTEXT, "eos_token_id": QWEN2_IM_END},
    # Inherited from Qwen2.5-Instruct: sampling settings of an autoregressive
    # chat model, which a diffusion server must not apply by default.
    generation_config={
        "do_sample": True,
        "repetition_penalty": 1.05,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.8,
        "transformers_version": "4.37.0",
    },
    generation_token_ids={
        "bos_token_id": QWEN2_ENDOFTEXT,
        "eos_token_id": [QWEN2_IM_END, QWEN2_ENDOFTEXT],
        "pad_token_id": QWEN2_ENDOFTEXT,
    },
)


def _qwen2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def build_qwen2_tokenizer(added: Sequence[tuple[str, bool]], size: int) -> tuple[Tokenizer, dict[str, int]]:
    """Qwen2-style byte-level BPE trained on the built-in corpora, plus the
    ``added`` tokens at the top: the BPE fills ids ``[0, size - len(added))``
    exactly and the added tokens the rest, so every id below ``size``
    decodes.  Returns the tokenizer and the added token ids by content.
    """
    n_base = size - len(added)
    if n_base < 256 + 16:
        raise ValueError(f"vocab_size={size} is too small for a byte-level BPE")

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = _qwen2_pre_tokenizer()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    _train_byte_level_bpe(tok, n_base, (CORPUS + DREAM_EXTRA_CORPUS).splitlines(keepends=True))
    if tok.get_vocab_size() != n_base:
        raise ValueError(
            f"the built-in corpus yields only {tok.get_vocab_size()} BPE tokens; "
            f"vocab_size={size} needs {n_base} (use a smaller vocab_size)"
        )

    flags = dict(normalized=False, lstrip=False, rstrip=False, single_word=False)
    tok.add_tokens([AddedToken(s, special=special, **flags) for s, special in added])
    ids = {s: tok.token_to_id(s) for s, _ in added}
    _check_special_ids(tok, ids, n_base, size)
    return tok, ids


def build_dream_tokenizer(vocab_size: int) -> tuple[Tokenizer, dict[str, int]]:
    """Dream's tokenizer covering ``[0, vocab_size)``, its 24 added tokens
    last (the 7B checkpoint pads its head to 152064 rows past the
    tokenizer's 151667; the tiny one has no such gap)."""
    return build_qwen2_tokenizer(DREAM_SPECIALS, vocab_size)


def qwen2_config(
    family: Qwen2Family,
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    vocab_size: int,
    max_position_embeddings: int,
    dtype: str,
    ids: dict[str, int],
) -> dict:
    """config.json of a ``family`` checkpoint: Qwen2's keys with the hub
    values (``rope_theta`` 1e6, RMSNorm eps 1e-6, ``max_window_layers``
    equal to the layer count, no sliding window), the sizes, and the
    family's keys."""
    return {
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "max_window_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_hidden_layers": num_hidden_layers,
        "num_key_value_heads": num_key_value_heads,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": family.tie_word_embeddings,
        "torch_dtype": dtype,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
        **family.config,
        **{key: ids[s] for key, s in family.config_token_ids.items()},
    }


def qwen2_generation_config(family: Qwen2Family, ids: dict[str, int]) -> dict:
    """generation_config.json of a ``family`` checkpoint."""
    token_ids = {
        key: ids[s] if isinstance(s, str) else [ids[x] for x in s] for key, s in family.generation_token_ids.items()
    }
    return {**family.generation_config, **token_ids}


def write_dream_tokenizer_files(out_dir: Path, tok: Tokenizer, ids: dict[str, int]) -> None:
    """Dream's vocab.json, merges.txt, added_tokens.json,
    special_tokens_map.json and tokenizer_config.json (``DREAM.tokenizer``)."""
    write_tokenizer(out_dir, DREAM.tokenizer, tok, ids)


def write_dream_config(out_dir: Path, *, dtype: str, ids: dict[str, int], **sizes: int) -> dict:
    """config.json: every key of Dream-v0-Instruct-7B's, sizes substituted
    (``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
    ``num_key_value_heads``, ``intermediate_size``, ``vocab_size``,
    ``max_position_embeddings``)."""
    config = qwen2_config(DREAM, **sizes, dtype=dtype, ids=ids)
    _write_json(out_dir / "config.json", config)
    return config


def write_dream_generation_config(out_dir: Path, ids: dict[str, int]) -> None:
    """generation_config.json as Dream-v0-Instruct-7B has it."""
    _write_json(out_dir / "generation_config.json", qwen2_generation_config(DREAM, ids))


def qwen2_weight_shapes(
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    vocab_size: int,
    tie_word_embeddings: bool = False,
) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a Qwen2 safetensors file (biases on q/k/v
    only; ``lm_head`` unless the embeddings are tied)."""
    head_dim = hidden_size // num_attention_heads
    q_dim = num_attention_heads * head_dim
    kv_dim = num_key_value_heads * head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab_size, hidden_size)}
    for i in range(num_hidden_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (hidden_size,)
        shapes[p + "self_attn.q_proj.weight"] = (q_dim, hidden_size)
        shapes[p + "self_attn.q_proj.bias"] = (q_dim,)
        shapes[p + "self_attn.k_proj.weight"] = (kv_dim, hidden_size)
        shapes[p + "self_attn.k_proj.bias"] = (kv_dim,)
        shapes[p + "self_attn.v_proj.weight"] = (kv_dim, hidden_size)
        shapes[p + "self_attn.v_proj.bias"] = (kv_dim,)
        shapes[p + "self_attn.o_proj.weight"] = (hidden_size, q_dim)
        shapes[p + "post_attention_layernorm.weight"] = (hidden_size,)
        shapes[p + "mlp.gate_proj.weight"] = (intermediate_size, hidden_size)
        shapes[p + "mlp.up_proj.weight"] = (intermediate_size, hidden_size)
        shapes[p + "mlp.down_proj.weight"] = (hidden_size, intermediate_size)
    shapes["model.norm.weight"] = (hidden_size,)
    if not tie_word_embeddings:
        shapes["lm_head.weight"] = (vocab_size, hidden_size)
    return shapes


def dream_weight_shapes(**sizes: int) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of Dream's safetensors (Qwen2's, untied ``lm_head``)."""
    return qwen2_weight_shapes(**sizes)


def _qwen2_tensor(
    name: str, shape: tuple[int, ...], gen: torch.Generator, logit_scale: float, head_name: str
) -> torch.Tensor:
    """One random Qwen2 tensor.  Same scheme as LLaDA's (:func:`_init_std`):
    1/sqrt(fan_in) projections, 3x larger q and k for sharp, position-sensitive
    attention, small (0.3) embeddings, and a head (``head_name``: the
    embeddings themselves when tied) giving logits of standard deviation
    about ``logit_scale``.  The biases are random too (std 0.3 for q/k, 0.1
    for v) and the norm weights are ``1 + 0.1 * N(0, 1)``, so that an
    implementation that dropped a bias or a norm weight would give different
    outputs."""
    if name.endswith("norm.weight"):
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    if name.endswith(("q_proj.bias", "k_proj.bias")):
        return 0.3 * torch.randn(shape, generator=gen)
    if name.endswith("v_proj.bias"):
        return 0.1 * torch.randn(shape, generator=gen)
    fan_in = shape[-1]
    if name == head_name:
        std = logit_scale / math.sqrt(fan_in)
    elif name == "model.embed_tokens.weight":
        std = 0.3
    elif name.endswith(("q_proj.weight", "k_proj.weight")):
        std = 3.0 / math.sqrt(fan_in)
    else:
        std = 1.0 / math.sqrt(fan_in)
    return torch.randn(shape, generator=gen) * std


def write_qwen2_checkpoint(
    out_dir,
    family: Qwen2Family,
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    vocab_size: int,
    max_position_embeddings: int,
    tokenizer_size: int | None = None,
    seed: int = 0,
    dtype: str = "float32",
    logit_scale: float = DEFAULT_LOGIT_SCALE,
) -> Path:
    """Write a random checkpoint of a Qwen2-layout ``family`` into ``out_dir``;
    return its path.

    The tokenizer covers ids ``[0, tokenizer_size)`` (default: all of
    ``vocab_size``), the family's added tokens last; embedding and head rows
    past it are padding, as in the real checkpoints.  Weights: one CPU
    generator seeded with ``seed``, tensors drawn in Qwen2 order; the head
    rows of the mask token, of byte tokens that alone decode to no readable
    text (see :func:`unreadable_token_ids`) and of the padding are zero (the
    embedding rows too when tied), so the model practically never emits them.
    """
    _check_shapes(
        hidden_size,
        num_attention_heads,
        num_key_value_heads,
        dtype,
        names=("hidden_size", "num_attention_heads", "num_key_value_heads"),
    )
    tokenizer_size = vocab_size if tokenizer_size is None else tokenizer_size
    if tokenizer_size > vocab_size:
        raise ValueError(f"tokenizer_size={tokenizer_size} is larger than vocab_size={vocab_size}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
    )
    tok, ids = build_qwen2_tokenizer(family.added, tokenizer_size)
    write_tokenizer(out, family.tokenizer, tok, ids)
    config = qwen2_config(family, **sizes, max_position_embeddings=max_position_embeddings, dtype=dtype, ids=ids)
    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json", qwen2_generation_config(family, ids))
    head_name = "model.embed_tokens.weight" if family.tie_word_embeddings else "lm_head.weight"
    _write_weights(
        out,
        qwen2_weight_shapes(**sizes, tie_word_embeddings=family.tie_word_embeddings),
        partial(_qwen2_tensor, logit_scale=logit_scale, head_name=head_name),
        seed=seed,
        dtype=dtype,
        head_name=head_name,
        silent_ids=_unreadable_ids(tok, ids, family.mask) + list(range(tokenizer_size, vocab_size)),
    )
    return out


def write_dream_checkpoint(
    out_dir,
    *,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 256,
    vocab_size: int = 512,
    max_position_embeddings: int = 1024,
    seed: int = 0,
    dtype: str = "float32",
    logit_scale: float = DEFAULT_LOGIT_SCALE,
) -> Path:
    """Write a random Dream checkpoint in the hub layout of
    ``Dream-org/Dream-v0-Instruct-7B`` into ``out_dir``; return its path.

    Files: config.json, generation_config.json, model.safetensors,
    vocab.json, merges.txt, added_tokens.json, special_tokens_map.json,
    tokenizer_config.json (no remote-code ``.py`` files).  The tokenizer
    covers every id of ``vocab_size``; its last 24 ids are the special
    tokens, the mask token last.
    """
    return write_qwen2_checkpoint(
        out_dir,
        DREAM,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        seed=seed,
        dtype=dtype,
        logit_scale=logit_scale,
    )


def write_fast_dllm_v2_checkpoint(
    out_dir,
    *,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 256,
    vocab_size: int = 512,
    tokenizer_size: int = 496,
    max_position_embeddings: int = 4096,
    bd_size: int = 32,
    tie_word_embeddings: bool = False,
    seed: int = 0,
    dtype: str = "float32",
    logit_scale: float = DEFAULT_LOGIT_SCALE,
) -> Path:
    """Write a random Fast-dLLM v2 checkpoint in the hub layout of
    ``Efficient-Large-Model/Fast_dLLM_v2_7B`` (``tie_word_embeddings=False``:
    an ``lm_head.weight``) or ``Fast_dLLM_v2_1.5B`` (``True``: the head is
    ``model.embed_tokens.weight``) into ``out_dir``; return its path.

    Files: config.json (``Fast_dLLM_QwenForCausalLM``, ``bd_size``, no mask
    id), generation_config.json (Qwen2.5-Instruct's sampling defaults),
    model.safetensors, and a ``Qwen2Tokenizer``: tokenizer.json,
    tokenizer_config.json, vocab.json, merges.txt, added_tokens.json,
    special_tokens_map.json (no remote-code ``.py`` files).  The tokenizer
    has ``tokenizer_size`` ids, the 22 Qwen2.5 added tokens and ``|<MASK>|``
    last; the ``vocab_size - tokenizer_size`` rows above are padding.
    """
    family = replace(
        FAST_DLLM_V2,
        config={**FAST_DLLM_V2.config, "bd_size": bd_size},
        tie_word_embeddings=tie_word_embeddings,
    )
    return write_qwen2_checkpoint(
        out_dir,
        family,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        tokenizer_size=tokenizer_size,
        seed=seed,
        dtype=dtype,
        logit_scale=logit_scale,
    )


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _run_writer(
    args: argparse.Namespace,
    label: str,
    presets: dict[str, dict],
    writer: Callable[..., Path],
    preset_shapes: Callable[[dict], dict[str, tuple[int, ...]]],
) -> None:
    """Write one preset with ``writer`` and print its size and time (every
    family's CLI); with ``--dry-run`` only print what it would write."""
    preset = presets[args.preset]
    if args.dry_run:
        _print_plan(f"{label} {args.preset}", preset_shapes(preset), args.dtype)
        return
    start = time.perf_counter()
    path = writer(args.out_dir, **preset, seed=args.seed, dtype=args.dtype)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    print(f"wrote {label} checkpoint ({args.preset}, {args.dtype}) to {path}: "
          f"{size / 1e6:.1f} MB in {time.perf_counter() - start:.2f} s")


def _print_plan(label: str, shapes: dict[str, tuple[int, ...]], dtype: str) -> None:
    """Tensor count, parameters, bytes and files of a checkpoint's weights,
    computed from the shapes alone: nothing is built or written."""
    itemsize = DTYPES[dtype].itemsize
    files = shard_files(shapes, dtype)
    n_params = sum(math.prod(s) for s in shapes.values())
    print(f"{label} ({dtype}): {len(shapes)} tensors, {n_params:,} parameters, {n_params * itemsize:,} bytes")
    for file in dict.fromkeys(files.values()):
        names = [n for n, f in files.items() if f == file]
        size = sum(math.prod(shapes[n]) for n in names) * itemsize
        print(f"  {file}: {len(names)} tensors, {size / 1e9:.2f} GB ({names[0]} .. {names[-1]})")
    for name, shape in list(shapes.items())[:10] + list(shapes.items())[-2:]:
        print(f"  {name}: {tuple(shape)}")


def _llada_preset_shapes(preset: dict) -> dict[str, tuple[int, ...]]:
    sizes = {k: v for k, v in preset.items() if k != "max_sequence_length"}
    sizes.setdefault("n_kv_heads", sizes["n_heads"])  # as write_llada_checkpoint does
    return llada_weight_shapes(**sizes)


def _qwen2_preset_shapes(preset: dict) -> dict[str, tuple[int, ...]]:
    skip = ("max_position_embeddings", "tokenizer_size")
    return qwen2_weight_shapes(**{k: v for k, v in preset.items() if k not in skip})


def _cmd_llada(args: argparse.Namespace) -> None:
    _run_writer(args, "LLaDA", PRESETS, write_llada_checkpoint, _llada_preset_shapes)


def _cmd_dream(args: argparse.Namespace) -> None:
    _run_writer(args, "Dream", DREAM_PRESETS, write_dream_checkpoint, _qwen2_preset_shapes)


def _cmd_fast_dllm_v2(args: argparse.Namespace) -> None:
    _run_writer(args, "Fast-dLLM v2", V2_PRESETS, write_fast_dllm_v2_checkpoint, _qwen2_preset_shapes)


def _add_family(families, name: str, help: str, presets: dict[str, dict], func) -> None:
    """One FAMILY subcommand; all take the same OUT_DIR and options."""
    sub = families.add_parser(name, help=help)
    sub.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    sub.add_argument("--preset", choices=sorted(presets), default="tiny")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    sub.add_argument("--dry-run", action="store_true", help="print the tensors and files it would write; write nothing")
    sub.set_defaults(func=func)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    families = parser.add_subparsers(dest="family", required=True, metavar="FAMILY")

    _add_family(families, "llada", "LLaDA-8B-Instruct layout (GSAI-ML)", PRESETS, _cmd_llada)
    _add_family(families, "dream", "Dream-v0-Instruct-7B layout (Dream-org)", DREAM_PRESETS, _cmd_dream)
    _add_family(
        families,
        "fast-dllm-v2",
        "Fast_dLLM_v2_7B / _1.5B layout (Efficient-Large-Model)",
        V2_PRESETS,
        _cmd_fast_dllm_v2,
    )

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
