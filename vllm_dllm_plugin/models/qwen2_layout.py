"""The Qwen2 checkpoint layout: vLLM's ``Qwen2ForCausalLM``, attention non-causal.

Dream and Fast-dLLM v2 are Qwen2.5 checkpoints run as diffusion models: the
hub weight names, shapes and config keys are Qwen2's (q/k/v biases,
grouped-query attention, an untied head (7B) or one tied to the embeddings
(Fast-dLLM v2 1.5B)).  So the module *is* vLLM's Qwen2 class, and with it its
weight loading (``hf_to_vllm_mapper``, ``packed_modules_mapping``), tied head,
quantization methods and LoRA support.  The one change is the attention
layer: the class is built under
:func:`~vllm_dllm_plugin.patch.non_causal_attention.non_causal_attention`,
which makes ``qwen2.Attention`` ``PrefillPrefixLMAttention`` for the duration
of ``__init__``, and :func:`~vllm_dllm_plugin.models.attention.check_layers`
checks the result.

RoPE: vLLM reads ``config.rope_parameters``, which transformers 5 fills from
the checkpoint's ``rope_theta`` (Qwen2.5: 1e6) when the config is built;
``Qwen2DecoderLayer`` only supplies 1e6 when a config has no theta at all.
"""

from vllm.config import VllmConfig
from vllm.model_executor.models import qwen2
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM

from vllm_dllm_plugin.models.attention import DiffusionAttention, check_layers
from vllm_dllm_plugin.patch.non_causal_attention import non_causal_attention


class Qwen2LayoutLM(Qwen2ForCausalLM):
    """vLLM's ``Qwen2ForCausalLM`` with non-causal paged attention."""

    attention_cls: type = DiffusionAttention

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        with non_causal_attention(qwen2, layer_cls=self.attention_cls):
            super().__init__(vllm_config=vllm_config, prefix=prefix)
        check_layers(self)
