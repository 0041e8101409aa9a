"""Dream's hub tokenizer without its remote code.

On the hub, Dream-v0-7B's ``tokenizer_config.json`` says
``"tokenizer_class": "DreamTokenizer"`` with
``"auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", null]}``,
and the files are Qwen2's: ``vocab.json`` + ``merges.txt`` (byte-level BPE,
Qwen2 pre-tokenization regex, NFC), ``added_tokens.json``,
``special_tokens_map.json``.  ``DreamTokenizer`` itself is a slow copy of
Qwen2's tokenizer whose only changes are defaults (``bos_token`` None, decoding
without spaces between special tokens).  Without the remote ``.py`` file,
transformers cannot resolve that name, and with ``trust_remote_code`` it tries
to fetch the file.

:func:`register_dream_tokenizer` registers :class:`DreamTokenizer` — a
subclass of transformers' (fast, ``tokenizers``-backed) ``Qwen2Tokenizer`` —
under that exact class name.  How transformers 5 resolves it
(``AutoTokenizer.from_pretrained``):

* ``tokenizer_class_from_name("DreamTokenizer")`` first looks in
  ``REGISTERED_TOKENIZER_CLASSES`` (filled by ``AutoTokenizer.register``), so
  a registered class is found by name;
* a tokenizer config with an ``auto_map`` only loads remote code when there is
  no *explicit local code*: a class found by the config's ``tokenizer_class``
  name whose module is outside ``transformers``, **and** the model's config
  class not being in ``TOKENIZER_MAPPING``.  So the class is registered by
  name only; mapping ``DreamConfig`` to it in ``TOKENIZER_MAPPING`` would make
  ``trust_remote_code=True`` go for the (missing) remote file again.

:func:`register_dream_tokenizer` also registers the config class
(:func:`~vllm_dllm_plugin.models.dream_config.register_dream_config`).  Then
``AutoTokenizer.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir, trust_remote_code=True)`` both build this
class from ``vocab.json`` / ``merges.txt`` and the tokenizer config, offline.
vLLM's ``vllm.tokenizers.get_tokenizer`` goes through ``AutoTokenizer`` the
same way.
"""

from __future__ import annotations

from transformers import Qwen2Tokenizer

DREAM_TOKENIZER_CLASS = "DreamTokenizer"


class DreamTokenizer(Qwen2Tokenizer):
    """Qwen2 byte-level BPE under Dream's tokenizer class name.

    Its defaults are those of Dream's remote class (no bos token unless the
    tokenizer config names one, and Dream's names ``<|beginoftext|>``; eos,
    pad and unk ``<|endoftext|>``); everything else (``mask_token``, the added
    tokens, the chat template) comes from the checkpoint's files.  Decoding
    never puts spaces between special tokens, as the remote class asks for.
    """


def register_dream_tokenizer() -> None:
    """Make the class name ``DreamTokenizer`` resolve to :class:`DreamTokenizer`
    for ``AutoTokenizer``, and register Dream's config class too
    (``AutoTokenizer`` loads the model config first; unregistered, a
    ``model_type: Dream`` config with an ``auto_map`` makes transformers ask
    whether to run remote code).  Idempotent and cheap, safe in every process."""
    from transformers.models.auto import tokenization_auto

    from .dream_config import register_dream_config

    register_dream_config()

    registered = getattr(tokenization_auto, "REGISTERED_TOKENIZER_CLASSES", None)
    if registered is None:  # pragma: no cover - transformers without the name registry
        raise RuntimeError(
            "this transformers version has no tokenization_auto.REGISTERED_TOKENIZER_CLASSES; "
            "cannot register DreamTokenizer by name"
        )
    registered[DREAM_TOKENIZER_CLASS] = DreamTokenizer


__all__ = ["DREAM_TOKENIZER_CLASS", "DreamTokenizer", "register_dream_tokenizer"]
