"""SDAR's hub config (``model_type: sdar``) without remote code.

The JetLM/SDAR-*-Chat checkpoints are Qwen3 models run as block diffusion:
their ``configuration_sdar.py`` is Qwen3's config plus training keys, and
their remote code does not import under transformers 5 (it was written for
4.52 and imports flash_attn, triton and ``LossKwargs``).
:class:`SDARConfig` is a :class:`~transformers.Qwen3Config` with the two
keys the serving path reads; registered with ``AutoConfig`` it wins over
``auto_map``.

``block_size`` (the block length the checkpoint was trained with) and
``mask_token_id`` are in the training copies of config.json but likely not
in the hub's; SGLang and lmdeploy hard-code 4 and 151669, the defaults here.
The engine replaces ``mask_token_id`` at start-up by the id of the
tokenizer's ``<|MASK|>`` (the registry entry's ``mask_token``).
"""

from __future__ import annotations

from transformers import Qwen3Config


class SDARConfig(Qwen3Config):
    model_type = "sdar"

    block_size: int = 4
    mask_token_id: int = 151669   # replaced by the tokenizer's <|MASK|> id
