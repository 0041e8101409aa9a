"""Dream (``DreamModel``): the Qwen2 layout run bidirectionally.

Dream's logits are shifted by one position: the runner reads position ``p``'s
prediction from row ``p - 1`` (its entry in ``vllm_dllm_plugin.registry``).
"""

from vllm_dllm_plugin.models.qwen2_layout import Qwen2LayoutLM


class DreamModel(Qwen2LayoutLM):
    pass
