"""Tests of the plain-PyTorch Fast-dLLM v2 reference
(vllm_dllm_plugin/testing/reference/fast_dllm_v2.py).

The engine is compared against this reference token for token, so it has to
be right on its own: loading (mask / end ids from the tokenizer), the
block-causal attention rule of its forwards, the forward structure around
block boundaries, the commit rule, sub-block order, the end-token stop, the
sub-block ("dual") cache against a hand-run of the published rule, max_tokens
truncation, bf16 and sampling. Plain PyTorch only, no engine.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from vllm_dllm_plugin.testing.reference.common import fresh_keys, prefix_keys
from vllm_dllm_plugin.testing.reference.fast_dllm_v2 import (
    END_TOKEN,
    MASK_TOKEN,
    FastDLLMv2,
    append_kv,
    block_causal,
    choose,
    commit_positions,
    empty_cache,
    generate,
    read_added_tokens,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BS = 32
SUB = 8
NEG = float("-inf")
TOKEN_LIMIT = 470  # prompt ids stay below the tokenizer's added tokens



@pytest.fixture(scope="module")
def model(v2_ref):
    """The reference on conftest's tiny checkpoint (``v2_dir``, float32)."""
    return v2_ref


@pytest.fixture(scope="module")
def model64(v2_dir):
    return FastDLLMv2.from_pretrained(v2_dir, dtype=torch.float64)


@pytest.fixture(scope="module")
def model_bf16(v2_dir):
    return FastDLLMv2.from_pretrained(v2_dir, dtype=torch.bfloat16)


def prompt_of(length: int, seed: int = 0) -> list[int]:
    return torch.randint(0, TOKEN_LIMIT, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def greedy(model, prompt, **kw):
    kw.setdefault("eos_ids", set())
    return generate(model, prompt, **kw)


def denoising(trace):
    return [f for f in trace if f.kind in ("block", "sub_block")]


def blocks_of(trace):
    """The denoising forwards grouped per block (a commit forward closes one)."""
    groups, current = [], []
    for f in trace:
        if f.kind == "prefill":
            continue
        if f.kind == "commit":
            groups.append(current)
            current = []
        else:
            current.append(f)
    if current:
        groups.append(current)
    return groups


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def test_loader_reads_mask_and_end_ids_from_the_tokenizer(model, v2_dir):
    cfg = json.loads((v2_dir / "config.json").read_text())
    assert "mask_token_id" not in cfg and cfg["bd_size"] == BS
    added = {t["content"]: t["id"] for t in json.loads((v2_dir / "tokenizer.json").read_text())["added_tokens"]}
    assert model.mask_id == added[MASK_TOKEN] and model.eos_ids == {added[END_TOKEN]}
    assert model.config.bd_size == BS and model.config.head_dim == 32
    assert model.head.shape == (cfg["vocab_size"], cfg["hidden_size"]) and len(model.layers) == 2
    assert not torch.equal(model.head, model.embed)


def test_loader_reads_tokenizer_config_alone_and_rejects_disagreement(v2_dir, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(v2_dir, ck)
    (ck / "tokenizer.json").unlink()
    assert read_added_tokens(ck) == read_added_tokens(v2_dir)
    assert FastDLLMv2.from_pretrained(ck).mask_id == FastDLLMv2.from_pretrained(v2_dir).mask_id
    shutil.copy(v2_dir / "tokenizer.json", ck / "tokenizer.json")
    tok_cfg = json.loads((ck / "tokenizer_config.json").read_text())
    mask_key = next(k for k, v in tok_cfg["added_tokens_decoder"].items() if v["content"] == MASK_TOKEN)
    tok_cfg["added_tokens_decoder"]["9999"] = tok_cfg["added_tokens_decoder"].pop(mask_key)
    (ck / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    with pytest.raises(ValueError):
        FastDLLMv2.from_pretrained(ck)


def test_tied_checkpoint_reads_the_head_from_the_embeddings(v2_tied_dir):
    weights = load_file(str(v2_tied_dir / "model.safetensors"))
    assert "lm_head.weight" not in weights
    tied = FastDLLMv2.from_pretrained(v2_tied_dir)
    assert tied.head is tied.embed
    r = greedy(tied, prompt_of(40), max_tokens=40)
    assert len(r.tokens) == 40 and tied.mask_id not in r.tokens


def test_loader_rejects_other_families(dream_dir):
    with pytest.raises(ValueError):
        FastDLLMv2.from_pretrained(dream_dir)


# --------------------------------------------------------------------------------------
# The attention rule
# --------------------------------------------------------------------------------------


def block_by_block_prefill(model, ids):
    """Each prompt block as one block forward over the exact cache of the earlier ones."""
    cache, logits = empty_cache(model), []
    for s in range(0, len(ids), BS):
        out = model.block_forward(ids[s : s + BS], s, cache)
        cache = append_kv(cache, out.kv)
        logits.append(out.logits)
    return torch.cat(logits), cache


@pytest.mark.parametrize("dtype_model,tol", [("model64", 1e-10), ("model", 1e-4)])
def test_one_forward_prefill_equals_block_by_block(request, dtype_model, tol):
    m = request.getfixturevalue(dtype_model)
    ids = prompt_of(3 * BS, seed=1)
    one = m.prefill(ids)
    logits, cache = block_by_block_prefill(m, ids)
    torch.testing.assert_close(one.logits, logits, rtol=0, atol=tol)
    for (k, v), (bk, bv) in zip(one.kv, cache):
        torch.testing.assert_close(k, bk, rtol=0, atol=tol)
        torch.testing.assert_close(v, bv, rtol=0, atol=tol)


def test_prefill_is_neither_token_causal_nor_bidirectional(model64):
    ids = prompt_of(3 * BS, seed=2)
    n = len(ids)
    block = model64.prefill(ids)
    causal = model64.forward(torch.tensor(ids), 0, fresh_keys, torch.ones(n, n, dtype=torch.bool).tril())
    full = model64.full(torch.tensor(ids))
    for other in (causal, full):
        assert (other.logits - block.logits).abs().max() > 1e-3
        assert (other.kv[1][0] - block.kv[1][0]).abs().max() > 1e-3  # layer 1 K: after one attention
    # the first block alone is plain bidirectional attention
    torch.testing.assert_close(model64.full(torch.tensor(ids[:BS])).logits, block.logits[:BS], rtol=0, atol=1e-10)


def test_block_causal_mask():
    pos = torch.arange(70)
    allowed = block_causal(pos, pos, BS)
    assert allowed[0, 31] and not allowed[31, 32] and allowed[32, 0] and allowed[33, 63] and not allowed[63, 64]
    assert allowed[69, 0] and allowed[64, 69]


def test_a_block_sees_later_tokens_of_its_own_block_but_no_later_block(model64):
    ids = prompt_of(3 * BS, seed=3)
    changed = list(ids)
    changed[70] = (changed[70] + 1) % TOKEN_LIMIT  # block 2
    a, b = model64.prefill(ids), model64.prefill(changed)
    torch.testing.assert_close(a.logits[:64], b.logits[:64], rtol=0, atol=0)
    for (ka, va), (kb, vb) in zip(a.kv, b.kv):
        torch.testing.assert_close(ka[:, :64], kb[:, :64], rtol=0, atol=0)
        torch.testing.assert_close(va[:, :64], vb[:, :64], rtol=0, atol=0)
    assert (a.logits[64] - b.logits[64]).abs().max() > 1e-3  # row 64 reads the later token 70
    # the same through a block forward over the exact cache of block 0
    cache = model64.prefill(ids[:BS]).kv
    x = model64.block_forward(ids[BS : 2 * BS], BS, cache)
    y = model64.block_forward(changed[BS:40] + [ids[40] ^ 1] + ids[41 : 2 * BS], BS, cache)
    assert (x.logits[0] - y.logits[0]).abs().max() > 1e-3


# --------------------------------------------------------------------------------------
# Forward structure around block boundaries
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("P", [31, 32, 33, 64, 65])
def test_forward_structure_by_prompt_length(model, P):
    prompt = prompt_of(P, seed=P)
    r = greedy(model, prompt, max_tokens=40)
    mask, trace = model.mask_id, r.trace
    base = BS * (P // BS)
    if P < BS:
        assert trace[0].kind == "block" and trace[0].start == 0
        assert list(trace[0].tokens) == prompt + [mask] * (BS - P)
        first = 0
    else:
        assert trace[0].kind == "prefill" and list(trace[0].tokens) == prompt[:base]
        first = 1
        opening = trace[1]
        assert opening.kind == "block" and opening.start == base
        if P % BS == 0:  # the prefill's last row opens the first block
            logits = model.prefill(prompt).logits[-1].clone()
            logits[mask] = NEG
            assert trace[0].committed == (P,) and r.canvas[P] == int(logits.argmax())
            assert list(opening.tokens) == [r.canvas[P]] + [mask] * (BS - 1)
        else:  # the prompt tail opens it
            assert trace[0].committed == ()
            assert list(opening.tokens) == prompt[base:] + [mask] * (base + BS - P)
    assert all(f.kind != "prefill" for f in trace[first:])
    assert all(f.start % BS == 0 and f.position == f.start for f in trace if f.kind in ("block", "commit"))
    # every forward is counted: prefill + denoising steps + commit forwards
    assert r.forwards == len(trace) == first + len(r.commits) + sum(f.kind == "commit" for f in trace)
    assert len(r.tokens) == 40 and mask not in r.tokens and r.canvas[:P] == prompt


def test_prompt_of_31_decodes_its_tail_in_the_first_block(model):
    r = greedy(model, prompt_of(31, seed=31), max_tokens=1)
    assert [f.kind for f in r.trace] == ["block"] and r.commits == [1] and len(r.tokens) == 1
    r2 = greedy(model, prompt_of(31, seed=31), max_tokens=2)
    assert [f.kind for f in r2.trace] == ["block", "commit"] and r2.tokens[:1] == r.tokens


def test_prompt_of_32_prefills_and_takes_the_argmax_token(model):
    r = greedy(model, prompt_of(32, seed=32), max_tokens=1)
    assert [f.kind for f in r.trace] == ["prefill"] and r.forwards == 1 and r.tokens == [r.canvas[32]]


def test_quirk_q1_skips_the_prefill_of_a_one_block_prompt(model):
    prompt = prompt_of(32, seed=32)
    plain = greedy(model, prompt, max_tokens=40)
    quirk = greedy(model, prompt, max_tokens=40, quirks=True)
    assert quirk.trace[0].kind == "block" and quirk.trace[0].start == 32 and quirk.trace[0].position == 0
    assert list(quirk.trace[0].tokens) == [model.mask_id] * BS  # the prompt is never seen
    assert all(f.position == f.start - BS for f in quirk.trace)
    assert quirk.tokens != plain.tokens and len(quirk.tokens) == 40
    for P in (31, 33, 64):  # the flag changes nothing else
        p = prompt_of(P, seed=P)
        assert greedy(model, p, max_tokens=40, quirks=True).trace == greedy(model, p, max_tokens=40).trace


def test_block_size_option_moves_the_grid(model):
    r = greedy(model, prompt_of(20), max_tokens=40, block_size=16)
    assert [f.kind for f in r.trace][:1] == ["prefill"] and len(r.trace[0].tokens) == 16
    assert all(len(f.tokens) == 16 and f.start % 16 == 0 for f in r.trace if f.kind in ("block", "commit"))
    with pytest.raises(ValueError):
        greedy(model, prompt_of(20), max_tokens=8, block_size=12)  # not a multiple of the sub-block


# --------------------------------------------------------------------------------------
# The commit rule
# --------------------------------------------------------------------------------------


def pos(conf, threshold, candidates=None, dtype=torch.float32):
    conf = torch.tensor(conf, dtype=dtype)
    cand = torch.ones(conf.shape, dtype=torch.bool) if candidates is None else torch.tensor(candidates)
    return commit_positions(conf, cand, threshold)


def test_commit_rule_is_strict_and_always_takes_the_top_candidate():
    assert pos([0.5, 0.9, 0.95, 0.91], 0.9) == [2, 3]  # 0.9 is not > 0.9
    assert pos([0.9, 0.5], 0.9) == [0]  # equal to the bar, but the top one
    assert pos([0.3, 0.6, 0.6], 0.9) == [1]  # ties: the leftmost
    assert pos([0.99, 0.5, 0.95], 0.9, [False, True, True]) == [2]  # only candidates
    assert pos([0.99, 0.98, 0.97], 1.0) == [0]  # threshold 1: exactly one
    assert pos([0.2, 0.3], 0.0) == [0, 1]


def test_commit_rule_compares_in_the_confidence_dtype():
    # bf16: 0.8 rounds up to 0.80078125, so a confidence of exactly that does not pass
    assert pos([0.80078125, 0.5, 0.9], 0.8, dtype=torch.bfloat16) == [2]
    assert pos([0.80078125, 0.5, 0.9], 0.8, dtype=torch.float32) == [0, 2]
    # 0.95 rounds down to 0.94921875: equal again, not committed
    assert pos([0.94921875, 0.99], 0.95, dtype=torch.bfloat16) == [1]


def test_greedy_choice_is_the_max_of_a_model_dtype_softmax():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    pred, conf = choose(logits)
    assert conf.dtype == torch.bfloat16
    probs = torch.softmax(logits, dim=-1)
    assert torch.equal(pred, probs.argmax(-1)) and torch.equal(conf, probs.max(-1).values)


def test_threshold_one_commits_one_token_per_forward(model):
    r = greedy(model, prompt_of(20), max_tokens=80, threshold=1.0)
    assert set(r.commits) == {1}
    groups = blocks_of(r.trace)
    commit_forwards = sum(f.kind == "commit" for f in r.trace)
    assert commit_forwards >= 2
    for steps in groups:
        masks = sum(t == model.mask_id for t in steps[0].tokens)
        assert len(steps) == masks  # one token per step; the block's forwards: steps + 1
    assert r.forwards == len(r.commits) + commit_forwards  # P < 32: no prefill


def test_lower_threshold_commits_several_tokens(model):
    one = greedy(model, prompt_of(20), max_tokens=80, threshold=1.0)
    low = greedy(model, prompt_of(20), max_tokens=80, threshold=0.7)
    assert max(low.commits) > 1 and low.forwards < one.forwards
    assert sum(low.commits) == sum(one.commits)  # same positions decided, fewer forwards


@pytest.mark.parametrize("sub", [4, 8, 16, 32])
def test_commits_stay_in_the_current_sub_block(model, sub):
    prompt = prompt_of(21, seed=sub)
    r = greedy(model, prompt, max_tokens=75, threshold=0.6, sub_block_length=sub)
    decided = set(range(len(prompt)))
    for f in r.trace:
        if f.kind in ("prefill", "commit"):
            decided |= set(f.committed)
            continue
        block = f.start - f.start % BS
        subs = {(p - block) // sub for p in f.committed}
        assert len(subs) == 1 and f.committed  # one sub-block, at least one commit
        j = subs.pop()
        # every earlier sub-block of the block is decided; this one is not yet
        assert all(p in decided for p in range(block, block + j * sub))
        assert not all(p in decided for p in range(block + j * sub, block + (j + 1) * sub))
        decided |= set(f.committed)


# --------------------------------------------------------------------------------------
# The end-token stop
# --------------------------------------------------------------------------------------


def decided_at(r, prompt_len):
    """Canvas index -> index of the forward that decided it (prompt: -1)."""
    at = {p: -1 for p in range(prompt_len)}
    for i, f in enumerate(r.trace):
        for p in f.committed:
            at[p] = i
    return at


@pytest.mark.parametrize("P,k", [(20, 3), (20, 17), (33, 40), (45, 0)])
def test_end_token_stops_at_once_and_cuts_the_output(model, P, k):
    prompt = prompt_of(P, seed=k)
    plain = greedy(model, prompt, max_tokens=100)
    end = plain.tokens[k]
    first = plain.tokens.index(end)
    r = generate(model, prompt, max_tokens=100, eos_ids={end})
    assert r.tokens == plain.tokens[: first + 1]
    assert r.trace == plain.trace[: len(r.trace)]  # the same run, stopped early
    # replay: the stop comes right after the first forward after which an end
    # token stands with every generated position before it decided
    at = decided_at(plain, P)
    stop_after = min(max(at[p] for p in range(P, e + 1)) for e in range(P, P + 100) if plain.canvas[e] == end)
    assert r.forwards == stop_after + 1 < plain.forwards


def test_end_token_from_the_prefill_stops_before_any_block(model):
    prompt = prompt_of(64, seed=5)
    first = greedy(model, prompt, max_tokens=1).tokens[0]
    r = generate(model, prompt, max_tokens=50, eos_ids={first})
    assert r.tokens == [first] and r.forwards == 1


def test_end_token_from_a_commit_forward_stops_before_the_next_block(model):
    prompt = prompt_of(20, seed=6)
    plain = greedy(model, prompt, max_tokens=100)
    commit = next(f for f in plain.trace if f.kind == "commit")
    end = plain.canvas[commit.committed[0]]
    if end in plain.canvas[20 : commit.committed[0]]:
        pytest.skip("the commit token also occurs earlier")
    r = generate(model, prompt, max_tokens=100, eos_ids={end})
    assert r.trace[-1] == commit and r.tokens[-1] == end


# --------------------------------------------------------------------------------------
# The sub-block ("dual") cache against a hand-run of the published rule
# --------------------------------------------------------------------------------------


def hand_run_first_block(model, prompt, block_cache=True, threshold=0.9):
    """The first block of a request, written out from the published
    ``batch_sample`` with plain forwards. With the sub-block cache: a full
    block forward when there is no side cache or the sub-block's first token
    is MASK (its K/V becomes the side cache), else the sub-block's tokens
    alone, their K/V written into the side cache, attending to prefix + side
    cache. Without it: always the full block forward."""
    P, mask = len(prompt), model.mask_id
    s = BS * (P // BS)
    cache = model.prefill(prompt[:s]).kv if s else empty_cache(model)
    x = list(prompt) + [mask] * (s + BS - P)
    side, kinds, commits = None, [], []
    for a in range(s, s + BS, SUB):
        while mask in x[a : a + SUB]:
            if not block_cache or side is None or x[a] == mask:
                out = model.forward(torch.tensor(x[s : s + BS]), s, prefix_keys(cache))
                side = [(torch.cat([ck, k], 1), torch.cat([cv, v], 1)) for (ck, cv), (k, v) in zip(cache, out.kv)]
                logits = torch.cat([out.logits[:1], out.logits[:-1]])[a - s : a - s + SUB]
                kinds.append("block")
            else:

                def keys(layer, k, v, a=a, side=side):
                    side[layer][0][:, a : a + SUB] = k
                    side[layer][1][:, a : a + SUB] = v
                    return side[layer]

                out = model.forward(torch.tensor(x[a : a + SUB]), a, keys)
                logits = torch.cat([out.logits[:1], out.logits[:-1]])
                kinds.append("sub_block")
            logits[:, mask] = NEG
            conf, pred = torch.softmax(logits, -1).max(-1)
            cand = torch.tensor([t == mask for t in x[a : a + SUB]])
            conf = torch.where(cand, conf, torch.full_like(conf, NEG))
            take = conf > threshold
            take[conf.argmax()] = True
            take &= cand
            for i in take.nonzero().flatten().tolist():
                x[a + i] = int(pred[i])
            commits.append(int(take.sum()))
    return x, kinds, commits


@pytest.mark.parametrize("block_cache", [True, False])
@pytest.mark.parametrize("P", [5, 13, 45])
def test_first_block_equals_a_hand_run_of_the_published_rule(model, P, block_cache):
    prompt = prompt_of(P, seed=P + 100)
    s = BS * (P // BS)
    x, kinds, commits = hand_run_first_block(model, prompt, block_cache)
    r = greedy(model, prompt, max_tokens=s + BS - P, block_cache=block_cache)  # exactly the first block
    steps = [f for f in r.trace if f.kind != "prefill"]
    assert [f.kind for f in steps] == kinds and r.commits == commits
    assert r.canvas == x
    assert ("sub_block" in kinds) == block_cache


def test_block_cache_changes_the_forward_inputs(model):
    prompt = prompt_of(45, seed=9)
    plain = greedy(model, prompt, max_tokens=60)
    dual = greedy(model, prompt, max_tokens=60, block_cache=True)
    assert all(len(f.tokens) == BS for f in denoising(plain.trace))
    subs = [f for f in dual.trace if f.kind == "sub_block"]
    assert subs and all(len(f.tokens) == SUB and f.start % SUB == 0 for f in subs)
    assert denoising(plain.trace)[0] == denoising(dual.trace)[0]  # both open with a full block forward


def test_block_cache_sub_block_forward_overwrites_its_slots(model):
    prompt = prompt_of(40, seed=4)
    cache = model.prefill(prompt[:BS]).kv
    block = prompt[BS:40] + [model.mask_id] * 24
    out = model.block_forward(block, BS, cache)
    side = append_kv(cache, out.kv)
    block[8] = 7
    step = model.sub_block_forward(block[8:16], 40, side)
    for (k, v), (fk, fv) in zip(side, step.kv):
        assert torch.equal(k[:, 40:48], fk) and torch.equal(v[:, 40:48], fv)
    fresh = model.block_forward(block, BS, cache)
    assert not torch.allclose(step.logits, fresh.logits[8:16])  # stale rest of the block


# --------------------------------------------------------------------------------------
# max_tokens
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("P,block_cache", [(20, False), (32, False), (45, True)])
def test_max_tokens_gives_a_prefix_of_a_longer_run(model, P, block_cache):
    prompt = prompt_of(P, seed=P)
    long = greedy(model, prompt, max_tokens=110, block_cache=block_cache)
    assert len(long.tokens) == 110
    first_block_end = BS * (P // BS) + BS - P  # generated tokens once the first block is done
    edges = {first_block_end + d for d in (-1, 0, 1, 2)} | {first_block_end + BS + d for d in (0, 1, 2)}
    previous = 0
    for m in sorted({1, 2} | {e for e in edges if e >= 1}):
        r = greedy(model, prompt, max_tokens=m, block_cache=block_cache)
        assert r.tokens == long.tokens[:m]
        assert r.trace == long.trace[: r.forwards] and r.forwards >= previous
        previous = r.forwards


def test_max_tokens_stops_at_block_boundaries(model):
    prompt = prompt_of(20, seed=11)  # first block: 12 generated, commit forward: the 13th
    r12 = greedy(model, prompt, max_tokens=12)
    assert [f.kind for f in r12.trace][-1] == "block"  # no commit forward past max_tokens
    r13 = greedy(model, prompt, max_tokens=13)
    assert r13.trace[-1].kind == "commit" and r13.forwards == r12.forwards + 1
    r14 = greedy(model, prompt, max_tokens=14)  # a whole second block, no commit forward after it
    assert r14.trace[-1].kind == "block" and sum(f.kind == "commit" for f in r14.trace) == 1
    assert model.mask_id not in r14.canvas and len(r14.canvas) == 64 and len(r14.tokens) == 14


# --------------------------------------------------------------------------------------
# bf16, sampling, validation
# --------------------------------------------------------------------------------------


def test_bf16_path(model_bf16):
    prompt = prompt_of(40, seed=12)
    out = model_bf16.block_forward(prompt[BS:] + [model_bf16.mask_id] * 24, BS, model_bf16.prefill(prompt[:BS]).kv)
    assert out.logits.dtype == torch.bfloat16 and out.kv[0][0].dtype == torch.bfloat16
    _, conf = choose(out.logits)
    assert conf.dtype == torch.bfloat16
    for threshold in (0.8, 0.9):
        r = greedy(model_bf16, prompt, max_tokens=50, threshold=threshold, block_cache=True)
        assert len(r.tokens) == 50 and model_bf16.mask_id not in r.tokens


def test_sampling_is_reproducible_and_the_commit_token_stays_greedy(model64):
    prompt = prompt_of(20, seed=13)

    def sampled(seed, **kw):
        return generate(model64, prompt, max_tokens=70, eos_ids=set(), temperature=1.0,
                        generator=torch.Generator().manual_seed(seed), **kw)

    a, b = sampled(0), sampled(0)
    assert a.tokens == b.tokens
    assert any(sampled(s).tokens != a.tokens for s in (1, 2, 3))
    assert a.tokens != greedy(model64, prompt, max_tokens=70).tokens
    for f in a.trace:
        if f.kind == "commit":
            end = f.committed[0]
            logits = model64.prefill(a.canvas[:end]).logits[-1].clone()
            logits[model64.mask_id] = NEG
            assert a.canvas[end] == int(logits.argmax())


def test_tiny_top_p_keeps_only_the_top_token(model):
    """top_p -> 0 keeps one token per row: its renormalised probability is 1,
    so every masked position of the sub-block commits at once, with the argmax."""
    prompt = prompt_of(20, seed=14)
    r = generate(model, prompt, max_tokens=40, eos_ids=set(), temperature=0.7, top_p=1e-6,
                 generator=torch.Generator().manual_seed(0))
    for f in denoising(r.trace):
        block = f.start - f.start % BS
        a = block + (f.committed[0] - block) // SUB * SUB
        masks = sum(t == model.mask_id for t in f.tokens[a - f.start : a - f.start + SUB])
        assert len(f.committed) == masks


def test_invalid_requests_are_rejected(model):
    with pytest.raises(ValueError):
        generate(model, [1, model.mask_id, 2], max_tokens=8)
    with pytest.raises(ValueError):
        generate(model, [], max_tokens=8)
    with pytest.raises(ValueError):
        generate(model, [1, 2], max_tokens=0)
    with pytest.raises(ValueError):
        generate(model, [1, 2], max_tokens=8, sub_block_length=5)
