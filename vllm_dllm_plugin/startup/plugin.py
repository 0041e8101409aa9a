"""Start-up wiring, run in every vLLM process by ``vllm_dllm_plugin.register``.

For each registry entry: its config class with ``AutoConfig`` (hub configs
load offline, with or without ``--trust-remote-code``: a registered class
outside transformers wins over ``auto_map``), its model class with vLLM's
``ModelRegistry`` (imported lazily by vLLM), the per-architecture engine
settings (``MODELS_CONFIG_MAP``, startup/config_hook.py), and a tokenizer
class the hub names as remote code.  Then the run-time changes every process
needs (``patch/``).  Idempotent and cheap.
"""

from __future__ import annotations


def register_all() -> None:
    from transformers import AutoConfig
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from vllm_dllm_plugin.patch import scheduler_stats, scheduler_warning
    from vllm_dllm_plugin.registry import FAMILIES, load
    from vllm_dllm_plugin.startup.config_hook import DiffusionEngineConfig

    scheduler_stats.apply()
    supported = set(ModelRegistry.get_supported_archs())
    for family in FAMILIES:
        AutoConfig.register(family.model_type, load(family.config_cls), exist_ok=True)
        if family.register_tokenizer is not None:
            load(family.register_tokenizer)()
        for arch in family.architectures:
            if arch not in supported:
                ModelRegistry.register_model(arch, family.model_cls)
            MODELS_CONFIG_MAP[arch] = DiffusionEngineConfig
    scheduler_warning.apply()
