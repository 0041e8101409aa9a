"""Fast-dLLM v2 in bfloat16: the engine against the reference run in bfloat16.

The published loop decides in the model dtype: the confidence is the bf16
softmax maximum, the threshold is compared strictly with its bf16 rounding
(0.8 -> 0.80078125, 0.9 -> 0.8984375), the most confident candidate always
commits (ties: the leftmost).  Three kinds of check:

* **The rule, pure** (``rules.threshold_count``, the reference's
  ``commit_positions``) on constructed confidences at and around the rounded
  bar.
* **Replay: exact, on the engine's own logits.**  Every decision the bf16
  engine takes (every denoising step and commit forward; prefix and dual
  cache, thresholds 0.9 and 0.8, one request at a time and a mixed batch) is
  recomputed with the reference's decision functions (``choose``,
  ``commit_positions``, ``greedy_token``) from the very logits rows the
  engine computed and the canvas it held: candidates (the current
  sub-block's masks), committed positions and tokens must be identical.  And
  an engine run whose threshold rounds in bf16 to a confidence the engine
  produces: that candidate must not commit (a float comparison would).
* **End to end** (the engine's forwards vs the reference's, both bf16).  They
  run different bf16 arithmetic (vLLM's kernels and fused norms vs plain
  PyTorch): on first forwards the bf16 reference is as far from the float32
  reference as the engine is.  Measured max |logit difference| engine vs
  bf16 reference with the writer's checkpoint: 0.6-1.4 at ``logit_scale`` 8
  (logits' std 8), 2-11 at 32, 12-28 at 128.  The error grows with the
  logits, so no ``logit_scale`` widens the margins; the writer's sharp
  attention (q/k 3x the usual scale) amplifies rounding, so the test
  checkpoint scales q/k back (``QK_SCALE``): max error 0.34-0.45, bound
  ``LOGIT_ERROR`` 0.75.  Even so a random model is not confident: nearly
  every request has, early on, a candidate whose confidence lies within the
  error of the bar (in log-odds) or two candidates that close, so no request
  is decided with wide margins throughout, and token equality of whole
  outputs is a rate (measured 9-13 of 24 at 24 tokens; floors in ``MODES``).
  Exactness is asserted where the margins allow it (``tests/test_bf16.py``'s
  criterion, per position): every token the reference commits for sure
  (token gap, threshold distance and ranking beyond the error) in its steps
  up to and including the first one with a narrow decision (until then both
  canvases are provably the same) must be the engine's token there (36-61
  tokens per mode); and the bound itself is checked on every step both runs
  share.
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
import torch

from engine_utils import engine_eos_ids, make_llm, sampling

# Head scale of the test checkpoint: the writer's default.  Confidences spread
# over (0, 1], so multi-token commits, the top-one rule and candidates within
# a bf16 step of the bar all occur (test_replay_covers_every_kind_of_decision);
# a larger scale only scales the bf16 error with the logits (module doc).
LOGIT_SCALE = 8.0
# The writer's q/k projections are 3x the usual 1/sqrt(fan_in) (sharp,
# position-sensitive attention for the float32 tests); in bf16 that amplifies
# rounding: max first-forward error engine vs bf16 reference 1.43, bf16 vs
# float32 reference 3.0.  Scaled by 1/3 (the usual init): 0.375 and 0.41.
QK_SCALE = 1 / 3
# Bound on |engine bf16 logit - reference bf16 logit| assumed by the margin
# criterion: twice the measured maximum (0.375 on first forwards, logits of
# std ~8, where bf16 steps are 0.03-0.125); checked on first forwards and on
# every step both runs share (test_bf16_logits_are_within_the_assumed_error,
# check_end_to_end).
LOGIT_ERROR = 0.75
GEN = 24
VOCAB = 470            # prompt ids below the tokenizer's special tokens
NUM_PROMPTS = 24

MODES = {
    # mode -> (options, least token-identical outputs of NUM_PROMPTS; measured
    # 12, 10, 13, 9 with vLLM 0.32 / torch 2.13 on CPU)
    "prefix-0.9": (dict(cache="prefix", threshold=0.9), 8),
    "dual-0.9": (dict(cache="dual", threshold=0.9), 7),
    "prefix-0.8": (dict(cache="prefix", threshold=0.8), 9),
    "dual-0.8": (dict(cache="dual", threshold=0.8), 6),
}
MIXED = 16             # prompts of the mixed batch (modes cycled)
MIXED_FLOOR = 7        # measured 10 of 16
# least tokens per check that the margin criterion covers (measured 36-61)
SURE_TOKENS = 24


def bf16(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.bfloat16))


def ulp(p: float) -> float:
    """bf16 spacing just above ``p`` (``p`` in (0, 1))."""
    return 2.0 ** (math.floor(math.log2(p)) - 7)


def log_odds(p: float) -> float:
    return math.inf if p >= 1 else -math.inf if p <= 0 else math.log(p) - math.log1p(-p)


# --- checkpoint, prompts, references -----------------------------------------------------


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    """The writer's bf16 v2 checkpoint with its q/k projections (weights and
    biases) scaled by ``QK_SCALE``: attention logits 9x smaller."""
    from vllm_dllm_plugin.testing.checkpoints import write_fast_dllm_v2_checkpoint
    from safetensors.torch import load_file, save_file

    path = write_fast_dllm_v2_checkpoint(tmp_path_factory.mktemp("v2-bf16"), seed=0,
                                         dtype="bfloat16", logit_scale=LOGIT_SCALE)
    shards = list(path.glob("*.safetensors"))
    assert len(shards) == 1
    weights = load_file(shards[0])
    scaled = [name for name in weights if ".q_proj." in name or ".k_proj." in name]
    assert len(scaled) == 4 * 2   # weight and bias of q and k, two layers
    for name in scaled:
        weights[name] = (weights[name].float() * QK_SCALE).to(weights[name].dtype)
    save_file(weights, shards[0], metadata={"format": "pt"})
    return path


@pytest.fixture(scope="module")
def ref16(bf16_dir):
    from vllm_dllm_plugin.testing.reference.fast_dllm_v2 import FastDLLMv2

    return FastDLLMv2.from_pretrained(bf16_dir, dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def eos(bf16_dir):
    return engine_eos_ids(bf16_dir)


@pytest.fixture(scope="module")
def prompts():
    """Random lengths, and the block boundaries (31, 32, 33, 64)."""
    rng = random.Random(5)
    lengths = [rng.randrange(3, 80) for _ in range(NUM_PROMPTS - 4)] + [31, 32, 33, 64]
    return [[rng.randrange(VOCAB) for _ in range(n)] for n in lengths]


@dataclasses.dataclass
class Decided:
    """One bf16 reference run: its output, the tokens it decides for sure
    (output index -> token; see :func:`reference_with_margins`), and per
    deciding forward the candidates' logits rows and its commits (canvas
    index, token)."""

    tokens: list[int]
    sure: dict[int, int]
    forwards: list[tuple[torch.Tensor, list[tuple[int, int]]]]


def reference_with_margins(ref, prompt, eos_ids, *, cache, threshold,
                           error=LOGIT_ERROR) -> Decided:
    """The bf16 reference's output, and the positions it decides for sure:
    walking its forwards in order, the commits that hold under any logit
    perturbation of at most ``error``, up to and including the first forward
    with a decision that might not (until then the canvas is the same under
    any such perturbation).

    A perturbation ``d`` moves a top-1/top-2 logit gap and the log-odds
    ``log c/(1-c)`` of a softmax maximum by at most ``2d`` each.  bf16 rounds
    the confidence before the comparison, so the bar in probability is the
    midpoint above the rounded threshold, and two confidences within a bf16
    step of each other may tie.  Sure in a step: a candidate whose log-odds
    is more than ``2d`` above the bar; if none is, the top candidate when it
    leads the next by more than ``4d`` plus the bf16 steps; its token if its
    logit gap exceeds ``2d``.  The step is narrow if any candidate is within
    ``2d`` of the bar, the ranking decides within ``4d``, or a committed
    token's gap is within ``2d``."""
    from vllm_dllm_plugin.testing.reference import fast_dllm_v2 as R

    records = []   # per deciding forward, in call order: (rows, chosen, sure, narrow)
    logits_of = {}
    choose, commit_positions, greedy_token = R.choose, R.commit_positions, R.greedy_token

    def rec_choose(logits, *args, **kwargs):
        logits_of["rows"] = logits
        return choose(logits, *args, **kwargs)

    def rec_commit(conf, candidates, tau):
        chosen = commit_positions(conf, candidates, tau)
        cand = candidates.nonzero().flatten().tolist()
        rows = logits_of["rows"].double()
        top = rows.topk(2, dim=-1)
        gap = (top.values[:, 0] - top.values[:, 1]).tolist()
        others = rows.scatter(1, top.indices[:, :1], float("-inf"))
        z = (top.values[:, 0] - torch.logsumexp(others, -1)).tolist()
        bar = bf16(tau)
        z_bar = log_odds(bar + ulp(bar) / 2)
        sure = {i for i in cand if z[i] - z_bar > 2 * error}
        narrow = any(abs(z[i] - z_bar) <= 2 * error for i in cand)
        if len(cand) == 1:   # committed whatever its confidence
            sure, narrow = set(cand), False
        elif not sure:       # the top-one rule decides
            first, second = sorted(cand, key=lambda i: -z[i])[:2]
            probs = [1 / (1 + math.exp(-z[i])) for i in (first, second)]
            steps = sum(ulp(p) / (p * (1 - p)) for p in probs if 0 < p < 1)
            if z[first] - z[second] - steps > 4 * error:
                sure = {first}
            else:
                narrow = True
        assert sure <= set(chosen)
        narrow |= any(gap[i] <= 2 * error for i in chosen)
        records.append((logits_of["rows"][cand].clone(), chosen,
                        {i for i in sure if gap[i] > 2 * error}, narrow))
        return chosen

    def rec_greedy(row, mask_id, suppress):
        r = row.double().clone()
        r[mask_id] = float("-inf")
        top = r.topk(2).values
        records.append((row[None].clone(), None, None, float(top[0] - top[1]) <= 2 * error))
        return greedy_token(row, mask_id, suppress)

    R.choose, R.commit_positions, R.greedy_token = rec_choose, rec_commit, rec_greedy
    try:
        out = R.generate(ref, prompt, max_tokens=GEN, threshold=threshold,
                         block_cache=cache == "dual", eos_ids=eos_ids)
    finally:
        R.choose, R.commit_positions, R.greedy_token = choose, commit_positions, greedy_token

    deciding = [f for f in out.trace if f.kind != "prefill" or f.committed]
    assert len(deciding) == len(records)
    P, sure, forwards, walking = len(prompt), {}, [], True
    for forward, (rows, chosen, wide, narrow) in zip(deciding, records):
        commits = [(k, out.canvas[k]) for k in forward.committed]
        forwards.append((rows, commits))
        if not walking:
            continue
        if chosen is None:   # the prefill's or a commit forward's token
            if not narrow:
                sure.update(commits)
        else:
            start = forward.committed[0] - chosen[0]   # canvas index of row 0
            sure.update((start + i, out.canvas[start + i]) for i in wide)
        walking = not narrow
    return Decided(out.tokens, {k - P: t for k, t in sure.items() if k - P < len(out.tokens)},
                   forwards)


@pytest.fixture(scope="module")
def references(ref16, eos, prompts):
    """mode -> [Decided] per prompt, and the mixed batch's; computed before the
    engine starts, on one torch thread (the reference's ops are tiny)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {name: [reference_with_margins(ref16, p, eos, **options) for p in prompts]
               for name, (options, _) in MODES.items()}
        out["mixed"] = [reference_with_margins(ref16, p, eos, **mixed_options(i))
                        for i, p in enumerate(prompts[:MIXED])]
        return out
    finally:
        torch.set_num_threads(threads)


def mixed_options(i: int) -> dict:
    return list(MODES.values())[i % len(MODES)][0]


@pytest.fixture(scope="module")
def llm(bf16_dir, references):
    return make_llm(bf16_dir, dtype="bfloat16")


# --- recording the engine's decisions ----------------------------------------------------


@dataclasses.dataclass
class Step:
    """One canvas's decision in one engine step."""

    canvas: object
    call: int                  # which engine step (batch) it belongs to
    block_start: int
    window: tuple[int, int]
    block: np.ndarray          # the block's tokens before the step
    writing: bool
    candidates: list[int]      # block offsets whose logits rows decide
    rows: torch.Tensor         # those rows, as the engine computed them
    offsets: list[int]         # what the engine committed
    tokens: list[int]


def run_recorded(llm, prompts, params):
    """One ``generate`` call; returns its outputs and, per prompt, the steps
    of its canvas: the logits rows the engine's decision read
    (``family.predict``'s input, split per request in batch order) and what
    it committed (``BlockCanvas.commit``)."""
    from vllm_dllm_plugin.canvas.block import BlockCanvas

    runner = llm.llm_engine.model_executor.driver_worker.worker.model_runner
    family, commit = runner.family, BlockCanvas.commit
    state, steps = {"call": 0}, []

    def predict(logits, *args, **kwargs):
        state["rows"], state["used"] = logits.detach().clone(), 0
        state["call"] += 1
        return family.predict(logits, *args, **kwargs)

    def recording_commit(canvas, offsets, token_ids):
        candidates = canvas.decision_offsets().tolist()
        used = state["used"]
        state["used"] = used + len(candidates)
        window = (canvas.window.start, canvas.window.end)
        steps.append(Step(canvas, state["call"], canvas.block_start, window,
                          canvas.tokens[canvas.block_start:canvas.block_end].copy(),
                          canvas.writing, candidates,
                          state["rows"][used:used + len(candidates)],
                          np.asarray(offsets).tolist(), np.asarray(token_ids).tolist()))
        return commit(canvas, offsets, token_ids)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(runner, "family", dataclasses.replace(family, predict=predict))
        m.setattr(BlockCanvas, "commit", recording_commit)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                            use_tqdm=False)
    index = {tuple(p): i for i, p in enumerate(prompts)}
    assert len(index) == len(prompts)
    per_prompt = [[] for _ in prompts]
    for step in steps:
        canvas = step.canvas
        per_prompt[index[tuple(canvas.tokens[:canvas.prompt_len].tolist())]].append(step)
    return outs, per_prompt


@pytest.fixture(scope="module")
def engine_runs(llm, prompts):
    """mode (and "mixed") -> (outputs, steps per prompt) of one batch each."""
    runs = {name: run_recorded(llm, prompts, sampling(GEN, **options))
            for name, (options, _) in MODES.items()}
    runs["mixed"] = run_recorded(llm, prompts[:MIXED],
                                 [sampling(GEN, **mixed_options(i)) for i in range(MIXED)])
    return runs


def replay(step: Step, mask_id: int) -> str:
    """Recompute ``step`` with the reference's decision functions; assert the
    engine took the same decision; return its kind."""
    from vllm_dllm_plugin.testing.reference import fast_dllm_v2 as R

    canvas = step.canvas
    if step.candidates:
        assert step.rows.dtype == torch.bfloat16, step.rows.dtype
    if step.writing:   # the prompt's whole blocks, or the commit forward of a decoded block
        if not step.candidates:
            assert not step.offsets
            return "write"
        size = step.window[1] - step.window[0]     # its last row decides the next token
        assert step.candidates == [size] and step.offsets == [size]
        assert step.tokens == [R.greedy_token(step.rows[0], mask_id, True)]
        return "commit forward"
    masked = step.block == mask_id
    sub = canvas.sub_block
    first = int(np.argmax(masked)) // sub * sub
    assert step.candidates == [o for o in range(first, first + sub) if masked[o]]
    logits = step.rows.clone()
    logits[:, mask_id] = float("-inf")
    pred, conf = R.choose(logits)
    tau = canvas.options.threshold
    chosen = R.commit_positions(conf, torch.ones(len(conf), dtype=torch.bool), tau)
    assert step.offsets == [step.candidates[i] for i in chosen]
    assert step.tokens == [int(pred[i]) for i in chosen]
    bar = bf16(tau)
    values = conf.double().tolist()
    if len(chosen) > 1:
        return "several commits"
    if len(values) > 1 and max(values) <= bar:
        return "top one, tie" if values.count(max(values)) > 1 else "top one"
    if any(abs(v - bar) <= ulp(bar) for v in values):
        return "confidence within a bf16 step of the bar"
    return "one commit"


def replay_all(per_prompt, mask_id) -> list[str]:
    return [replay(step, mask_id) for steps in per_prompt for step in steps]


# --- the rule -----------------------------------------------------------------------------


def test_threshold_rule_uses_the_bf16_rounded_bar():
    """0.8 is 0.80078125 in bf16: a confidence equal to it does not pass the
    strict rule, the next bf16 value does; a float bar would let through
    what lies between 0.8 and 0.80078125.  The reference agrees."""
    from vllm_dllm_plugin.testing.reference.fast_dllm_v2 import commit_positions

    from vllm_dllm_plugin.decoding.rules import threshold_count

    bar = bf16(0.8)
    above = bar + ulp(bar)
    assert bar == 0.80078125 and above == 0.8046875 and bf16(0.9) == 0.8984375

    def passes(conf, tau, compare_dtype=torch.bfloat16):
        count = threshold_count(torch.tensor([[conf]], dtype=torch.float64),
                                torch.tensor([tau], dtype=torch.float64),
                                compare_dtype=compare_dtype, strict=True)
        return bool(count.item())

    assert not passes(bar, 0.8)                 # equal to the rounded bar
    assert passes(above, 0.8)
    assert not passes(0.8 + 1e-6, 0.8)          # between 0.8 and its rounding
    assert passes(0.8 + 1e-6, 0.8, None)        # ... a float bar passes it
    assert passes(bar, 0.8, None)
    assert not passes(bf16(0.9), 0.9) and passes(bf16(0.9) + ulp(0.9), 0.9)

    conf = torch.tensor([bar, 0.5, above, bar], dtype=torch.bfloat16)
    everyone = torch.ones(4, dtype=torch.bool)
    assert commit_positions(conf, everyone, 0.8) == [2]
    # nothing passes: the most confident commits, ties to the leftmost
    assert commit_positions(torch.tensor([0.5, bar, bar], dtype=torch.bfloat16),
                            torch.ones(3, dtype=torch.bool), 0.8) == [1]


# --- replay: every engine decision, exact ---------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_replay_every_decision(engine_runs, ref16, prompts, mode):
    """A batch of NUM_PROMPTS requests in one mode: every step of every
    request, recomputed from the engine's rows, is the engine's decision."""
    _, per_prompt = engine_runs[mode]
    assert all(per_prompt)
    kinds = replay_all(per_prompt, ref16.mask_id)
    assert "several commits" in kinds and "commit forward" in kinds, kinds


def test_replay_every_decision_mixed_batch(engine_runs, ref16):
    """Prefix and dual, 0.9 and 0.8 in one batch: the rows of a step are split
    per request right, and each request follows its own options."""
    _, per_prompt = engine_runs["mixed"]
    steps = [s for p in per_prompt for s in p]
    per_call = [sum(1 for s in steps if s.call == c and s.candidates)
                for c in {s.call for s in steps}]
    assert max(per_call) >= MIXED // 2   # steps deciding for many requests at once
    kinds = replay_all(per_prompt, ref16.mask_id)
    assert "several commits" in kinds and "top one" in kinds


def test_replay_covers_every_kind_of_decision(engine_runs, ref16):
    """The replays are not vacuous: over prefix and dual, 0.9 and 0.8, the
    engine takes steps that commit several tokens, steps where only the
    top-one rule commits, steps with a confidence within one bf16 step of
    the bar, commit forwards, and (dual) sub-block windows."""
    kinds, sub_windows = [], 0
    for _, per_prompt in engine_runs.values():
        kinds += replay_all(per_prompt, ref16.mask_id)
        sub_windows += sum(1 for steps in per_prompt for s in steps
                           if s.window[1] - s.window[0] < s.canvas.block)
    counts = {k: kinds.count(k) for k in sorted(set(kinds))}
    print(f"engine decisions replayed: {counts}; sub-block windows {sub_windows}")
    for kind in ("several commits", "top one", "commit forward",
                 "confidence within a bf16 step of the bar"):
        assert counts.get(kind, 0) > 0, counts
    assert sub_windows > 0


def test_engine_compares_with_the_bf16_rounded_threshold(llm, ref16, prompts):
    """Pick a confidence ``c`` the engine produces at a request's first step
    (not the step's best) and a threshold ``tau < c`` whose bf16 rounding is
    ``c``: the strict bf16 rule does not commit that candidate (a float
    comparison would); with the next bf16 value below ``c`` as the bar, it
    commits.  The first step's logits are the same in the three runs."""
    from vllm_dllm_plugin.testing.reference.fast_dllm_v2 import choose

    def first_step(prompt, tau):
        _, (steps,) = run_recorded(llm, [prompt], sampling(8, cache="prefix", threshold=tau))
        step = next(s for s in steps if not s.writing)
        replay(step, ref16.mask_id)
        return step

    for prompt in prompts:
        step = first_step(prompt, 0.9)
        logits = step.rows.clone()
        logits[:, ref16.mask_id] = float("-inf")
        conf = choose(logits)[1].double().tolist()
        picks = [i for i, c in enumerate(conf) if 0.5 < c < max(conf)]
        if picks:
            break
    else:
        pytest.fail("no request has two distinct confidences above 0.5 at its first step")
    j = picks[0]
    c = conf[j]
    tau = c - ulp(c) / 4
    assert tau < c and bf16(tau) == c
    at_bar = first_step(prompt, tau)
    assert torch.equal(at_bar.rows, step.rows)
    assert step.candidates[j] not in at_bar.offsets
    assert all(step.candidates[i] in at_bar.offsets for i, x in enumerate(conf) if x > c)
    below = c - ulp(c) * 0.75              # rounds to the bf16 value below c
    assert bf16(below) == c - ulp(c)
    under = first_step(prompt, below)
    assert torch.equal(under.rows, step.rows)
    assert step.candidates[j] in under.offsets


# --- end to end --------------------------------------------------------------------------


def test_bf16_logits_are_within_the_assumed_error(llm, ref16, bf16_dir, prompts):
    """The engine computes in bf16 (bf16 rows, farther than float32 noise from
    the float32 reference) and within ``LOGIT_ERROR`` of the bf16 reference:
    the first denoising forward of single requests, the rows that decide."""
    from vllm_dllm_plugin.testing.reference.fast_dllm import shift_right
    from vllm_dllm_plugin.testing.reference.fast_dllm_v2 import FastDLLMv2, empty_cache

    ref32 = FastDLLMv2.from_pretrained(bf16_dir, dtype=torch.float32)
    errors, errors32, ref_errors32 = [], [], []
    mask = ref16.mask_id

    def first_rows(ref, prompt, offsets):
        """The reference's first block forward, rows of ``offsets`` (shifted)."""
        base = len(prompt) // 32 * 32
        cache = ref.prefill(prompt[:base]).kv if base else empty_cache(ref)
        block = prompt[base:] + [mask] * (base + 32 - len(prompt))
        return shift_right(ref.block_forward(block, base, cache).logits)[offsets].double()

    def diff(a, b):
        d = (a - b).abs()
        d[:, mask] = 0
        return float(d.max())

    for prompt in [p for p in prompts if len(p) % 32][:8]:   # else the prefill decides
        _, (steps,) = run_recorded(llm, [prompt], sampling(8, threshold=0.9))
        step = next(s for s in steps if not s.writing)
        assert step.rows.dtype == torch.bfloat16

        got = step.rows.double()
        want16, want32 = (first_rows(ref, prompt, step.candidates) for ref in (ref16, ref32))
        errors.append(diff(got, want16))
        errors32.append(diff(got, want32))
        ref_errors32.append(diff(want16, want32))
    print(f"first-forward max |logit diff| over {len(errors)} requests: engine vs bf16 "
          f"reference {max(errors):.3f} (median {sorted(errors)[len(errors) // 2]:.3f}); "
          f"engine vs float32 reference {max(errors32):.3f}; bf16 vs float32 reference "
          f"{max(ref_errors32):.3f}")
    assert max(errors) < LOGIT_ERROR
    assert min(errors32) > 1e-2


def shared_step_errors(steps: list[Step], want: Decided, mask_id: int) -> list[float]:
    """Max |logit difference| of the rows that decide, engine vs bf16
    reference, for each step while both held the same canvas (pairs in order;
    the last pair is the first step whose commits differ, if any)."""
    errors = []
    deciding = [s for s in steps if s.candidates]
    for step, (rows, commits) in zip(deciding, want.forwards):
        assert step.rows.shape == rows.shape
        diff = (step.rows.double() - rows.double()).abs()
        diff[:, mask_id] = 0
        errors.append(float(diff.max()))
        if [(step.block_start + o, t) for o, t in zip(step.offsets, step.tokens)] != commits:
            break
    return errors


def check_end_to_end(run, decided, mask_id, floor, label):
    """The engine's batch against the bf16 reference runs ``decided``: every
    sure token equal, the logit error of the shared steps within
    ``LOGIT_ERROR``, at least ``floor`` token-identical outputs."""
    outs, per_prompt = run
    same = sure = 0
    errors = []
    for i, (out, steps, want) in enumerate(zip(outs, per_prompt, decided)):
        got = list(out.outputs[0].token_ids)
        same += got == want.tokens
        errors += shared_step_errors(steps, want, mask_id)
        for k, token in want.sure.items():
            if k < len(got):
                assert got[k] == token, (
                    f"{label} request {i}: output index {k} is {got[k]}, the bf16 "
                    f"reference decided {token} with margins beyond {LOGIT_ERROR}")
                sure += 1
    total = sum(len(d.tokens) for d in decided)
    print(f"{label}: {same}/{len(decided)} outputs token-identical; {sure}/{total} tokens "
          f"decided with margins beyond the error, all equal; logit error over "
          f"{len(errors)} shared steps: max {max(errors):.3f}, "
          f"median {sorted(errors)[len(errors) // 2]:.3f}")
    assert max(errors) < LOGIT_ERROR, f"{label}: logit error {max(errors)}"
    assert same >= floor, f"{label}: only {same} identical outputs"
    assert sure >= SURE_TOKENS, f"{label}: the margin criterion covers {sure} tokens only"


@pytest.mark.parametrize("mode", MODES)
def test_bf16_engine_against_bf16_reference(engine_runs, references, ref16, mode):
    check_end_to_end(engine_runs[mode], references[mode], ref16.mask_id, MODES[mode][1], mode)


def test_bf16_mixed_batch_against_bf16_reference(engine_runs, references, ref16):
    check_end_to_end(engine_runs["mixed"], references["mixed"], ref16.mask_id, MIXED_FLOOR,
                     "mixed batch")
