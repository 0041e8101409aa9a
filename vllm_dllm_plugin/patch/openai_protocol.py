"""The OpenAI request classes validate sampling parameters before a response starts.

Why: vLLM builds ``SamplingParams`` in ``to_sampling_params`` and validates
them (logits-processor ``validate_params``) only once a streaming response
may have begun; a diffusion request that cannot be honoured must be a 400
before any work.  /v1/completions responses also read the canvas length back
from ``request.max_tokens``, which the handler patch unset.

What: wraps ``CompletionRequest.to_sampling_params`` and
``ChatCompletionRequest.to_sampling_params``: the built parameters go through
``serving.validation.validate_request`` (a 400 naming the field) and vLLM's
own ``SamplingParams.verify`` (on a copy: a bad regex or schema, too many
logprobs), and a /v1/completions request gets its resolved ``max_tokens``
back.  API process
only, when a diffusion model is served.

When it can go: once vLLM validates ``SamplingParams`` before it starts a
streaming response.
"""

from __future__ import annotations

from vllm_dllm_plugin.patch._wrapping import resolve, wrap_attribute
from vllm_dllm_plugin.patch.openai_handlers import ENDPOINTS
from vllm_dllm_plugin.serving.validation import validate_like_vllm, validate_request


def apply() -> list[str]:
    missing = []
    for endpoint in ENDPOINTS:
        request_cls = resolve(f"{endpoint.package}.protocol", endpoint.request)
        if not wrap_attribute(request_cls, "to_sampling_params",
                              lambda original, e=endpoint: _validated(original, e.path)):
            missing.append(f"{endpoint.request}.to_sampling_params")
    return missing


def _validated(original, path: str):
    def to_sampling_params(self, max_tokens, *args, **kwargs):
        params = original(self, max_tokens, *args, **kwargs)
        validate_request(params)
        validate_like_vllm(params)
        if path == "/v1/completions" and self.max_tokens is None:
            # vLLM's completion responses read the canvas back from the request.
            self.max_tokens = max_tokens
        return params

    return to_sampling_params
