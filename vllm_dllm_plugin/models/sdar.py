"""SDAR (``SDARForCausalLM``): block diffusion on the Qwen3 layout.

The JetLM/SDAR-*-Chat weights are Qwen3's (per-head ``q_norm``/``k_norm``
before RoPE, no q/k/v bias; 4B/8B untied, 1.7B Qwen3-1.7B-shaped and tied),
so the module is vLLM's ``Qwen3ForCausalLM``, and with it its weight loading
(``hf_to_vllm_mapper``, ``packed_modules_mapping``), tied head, quantization
methods and LoRA support.  The one change is the attention layer: the class
is built under
:func:`~vllm_dllm_plugin.patch.non_causal_attention.non_causal_attention`,
which makes ``qwen3.Attention`` (the name ``Qwen3Attention.__init__`` reads)
:class:`~vllm_dllm_plugin.models.attention.BlockCausalAttention` for the
duration of ``__init__``; :func:`~vllm_dllm_plugin.models.attention.check_layers`
checks the result.  As for Fast-dLLM v2, block-causal attention needs no
kernel of its own: every forward is a window whose keys end at a block
boundary, or a prefill whose blocks are attention segments (the block
canvas), and the KV spec stays untagged so prefix caching stays available.

RoPE: vLLM reads ``config.rope_parameters``, which transformers 5 fills from
the checkpoint's ``rope_theta`` (1e6) when the config is built.
"""

from vllm.config import VllmConfig
from vllm.model_executor.models import qwen3
from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM

from vllm_dllm_plugin.models.attention import BlockCausalAttention, check_layers
from vllm_dllm_plugin.patch.non_causal_attention import non_causal_attention


class SDARForCausalLM(Qwen3ForCausalLM):
    """vLLM's ``Qwen3ForCausalLM`` with block-causal (non-causal paged) attention."""

    attention_cls: type = BlockCausalAttention

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        with non_causal_attention(qwen3, layer_cls=self.attention_cls):
            super().__init__(vllm_config=vllm_config, prefix=prefix)
        check_layers(self)
