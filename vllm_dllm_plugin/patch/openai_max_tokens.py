"""``max_tokens`` is the canvas: exact when given, never clamped or capped.

Why: vLLM's ``get_max_tokens`` shortens ``max_tokens`` to the room the prompt
leaves and caps it by the generation config, and defaults chat requests to
the whole remaining context.  For an autoregressive model a shorter
generation is harmless; a diffusion canvas of another length decodes other
tokens.

What: replaces ``vllm.entrypoints.serve.utils.api_utils.get_max_tokens`` as
each serving module imported it (completion, chat, batch chat, responses):
a ``max_tokens`` that does not fit is a 400 naming it; unset, the
checkpoint's ``max_new_tokens`` or 256, within the room left.  vLLM's own
function still does the prompt-length check.  API process only.

When it can go: once vLLM lets a model choose how ``max_tokens`` is
resolved (the record of an earlier flag-based patch: patches/README.md).
"""

from __future__ import annotations

import importlib

from vllm_dllm_plugin.options import DEFAULT_MAX_TOKENS
from vllm_dllm_plugin.patch._wrapping import resolve, wrapped
from vllm_dllm_plugin.serving.contract import max_tokens_problem
from vllm_dllm_plugin.serving.validation import DiffusionRequestError

USERS = (
    "vllm.entrypoints.openai.completion.serving",
    "vllm.entrypoints.openai.chat_completion.serving",
    "vllm.entrypoints.openai.chat_completion.batch_serving",
    "vllm.entrypoints.openai.responses.serving",
)


def apply() -> list[str]:
    original = resolve("vllm.entrypoints.serve.utils.api_utils", "get_max_tokens")
    if original is None:
        return ["api_utils.get_max_tokens"]
    replacement = wrapped(original, _canvas_max_tokens(original))
    for name in USERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "get_max_tokens", None) is original:
            module.get_max_tokens = replacement
    return []


def _canvas_max_tokens(original):
    def get_max_tokens(max_model_len, max_tokens, input_length, default_sampling_params,
                       override_max_tokens=None, **kwargs):
        # vLLM's own function for the prompt-length check and truncation.
        room = original(max_model_len, None, input_length, {}, None, **kwargs)
        if max_tokens is None:
            return min(room, default_sampling_params.get("max_tokens") or DEFAULT_MAX_TOKENS)
        problem = max_tokens_problem(max_tokens, max_model_len - room, max_model_len)
        if problem is not None:
            raise DiffusionRequestError.from_option_error(problem)
        return max_tokens

    return get_max_tokens
