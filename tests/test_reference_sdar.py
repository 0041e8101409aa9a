"""Tests of the plain-PyTorch SDAR model (vllm_dllm_plugin/testing/reference/sdar.py)
and of the vLLM model class on the same tiny checkpoints.

The engine's SDAR decoding is compared against loops built on this model,
so the model has to be right on its own: loading (mask id by name from the
tokenizer, end ids from generation_config.json, ``block_size`` default 4,
tied and untied heads), Qwen3's per-head q/k norm, the block-causal
attention rule, and agreement with transformers' ``Qwen3ForCausalLM`` (under
a causal mask) and with vLLM's ``SDARForCausalLM`` (in a subprocess, one
engine per checkpoint: every weight consumed, and each forward's logits).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from vllm_dllm_plugin.testing.checkpoints import SDAR_PRESETS, SDAR_SPECIALS, write_sdar_checkpoint
from vllm_dllm_plugin.testing.reference import SDAR
from vllm_dllm_plugin.testing.reference.block_causal import append_kv, block_causal, empty_cache
from vllm_dllm_plugin.testing.reference.common import fresh_keys

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKENIZER_SIZE = SDAR_PRESETS["tiny"]["tokenizer_size"]
N_BASE = TOKENIZER_SIZE - len(SDAR_SPECIALS)
ENDOFTEXT, IM_END, MASK = N_BASE, N_BASE + 2, TOKENIZER_SIZE - 1
BS = 4



@pytest.fixture(scope="module")
def model(sdar_dir):
    return SDAR.from_pretrained(sdar_dir)


def prompt_of(length: int, seed: int = 0) -> list[int]:
    return torch.randint(0, N_BASE, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def test_loads_ids_and_block_size(model, sdar_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sdar_dir, trust_remote_code=False)
    assert model.mask_id == tok.mask_token_id == MASK
    assert model.eos_ids == {IM_END, ENDOFTEXT}
    assert model.config.block_size == BS and model.config.head_dim == 32
    assert model.dtype == torch.float32 and model.checkpoint == sdar_dir
    assert model.geometry.head_dim == 32 and len(model.layers) == 2
    assert not torch.equal(model.head, model.embed)
    assert set(model.layers[0]) >= {"self_attn.q_norm.weight", "self_attn.k_norm.weight"}


def test_tied_checkpoint_reads_the_head_from_the_embeddings(sdar_tied_dir):
    assert "lm_head.weight" not in load_file(str(sdar_tied_dir / "model.safetensors"))
    tied = SDAR.from_pretrained(sdar_tied_dir)
    assert tied.head is tied.embed and tied.mask_id == MASK
    logits = tied.prefill(prompt_of(10), BS).logits
    assert logits.shape == (10, SDAR_PRESETS["tiny"]["vocab_size"]) and torch.isfinite(logits).all()


def test_without_block_keys_the_block_is_4_and_the_mask_the_tokenizers(tmp_path):
    path = write_sdar_checkpoint(tmp_path, omit_block_keys=True, block_size=8)
    m = SDAR.from_pretrained(path, dtype=torch.bfloat16)
    assert m.config.block_size == 4 and m.mask_id == MASK and m.dtype == torch.bfloat16


def test_mask_is_read_by_name_not_from_the_misnamed_files(sdar_dir, tmp_path):
    """added_tokens.json says ``<MASK>``; the loader goes by tokenizer_config's
    ``mask_token`` among the real added tokens, and refuses a name that is
    no token."""
    ck = tmp_path / "ck"
    shutil.copytree(sdar_dir, ck)
    assert "<|MASK|>" not in json.loads((ck / "added_tokens.json").read_text())
    assert SDAR.from_pretrained(ck).mask_id == MASK
    tok_cfg = json.loads((ck / "tokenizer_config.json").read_text())
    tok_cfg["mask_token"] = "<MASK>"
    (ck / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    with pytest.raises(ValueError):
        SDAR.from_pretrained(ck)


def test_rejects_other_families(tmp_path):
    from vllm_dllm_plugin.testing.checkpoints import write_fast_dllm_v2_checkpoint

    with pytest.raises(ValueError):
        SDAR.from_pretrained(write_fast_dllm_v2_checkpoint(tmp_path))


# --------------------------------------------------------------------------------------
# The layer math and the attention rule
# --------------------------------------------------------------------------------------


def test_block_forwards_over_an_exact_cache_equal_the_prefill(sdar_dir):
    """Block by block over the exact cache gives the one-forward prefill's
    rows and K/V: block-causal attention, blocks counted from position 0
    (float64, so that only the summation order differs)."""
    model = SDAR.from_pretrained(sdar_dir, dtype=torch.float64)
    ids = prompt_of(14)
    full = model.prefill(ids, BS)
    cache = empty_cache(model)
    for start in range(0, len(ids), BS):
        out = model.block_forward(ids[start:start + BS], start, cache, BS)
        torch.testing.assert_close(out.logits, full.logits[start:start + BS], rtol=1e-10, atol=1e-10)
        cache = append_kv(cache, out.kv)
    for (k, v), (fk, fv) in zip(cache, full.kv):
        torch.testing.assert_close(k, fk, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(v, fv, rtol=1e-10, atol=1e-10)


def test_later_blocks_never_change_earlier_rows_and_a_block_sees_itself(model):
    ids = prompt_of(12)
    base = model.prefill(ids, BS).logits
    later = model.prefill(ids[:8] + [MASK] * 4, BS).logits
    assert torch.equal(base[:8], later[:8])
    inside = model.prefill(ids[:5] + [MASK] + ids[6:], BS).logits  # position 5, block 1
    assert torch.equal(inside[:4], base[:4]) and not torch.allclose(inside[4], base[4])


def test_q_and_k_norms_matter(sdar_dir):
    ids = prompt_of(8)
    base = SDAR.from_pretrained(sdar_dir).prefill(ids).logits
    for name in ("self_attn.q_norm.weight", "self_attn.k_norm.weight"):
        m = SDAR.from_pretrained(sdar_dir)
        m.layers[0][name] = m.layers[0][name].clone()
        m.layers[0][name][:16] *= 1.5
        assert not torch.allclose(m.prefill(ids).logits, base, atol=1e-3), name


def test_equals_transformers_qwen3_under_a_causal_mask(model, sdar_dir):
    """The same layer math as transformers' Qwen3 (q/k norm before rotary):
    with a causal ``allowed`` matrix the logits are Qwen3ForCausalLM's."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = json.loads((sdar_dir / "config.json").read_text())
    cfg["model_type"] = "qwen3"
    hf = Qwen3ForCausalLM.from_pretrained(sdar_dir, config=Qwen3Config(**cfg), attn_implementation="eager")
    ids = prompt_of(12)
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0]
    pos = torch.arange(len(ids))
    got = model.forward(torch.tensor(ids), 0, fresh_keys, pos[:, None] >= pos[None, :]).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_masked_blocks_get_confident_and_unsure_predictions(model):
    """The random weights give a spread of confidences at MASK positions, so
    threshold rules commit several tokens in some steps and one in others."""
    conf = []
    for seed in range(12):
        ids = prompt_of(8, seed) + [MASK] * BS
        probs = torch.softmax(model.prefill(ids, BS).logits[8:], -1)
        conf.append(probs.max(-1).values)
    conf = torch.cat(conf)
    assert (conf > 0.9).float().mean() > 0.1 and (conf < 0.7).float().mean() > 0.1
    assert not (torch.softmax(model.prefill(prompt_of(8) + [MASK] * BS).logits, -1)[:, MASK] > 1e-6).any()


def test_block_causal_rule():
    """A query reads a key iff its block is not earlier: the rule the forwards use."""
    q, k = torch.arange(4, 8), torch.arange(8)
    assert block_causal(q, k, BS).all()
    assert not block_causal(torch.arange(3, 4), torch.arange(4, 5), BS).any()


# --------------------------------------------------------------------------------------
# vLLM's SDARForCausalLM on the same checkpoint
# --------------------------------------------------------------------------------------

# Runs in a fresh process: builds the engine (vLLM's loader itself refuses
# unknown checkpoint names and parameters left unloaded), checks the vLLM
# model's parameter names against the checkpoint's (q/k/v and gate/up packed)
# and the values of those not repacked, records the token ids, positions and
# all-row logits of each forward of one request.
ENGINE_SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    from safetensors.torch import load_file
    from vllm import LLM, SamplingParams

    path, prompt = sys.argv[1], json.loads(sys.argv[2])
    llm = LLM(model=path, enforce_eager=True, dtype="float32", max_model_len=256, seed=0)

    def check_weights(model):
        w = load_file(path + "/model.safetensors")
        expected = {}
        for name, t in w.items():
            for a, b in ((".q_proj.", ".qkv_proj."), (".gate_proj.", ".gate_up_proj.")):
                if a in name:
                    base = name.replace(a, "{}")
                    parts = (["q_proj", "k_proj", "v_proj"] if a == ".q_proj." else ["gate_proj", "up_proj"])
                    expected[name.replace(a, b)] = torch.cat([w[base.format("." + p + ".")] for p in parts])
            if not any(p in name for p in (".q_proj.", ".k_proj.", ".v_proj.", ".gate_proj.", ".up_proj.")):
                expected[name] = t
        if "lm_head.weight" not in w:
            expected["lm_head.weight"] = w["model.embed_tokens.weight"]
        params = dict(model.named_parameters(remove_duplicate=False))
        return dict(
            cls=type(model).__name__,
            layers=sorted({type(m).__name__ for m in model.modules() if type(m).__name__.endswith("Attention")}),
            missing=sorted(set(expected) - set(params)),
            unexpected=sorted(set(params) - set(expected)),
            # the CPU linear layers repack their weights and drop them after loading
            # (UnquantizedLinearMethod.process_weights_after_loading): the logits check those
            differ=sorted(n for n in expected if n in params and not n.endswith("proj.weight")
                          and not torch.equal(params[n].data, expected[n])),
            tied=params["lm_head.weight"].data_ptr() == params["model.embed_tokens.weight"].data_ptr())

    def record(model):
        model.sdar_forwards = []
        forward = model.forward

        def recorded(input_ids, positions, *args, **kwargs):
            hidden = forward(input_ids, positions, *args, **kwargs)
            model.sdar_forwards.append(dict(ids=input_ids.tolist(), pos=positions.tolist(),
                                            logits=model.compute_logits(hidden).tolist()))
            return hidden

        model.forward = recorded

    weights = llm.apply_model(check_weights)[0]
    llm.apply_model(record)
    out = llm.generate([{"prompt_token_ids": prompt}], SamplingParams(temperature=0.0, max_tokens=8),
                       use_tqdm=False)
    forwards = llm.apply_model(lambda model: model.sdar_forwards)[0]
    print("RESULT " + json.dumps(dict(weights=weights, forwards=forwards,
                                      tokens=list(out[0].outputs[0].token_ids))), flush=True)
''')


def run_vllm(path, prompt):
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", ENGINE_SCRIPT, str(path), json.dumps(prompt)],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_vllm_model_loads_every_weight_and_gives_the_references_logits(sdar_dir, sdar_tied_dir, tied):
    """vLLM's ``SDARForCausalLM`` (Qwen3ForCausalLM with BlockCausalAttention)
    holds exactly the checkpoint's tensors, and every forward it runs for one
    request equals the reference: a forward of tokens ``X`` at positions
    ``[s, s + n)`` (``s`` a block start) reads the K/V of finished blocks,
    i.e. of the final tokens before ``s``, so its rows are the reference's
    block-causal prefill of ``final[:s] + X`` from row ``s``.  The prompt has
    two whole blocks (one prefill forward, block-causal inside) and a tail."""
    path = sdar_tied_dir if tied else sdar_dir
    prompt = prompt_of(9, seed=3)
    got = run_vllm(path, prompt)

    w = got["weights"]
    assert w["cls"] == "SDARForCausalLM" and w["layers"] == ["BlockCausalAttention", "Qwen3Attention"]
    assert (w["missing"], w["unexpected"], w["differ"]) == ([], [], [])
    assert w["tied"] is tied

    ref = SDAR.from_pretrained(path)
    final = prompt + got["tokens"]
    assert got["tokens"] and MASK not in got["tokens"]
    assert got["forwards"][0]["pos"] == list(range(8))  # the prompt's whole blocks in one forward
    for f in got["forwards"]:
        s, n = f["pos"][0], len(f["pos"])
        assert f["pos"] == list(range(s, s + n)) and s % BS == 0 and s <= len(final)
        want = ref.prefill(final[:s] + f["ids"], BS).logits[s:]
        torch.testing.assert_close(torch.tensor(f["logits"]), want, rtol=1e-4, atol=1e-4,
                                   msg=lambda m: f"forward at {f['pos']}: {m}")
