"""Front-end validation of request options, before any engine work (API process).

vLLM calls ``validate_params`` of every configured logits processor for each
request in the API process (``InputProcessor``); a ``ValueError`` there is an
HTTP 400 naming the problem.  The processor itself never changes logits: the
diffusion runner does its own decision and never runs vLLM's sampler.
"""

from __future__ import annotations

import copy

import torch

from vllm.exceptions import VLLMValidationError
from vllm.v1.sample.logits_processor import LogitsProcessor

from vllm_dllm_plugin.options import DiffusionOptionError, DiffusionOptions, resolve_options

# Engine defaults of this process, set by the plugin's config hook.
_DEFAULTS = {}


def set_engine_defaults(options, grammar_after_reasoning: bool = False,
                        vllm_config=None) -> None:
    """``grammar_after_reasoning``: vLLM would start a grammar only after a
    reasoning parser saw the reasoning end (not supported).  ``vllm_config``:
    for vLLM's own request checks ahead of time (``validate_like_vllm``)."""
    _DEFAULTS["options"] = options
    _DEFAULTS["grammar_after_reasoning"] = grammar_after_reasoning
    _DEFAULTS["vllm_config"] = vllm_config


def engine_defaults_of_process() -> DiffusionOptions:
    return _DEFAULTS.get("options", DiffusionOptions())


class DiffusionRequestError(VLLMValidationError):
    """A 400 whose message is the plugin's own ("<field>: <why>"); the field
    travels in ``param``, so the message carries no "(parameter=...)" tail."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}", parameter=parameter)

    def __str__(self) -> str:
        return self.args[0]

    @classmethod
    def from_option_error(cls, error: DiffusionOptionError) -> "DiffusionRequestError":
        return cls(error.parameter, error.message)


def _unsupported(sp, sampler: str):
    """``(field, reason)`` for the first sampling feature diffusion decoding
    cannot honour, else None.  Greedy requests ignore top-p/top-k/min-p (they
    never change the argmax); Fast-dLLM v2's sampler has top-p."""
    sampling = sp.temperature > 0
    checks = (
        (_has_grammar(sp) and _DEFAULTS.get("grammar_after_reasoning", False),
         "structured_outputs", "a grammar that starts after the reasoning "
         "(--reasoning-parser) is not supported"),
        (sp.presence_penalty != 0.0, "presence_penalty", "penalties are not supported"),
        (sp.frequency_penalty != 0.0, "frequency_penalty", "penalties are not supported"),
        (sp.repetition_penalty != 1.0, "repetition_penalty", "penalties are not supported"),
        (sp.prompt_logprobs is not None, "prompt_logprobs",
         "prompt_logprobs are not supported (a diffusion forward never predicts the "
         "prompt)"),
        (bool(sp.logit_bias), "logit_bias", "logit_bias is not supported"),
        (bool(sp.allowed_token_ids), "allowed_token_ids",
         "allowed_token_ids is not supported"),
        (bool(sp.bad_words), "bad_words", "bad_words is not supported"),
        (sampling and sampler == "gumbel" and sp.top_p < 1.0, "top_p",
         "top_p is not supported with temperature > 0 (Gumbel sampling over the full "
         "vocabulary)"),
        (sampling and sampler != "top_k_top_p" and sp.top_k not in (0, -1), "top_k",
         "top_k is not supported with temperature > 0"),
        (sampling and sp.min_p > 0.0, "min_p", "min_p is not supported with temperature > 0"),
    )
    return next(((field, why) for bad, field, why in checks if bad), None)


def validate_request(sampling_params) -> None:
    """Raise ``DiffusionRequestError`` (a ``VLLMValidationError``) naming the
    offending field."""
    defaults = engine_defaults_of_process()
    problem = _unsupported(sampling_params, defaults.space.sampler)
    if problem is not None:
        field, why = problem
        raise DiffusionRequestError(field, f"{why} by diffusion decoding")
    try:
        options = resolve_options(sampling_params.extra_args, defaults)
    except DiffusionOptionError as e:
        raise DiffusionRequestError.from_option_error(e) from None
    if options.editing_threshold is not None and _has_grammar(sampling_params):
        raise DiffusionRequestError(
            "diffusion_editing_threshold",
            "token editing rewrites committed tokens, which a grammar (structured "
            "output, response_format, a tool call) does not allow")


def validate_like_vllm(sampling_params) -> None:
    """vLLM's own checks of a request (``SamplingParams.verify``: logprobs
    bounds, the structured-output backend and its grammar, ...), run on a
    copy so that they raise before a streaming response starts (vLLM runs
    them in ``InputProcessor`` once the stream may have begun, where a bad
    regex becomes an error event instead of a 400)."""
    config = _DEFAULTS.get("vllm_config")
    if config is None:
        return
    from vllm.tokenizers import cached_tokenizer_from_config

    tokenizer = cached_tokenizer_from_config(config.model_config)
    copy.deepcopy(sampling_params).verify(config.model_config, config.speculative_config,
                                          config.structured_outputs_config, tokenizer)


def _has_grammar(sampling_params) -> bool:
    params = sampling_params.structured_outputs
    return params is not None and not params.all_constraints_none()


class DiffusionParamsValidator(LogitsProcessor):

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        validate_request(sampling_params)

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        pass

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update) -> None:
        pass

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


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
