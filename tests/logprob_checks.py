"""``logprobs`` against the reference loops, for any family.

docs/options.md, "``logprobs`` and ``top_logprobs``": every emitted token
carries the float32 log-softmax of the logits row that committed it (the
mask id excluded), after a grammar's mask on that row and before
``min_tokens``, temperature and filters; vLLM's rank (the count of tokens
whose logprob is ``>=`` the token's) and the top ``k``.  Each reference
loop records that row for every position it commits (``logprobs=True``:
``Result.logprob_rows``, absolute canvas index -> row; the last commit of a
position wins, a LLaDA2.1 edit).  The checks here run requests asking
``logprobs=k`` through the family module's engine (a free request, a
constrained one, one with ``min_tokens`` and a stop token the model
produces early, one asking ``logprobs=0``, one asking none; or requests
preempted mid-block) and compare, for every emitted token, the engine's
``CompletionOutput.logprobs[i]`` with the reference's row of that position:

* the engine's tokens (and forwards) equal the reference's first
  (``engine_utils.assert_reference``, float64-arbitrated: the rows then come
  from the float64 reference, cast to float32);
* the sampled token's logprob within ``ATOL`` of the row's;
* its rank: exactly the reference's count of tokens ``>=`` it, except
  where another token lies within ``ATOL`` of it (a near-tie the two float32
  computations may order either way): then anywhere between the counts of
  tokens above ``logprob + ATOL`` and of tokens above ``logprob - ATOL``;
* the top ``k``: every reported id's logprob within ``ATOL`` of the row's
  value at that id, and the reported values, best first, within ``ATOL`` of
  the row's ``k`` largest (so the ids are a top ``k`` up to near-ties, whose
  order and membership at the ``k``-th place may differ); ranks ``1..k``.

``ATOL = 1e-3``: the engine's logits come from vLLM's kernels (paged K/V,
batched GEMMs), the reference's from plain PyTorch, both in float32, and
the tiny checkpoints' logits span ~40 nats, so float32 rounding alone moves
a logprob by 1e-4: the engine and the reference differed by at most 1.5e-4
on every reported value (all families), and the float32 reference differs
from its own float64 rerun by up to 5e-4 on the same rows.  1e-3 leaves
room for other CPUs' kernels and stays well below what a wrong row changes:
the checks require the end ids' mass in the early rows of the
``min_tokens`` request to move its logprobs by more than ``10 * ATOL``
(several nats here); an unmasked grammar row, a row from before an edit,
a sub-block K/V not rebuilt after preemption moved them by 0.03 to 30.
"""

from __future__ import annotations

import math

import torch

from constrained_checks import grammars
from engine_utils import assert_reference, engine_options, forwards_of, scheduler_of

K = 3
ATOL = 1e-3


def logprob_params(max_tokens: int, k: int | None, structured=None, stop_token_ids=None,
                   min_tokens: int = 0, **options):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=k,
                          structured_outputs=structured, stop_token_ids=stop_token_ids,
                          min_tokens=min_tokens, extra_args=engine_options(options))


def _close(a: float, b: float, atol: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol


def assert_logprobs(got, want, prompt_len: int, k: int, *, what: str, end_ids=(),
                    min_tokens: int = 0, atol: float = ATOL) -> dict:
    """The engine's ``CompletionOutput`` ``got`` carries, for every emitted
    token, the logprobs of the reference row ``want.logprob_rows[prompt_len
    + i]`` (module docstring).  Returns counts: ``tokens`` compared,
    ``near_ties`` (ranks decided up to a near-tie), ``grammar_rows``
    (rows a grammar masked: more than the mask id is ``-inf``),
    ``early_end_entries`` (positions ``i < min_tokens`` whose entry reports
    an end id with a finite logprob: what ``min_tokens`` forbade to commit),
    ``early_end_shift`` (the most the suppression of the end ids would move
    an early row's logprobs: ``-log(1 - p_end)``) and ``max_diff`` (the
    largest engine-reference difference of a finite reported logprob)."""
    tokens, entries = list(got.token_ids), got.logprobs
    assert entries is not None and len(entries) == len(tokens), (
        f"{what}: {0 if entries is None else len(entries)} logprob entries for "
        f"{len(tokens)} tokens")
    stats = dict(tokens=0, near_ties=0, grammar_rows=0, early_end_entries=0, early_end_shift=0.0,
                 max_diff=0.0)
    for i, (token, entry) in enumerate(zip(tokens, entries)):
        where = f"{what}, generated token {i} ({token})"
        row = want.logprob_rows.get(prompt_len + i)
        assert row is not None, f"{where}: the reference recorded no row"
        row = row.to(torch.float32)
        assert token in entry, f"{where}: no entry for the sampled token: {entry}"
        value = float(row[token])
        assert math.isfinite(value), f"{where}: the reference row forbids the token"
        got_value, got_rank = entry[token].logprob, entry[token].rank
        assert _close(got_value, value, atol), f"{where}: logprob {got_value} != {value}"
        exact = int((row >= row[token]).sum())
        above = int((row > value + atol).sum()) + 1
        at_most = int((row >= value - atol).sum())
        if above != at_most:
            stats["near_ties"] += 1
        assert above <= got_rank <= at_most, (
            f"{where}: rank {got_rank}, reference {exact} (near-ties: {above}..{at_most})")

        # The top k: the entry holds them plus the sampled token (once).
        assert len(entry) in (k, k + 1), f"{where}: {len(entry)} entries for k={k}"
        for t, lp in entry.items():
            if math.isfinite(lp.logprob):
                stats["max_diff"] = max(stats["max_diff"], abs(lp.logprob - float(row[t])))
            assert _close(lp.logprob, float(row[t]), atol), (
                f"{where}: top-k id {t} logprob {lp.logprob} != {float(row[t])}")
        best = sorted((lp.logprob for lp in entry.values()), reverse=True)[:k]
        ref_best = row.topk(k).values.tolist() if k else []
        assert all(_close(a, b, atol) for a, b in zip(best, ref_best)), (
            f"{where}: top-{k} values {best} != reference {ref_best}")
        ranks = sorted(lp.rank for lp in entry.values())
        assert ranks[:k] == list(range(1, k + 1)) and all(r > k for r in ranks[k:]), (
            f"{where}: ranks {ranks}")

        stats["tokens"] += 1
        if int(torch.isinf(row).sum()) > 1:
            stats["grammar_rows"] += 1
        if i < min_tokens and end_ids:
            if any(t in end_ids and math.isfinite(lp.logprob) for t, lp in entry.items()):
                stats["early_end_entries"] += 1
            end_mass = float(row[sorted(end_ids)].exp().sum())
            stats["early_end_shift"] = max(stats["early_end_shift"], -math.log1p(-end_mass))
    return stats


def _requests(ref, eos_ids, reference, model_dir, prompts, max_tokens, k, kind, min_tokens,
              options):
    """Per prompt: (label, SamplingParams, reference keywords, k, min_tokens).
    Prompt 0 free, 1 constrained (``kind``), 2 ``min_tokens`` with a stop
    token its free answer produces early, 3 (if any) free asking
    ``logprobs=0`` (the sampled token only, in a batch asking more), 4 (if
    any) free asking none (the others' entries must not shift)."""
    structured, acceptor = grammars(model_dir, eos_ids)[kind]
    out = [("free", logprob_params(max_tokens, k, **options),
            dict(eos_ids=eos_ids), k, 0),
           (kind, logprob_params(max_tokens, k, structured, **options),
            dict(eos_ids=eos_ids, grammar=acceptor), k, 0)]
    if len(prompts) > 2:
        # The token the free answer commits most among its first min_tokens:
        # likely in the early rows, where min_tokens forbids it.
        early = reference(ref, prompts[2], max_tokens=max_tokens, eos_ids=eos_ids,
                          **options).tokens[:min_tokens]
        stop = max(early, key=lambda t: (early.count(t), -early.index(t)))
        out.append(("min_tokens", logprob_params(max_tokens, k, stop_token_ids=[stop],
                                                 min_tokens=min_tokens, **options),
                    dict(eos_ids=set(eos_ids) | {stop}, min_tokens=min_tokens), k,
                    min_tokens))
    if len(prompts) > 3:
        out.append(("free, logprobs=0", logprob_params(max_tokens, 0, **options),
                    dict(eos_ids=eos_ids), 0, 0))
    if len(prompts) > 4:
        out.append(("free, no logprobs", logprob_params(max_tokens, None, **options),
                    dict(eos_ids=eos_ids), None, 0))
    return out[:len(prompts)]


def check_logprobs_batch(llm, ref, eos_ids, reference, model_dir, prompts, max_tokens, *,
                         k: int = K, kind: str = "regex", min_tokens: int = 8,
                         expected_forwards=lambda want: want.forwards, **options) -> list:
    """One batch (up to five prompts, see ``_requests``) through the
    engine: tokens and forwards equal the reference's, and every emitted
    token's logprobs equal the reference's committing row
    (:func:`assert_logprobs`).  The constrained request's rows include
    grammar-masked ones, and the end ids are likely enough in the
    ``min_tokens`` request's early rows that their suppression would move
    its logprobs by more than ``10 * ATOL`` (so the check tells the row
    before ``min_tokens`` from the one after it).  Returns ``(label,
    reference result, stats)`` per request asking logprobs."""
    requests = _requests(ref, eos_ids, reference, model_dir, prompts, max_tokens, k, kind,
                         min_tokens, options)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        [r[1] for r in requests], use_tqdm=False)
    results = []
    for prompt, (label, _, settings, n, early), out in zip(prompts, requests, outs):
        what = f"{label} request, prompt len {len(prompt)}"
        want = assert_reference(out.outputs[0].token_ids, ref, prompt, what=what,
                                got_forwards=forwards_of(llm, out.request_id),
                                reference=reference, expected_forwards=expected_forwards,
                                max_tokens=max_tokens, logprobs=True, **settings, **options)
        if n is None:
            assert out.outputs[0].logprobs is None, f"{what}: logprobs nobody asked for"
            continue
        stats = assert_logprobs(out.outputs[0], want, len(prompt), n, what=what,
                                end_ids=settings["eos_ids"], min_tokens=early)
        results.append((label, want, stats))
        print(f"logprobs: {what}: {stats}")
    stats = {label: s for label, _, s in results}
    assert stats[kind]["grammar_rows"] > 0, f"no grammar-masked row was emitted: {stats}"
    if "min_tokens" in stats:
        assert stats["min_tokens"]["early_end_shift"] > 10 * ATOL, (
            f"the end ids are too unlikely in the early rows: min_tokens untested: {stats}")
    return results


def check_logprobs_free(llm, ref, eos_ids, reference, prompts, max_tokens, *, k: int = K,
                        **options) -> list:
    """Free requests asking ``logprobs=k``, one batch: tokens and forwards
    equal the reference's, every emitted token's logprobs its committing
    row.  Returns the reference results."""
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        logprob_params(max_tokens, k, **options), use_tqdm=False)
    results = []
    for prompt, out in zip(prompts, outs):
        what = f"prompt len {len(prompt)}"
        want = assert_reference(out.outputs[0].token_ids, ref, prompt, what=what,
                                got_forwards=forwards_of(llm, out.request_id),
                                reference=reference, max_tokens=max_tokens, eos_ids=eos_ids,
                                logprobs=True, **options)
        stats = assert_logprobs(out.outputs[0], want, len(prompt), k, what=what)
        print(f"logprobs: {what}: {stats}")
        results.append(want)
    return results


def check_logprobs_preemption(llm, ref, eos_ids, reference, model_dir, prompts, max_tokens,
                              evict_after, tag, *, k: int = K,
                              kinds=("regex", "free", "json", "free"), **options) -> list:
    """Every running request's K/V evicted mid-block (a constrained request
    resumes inside its block, its K/V rebuilt; a free one decodes its block
    again): every emitted token's logprobs still equal the reference's
    committing row, which a wrongly rebuilt K/V would change even where the
    tokens do not.  Returns the stats per request."""
    from test_reliability import run_with_evictions

    engine, sched = llm.llm_engine, scheduler_of(llm)
    cases = grammars(model_dir, eos_ids)
    kinds = [kinds[i % len(kinds)] for i in range(len(prompts))]
    for i, p in enumerate(prompts):
        engine.add_request(f"{tag}-{i}", {"prompt_token_ids": p},
                           logprob_params(max_tokens, k, cases[kinds[i]][0], **options))
    outputs = run_with_evictions(engine, evict_after=evict_after, steps=60)
    stats = []
    for i, p in enumerate(prompts):
        what = f"{kinds[i]} request {i} (preempted)"
        got = outputs[f"{tag}-{i}"].outputs[0]
        want = assert_reference(got.token_ids, ref, p, what=what, reference=reference,
                                max_tokens=max_tokens, eos_ids=eos_ids,
                                grammar=cases[kinds[i]][1], logprobs=True, **options)
        stats.append(assert_logprobs(got, want, len(p), k, what=what))
        print(f"logprobs: {what}: {stats[-1]}")
    assert sched.get_kv_cache_usage() == 0.0
    return stats
