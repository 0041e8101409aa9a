"""What an OpenAI request may ask of a diffusion model, read off its raw JSON.

Pure functions on the body the client sent (before pydantic coerces it:
``true`` would become ``1``, a missing ``max_tokens`` on /v1/completions
would become ``16``).  Each problem is a ``DiffusionOptionError`` naming the
field; the patches in ``patch/openai_*`` turn it into an HTTP 400.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vllm_dllm_plugin.options import DiffusionOptionError, DiffusionOptions, resolve_options

# Removed from vLLM's protocol in favour of structured_outputs, but still sent
# by clients; vLLM accepts and ignores them, which would silently hand the
# client unconstrained text.
GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar",
                 "guided_decoding_backend", "guided_whitespace_pattern")


def check_body(body: Mapping[str, Any], defaults: DiffusionOptions) -> None:
    """Raise ``DiffusionOptionError`` for the first field of ``body`` that
    diffusion decoding cannot honour as sent."""
    for name in GUIDED_FIELDS:
        if body.get(name) is not None:
            raise DiffusionOptionError(
                name, "guided decoding is not supported by diffusion decoding (tokens "
                      "are committed out of order)")
    if body.get("use_beam_search"):
        raise DiffusionOptionError(
            "use_beam_search", "beam search is not supported by diffusion decoding")
    # best_of is not a field of vLLM's request models: it would be ignored.
    best_of, n = body.get("best_of"), body.get("n") or 1
    if best_of is not None and best_of != n:
        raise DiffusionOptionError(
            "best_of", f"best_of={best_of!r} is not supported by diffusion decoding "
                       "(candidates cannot be ranked without logprobs); use n")
    xargs = body.get("vllm_xargs")
    if isinstance(xargs, Mapping):
        resolve_options(xargs, defaults)


def sends_max_tokens(body: Mapping[str, Any]) -> bool:
    """Whether the client chose the canvas (``max_tokens`` or, on chat,
    ``max_completion_tokens``, not null)."""
    return any(body.get(k) is not None for k in ("max_tokens", "max_completion_tokens"))


def mask_token_problem(prompts: Sequence[Sequence[int]], mask_token_id: int,
                       field: str) -> DiffusionOptionError | None:
    """The mask token marks positions still to be generated; a prompt that
    contains it cannot be decoded as the client means it."""
    for i, ids in enumerate(prompts):
        if mask_token_id in ids:
            which = f"item {i} " if len(prompts) > 1 else ""
            return DiffusionOptionError(
                field, f"{which}contains the mask token (id {mask_token_id}), which "
                       "diffusion decoding reserves for positions not yet generated")
    return None


def max_tokens_problem(max_tokens: int, prompt_len: int,
                       max_model_len: int) -> DiffusionOptionError | None:
    """The canvas is prompt + max_tokens and is never shortened."""
    if prompt_len + max_tokens <= max_model_len:
        return None
    return DiffusionOptionError(
        "max_tokens", f"the prompt ({prompt_len} tokens) plus max_tokens ({max_tokens}) "
                      f"exceeds the model's maximum context length ({max_model_len}); "
                      "a diffusion canvas cannot be shortened")
