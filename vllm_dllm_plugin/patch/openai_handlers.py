"""vLLM's OpenAI handlers check a diffusion request's raw body and prompt.

Why: vLLM's server was written for autoregressive models.  Its pydantic
models coerce what a client sent (``true`` becomes ``1``, a missing
``max_tokens`` on /v1/completions becomes 16) and accept removed fields
(``guided_*``) without effect; a prompt may hold the mask token.  A canvas is
fixed at admission, so each of those silently changes what the client gets.

What: wraps, on ``OpenAIServingCompletion`` and ``OpenAIServingChat``,
``create_completion`` / ``create_chat_completion`` (the raw JSON body is
checked by ``serving.contract``; a request without ``max_tokens`` is marked
so that the diffusion default applies) and ``render_completion_request`` /
``render_chat_request`` (a prompt holding the mask token is a 400 naming
``prompt`` / ``messages``).  API process only, when a diffusion model is served.

When it can go: once vLLM's OpenAI server lets a model (or a plugin) see the
raw request and validate rendered prompts.
"""

from __future__ import annotations

from typing import NamedTuple

from vllm_dllm_plugin.options import DiffusionOptionError
from vllm_dllm_plugin.patch._wrapping import resolve, wrap_attribute
from vllm_dllm_plugin.serving.contract import check_body, mask_token_problem, sends_max_tokens
from vllm_dllm_plugin.serving.validation import (
    DiffusionRequestError,
    engine_defaults_of_process,
)


class Endpoint(NamedTuple):
    """Where one OpenAI endpoint lives in vLLM, and what its prompt field is."""

    package: str        # holds ``serving`` and ``protocol`` modules
    serving: str        # the handler class
    request: str        # the pydantic request class
    create: str         # the handler's entry point, called with the raw request
    render: str         # the handler's prompt rendering
    path: str           # the URL path
    prompt_field: str   # the request field a prompt problem is reported on


ENDPOINTS = (
    Endpoint("vllm.entrypoints.openai.completion", "OpenAIServingCompletion",
             "CompletionRequest", "create_completion", "render_completion_request",
             "/v1/completions", "prompt"),
    Endpoint("vllm.entrypoints.openai.chat_completion", "OpenAIServingChat",
             "ChatCompletionRequest", "create_chat_completion", "render_chat_request",
             "/v1/chat/completions", "messages"),
)


def apply() -> list[str]:
    """Wrap both endpoints' handlers; returns what this vLLM lacks."""
    missing = []
    for endpoint in ENDPOINTS:
        serving = resolve(f"{endpoint.package}.serving", endpoint.serving)
        if not wrap_attribute(serving, endpoint.create,
                              lambda original, e=endpoint: _create(original, e.path)):
            missing.append(f"{endpoint.serving}.{endpoint.create}")
        if not wrap_attribute(serving, endpoint.render,
                              lambda original, e=endpoint: _render(original, e.prompt_field)):
            missing.append(f"{endpoint.serving}.{endpoint.render}")
    return missing


def _create(original, path: str):
    async def create(self, request, raw_request=None):
        body = await _raw_body(raw_request, path)
        if body is not None:
            try:
                check_body(body, engine_defaults_of_process())
            except DiffusionOptionError as e:
                raise DiffusionRequestError.from_option_error(e) from None
            if not sends_max_tokens(body):
                # Not /v1/completions' 16: the default applies (patch/
                # openai_max_tokens.py), and rendering reserves no room for 16.
                request.max_tokens = None
        return await original(self, request, raw_request)

    return create


async def _raw_body(raw_request, path):
    """The JSON the client sent to ``path`` (FastAPI keeps the bytes), else None
    (another front end reusing the handler, e.g. /v1/messages)."""
    if raw_request is None or not raw_request.url.path.endswith(path):
        return None
    try:
        body = await raw_request.json()
    except Exception:  # noqa: BLE001 - pydantic already accepted the body
        return None
    return body if isinstance(body, dict) else None


def _render(original, field: str):
    async def render(self, request):
        result = await original(self, request)
        engine_inputs = (result if isinstance(result, list)
                         else result[1] if isinstance(result, tuple) else None)
        if engine_inputs:
            prompts = [self._extract_prompt_components(x).token_ids or ()
                       for x in engine_inputs]
            problem = mask_token_problem(prompts, self.model_config.hf_config.mask_token_id,
                                         field)
            if problem is not None:
                raise DiffusionRequestError.from_option_error(problem)
        return result

    return render
