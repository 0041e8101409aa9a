"""LLaDA (``LLaDAModelLM``) written with vLLM's tensor-parallel layers.

A Llama-shaped masked-diffusion model with OLMo weight names.  Attention is
bidirectional over the whole canvas: ``PrefillPrefixLMAttention`` keeps a
paged KV cache (so the block-approximate cache lives in vLLM's memory) while
every query row of a request attends to all of that request's KV slots.

Hub weight names -> modules here:
  ``blocks.{i}.{q,k,v}_proj``  -> ``blocks.{i}.qkv_proj`` (fused)
  ``blocks.{i}.ff_proj``       -> ``blocks.{i}.gate_up_proj`` shard 0 (SiLU branch)
  ``blocks.{i}.up_proj``       -> ``blocks.{i}.gate_up_proj`` shard 1
  ``blocks.{i}.ff_out``        -> down projection (inside a block)
  ``transformer.ff_out``       -> output head (top level)
"""


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

# hub name -> (fused parameter, shard id)
_STACKED = {
    ".q_proj.": (".qkv_proj.", "q"),
    ".k_proj.": (".qkv_proj.", "k"),
    ".v_proj.": (".qkv_proj.", "v"),
    ".ff_proj.": (".gate_up_proj.", 0),
    ".up_proj.": (".gate_up_proj.", 1),
}


class LLaDABlock(nn.Module):
    def __init__(self, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        config = vllm_config.model_config.hf_config
        quant_config = vllm_config.quant_config
        tp = get_tensor_model_parallel_world_size()
        d_model = config.d_model
        self.head_dim = d_model // config.n_heads
        self.num_heads = config.n_heads // tp
        self.num_kv_heads = max(1, config.n_kv_heads // tp)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        qkv_bias = bool(config.include_bias or config.include_qkv_bias)

        self.attn_norm = RMSNorm(d_model, eps=config.rms_norm_eps)
        self.qkv_proj = QKVParallelLinear(
            d_model, self.head_dim, config.n_heads, config.n_kv_heads,
            bias=qkv_bias, quant_config=quant_config, prefix=f"{prefix}.qkv_proj")
        self.attn_out = RowParallelLinear(
            config.n_heads * self.head_dim, d_model, bias=config.include_bias,
            quant_config=quant_config, prefix=f"{prefix}.attn_out")
        # LLaDA computes rotary in float32 (rope_full_precision).
        self.rotary_emb = get_rope(
            self.head_dim, max_position=config.max_sequence_length,
            is_neox_style=True,
            rope_parameters={"rope_theta": config.rope_theta, "rope_type": "default"},
            dtype=torch.float32)
        self.attn = PrefillPrefixLMAttention(
            self.num_heads, self.head_dim, self.head_dim**-0.5,
            num_kv_heads=self.num_kv_heads, cache_config=vllm_config.cache_config,
            quant_config=quant_config, prefix=f"{prefix}.attn")

        self.ff_norm = RMSNorm(d_model, eps=config.rms_norm_eps)
        self.gate_up_proj = MergedColumnParallelLinear(
            d_model, [config.mlp_hidden_size] * 2, bias=config.include_bias,
            quant_config=quant_config, prefix=f"{prefix}.gate_up_proj")
        self.act = SiluAndMul()
        self.ff_out = RowParallelLinear(
            config.mlp_hidden_size, d_model, bias=config.include_bias,
            quant_config=quant_config, prefix=f"{prefix}.ff_out")

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor,
                residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = hidden
            x = self.attn_norm(hidden)
        else:
            x, residual = self.attn_norm(hidden, residual)
        qkv, _ = self.qkv_proj(x)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q, k = self.rotary_emb(positions, q, k)
        x, _ = self.attn_out(self.attn(q, k, v))

        x, residual = self.ff_norm(x, residual)
        x, _ = self.gate_up_proj(x)
        x, _ = self.ff_out(self.act(x))
        return x, residual


class LLaDATransformer(nn.Module):
    """``model.transformer``: embeddings, blocks and the final norm."""

    def __init__(self, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.wte = VocabParallelEmbedding(
            config.embedding_size, config.d_model, org_num_embeddings=config.vocab_size,
            prefix=f"{prefix}.wte")
        self.blocks = nn.ModuleList(
            LLaDABlock(vllm_config, prefix=f"{prefix}.blocks.{i}")
            for i in range(config.n_layers))
        self.ln_f = RMSNorm(config.d_model, eps=config.rms_norm_eps)


@support_torch_compile
class LLaDAModel(nn.Module):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        self.transformer = LLaDATransformer(vllm_config, prefix=f"{prefix}.transformer")

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        hidden = inputs_embeds if inputs_embeds is not None else self.transformer.wte(input_ids)
        residual = None
        for block in self.transformer.blocks:
            hidden, residual = block(positions, hidden, residual)
        hidden, _ = self.transformer.ln_f(hidden, residual)
        return hidden


class LLaDAModelLM(nn.Module):
    """vLLM entry class for ``architectures: [LLaDAModelLM]``."""

    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["ff_proj", "up_proj"],
    }

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        self.model = LLaDAModel(vllm_config=vllm_config, prefix="model")
        if config.weight_tying:
            self.lm_head = self.model.transformer.wte
        else:
            self.lm_head = ParallelLMHead(
                config.embedding_size, config.d_model, org_num_embeddings=config.vocab_size,
                quant_config=vllm_config.quant_config, prefix="model.transformer.ff_out")
        self.logits_processor = LogitsProcessor(config.vocab_size)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.transformer.wte(input_ids)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None,
                inputs_embeds: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.logits_processor(self.lm_head, hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if name == "model.transformer.ff_out.weight":
                if self.config.weight_tying:
                    continue
                name = "lm_head.weight"
            for hub, (fused, shard) in _STACKED.items():
                if hub in name:
                    name = name.replace(hub, fused)
                    param = params[name]
                    param.weight_loader(param, tensor, shard)
                    break
            else:
                if name not in params:
                    raise KeyError(f"unexpected LLaDA weight {name!r}")
                param = params[name]
                getattr(param, "weight_loader", default_weight_loader)(param, tensor)
            loaded.add(name)
        return loaded
