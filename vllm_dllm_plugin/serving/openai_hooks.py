"""The OpenAI server takes a diffusion request exactly as sent, or answers 400.

vLLM's server was written for autoregressive models, where shortening a
generation is harmless: it clamps ``max_tokens`` to the context, caps it by
the generation config, defaults /v1/completions to 16 tokens, accepts and
ignores removed fields (``guided_*``), and validates sampling parameters only
once a (possibly streaming) response has begun.  A diffusion canvas is fixed
at admission, so each of those silently changes what the client gets.

``install`` wraps these vLLM internals, in the API process only, when the
served model is a diffusion model (vLLM has no hook for any of them; each is
recorded in patches/README.md):

* ``OpenAIServingCompletion.create_completion`` and
  ``OpenAIServingChat.create_chat_completion``: check the raw JSON body
  (``serving.contract``); a request without ``max_tokens`` gets the default.
* ``render_completion_request`` / ``render_chat_request``: a prompt holding
  the mask token is a 400.
* ``get_max_tokens`` as the serving modules imported it: ``max_tokens`` is
  the canvas, never clamped or capped; the default applies only when unset.
* ``CompletionRequest.to_sampling_params`` / ``ChatCompletionRequest.…``:
  unsupported sampling features and bad options are a 400 before the
  response starts (streaming too).
* ``exception_handling.register.validation_exception_handler``: a ``null``
  or ill-typed ``diffusion_*`` value gets the option's own message.

Each check raises ``DiffusionRequestError``, which vLLM's own exception
handlers turn into ``{"error": {"message", "param", "code": 400}}`` without
a traceback in the log.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import NamedTuple

from vllm.logger import init_logger

from vllm_dllm_plugin.engine.validation import (
    DiffusionRequestError,
    engine_defaults_of_process,
    validate_request,
)
from vllm_dllm_plugin.options import DEFAULT_MAX_TOKENS, DiffusionOptionError, resolve_options
from vllm_dllm_plugin.serving.contract import (
    check_body,
    mask_token_problem,
    max_tokens_problem,
    sends_max_tokens,
)

logger = init_logger(f"vllm.{__name__}")  # under vLLM's log handler

_MARK = "__dllm_hook__"
_SERVER_MODULES = ("vllm.entrypoints.launchers.app", "vllm.entrypoints.openai.api_server")
_GET_MAX_TOKENS_USERS = (
    "vllm.entrypoints.openai.completion.serving",
    "vllm.entrypoints.openai.chat_completion.serving",
    "vllm.entrypoints.openai.chat_completion.batch_serving",
    "vllm.entrypoints.openai.responses.serving",
)


class _Endpoint(NamedTuple):
    """Where one OpenAI endpoint lives in vLLM, and what its prompt field is."""

    package: str        # holds ``serving`` and ``protocol`` modules
    serving: str        # the handler class
    request: str        # the pydantic request class
    create: str         # the handler's entry point, called with the raw request
    render: str         # the handler's prompt rendering
    path: str           # the URL path
    prompt_field: str   # the request field a prompt problem is reported on


_ENDPOINTS = (
    _Endpoint("vllm.entrypoints.openai.completion", "OpenAIServingCompletion",
              "CompletionRequest", "create_completion", "render_completion_request",
              "/v1/completions", "prompt"),
    _Endpoint("vllm.entrypoints.openai.chat_completion", "OpenAIServingChat",
              "ChatCompletionRequest", "create_chat_completion", "render_chat_request",
              "/v1/chat/completions", "messages"),
)


def install() -> None:
    """Install the hooks once, if this process runs vLLM's OpenAI server."""
    if not any(name in sys.modules for name in _SERVER_MODULES):
        return
    missing = []
    for endpoint in _ENDPOINTS:
        missing += _hook_endpoint(endpoint)
    missing += _hook_get_max_tokens()
    missing += _hook_validation_handler()
    if missing:
        logger.warning("This vLLM lacks %s: the OpenAI server may clamp or ignore parts of "
                       "diffusion requests (tested with vLLM 0.32).", ", ".join(missing))


def _mark(fn):
    setattr(fn, _MARK, True)
    return fn


def _is_hooked(fn) -> bool:
    return getattr(fn, _MARK, False)


def _resolve(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


# -- per endpoint -----------------------------------------------------------

def _hook_endpoint(endpoint: _Endpoint) -> list[str]:
    serving = _resolve(f"{endpoint.package}.serving", endpoint.serving)
    request_cls = _resolve(f"{endpoint.package}.protocol", endpoint.request)
    targets = {
        f"{endpoint.serving}.{endpoint.create}": (serving, endpoint.create, _wrap_create),
        f"{endpoint.serving}.{endpoint.render}": (serving, endpoint.render, _wrap_render),
        f"{endpoint.request}.to_sampling_params": (request_cls, "to_sampling_params",
                                                   _wrap_to_sampling_params)}
    missing = []
    for label, (owner, attr, wrap) in targets.items():
        original = getattr(owner, attr, None) if owner is not None else None
        if original is None:
            missing.append(label)
        elif not _is_hooked(original):
            setattr(owner, attr, _mark(wrap(original, path=endpoint.path,
                                            field=endpoint.prompt_field)))
    return missing


def _wrap_create(original, *, path, field):
    async def create(self, request, raw_request=None):
        body = await _raw_body(raw_request, path)
        if body is not None:
            try:
                check_body(body, engine_defaults_of_process())
            except DiffusionOptionError as e:
                raise DiffusionRequestError.from_option_error(e) from None
            if not sends_max_tokens(body):
                # Not /v1/completions' 16: the default applies (get_max_tokens
                # below), and rendering reserves no room for 16 tokens.
                request.max_tokens = None
        return await original(self, request, raw_request)

    return functools.wraps(original)(create)


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


def _wrap_render(original, *, path, field):
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

    return functools.wraps(original)(render)


def _wrap_to_sampling_params(original, *, path, field):
    def to_sampling_params(self, max_tokens, *args, **kwargs):
        params = original(self, max_tokens, *args, **kwargs)
        validate_request(params)
        if path == "/v1/completions" and self.max_tokens is None:
            # vLLM's completion responses read the canvas back from the request.
            self.max_tokens = max_tokens
        return params

    return functools.wraps(original)(to_sampling_params)


# -- max_tokens -------------------------------------------------------------

def _hook_get_max_tokens() -> list[str]:
    original = _resolve("vllm.entrypoints.serve.utils.api_utils", "get_max_tokens")
    if original is None:
        return ["api_utils.get_max_tokens"]
    hooked = _mark(_canvas_max_tokens(original))
    for name in _GET_MAX_TOKENS_USERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "get_max_tokens", None) is original:
            module.get_max_tokens = hooked
    return []


def _canvas_max_tokens(original):
    """``max_tokens`` is the canvas: exact when given (or a 400), else the
    generation config's ``max_new_tokens`` or 256, within the room left."""

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

    return functools.wraps(original)(get_max_tokens)


# -- pydantic errors --------------------------------------------------------

def _hook_validation_handler() -> list[str]:
    name = "vllm.entrypoints.serve.exception_handling.register"
    original = _resolve(name, "validation_exception_handler")
    if original is None:
        return ["register.validation_exception_handler"]
    if not _is_hooked(original):
        sys.modules[name].validation_exception_handler = _mark(_option_errors_first(original))
    return []


def _option_errors_first(original):
    async def handler(req, exc):
        problem = diffusion_option_problem(exc.errors())
        if problem is None:
            return await original(req, exc)
        from starlette.responses import JSONResponse
        from vllm.entrypoints.serve.exception_handling.error_response import (
            create_error_response,
        )

        error = create_error_response(DiffusionRequestError.from_option_error(problem))
        return JSONResponse(error.model_dump(), status_code=error.error.code)

    return functools.wraps(original)(handler)


def diffusion_option_problem(errors) -> DiffusionOptionError | None:
    """Pydantic rejects ``vllm_xargs`` values that are not strings, numbers or
    lists (``null``, objects) with one error per union branch; say instead
    what the diffusion option takes."""
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if "vllm_xargs" not in loc[:-1]:
            continue
        key = loc[loc.index("vllm_xargs") + 1]
        if key.startswith("diffusion_"):
            try:
                resolve_options({key: error.get("input")})
            except DiffusionOptionError as problem:
                return problem
    return None
