"""Engine settings every diffusion architecture needs, applied automatically.

Hooked into ``vllm.model_executor.models.config.MODELS_CONFIG_MAP``, which
vLLM runs early in ``VllmConfig.__post_init__`` for the model's architecture,
so a plain ``vllm serve <checkpoint>`` or ``LLM(model=...)`` needs no flags.
"""

from __future__ import annotations

import os

from vllm.logger import init_logger
from vllm.model_executor.models.config import VerifyAndUpdateConfig

from vllm_dllm_plugin.options import DiffusionOptionError, engine_defaults
from vllm_dllm_plugin.patch import apply_openai_contract
from vllm_dllm_plugin.registry import Family, family_for
from vllm_dllm_plugin.serving.validation import set_engine_defaults
from vllm_dllm_plugin.startup import deployment

logger = init_logger(f"vllm.{__name__}")  # under vLLM's log handler

SCHEDULER_CLS = "vllm_dllm_plugin.core.scheduler.DiffusionScheduler"
WORKER_CLS = "vllm_dllm_plugin.worker.worker.DiffusionWorker"
PARAMS_VALIDATOR = "vllm_dllm_plugin.serving.validation:DiffusionParamsValidator"


class DiffusionEngineConfig(VerifyAndUpdateConfig):

    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        model_config = vllm_config.model_config
        family = family_for(model_config.hf_config)
        space = family.option_space(model_config.hf_config)

        # Bad engine-wide defaults (a typo included) stop start-up, naming the option.
        try:
            defaults = engine_defaults(vllm_config.additional_config, space)
        except DiffusionOptionError as e:
            logger.error("Invalid --additional-config: %s", e)
            raise
        outputs = vllm_config.structured_outputs_config
        set_engine_defaults(defaults, grammar_after_reasoning=bool(
            outputs.reasoning_parser) and not outputs.enable_in_reasoning,
            vllm_config=vllm_config)
        block_causal = not family.canvas_cls.whole_canvas_windows
        _apply_family_settings(family, model_config,
                               defaults.block_length if block_causal else None)

        # Attention backend, CUDA graphs, parallel modes (startup/deployment.py).
        deployment.check_vllm_version()
        try:
            deployment.configure(vllm_config)
        except deployment.UnsupportedDeployment as e:
            logger.error("%s", e)
            raise

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
        # step's window: no async scheduling.  A window runs whole (or, a
        # block-causal prefill, in whole blocks): no chunked prefill.  Prefix
        # caching only where finished K/V is exact (block-causal families; as
        # vLLM, on unless --no-enable-prefix-caching).
        sched.async_scheduling = False
        sched.enable_chunked_prefill = False
        sched.long_prefill_token_threshold = 0
        cache = vllm_config.cache_config
        if not family.prefix_caching and cache.enable_prefix_caching:
            logger.info("Prefix caching is off for %s: %s.", family.name,
                        family.no_prefix_caching_reason)
            cache.enable_prefix_caching = False
        # The token budget holds the family's largest indivisible window: the
        # whole canvas (a refresh), or one block (block diffusion, whose long
        # prefills are split at block boundaries over several steps).
        largest = defaults.block_length if block_causal else model_config.max_model_len
        sched.max_num_batched_tokens = max(sched.max_num_batched_tokens, largest)
        if sched.max_num_scheduled_tokens is not None:
            sched.max_num_scheduled_tokens = max(sched.max_num_scheduled_tokens, largest)

        # Request options are checked in the front end through vLLM's
        # logits-processor ``validate_params`` hook (400 on bad input).
        procs = list(model_config.logits_processors or [])
        if PARAMS_VALIDATOR not in procs:
            model_config.logits_processors = [*procs, PARAMS_VALIDATOR]

        # The OpenAI server's request contract (max_tokens is the canvas,
        # 400s before any work); acts only in an API-server process.
        missing = apply_openai_contract()
        if missing:
            logger.warning("This vLLM lacks %s: the OpenAI server may clamp or ignore "
                           "parts of diffusion requests (tested with vLLM %s).",
                           ", ".join(missing), " and ".join(deployment.TESTED_VLLM))

        # The plugin drives the V1 model runner (the only one on CPU).
        if os.environ.get("VLLM_USE_V2_MODEL_RUNNER", "0") not in ("0", "false", "False"):
            raise ValueError("the diffusion plugin runs on the V1 model runner; "
                             "unset VLLM_USE_V2_MODEL_RUNNER")
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"


def _apply_family_settings(family: Family, model_config, block: int | None) -> None:
    """What the registry entry asks of the engine: the mask id from the
    tokenizer, greedy defaults, a context that ends on a block boundary."""
    hf_config = model_config.hf_config
    if family.mask_token is not None:
        hf_config.mask_token_id = mask_token_id_from_tokenizer(
            model_config.tokenizer, family.mask_token,
            revision=model_config.tokenizer_revision,
            trust_remote_code=model_config.trust_remote_code)

    if family.greedy_by_default:
        # generation_config.json holds the AR base model's chat sampling
        # (Qwen: temperature 0.7, top-p/top-k, repetition penalty 1.05),
        # which the published loop never uses: a request without sampling
        # fields decodes greedily, as there.
        if model_config.generation_config == "auto":
            model_config.generation_config = "vllm"
            logger.info("%s: the sampling defaults of generation_config.json (the base "
                        "model's) are not applied; requests default to greedy", family.name)
        overrides = dict(model_config.override_generation_config or {})
        overrides.setdefault("temperature", 0.0)
        model_config.override_generation_config = overrides

    if block is not None:
        # Every block decoded must fit: the last one ends on a block boundary.
        rounded = model_config.max_model_len // block * block
        if rounded != model_config.max_model_len:
            logger.info("%s: max_model_len %d rounded down to %d, a multiple of the block "
                        "length", family.name, model_config.max_model_len, rounded)
            model_config.max_model_len = rounded


def mask_token_id_from_tokenizer(tokenizer: str, token: str, **kwargs) -> int:
    """The id of the added token ``token`` in the checkpoint's tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer, **kwargs)
    token_id = tok.convert_tokens_to_ids(token)
    if token_id is None or token_id == tok.unk_token_id or (
            tok.convert_ids_to_tokens(token_id) != token):
        raise ValueError(f"the tokenizer {tokenizer!r} has no {token!r} token, which "
                         "this family's checkpoints add as their mask token")
    return int(token_id)
