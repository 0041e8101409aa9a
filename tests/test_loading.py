"""Hub-format LLaDA checkpoints load offline, with or without trust_remote_code."""

from engine_utils import make_llm, sampling


def test_config_maps_llada_names(llada_dir):
    from transformers import AutoConfig

    import vllm_dllm_plugin

    vllm_dllm_plugin.register()
    for trust in (False, True):
        cfg = AutoConfig.from_pretrained(llada_dir, trust_remote_code=trust)
        assert type(cfg).__name__ == "LLaDAConfig"
        assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers) == (
            cfg.d_model, cfg.n_heads, cfg.n_layers)


def test_trust_remote_code_serves_the_same_model(llada_dir, llada_ref, llada_eos):
    """No remote code files exist: the registered config and model are used.

    (The weight-name mapping itself is checked by every parity test, whose
    reference reads the same hub tensors by name.)"""
    from engine_utils import assert_reference

    llm = make_llm(llada_dir, trust_remote_code=True)
    arch = llm.llm_engine.vllm_config.model_config.architectures
    assert arch == ["LLaDAModelLM"]
    prompt = [7, 8, 9, 120, 33]
    out = llm.generate([{"prompt_token_ids": prompt}], sampling(16, block_length=8),
                       use_tqdm=False)[0]
    assert_reference(out.outputs[0].token_ids, llada_ref, prompt, what="trust_remote_code",
                     max_tokens=16, eos_ids=llada_eos, block_length=8)
