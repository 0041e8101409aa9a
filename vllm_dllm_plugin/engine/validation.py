"""Front-end validation of request options, before any engine work.

vLLM calls ``validate_params`` of every configured logits processor for each
request in the API process (``InputProcessor``); a ``ValueError`` there is an
HTTP 400 naming the problem.  The processor itself never changes logits: the
diffusion runner does its own decision and never runs vLLM's sampler.
"""

from __future__ import annotations

import torch

from vllm.exceptions import VLLMValidationError
from vllm.v1.sample.logits_processor import LogitsProcessor

from vllm_dllm_plugin.options import DiffusionOptionError, resolve_options

# Engine defaults of this process, set by the plugin's config hook.
_DEFAULTS = {}


def set_engine_defaults(options) -> None:
    _DEFAULTS["options"] = options


def validate_request(sampling_params) -> None:
    """Raise ``VLLMValidationError`` naming the offending option."""
    defaults = _DEFAULTS.get("options")
    try:
        if defaults is None:
            resolve_options(sampling_params.extra_args)
        else:
            resolve_options(sampling_params.extra_args, defaults)
    except DiffusionOptionError as e:
        raise VLLMValidationError(str(e), parameter=e.parameter) from e


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
