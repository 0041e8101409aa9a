"""Checks shared by tests/test_reference.py (LLaDA) and tests/test_reference_dream.py.

Both reference models share the cache-shaped forwards (``ReferenceModel``) and
``fast_dllm.generate``, so the properties those tests pin down are the same for
either family; only the checkpoint, the mask id and the decoding family
differ.  Each check is written once here, and each test file keeps its own
named, parametrized tests that call it with the family's model and constants.
"""

from __future__ import annotations

import pytest
import torch

from .fast_dllm import generate


def check_prefix_step(model, x: torch.Tensor, start: int, vocab: int, tol: float, kv_heads: int | None = None):
    """With the cache taken from the same canvas, the prefix-cache forward of
    x[s:] must reproduce the full forward's rows [s:] (logits and fresh K/V);
    ``kv_heads``, when given, is the expected number of cached kv heads."""
    full = model.full(x)
    prefix = [(k[:, :start], v[:, :start]) for k, v in full.kv]
    step = model.with_prefix(x, start, prefix)
    assert step.logits.shape == (x.shape[0] - start, vocab)
    torch.testing.assert_close(step.logits, full.logits[start:], rtol=0, atol=tol)
    for (k, v), (fk, fv) in zip(step.kv, full.kv):
        if kv_heads is not None:
            assert k.shape[0] == kv_heads
        torch.testing.assert_close(k, fk[:, start:], rtol=0, atol=tol)
        torch.testing.assert_close(v, fv[:, start:], rtol=0, atol=tol)


def check_dual_step(model, x: torch.Tensor, start: int, end: int, tol: float):
    """The dual-cache forward of x[s:e] over the same canvas's full cache
    reproduces the full forward's rows [s:e]."""
    full = model.full(x)
    cache = [(k.clone(), v.clone()) for k, v in full.kv]
    step = model.with_dual(x, start, end, cache)
    torch.testing.assert_close(step.logits, full.logits[start:end], rtol=0, atol=tol)


def check_cached_steps_use_the_cache(model, a: torch.Tensor, b: torch.Tensor):
    """A cache from canvas ``a`` must change the cached forwards of canvas
    ``b`` (which differs inside the prefix); otherwise the slicing would
    silently be a full forward."""
    full_a, full_b = model.full(a), model.full(b)
    s, e = 17, 25
    stale_prefix = [(k[:, :s], v[:, :s]) for k, v in full_a.kv]
    assert not torch.allclose(model.with_prefix(b, s, stale_prefix).logits, full_b.logits[s:])
    stale = [(k.clone(), v.clone()) for k, v in full_a.kv]
    assert not torch.allclose(model.with_dual(b, s, e, stale).logits, full_b.logits[s:e])


def check_dual_step_writes_fresh_rows_into_cache(model, a: torch.Tensor):
    """A dual step overwrites rows [s, e) of the cache, in place, with its fresh K/V."""
    cache = [(k.clone(), v.clone()) for k, v in model.full(a).kv]
    b = a.clone()
    b[17:20] = torch.tensor([1, 2, 3])
    out = model.with_dual(b, 17, 25, cache)
    for (k, v), (fk, fv) in zip(cache, out.kv):
        assert torch.equal(k[:, 17:25], fk) and torch.equal(v[:, 17:25], fv)


def check_attention_is_bidirectional(model, x: torch.Tensor):
    """Changing the last token changes row 0's logits (no causal mask)."""
    y = x.clone()
    y[-1] = 7
    assert not torch.allclose(model.full(x).logits[0], model.full(y).logits[0])


def check_every_forward_commits(model, prompt: list[int], mask: int, cache: str, rule: dict):
    """Every forward commits at least one token and all 24 positions fill."""
    r = generate(model, prompt, gen_length=24, block_length=8, cache=cache, eos_ids=set(), **rule)
    assert r.forwards == len(r.commits) and all(n >= 1 for n in r.commits)
    assert sum(r.commits) == 24 and r.canvas[: len(prompt)] == prompt
    assert len(r.tokens) == 24 and mask not in r.tokens


def check_threshold_decodes_several_tokens(model, prompt: list[int]):
    """The 0.9 threshold must sometimes commit several tokens at once (else
    the rules are untested)."""
    r = generate(model, prompt, gen_length=32, block_length=8, cache="prefix", eos_ids=set())
    assert max(r.commits) > 1 and r.forwards < 32


def check_stop_early_equals_full_decode_then_cut(model, cache: str, rule: dict, token_limit: int):
    """For three random prompts (ids below ``token_limit``), stopping at an end
    token gives the tokens of a full decode cut there, in no more forwards."""
    saved = 0
    for seed in range(3):
        prompt = torch.randint(0, token_limit, (9,), generator=torch.Generator().manual_seed(seed)).tolist()
        kw = dict(gen_length=24, block_length=8, cache=cache, **rule)
        plain = generate(model, prompt, eos_ids=set(), **kw).tokens
        assert len(plain) == 24
        eos = {plain[seed + 2]}  # a token that does occur, early
        cut = plain[: plain.index(next(iter(eos))) + 1]
        early = generate(model, prompt, eos_ids=eos, stop_early=True, **kw)
        full = generate(model, prompt, eos_ids=eos, stop_early=False, **kw)
        assert early.tokens == full.tokens == cut
        assert early.canvas[: len(prompt) + len(cut)] == full.canvas[: len(prompt) + len(cut)]
        assert early.forwards <= full.forwards
        saved += full.forwards - early.forwards
    assert saved > 0  # the early stop did skip work somewhere


def check_prompt_with_mask_is_rejected(model, mask: int):
    with pytest.raises(ValueError):
        generate(model, [1, mask, 2], gen_length=8)


def check_sampling_is_reproducible_and_tiny_temperature_is_greedy(model, prompt: list[int]):
    """Same seed, same tokens; other seeds differ somewhere; temperature 1e-9
    decodes like greedy."""
    kw = dict(gen_length=16, block_length=8, cache="prefix", eos_ids=set())
    a = generate(model, prompt, temperature=1.0, generator=torch.Generator().manual_seed(0), **kw)
    b = generate(model, prompt, temperature=1.0, generator=torch.Generator().manual_seed(0), **kw)
    assert a.tokens == b.tokens
    others = [
        generate(model, prompt, temperature=1.0, generator=torch.Generator().manual_seed(s), **kw).tokens
        for s in range(1, 4)
    ]
    assert any(t != a.tokens for t in others)
    greedy = generate(model, prompt, **kw)
    cold = generate(model, prompt, temperature=1e-9, generator=torch.Generator().manual_seed(0), **kw)
    assert cold.tokens == greedy.tokens
