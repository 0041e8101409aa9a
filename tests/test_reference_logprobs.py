"""``logprobs=True`` of each family's reference loop, without the engine.

The loops record, for every position they commit, the float32 log-softmax
row of the logits that committed it (``Result.logprob_rows``, absolute
canvas index -> row; docs/options.md, "``logprobs`` and ``top_logprobs``").
Checked for every family, free, constrained and with ``min_tokens``:
recording changes nothing (tokens, forwards, canvas, commits); exactly the
committed generated positions have a row; each row is a float32
distribution with the mask id at ``-inf``; and each committed token is the
argmax of its row (greedy decoding: the row is the one it was decided
from; a constrained row is the grammar-masked one), except that rows of
positions under ``min_tokens`` still hold the end ids (taken before the
suppression): there the token is the argmax once they are removed.
"""

from __future__ import annotations

import pytest
import torch

from vllm_dllm_plugin.testing.reference import fast_dllm, fast_dllm_v2, llada2_loop, sdar_loop
from vllm_dllm_plugin.testing.reference.grammar import Acceptor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_TOKENS = 24
PROMPT = [5, 6, 7, 8, 9, 10, 11]
REGEX = "[0-9]{1,3}(, [0-9]{1,3})*"

# family -> (model fixture, eos fixture, directory fixture, generate)
FAMILIES = {
    "llada": ("llada_ref", "llada_eos", "llada_dir",
              lambda m, p, **o: fast_dllm.generate(m, p, gen_length=MAX_TOKENS, block_length=8,
                                                   cache="dual", threshold=0.7, **o)),
    "dream": ("dream_ref", "dream_eos", "dream_dir",
              lambda m, p, **o: fast_dllm.generate(m, p, gen_length=MAX_TOKENS, block_length=8,
                                                   cache="prefix", threshold=0.7, **o)),
    "v2": ("v2_ref", "v2_eos", "v2_dir",
           lambda m, p, **o: fast_dllm_v2.generate(m, p, max_tokens=MAX_TOKENS + 16,
                                                   threshold=0.7, block_cache=True,
                                                   sub_block_length=4, **o)),
    "sdar": ("sdar_ref", "sdar_eos", "sdar_dir",
             lambda m, p, **o: sdar_loop.generate(m, p, max_tokens=MAX_TOKENS, threshold=0.5, **o)),
    "llada2": ("llada2_ref", "llada2_eos", "llada2_dir",
               lambda m, p, **o: llada2_loop.generate(m, p, max_tokens=MAX_TOKENS, block_length=16,
                                                      steps=16, threshold=0.5, **o)),
    "llada2.1": ("llada2_ref", "llada2_eos", "llada2_dir",
                 lambda m, p, **o: llada2_loop.generate(m, p, max_tokens=MAX_TOKENS,
                                                        block_length=16, steps=16, threshold=0.5,
                                                        editing_threshold=0.0,
                                                        max_post_steps=2, **o)),
}



def check_rows(want, prompt_len: int, mask_id: int, min_tokens: int, end_ids) -> int:
    """The invariants of the module docstring; returns how many rows a
    grammar masked (more than the mask id at ``-inf``)."""
    committed = {p for p in range(prompt_len, len(want.canvas)) if want.canvas[p] != mask_id}
    assert set(want.logprob_rows) == committed
    ends = sorted(end_ids)
    masked = 0
    for p, row in want.logprob_rows.items():
        token = want.canvas[p]
        assert row.dtype == torch.float32 and row.dim() == 1
        assert row[mask_id] == float("-inf")
        assert abs(float(torch.logsumexp(row, 0))) < 1e-5
        masked += int(torch.isinf(row).sum()) > 1
        if p - prompt_len < min_tokens:
            assert token not in end_ids
            row = row.clone()
            row[ends] = float("-inf")
        assert torch.isfinite(row[token]) and row[token] == row.max(), (p, token)
    return masked


@pytest.mark.parametrize("family", FAMILIES)
def test_logprob_rows(request, family):
    model_fx, eos_fx, dir_fx, generate = FAMILIES[family]
    model, eos = request.getfixturevalue(model_fx), request.getfixturevalue(eos_fx)
    model_dir = request.getfixturevalue(dir_fx)
    vocab = model.config.vocab_size
    grammar = Acceptor.regex(REGEX, model_dir, sorted(eos), vocab)
    cases = [("free", dict(eos_ids=eos)), ("min_tokens", dict(eos_ids=eos, min_tokens=10))]
    if family != "llada2.1":   # editing is refused with a grammar
        cases.append(("regex", dict(eos_ids=eos, grammar=grammar)))
    for label, options in cases:
        plain = generate(model, PROMPT, **options)
        want = generate(model, PROMPT, logprobs=True, **options)
        assert plain.logprob_rows == {}
        for name in ("tokens", "forwards", "canvas", "commits"):
            assert getattr(want, name) == getattr(plain, name), (label, name)
        masked = check_rows(want, len(PROMPT), model.mask_id, options.get("min_tokens", 0), eos)
        if label == "regex":
            assert masked > 0, "no grammar-masked row"
