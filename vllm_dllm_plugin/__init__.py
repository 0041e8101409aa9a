"""vLLM plugin serving diffusion LLMs (LLaDA, Dream, Fast-dLLM v2) with Fast-dLLM decoding.

``register`` is the ``vllm.general_plugins`` entry point: vLLM runs it in
every process (API server, engine core, each worker, the model-inspection
subprocess), so it is idempotent and imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

# The embedded default model: a small LLaDA trained on arithmetic and sorting
# (scripts/train_embedded_model.py), in LLaDA's hub layout.
EMBEDDED_MODEL = Path(__file__).parent / "assets" / "llada-arith"

# architecture -> (hf model_type, config class, model class)
_ARCHITECTURES = {
    "LLaDAModelLM": ("llada",
                     "vllm_dllm_plugin.models.llada_config:LLaDAConfig",
                     "vllm_dllm_plugin.models.llada:LLaDAModelLM"),
    "DreamModel": ("Dream",
                   "vllm_dllm_plugin.models.dream_config:DreamConfig",
                   "vllm_dllm_plugin.models.dream:DreamModel"),
    "Fast_dLLM_QwenForCausalLM": (
        "Fast_dLLM_Qwen",
        "vllm_dllm_plugin.models.fast_dllm_v2_config:FastDLLMQwenConfig",
        "vllm_dllm_plugin.models.fast_dllm_v2:FastDLLMv2ForCausalLM"),
}


def _load(qualname: str):
    module, _, name = qualname.partition(":")
    return getattr(__import__(module, fromlist=[name]), name)


def register() -> None:
    from transformers import AutoConfig
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from vllm_dllm_plugin.engine.config_hook import DiffusionEngineConfig
    from vllm_dllm_plugin.models.dream_tokenizer import register_dream_tokenizer
    from vllm_dllm_plugin.runtime_patches import add_scheduler_stats_plugin_field

    add_scheduler_stats_plugin_field()
    supported = set(ModelRegistry.get_supported_archs())
    for arch, (model_type, config_cls, model_cls) in _ARCHITECTURES.items():
        AutoConfig.register(model_type, _load(config_cls), exist_ok=True)
        if arch not in supported:
            ModelRegistry.register_model(arch, model_cls)
        MODELS_CONFIG_MAP[arch] = DiffusionEngineConfig
    # Dream's hub tokenizer is remote code; a local class takes its name.
    register_dream_tokenizer()
    _drop_expected_warnings()


class _PluginSchedulerWarning:
    """vLLM warns about every scheduler class outside ``vllm.``: that its
    interface may change and that async scheduling is off.  Both are by
    design here (docs/architecture.md), so the line is dropped."""

    def filter(self, record) -> bool:
        return not (isinstance(record.msg, str)
                    and record.msg.startswith("Using custom scheduler class")
                    and "vllm_dllm_plugin." in str(record.args))


def _drop_expected_warnings() -> None:
    import logging

    scheduler_logger = logging.getLogger("vllm.config.scheduler")
    if not any(isinstance(f, _PluginSchedulerWarning) for f in scheduler_logger.filters):
        scheduler_logger.addFilter(_PluginSchedulerWarning())
