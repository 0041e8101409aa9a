"""Fast-dLLM v2 (``Fast_dLLM_QwenForCausalLM``): block diffusion on the Qwen2 layout.

The weights are Qwen2.5's (7B untied, 1.5B tied), so the module is vLLM's
``Qwen2ForCausalLM`` with non-causal attention (``qwen2_layout``).
Block-causal attention needs nothing here: every forward the engine runs is
one block window whose keys end at a block boundary (the block canvas), where
the non-causal paged attention is exactly block-causal.
"""

from vllm_dllm_plugin.models.qwen2_layout import Qwen2LayoutLM


class FastDLLMv2ForCausalLM(Qwen2LayoutLM):
    pass
