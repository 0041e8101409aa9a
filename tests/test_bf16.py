"""bfloat16, the dtype GPU deployments serve in, against the float32 reference.

The engine serves the trained embedded checkpoint in bfloat16; the reference
(``vllm_dllm_plugin.testing.reference``, plain PyTorch) decodes the same held-out problems in
float32.  Token-exact equality cannot be promised across dtypes in general: a
decision whose float32 margin is smaller than the bf16 rounding of the logits
may go either way.  So parity here means two things:

* **exact where the margins say so.**  While the float32 reference decodes,
  every decision it takes is measured in logit units: the gap between the two
  best logits of each committed position (the token), the distance of each
  candidate's confidence from the threshold in log-odds (``log c/(1-c)``; the
  threshold rule), and the log-odds gap between the last committed and the
  first passed-over candidate where the ranking decides (the best candidate
  under threshold, the fixed schedule).  If every logit moves by at most
  ``d``, a token gap moves by at most ``2d``, a log-odds by at most ``2d`` and
  a gap of two log-odds by at most ``4d``; a request whose every decision has
  ``gap/2``, ``distance/2`` and ``rank gap/4`` above ``LOGIT_ERROR`` therefore
  takes the same decisions, canvas for canvas, in bf16, and its tokens must be
  identical.  ``LOGIT_ERROR`` is checked against the engine's actual bf16
  logits on the first forward of each request
  (``test_bf16_logits_are_within_the_assumed_error``).
* **an agreement rate** (token-identical outputs) over all problems, with a
  floor per mode, and the held-out accuracy of the bf16 engine close to the
  float32 reference's.

With one token per step nearly every request has a decision inside the bf16
error (the end-of-text padding is committed one position at a time, in an
order set by confidence differences of 0.1 or less in log-odds), so there the
criterion selects (almost) nothing and only the agreement rate applies.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from engine_utils import engine_eos_ids, make_llm, reference_run, sampling
from vllm_dllm_plugin import EMBEDDED_MODEL

GEN = 64      # two blocks: the second sees prefix/dual caches with a suffix
BLOCK = 32
# Bound on |bf16 logit - float32 logit| the margin criterion assumes.  The
# engine's first-forward bf16 logits differ from the float32 reference's by at
# most 0.53 over all 400 held-out problems (median 0.17; logits span about
# -12..20, where bf16's 8 significant bits are steps of 0.0625-0.125, and the
# weights and activations are rounded too); twice that leaves room for cached
# steps.
LOGIT_ERROR = 1.0

THRESHOLD = dict(threshold=0.9)
ONE_PER_STEP = dict(steps_per_block=BLOCK)
# mode -> (rule, problems, agreement floor, least number of wide-margin problems)
MODES = {
    "none, threshold 0.9": (dict(cache="none", **THRESHOLD), 200, 0.97, 100),
    "prefix, threshold 0.9": (dict(cache="prefix", **THRESHOLD), 200, 0.97, 100),
    "dual, threshold 0.9": (dict(cache="dual", **THRESHOLD), 200, 0.97, 100),
    "none, 1 token/step": (dict(cache="none", **ONE_PER_STEP), 40, 0.9, 0),
    "prefix, 1 token/step": (dict(cache="prefix", **ONE_PER_STEP), 40, 0.9, 0),
    "dual, 1 token/step": (dict(cache="dual", **ONE_PER_STEP), 40, 0.9, 0),
}
# bf16 held-out accuracy may trail the float32 reference's by at most this
ACCURACY_POINTS = 5.0


@pytest.fixture(scope="module")
def problems():
    """``(problem, chat prompt ids)`` of the first held-out problems."""
    from transformers import AutoTokenizer

    import vllm_dllm_plugin

    vllm_dllm_plugin.register()  # the checkpoint's config class, as engine_eos_ids does
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_MODEL)
    lines = (EMBEDDED_MODEL / "heldout.jsonl").read_text().splitlines()
    out = []
    for line in lines[:max(n for _, n, _, _ in MODES.values())]:
        p = json.loads(line)
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": p["question"]}],
                                               add_generation_prompt=True, tokenize=True)
        out.append((p, list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)))
    return out


@pytest.fixture(scope="module")
def ref():
    from vllm_dllm_plugin.testing.reference.llada import LLaDA

    return LLaDA.from_pretrained(EMBEDDED_MODEL)  # float32, as stored


@pytest.fixture(scope="module")
def references(ref, problems):
    """mode -> ``[(tokens, tolerance)]`` of the float32 reference, computed
    before the engine exists: one torch thread (the reference's ops are tiny;
    two threads only spin against each other on a loaded 2-core machine), and
    vLLM's CPU worker no-ops ``torch.set_num_threads`` once it has started."""
    eos = engine_eos_ids(EMBEDDED_MODEL)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: [reference_with_margin(ref, prompt, eos, mode)
                       for _, prompt in problems[:count]]
                for name, (mode, count, _, _) in MODES.items()}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llm(references):
    return make_llm(EMBEDDED_MODEL, dtype="bfloat16", max_model_len=1024)


# --- the float32 reference's decision margins -------------------------------------------


def log_odds(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(top-1 minus top-2 logit, log(c / (1 - c)))`` per row, ``c`` the
    softmax probability of the argmax (LLaDA's confidence), in float64."""
    logits = logits.double()
    top = logits.topk(2, dim=-1)
    others = logits.scatter(1, top.indices[:, :1], float("-inf"))
    return top.values[:, 0] - top.values[:, 1], top.values[:, 0] - torch.logsumexp(others, -1)


class MarginRecorder:
    """Wraps the reference's commit step: before each commit, the largest
    uniform logit perturbation its decisions tolerate (see the module doc);
    ``tolerance`` is the minimum over the request's steps."""

    def __init__(self):
        self.tolerance = math.inf

    def wrap(self, commit_step):
        def recorded(req, s, e, step, masks_at_start, logits):
            assert req.rule.factor is None and not req.family.refresh_commits_first
            before = req.canvas[s:e].clone()
            rows = logits.double().clone()
            if req.suppress_mask_logit:
                rows[:, req.mask_id] = float("-inf")
            gap, z = log_odds(rows)
            commit_step(req, s, e, step, masks_at_start, logits)
            candidates = before == req.mask_id
            committed = candidates & (req.canvas[s:e] != before)
            margins = [float(gap[committed].min()) / 2]
            ranked = z[candidates].sort(descending=True).values
            n = int(committed.sum())
            if req.rule.threshold is not None:
                bar = math.log(req.rule.threshold / (1 - req.rule.threshold))
                margins.append(float((z[candidates] - bar).abs().min()) / 2)
                rank_decides = float(ranked[0]) < bar
            else:
                rank_decides = True
            if rank_decides and len(ranked) > n:
                margins.append(float(ranked[n - 1] - ranked[n]) / 4)
            self.tolerance = min(self.tolerance, *margins)

        return recorded


def reference_with_margin(ref, prompt, eos, mode) -> tuple[list[int], float]:
    """The float32 reference's tokens and the tolerance of its decisions."""
    from vllm_dllm_plugin.testing.reference import fast_dllm

    recorder = MarginRecorder()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fast_dllm, "_commit_step", recorder.wrap(fast_dllm._commit_step))
        result = reference_run(ref, prompt, max_tokens=GEN, eos_ids=eos, block_length=BLOCK,
                               **mode)
    return result.tokens, recorder.tolerance


def test_margin_recorder_measures_the_decisions(ref, problems):
    """The recorder is not vacuous: a normal request gets a finite positive
    tolerance, and a threshold equal to a confidence the model produces (a
    decision that could go either way) gives zero."""
    eos = engine_eos_ids(EMBEDDED_MODEL)
    _, prompt = problems[0]
    tokens, tolerance = reference_with_margin(ref, prompt, eos, dict(cache="none", threshold=0.9))
    assert tokens and 0 < tolerance < math.inf
    # a threshold equal to a confidence the model produces: zero distance
    from vllm_dllm_plugin.testing.reference import fast_dllm

    logits = ref.full(torch.tensor(prompt + [ref.mask_id] * GEN)).logits[len(prompt):]
    logits[:, ref.mask_id] = float("-inf")
    _, conf = fast_dllm.llada_choose(logits[:BLOCK], 0.0, None)
    _, tolerance = reference_with_margin(ref, prompt, eos,
                                         dict(cache="none", threshold=float(conf.min())))
    assert tolerance < 1e-6


# --- the engine in bf16 -----------------------------------------------------------------


def test_bf16_logits_are_within_the_assumed_error(llm, ref, problems):
    """The engine really computes in bf16 (its logits are bf16 and differ from
    float32 by more than float32 noise), and by less than ``LOGIT_ERROR``:
    first forward (the whole canvas, every block position masked) of 16
    problems, each position's logits against the float32 reference's."""
    runner = llm.llm_engine.model_executor.driver_worker.worker.model_runner
    family = runner.family
    captured = []

    def recording(logits, *args, **kwargs):
        captured.append(logits.detach().clone())
        return family.predict(logits, *args, **kwargs)

    runner.family = dataclasses.replace(family, predict=recording)
    errors = []
    try:
        for _, prompt in problems[:16]:
            captured.clear()
            llm.generate([{"prompt_token_ids": prompt}],
                         sampling(GEN, block_length=BLOCK, cache="none", threshold=0.9),
                         use_tqdm=False)
            got = captured[0]
            assert got.dtype == torch.bfloat16 and got.shape[0] == BLOCK
            canvas = torch.tensor(prompt + [ref.mask_id] * GEN)
            want = ref.full(canvas).logits[len(prompt):len(prompt) + BLOCK]
            diff = (got.double() - want.double()).abs()
            diff[:, ref.mask_id] = 0
            errors.append(float(diff.max()))
    finally:
        runner.family = family
    print(f"bf16 engine vs float32 reference, first-forward logits: max |diff| "
          f"{max(errors):.3f}, median over problems {sorted(errors)[len(errors) // 2]:.3f}")
    assert 1e-2 < max(errors) < LOGIT_ERROR, errors


@pytest.mark.parametrize("name", MODES)
def test_bf16_engine_against_float32_reference(llm, references, problems, name):
    mode, count, floor, least_wide = MODES[name]
    subset = problems[:count]
    outputs = llm.generate([{"prompt_token_ids": prompt} for _, prompt in subset],
                           sampling(GEN, block_length=BLOCK, **mode), use_tqdm=False)
    tokenizer = llm.get_tokenizer()
    wide = ref_correct = bf16_correct = 0
    differ = []  # (problem index, tolerance of its float32 decisions)
    for i, (out, (problem, _), (want, tolerance)) in enumerate(zip(outputs, subset,
                                                                  references[name])):
        if list(out.outputs[0].token_ids) != want:
            differ.append((i, round(tolerance, 4)))
        wide += tolerance > LOGIT_ERROR
        answer = problem["answer"]
        ref_correct += tokenizer.decode(want, skip_special_tokens=True).strip() == answer
        bf16_correct += out.outputs[0].text.strip() == answer
    same = count - len(differ)
    wide_differs = [(i, t) for i, t in differ if t > LOGIT_ERROR]
    summary = (f"{name}: {same}/{count} token-identical, {wide} with margins above "
               f"{LOGIT_ERROR}; accuracy bf16 {bf16_correct}/{count}, "
               f"float32 reference {ref_correct}/{count}; differ (problem, tolerance): {differ}")
    print(summary)
    assert not wide_differs, f"{summary}; differ despite wide margins: {wide_differs}"
    assert wide >= least_wide, summary
    assert same >= floor * count, summary
    assert 100 * (ref_correct - bf16_correct) / count <= ACCURACY_POINTS, summary
