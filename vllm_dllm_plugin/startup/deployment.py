"""GPU-side engine choices, made explicit and refused when unsafe.

Every diffusion step runs bidirectional attention over a query window that
may sit in the middle of the canvas (dual cache: queries ``[s, e)`` attending
to all ``L`` keys, ``seq_lens`` widened after vLLM's own preparation).  What
that asks of vLLM, from its 0.32/0.33 source:

* **Attention backend.**  Non-causal attention must be asked for with
  ``attention_config.use_non_causal``: without it vLLM's CUDA platform puts
  FlashInfer first on Blackwell (SM 10.x), whose non-causal path vLLM itself
  avoids ("known to have problems", ``platforms/cuda.py``); with it the order
  is FlashAttention, FlashInfer, Triton.  FlashAttention and FlashInfer take
  fp16/bf16 only, so a float32 model gets Triton.  FlashInfer chosen by hand
  is refused: its CUDA-graph support and non-causal prefill wrapper are built
  for causal batches, and nothing here has verified it on a canvas.
* **CUDA graphs.**  A FULL graph replays attention with metadata captured for
  uniform single-token decode batches; a diffusion step's windows (and the
  widened ``seq_lens`` of dual-cache steps) are outside what that path
  expects.  PIECEWISE graphs leave attention outside the graph, so they are
  exact for any window: that is the default, NONE (``--enforce-eager``) is
  allowed, and FULL modes are refused.  torch.compile stays on.
* **Parallelism.**  Decode/prefill context parallelism shards the KV cache
  and computes each request's context as ``seq_lens - query_lens``, which
  the widened dual-cache step breaks; pipeline parallelism would need the
  canvas to travel back through the scheduler; speculative decoding would
  share ``spec_token_ids``, which the scheduler uses for the canvas.  Each is
  refused at start-up.
"""

from __future__ import annotations

import vllm
from vllm.logger import init_logger

from vllm_dllm_plugin.models.attention import UnsupportedDeployment, refuse_backend

logger = init_logger(f"vllm.{__name__}")  # under vLLM's log handler

# vLLM minor versions the plugin is tested against (CPU build 0.32; 0.33 read).
TESTED_VLLM = ("0.32", "0.33")
SAFE_CUDAGRAPH_MODES = ("NONE", "PIECEWISE")


def configure(vllm_config) -> None:
    """Apply the choices above to ``vllm_config`` (the config hook's step)."""
    refuse_unsupported_parallelism(vllm_config)
    request_non_causal_attention(vllm_config.attention_config)
    choose_cudagraph_mode(vllm_config.compilation_config)


def request_non_causal_attention(attention_config) -> None:
    """Ask vLLM for a non-causal-capable backend.  Where FlashAttention cannot
    run (compute capability below 8.0) vLLM's next choice would be FlashInfer,
    so Triton is named instead."""
    from vllm.platforms import current_platform

    backend = attention_config.backend
    if backend is not None:
        refuse_backend(backend.name)
    elif current_platform.is_cuda():
        capability = current_platform.get_device_capability()
        if capability is not None and capability.major < 8:
            from vllm.v1.attention.backends.registry import AttentionBackendEnum

            attention_config.backend = AttentionBackendEnum.TRITON_ATTN
    attention_config.use_non_causal = True


def choose_cudagraph_mode(compilation_config) -> None:
    from vllm.config.compilation import CUDAGraphMode
    from vllm.platforms import current_platform

    mode = compilation_config.cudagraph_mode
    if mode is None:
        if current_platform.support_static_graph_mode():  # CUDA/ROCm; CPU has none
            compilation_config.cudagraph_mode = CUDAGraphMode.PIECEWISE
    elif mode.name not in SAFE_CUDAGRAPH_MODES:
        raise UnsupportedDeployment(
            f"cudagraph_mode={mode.name} is not supported for diffusion models: full "
            "CUDA graphs replay attention with metadata captured for single-token "
            "decode batches, while a diffusion step queries windows of the canvas. "
            "Use PIECEWISE (the default here: attention stays outside the graphs) or "
            "NONE (--enforce-eager).")


def refuse_unsupported_parallelism(vllm_config) -> None:
    parallel = vllm_config.parallel_config
    refused = {
        "--decode-context-parallel-size": parallel.decode_context_parallel_size > 1,
        "--prefill-context-parallel-size":
            getattr(parallel, "prefill_context_parallel_size", 1) > 1,
        "--pipeline-parallel-size": parallel.pipeline_parallel_size > 1,
        "--speculative-config": vllm_config.speculative_config is not None,
    }
    for flag, bad in refused.items():
        if bad:
            raise UnsupportedDeployment(
                f"{flag} is not supported for diffusion models (see "
                "docs/deployment.md); tensor parallelism is.")


def check_vllm_version(version: str = vllm.__version__) -> bool:
    """One warning when this vLLM is outside the tested versions."""
    minor = ".".join(version.split("+")[0].split(".")[:2])
    if minor in TESTED_VLLM:
        return True
    logger.warning_once(
        "vllm-dllm-plugin is tested with vLLM %s; this is vLLM %s. The plugin relies on "
        "vLLM internals (docs/architecture.md) that may have changed: check the results "
        "(scripts/gpu_acceptance.py) or install a tested version "
        "(docs/deployment.md).", " and ".join(TESTED_VLLM), version)
    return False
