"""Engine settings every diffusion architecture needs, applied automatically.

Hooked into ``vllm.model_executor.models.config.MODELS_CONFIG_MAP``, which
vLLM runs early in ``VllmConfig.__post_init__`` for the model's architecture,
so a plain ``vllm serve <checkpoint>`` or ``LLM(model=...)`` needs no flags.
"""

from __future__ import annotations

import os

from vllm.logger import init_logger
from vllm.model_executor.models.config import VerifyAndUpdateConfig

from vllm_dllm_plugin.engine.validation import set_engine_defaults
from vllm_dllm_plugin.options import engine_defaults

logger = init_logger(f"vllm.{__name__}")  # under vLLM's log handler

# max_tokens is the canvas size: without it, the OpenAI server would use the
# whole remaining context.  Requests that do not set max_tokens get this.
DEFAULT_MAX_NEW_TOKENS = 256

SCHEDULER_CLS = "vllm_dllm_plugin.engine.scheduler.DiffusionScheduler"
WORKER_CLS = "vllm_dllm_plugin.engine.worker.DiffusionWorker"
PARAMS_VALIDATOR = "vllm_dllm_plugin.engine.validation:DiffusionParamsValidator"


class DiffusionEngineConfig(VerifyAndUpdateConfig):

    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        # Bad engine-wide defaults fail at start-up, naming the option.
        set_engine_defaults(engine_defaults(vllm_config.additional_config))

        sched = vllm_config.scheduler_config
        if sched.scheduler_cls not in (None, SCHEDULER_CLS):
            raise ValueError(
                "diffusion models need the plugin's scheduler; got "
                f"scheduler_cls={sched.scheduler_cls!r}")
        sched.scheduler_cls = SCHEDULER_CLS
        parallel = vllm_config.parallel_config
        if parallel.worker_cls == "auto":
            parallel.worker_cls = WORKER_CLS
        elif parallel.worker_cls != WORKER_CLS:
            logger.warning("Custom worker_cls %s: it must build the diffusion "
                           "model runner", parallel.worker_cls)

        # One step = one denoising iteration whose output decides the next
        # step's window: no async scheduling.  A refresh must run whole and
        # bidirectional: no chunked prefill, no prefix caching.
        sched.async_scheduling = False
        sched.enable_chunked_prefill = False
        sched.long_prefill_token_threshold = 0
        vllm_config.cache_config.enable_prefix_caching = False
        model_config = vllm_config.model_config
        sched.max_num_batched_tokens = max(sched.max_num_batched_tokens,
                                           model_config.max_model_len)
        if sched.max_num_scheduled_tokens is not None:
            sched.max_num_scheduled_tokens = max(sched.max_num_scheduled_tokens,
                                                 model_config.max_model_len)

        generation = dict(model_config.try_get_generation_config() or {})
        generation.update(model_config.override_generation_config or {})
        if "max_new_tokens" not in generation:
            model_config.override_generation_config = {
                **(model_config.override_generation_config or {}),
                "max_new_tokens": DEFAULT_MAX_NEW_TOKENS}

        # Request options are checked in the front end through vLLM's
        # logits-processor ``validate_params`` hook (400 on bad input).
        procs = list(model_config.logits_processors or [])
        if PARAMS_VALIDATOR not in procs:
            model_config.logits_processors = [*procs, PARAMS_VALIDATOR]

        _reject_max_tokens_beyond_context()

        # The plugin drives the V1 model runner (the only one on CPU).
        if os.environ.get("VLLM_USE_V2_MODEL_RUNNER", "0") not in ("0", "false", "False"):
            raise ValueError("the diffusion plugin runs on the V1 model runner; "
                             "unset VLLM_USE_V2_MODEL_RUNNER")
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"


def _reject_max_tokens_beyond_context() -> None:
    """The canvas is fixed at admission, so the OpenAI server must not clamp
    an explicit ``max_tokens`` to the room left by the prompt: with
    patches/0002 it answers 400 instead.  Runs in the API process too."""
    from vllm.entrypoints.serve.utils import api_utils

    if hasattr(api_utils, "REJECT_MAX_TOKENS_BEYOND_CONTEXT"):
        api_utils.REJECT_MAX_TOKENS_BEYOND_CONTEXT = True
    else:
        logger.warning("this vLLM lacks patches/0002 (scripts/apply_patches.sh): the "
                       "OpenAI server clamps a max_tokens that does not fit the context")
