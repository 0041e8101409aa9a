"""Tiny diffusion-LLM checkpoints with random weights, in the hub layout of
each real model, so code written against them also works on the real one.

* ``llada``: ``GSAI-ML/LLaDA-8B-Instruct``;
* ``dream``: ``Dream-org/Dream-v0-Instruct-7B`` (Qwen2 tensor names, the
  files of its remote-code tokenizer);
* ``llada2``: ``inclusionAI/LLaDA2.0-mini`` / ``LLaDA2.1-mini`` (BailingMoeV2
  tensor names, ``<|mask|>`` found by name);
* ``fast_dllm_v2``: ``Efficient-Large-Model/Fast_dLLM_v2_7B`` (untied head)
  and ``_1.5B`` (tied embeddings);
* ``sdar``: ``JetLM/SDAR-8B-Chat`` / ``4B`` (untied head) and ``1.7B``
  (tied embeddings), Qwen3 tensor names.

Dream, Fast-dLLM v2 and SDAR share one Qwen2-layout writer (``qwen2``); files, shards and
shape checks are ``core``'s, both tokenizer builders ``tokenizers``'s, the
command-line sizes ``presets``'s.  Only the sizes differ from the real models;
no remote-code ``.py`` files are written and nothing is downloaded::

    from vllm_dllm_plugin.testing.checkpoints import write_llada_checkpoint
    path = write_llada_checkpoint(tmp_path / "llada")
    path = write_dream_checkpoint(tmp_path / "dream")
    path = write_fast_dllm_v2_checkpoint(tmp_path / "v2", tie_word_embeddings=True)
    path = write_llada2_checkpoint(tmp_path / "llada2")
    path = write_sdar_checkpoint(tmp_path / "sdar")

The command line is ``scripts/make_checkpoints.py`` (``cli.main``).
"""

from .core import DEFAULT_LOGIT_SCALE, DTYPES, MAX_SHARD_BYTES, SUPPORTED_HEAD_DIMS, shard_files
from .dream import (
    DREAM,
    DREAM_BOS,
    DREAM_CHAT_TEMPLATE,
    DREAM_EOS,
    DREAM_IM_END,
    DREAM_IM_START,
    DREAM_MASK,
    DREAM_SPECIALS,
    build_dream_tokenizer,
    dream_weight_shapes,
    write_dream_checkpoint,
    write_dream_config,
    write_dream_generation_config,
    write_dream_tokenizer_files,
)
from .fast_dllm_v2 import FAST_DLLM_V2, V2_CHAT_TEMPLATE, V2_MASK, V2_SPECIALS, V2_SYSTEM_PROMPT
from .fast_dllm_v2 import write_fast_dllm_v2_checkpoint
from .llada import (
    LLADA_CHAT_TEMPLATE,
    LLADA_TOKENIZER,
    llada_weight_shapes,
    unreadable_token_ids,
    write_llada_checkpoint,
    write_llada_config,
    write_llada_generation_config,
    write_llada_weights,
    write_tokenizer_files,
)
from .llada2 import (
    LLADA2_ADDED,
    LLADA2_CHAT_TEMPLATE,
    LLADA2_EOS,
    LLADA2_MASK,
    LLADA2_ROLE_END,
    LLADA2_TOKENIZER,
    llada2_config,
    llada2_weight_shapes,
    write_llada2_checkpoint,
)
from .presets import DREAM_PRESETS, LLADA2_PRESETS, PRESETS, SDAR_PRESETS, V2_PRESETS
from .qwen2 import (
    QWEN2_ADDED,
    QWEN2_ADDITIONAL,
    QWEN2_ENDOFTEXT,
    QWEN2_IM_END,
    QWEN2_IM_START,
    Qwen2Family,
    qwen2_config,
    qwen2_generation_config,
    qwen2_weight_shapes,
    write_qwen2_checkpoint,
)
from .sdar import (
    QWEN3_ADDED,
    SDAR,
    SDAR_ADDITIONAL,
    SDAR_CHAT_TEMPLATE,
    SDAR_MASK,
    SDAR_MASK_MISNAMED,
    SDAR_SPECIALS,
    write_sdar_checkpoint,
)
from .tokenizers import (
    BOS,
    EOS,
    EOT,
    MASK,
    TokenizerFiles,
    build_llada_tokenizer,
    build_qwen2_tokenizer,
    write_tokenizer,
)
