"""Start-up choices for GPU deployments (engine/deployment.py): the attention
backend request, CUDA-graph mode, refused parallel modes, the version guard.
The same checks run inside vLLM's config construction (EngineArgs), so a bad
flag stops `vllm serve` before any engine work."""

from types import SimpleNamespace

import pytest

from vllm_dllm_plugin.startup import deployment


def test_non_causal_attention_is_requested():
    config = SimpleNamespace(backend=None, use_non_causal=False)
    deployment.request_non_causal_attention(config)
    assert config.use_non_causal is True


@pytest.mark.parametrize("name, refused", [("FLASHINFER", True), ("TRITON_FLASHINFER", True),
                                           ("FLASH_ATTN", False), ("TRITON_ATTN", False)])
def test_flashinfer_is_refused_with_the_way_out(name, refused):
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    config = SimpleNamespace(backend=AttentionBackendEnum[name], use_non_causal=False)
    if refused:
        with pytest.raises(deployment.UnsupportedDeployment, match="Use --attention-backend FLASH_ATTN"):
            deployment.request_non_causal_attention(config)
    else:
        deployment.request_non_causal_attention(config)
        assert config.use_non_causal


@pytest.mark.parametrize("mode", ["FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE"])
def test_full_cuda_graphs_are_refused(mode):
    from vllm.config.compilation import CUDAGraphMode

    config = SimpleNamespace(cudagraph_mode=CUDAGraphMode[mode])
    with pytest.raises(deployment.UnsupportedDeployment, match="Use PIECEWISE"):
        deployment.choose_cudagraph_mode(config)


@pytest.mark.parametrize("static_graphs, want", [(True, "PIECEWISE"), (False, None)])
def test_default_cuda_graph_mode_is_piecewise_where_graphs_exist(monkeypatch, static_graphs,
                                                                 want):
    from vllm.platforms import current_platform

    monkeypatch.setattr(type(current_platform), "support_static_graph_mode",
                        classmethod(lambda cls: static_graphs))
    config = SimpleNamespace(cudagraph_mode=None)
    deployment.choose_cudagraph_mode(config)
    assert getattr(config.cudagraph_mode, "name", None) == want


@pytest.mark.parametrize("mode", ["NONE", "PIECEWISE"])
def test_safe_cuda_graph_modes_are_kept(mode):
    from vllm.config.compilation import CUDAGraphMode

    config = SimpleNamespace(cudagraph_mode=CUDAGraphMode[mode])
    deployment.choose_cudagraph_mode(config)
    assert config.cudagraph_mode == CUDAGraphMode[mode]


@pytest.mark.parametrize("version, tested", [("0.32.0+cpu", True), ("0.33.0", True),
                                             ("0.33.2", True), ("0.31.1", False),
                                             ("0.34.0", False)])
def test_version_guard(version, tested):
    assert deployment.check_vllm_version(version) is tested


def _engine_config(model_dir, **kwargs):
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(model=str(model_dir), max_model_len=256, dtype="float32", **kwargs)
    return args.create_engine_config()


def test_the_real_config_asks_for_non_causal_attention(llada_dir):
    config = _engine_config(llada_dir)
    assert config.attention_config.use_non_causal is True


@pytest.mark.parametrize("kwargs, flag", [
    ({"decode_context_parallel_size": 2, "tensor_parallel_size": 2},
     "--decode-context-parallel-size"),
    ({"pipeline_parallel_size": 2}, "--pipeline-parallel-size"),
    ({"compilation_config": {"cudagraph_mode": "FULL_AND_PIECEWISE"}}, "cudagraph_mode="),
])
def test_unsupported_setting_stops_config_construction(llada_dir, kwargs, flag):
    with pytest.raises(Exception, match=flag):
        _engine_config(llada_dir, **kwargs)


@pytest.mark.parametrize("capability, want", [((7, 5), "TRITON_ATTN"), ((9, 0), None),
                                              ((10, 0), None)])
def test_gpus_without_flash_attention_get_triton(monkeypatch, capability, want):
    """Below compute capability 8.0 vLLM would fall back to FlashInfer."""
    from vllm.platforms import current_platform
    from vllm.platforms.interface import DeviceCapability

    monkeypatch.setattr(type(current_platform), "is_cuda", lambda self: True)
    monkeypatch.setattr(type(current_platform), "get_device_capability",
                        classmethod(lambda cls, device_id=0: DeviceCapability(*capability)))
    config = SimpleNamespace(backend=None, use_non_causal=False)
    deployment.request_non_causal_attention(config)
    assert getattr(config.backend, "name", None) == want and config.use_non_causal


def test_the_backend_each_layer_got_is_checked_too():
    with pytest.raises(deployment.UnsupportedDeployment, match="TRITON_ATTN"):
        deployment.refuse_backend("FLASHINFER")
    deployment.refuse_backend("CPU_ATTN")
    deployment.refuse_backend("FLASH_ATTN")


def test_prefix_caching_per_family(llada_dir, dream_dir, v2_dir, caplog):
    """On as vLLM has it for block diffusion (its finished K/V is exact), and
    ``--no-enable-prefix-caching`` honoured there; off for the bidirectional
    families even when asked for, with the reason in the start-up log.  The
    token budget holds a whole canvas only where a window can span one."""
    import logging

    v2 = _engine_config(v2_dir)
    assert v2.cache_config.enable_prefix_caching is True
    assert v2.scheduler_config.enable_chunked_prefill is False
    assert _engine_config(v2_dir, enable_prefix_caching=False
                          ).cache_config.enable_prefix_caching is False
    small = _engine_config(v2_dir, max_num_batched_tokens=64, max_num_seqs=4)
    assert small.scheduler_config.max_num_batched_tokens == 64
    hook_logger = logging.getLogger("vllm.vllm_dllm_plugin.startup.config_hook")
    hook_logger.addHandler(caplog.handler)   # vLLM's loggers do not propagate
    try:
        for model_dir, name in ((llada_dir, "LLaDA"), (dream_dir, "Dream")):
            caplog.clear()
            config = _engine_config(model_dir, enable_prefix_caching=True,
                                    max_num_batched_tokens=64, max_num_seqs=4)
            assert config.cache_config.enable_prefix_caching is False
            assert config.scheduler_config.max_num_batched_tokens == 256   # max_model_len
            assert any(f"Prefix caching is off for {name}" in r.getMessage()
                       and "whole canvas" in r.getMessage() for r in caplog.records)
    finally:
        hook_logger.removeHandler(caplog.handler)
