"""Fast-dLLM v2 (``Fast_dLLM_QwenForCausalLM``): block diffusion on the Qwen2 layout.

The weights are Qwen2.5's (7B untied, 1.5B tied), so the module is vLLM's
``Qwen2ForCausalLM`` with non-causal attention (``qwen2_layout``).
Block-causal attention needs no kernel of its own: every forward is a window
whose keys end at a block boundary, or a prefill whose blocks are attention
segments each ending at its own block boundary (the block canvas), where
non-causal paged attention is exactly block-causal.  Its layers keep an
untagged KV spec (``BlockCausalAttention``): finished blocks' K/V is exact,
so vLLM's prefix caching stays available.
"""

from vllm_dllm_plugin.models.attention import BlockCausalAttention
from vllm_dllm_plugin.models.qwen2_layout import Qwen2LayoutLM


class FastDLLMv2ForCausalLM(Qwen2LayoutLM):

    attention_cls = BlockCausalAttention
