"""The bidirectional Llama-shaped transformer shared by LLaDA and Dream.

Both families are pre-norm decoders with rotary attention and a SwiGLU MLP;
they differ in config key names, biases and checkpoint weight names.  Each
family is a thin subclass of ``DiffusionLM`` that says how to read its config
(``ModelSpec``) and how its hub weight names map onto the modules here.

Attention is ``PrefillPrefixLMAttention``: a decoder attention with a paged
KV cache (so the block-approximate cache lives in vLLM's memory) whose query
rows attend to every KV slot ``[0, seq_len)`` of their request.
"""

import dataclasses
import re
from collections.abc import Iterable

import torch
from torch import nn

from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.attention.prefill_prefix_lm_attention import (
    PrefillPrefixLMAttention,
)
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import (
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.sequence import IntermediateTensors

from vllm_dllm_plugin.engine.deployment import refuse_backend


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The shape of a family's checkpoint, in one vocabulary."""

    hidden_size: int
    num_heads: int
    num_kv_heads: int
    num_layers: int
    intermediate_size: int
    vocab_size: int          # logits columns
    embedding_size: int      # rows of the embedding / head (may be padded)
    max_position: int
    rope_theta: float
    rms_norm_eps: float
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_embeddings: bool = False
    rope_dtype: torch.dtype | None = None  # None: the model dtype

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class DecoderLayer(nn.Module):

    def __init__(self, vllm_config: VllmConfig, spec: ModelSpec, prefix: str):
        super().__init__()
        quant_config = vllm_config.quant_config
        tp = get_tensor_model_parallel_world_size()
        self.num_heads = spec.num_heads // tp
        self.num_kv_heads = max(1, spec.num_kv_heads // tp)
        self.q_size = self.num_heads * spec.head_dim
        self.kv_size = self.num_kv_heads * spec.head_dim

        self.input_layernorm = RMSNorm(spec.hidden_size, eps=spec.rms_norm_eps)
        self.self_attn = nn.Module()
        self.self_attn.qkv_proj = QKVParallelLinear(
            spec.hidden_size, spec.head_dim, spec.num_heads, spec.num_kv_heads,
            bias=spec.qkv_bias, quant_config=quant_config,
            prefix=f"{prefix}.self_attn.qkv_proj")
        self.self_attn.o_proj = RowParallelLinear(
            spec.num_heads * spec.head_dim, spec.hidden_size, bias=spec.o_bias,
            quant_config=quant_config, prefix=f"{prefix}.self_attn.o_proj")
        self.rotary_emb = get_rope(
            spec.head_dim, max_position=spec.max_position, is_neox_style=True,
            rope_parameters={"rope_theta": spec.rope_theta, "rope_type": "default"},
            dtype=spec.rope_dtype)
        self.attn = PrefillPrefixLMAttention(
            self.num_heads, spec.head_dim, spec.head_dim**-0.5,
            num_kv_heads=self.num_kv_heads, cache_config=vllm_config.cache_config,
            quant_config=quant_config, prefix=f"{prefix}.self_attn.attn")
        refuse_backend(self.attn.attn_backend.get_name())

        self.post_attention_layernorm = RMSNorm(spec.hidden_size, eps=spec.rms_norm_eps)
        self.mlp = nn.Module()
        self.mlp.gate_up_proj = MergedColumnParallelLinear(
            spec.hidden_size, [spec.intermediate_size] * 2, bias=spec.mlp_bias,
            quant_config=quant_config, prefix=f"{prefix}.mlp.gate_up_proj")
        self.mlp.down_proj = RowParallelLinear(
            spec.intermediate_size, spec.hidden_size, bias=spec.mlp_bias,
            quant_config=quant_config, prefix=f"{prefix}.mlp.down_proj")
        self.act = SiluAndMul()

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor,
                residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = hidden
            x = self.input_layernorm(hidden)
        else:
            x, residual = self.input_layernorm(hidden, residual)
        qkv, _ = self.self_attn.qkv_proj(x)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q, k = self.rotary_emb(positions, q, k)
        x, _ = self.self_attn.o_proj(self.attn(q, k, v))

        x, residual = self.post_attention_layernorm(x, residual)
        x, _ = self.mlp.gate_up_proj(x)
        x, _ = self.mlp.down_proj(self.act(x))
        return x, residual


@support_torch_compile
class Transformer(nn.Module):

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "",
                 spec: ModelSpec | None = None):
        super().__init__()
        assert spec is not None
        self.embed_tokens = VocabParallelEmbedding(
            spec.embedding_size, spec.hidden_size, org_num_embeddings=spec.vocab_size,
            prefix=f"{prefix}.embed_tokens")
        self.layers = nn.ModuleList(
            DecoderLayer(vllm_config, spec, prefix=f"{prefix}.layers.{i}")
            for i in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden_size, eps=spec.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        hidden = inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)
        residual = None
        for layer in self.layers:
            hidden, residual = layer(positions, hidden, residual)
        hidden, _ = self.norm(hidden, residual)
        return hidden


# Fused parameters: checkpoint projection -> (fused module, shard id).
_FUSED = {
    "q_proj": ("qkv_proj", "q"),
    "k_proj": ("qkv_proj", "k"),
    "v_proj": ("qkv_proj", "v"),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}
_FUSED_NAME = re.compile(r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\.")


class DiffusionLM(nn.Module):
    """Base of the family entry classes: transformer + untied or tied head.

    Subclasses define ``spec_from_config`` and ``WEIGHT_NAME_MAP``: regex
    substitutions from hub names to the Qwen2-style names used here.
    """

    WEIGHT_NAME_MAP: tuple[tuple[str, str], ...] = ()
    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }

    @classmethod
    def spec_from_config(cls, config) -> ModelSpec:
        raise NotImplementedError

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        self.config = vllm_config.model_config.hf_config
        self.spec = spec = self.spec_from_config(self.config)
        self.model = Transformer(vllm_config=vllm_config, prefix="model", spec=spec)
        if spec.tie_embeddings:
            self.lm_head = self.model.embed_tokens
        else:
            self.lm_head = ParallelLMHead(
                spec.embedding_size, spec.hidden_size, org_num_embeddings=spec.vocab_size,
                quant_config=vllm_config.quant_config, prefix="lm_head")
        self.logits_processor = LogitsProcessor(spec.vocab_size)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None,
                inputs_embeds: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.logits_processor(self.lm_head, hidden_states)

    def internal_name(self, hub_name: str) -> str | None:
        """Hub weight name -> this module's name (None: not a parameter here)."""
        for pattern, replacement in self.WEIGHT_NAME_MAP:
            hub_name = re.sub(pattern, replacement, hub_name)
        if self.spec.tie_embeddings and hub_name.startswith("lm_head."):
            return None
        return hub_name

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for hub_name, tensor in weights:
            name = self.internal_name(hub_name)
            if name is None:
                continue
            fused = _FUSED_NAME.search(name)
            if fused:
                module, shard = _FUSED[fused.group(1)]
                name = name.replace(f".{fused.group(1)}.", f".{module}.")
                param = params[name]
                param.weight_loader(param, tensor, shard)
            else:
                if name not in params:
                    raise KeyError(f"unexpected weight {hub_name!r} (as {name!r})")
                param = params[name]
                getattr(param, "weight_loader", default_weight_loader)(param, tensor)
            loaded.add(name)
        return loaded
