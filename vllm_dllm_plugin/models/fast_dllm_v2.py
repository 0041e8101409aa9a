"""Fast-dLLM v2 (``Fast_dLLM_QwenForCausalLM``): block diffusion on the Qwen2 layout.

The weights are Qwen2.5's (7B untied, 1.5B tied), so the module is the
shared transformer with Qwen2 names.  Block-causal attention needs nothing
here: every forward the engine runs is one block window whose keys end at a
block boundary (``vllm_dllm_plugin.engine.block_canvas``), where the shared
non-causal paged attention is exactly block-causal.
"""

from vllm_dllm_plugin.models.qwen2_layout import Qwen2LayoutLM


class FastDLLMv2ForCausalLM(Qwen2LayoutLM):
    pass
