"""Dream's hub config (``model_type: Dream``) without its remote code.

Dream-v0-7B is the Qwen2.5-7B layout run bidirectionally, and its
``config.json`` carries exactly Qwen2's keys plus ``mask_token_id``, with an
``auto_map`` pointing at the remote ``configuration_dream.DreamConfig``.
:class:`DreamConfig` is therefore a :class:`~transformers.Qwen2Config` (vLLM
reads its sizes, rope and norm settings the same way) whose defaults follow
the remote class: mask ``<|mask|>`` 151666, pad ``<|endoftext|>`` 151643,
no KV-cache use.

:func:`register_dream_config` registers it with ``AutoConfig`` so that hub
checkpoints load offline with or without ``trust_remote_code``: a registered
class that lives outside ``transformers`` wins over ``auto_map`` (transformers
treats it as explicit local code).
"""

from __future__ import annotations

from transformers import Qwen2Config

DREAM_MODEL_TYPE = "Dream"


class DreamConfig(Qwen2Config):
    model_type = DREAM_MODEL_TYPE

    mask_token_id: int = 151666
    pad_token_id: int | None = 151643
    use_cache: bool = False


def register_dream_config() -> None:
    """Register :class:`DreamConfig` for ``model_type`` "Dream" with
    ``AutoConfig``; idempotent and cheap, safe to call in every process."""
    from transformers import AutoConfig

    AutoConfig.register(DREAM_MODEL_TYPE, DreamConfig, exist_ok=True)


__all__ = ["DREAM_MODEL_TYPE", "DreamConfig", "register_dream_config"]
