"""SDAR and LLaDA2.x in bfloat16: every engine decision replayed, exact.

The two families decide in different dtypes (``shared/docs/sdar-semantics.md``
section 3, ``llada2-semantics.md`` sections 2, 4, 5):

* SDAR keeps the logits' dtype: the confidence is the bf16 softmax of the
  argmax and the threshold is compared strictly with its bf16 rounding
  (0.85 -> 0.8515625): a confidence of exactly 0.8515625 does not pass.
* LLaDA2.x upcasts the logits to float32: confidence in float32, ``>`` in
  float32 (0.95 -> 0.949999988, 0.8 -> 0.800000012).

Checks, in the manner of ``tests/test_fast_dllm_v2_bf16.py`` (smaller):

* **The rule, pure**: ``rules.num_to_commit`` (with each family's
  ``compare_dtype`` for a bf16 model) against the reference's
  ``block_steps.passes`` / ``ranked`` / ``quota`` on confidences at and around
  the rounded bar.
* **Replay**: the tiny checkpoints run in bf16 through the engine;
  ``DiffusionModelRunner.sample_tokens`` is wrapped to record each step's
  deciding logits rows (as the engine computed them) and each canvas's block
  before and after.  Every decision is recomputed with the reference's
  functions (``choose``, ``quota``, ``ranked``, ``passes``) from those rows,
  on a canvas the replay keeps itself: candidates, committed positions and
  tokens, LLaDA2.1's edits, the step index of the schedule, the post-step
  rule and the output must be identical.  SDAR: dynamic (0.85, 0.7 at 2
  steps, and 0.999, which is 1.0 in bf16: saturated confidences of exactly
  1.0 sit at the bar and must not pass it), static (4 and 3 steps),
  sequential (4 and 2 steps); LLaDA2: 2.0
  (0.95, 0.5, 8 steps at 0.9) and 2.1 (editing 0.9 / 0.5 / 0.0 with 2 post
  steps).  Two engines in one pytest process break vLLM's global state, so
  SDAR's engine runs this module as a script in a subprocess and hands back
  its recorded steps (``torch.save``); LLaDA2's runs here.
* **Router dtype** (LLaDA2): vLLM's ``BailingMoE`` would round the float32
  router logits to bf16 before routing; the plugin routes on float32
  (``vllm_dllm_plugin/patch/bailing_moe_router_logits.py``).  The experts
  the engine's router picks, on every token of the replay runs, equal the
  reference's ``route`` (float32 logits) on the same hidden states.

No end-to-end token equality with a bf16 reference here: the tiny random
checkpoints decide with narrow margins (test_fast_dllm_v2_bf16.py measures
why), and the replay already pins every decision.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

SDAR_GEN = 16
SDAR_PROMPTS = (1, 3, 4, 5, 8, 13, 33, 21)
SDAR_MODES = {
    "dynamic-0.85": dict(),
    "dynamic-S2-0.7": dict(steps_per_block=2, threshold=0.7),
    # 0.999 is 1.0 in bf16: saturated confidences (1.0) are at the bar, not over it
    "dynamic-0.999": dict(threshold=0.999),
    "static-S4": dict(remasking="low_confidence_static"),
    "static-S3": dict(remasking="low_confidence_static", steps_per_block=3),
    "sequential-S4": dict(remasking="sequential"),
    "sequential-S2": dict(remasking="sequential", steps_per_block=2),
}
LLADA2_GEN = 40
LLADA2_PROMPTS = (1, 31, 32, 33, 64, 70)
LLADA2_MODES = {
    "2.0-0.95": dict(),
    "2.0-0.5": dict(threshold=0.5),
    "2.0-S8-0.9": dict(steps_per_block=8, threshold=0.9),
    "2.1-0.5-edit0.9": dict(threshold=0.5, editing_threshold=0.9),
    "2.1-0.7-edit0.5": dict(threshold=0.7, editing_threshold=0.5),
    "2.1-0.5-edit0-post2": dict(threshold=0.5, editing_threshold=0.0, max_post_steps=2),
}
VOCAB = 480            # prompt ids below the tokenizers' special tokens


def bf16(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.bfloat16))


def f32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


def prompts_of(lengths, seed):
    rng = random.Random(seed)
    return [[rng.randrange(VOCAB) for _ in range(n)] for n in lengths]


def family(name: str):
    from vllm_dllm_plugin.registry import FAMILIES

    return next(f for f in FAMILIES if f.name == name)


# --- (1) the rule, pure -------------------------------------------------------------------


def engine_commits(conf: list[float], quota: int, tau: float, compare_dtype) -> set[int]:
    """The engine's threshold rule (runner.sample_tokens' calls) on one row of
    confidences (float64 of the values the family computes)."""
    from vllm_dllm_plugin.decoding.rules import (
        RULE_THRESHOLD, commit_mask, num_to_commit, sort_candidates)

    row = torch.tensor([conf], dtype=torch.float64)
    n = torch.tensor([len(conf)])
    sorted_conf, index = sort_candidates(row)
    count = num_to_commit(sorted_conf, n, torch.tensor([RULE_THRESHOLD]),
                          torch.tensor([tau], dtype=torch.float64), n, torch.tensor([0]),
                          compare_dtype, strict_threshold=True, quota=torch.tensor([quota]))
    return set(commit_mask(index, count)[0].nonzero().flatten().tolist())


def reference_commits(conf: list[torch.Tensor], quota: int, tau: float) -> set[int]:
    """The reference loops' rule (sdar_loop dynamic, llada2_loop 2.0)."""
    from vllm_dllm_plugin.testing.reference.block_steps import passes, ranked

    candidates = list(range(len(conf)))
    over = [i for i in candidates if passes(conf[i], tau)]
    return set(over if len(over) >= quota else ranked(candidates, conf)[:quota])


def check_rule(values: list[float], dtype: torch.dtype, compare_dtype, tau: float, quota: int
               ) -> set[int]:
    conf = [torch.tensor(v, dtype=dtype) for v in values]
    want = reference_commits(conf, quota, tau)
    got = engine_commits([float(c) for c in conf], quota, tau, compare_dtype)
    assert got == want, (values, dtype, tau, quota, got, want)
    return got


def test_sdar_threshold_is_rounded_to_bf16():
    """SDAR in bf16: 0.85 is 0.8515625; a bf16 confidence equal to it does not
    pass the strict rule (a float bar would let it through), the next bf16
    value does; the quota decides when fewer pass."""
    compare = family("SDAR").compare_dtype(torch.bfloat16)
    assert compare == torch.bfloat16
    bar = bf16(0.85)
    up, down = bar + 2 ** -8, bar - 2 ** -8
    assert bar == 0.8515625 and bf16(up) == up and bf16(down) == down
    assert bf16(0.9) == 0.8984375 and bf16(0.7) == 0.69921875

    assert check_rule([bar, up, 0.5, up], torch.bfloat16, compare, 0.85, 2) == {1, 3}
    assert check_rule([bar, up, 0.5, up], torch.bfloat16, compare, 0.85, 1) == {1, 3}
    # at the bar: not over it; the quota takes the best (ties to the lower position)
    assert check_rule([bar, bar, 0.5, down], torch.bfloat16, compare, 0.85, 1) == {0}
    assert check_rule([bar, up, bar, 0.5], torch.bfloat16, compare, 0.85, 3) == {0, 1, 2}
    # a float64 bar would pass the rounded bar's value
    assert engine_commits([bar, 0.5], 1, 0.85, None) == {0}
    assert engine_commits([bar, bar], 1, 0.85, None) == {0, 1}
    assert engine_commits([bar, bar], 1, 0.85, compare) == {0}
    # 0.7 rounds down: 0.69921875 + one step passes, 0.69921875 does not
    assert check_rule([bf16(0.7), bf16(0.7) + 2 ** -9, 0.1], torch.bfloat16, compare,
                      0.7, 1) == {1}
    for tau in (0.5, 0.7, 0.85, 0.9, 0.95, 1.0):
        b = bf16(tau)
        for quota in (1, 2, 3):
            check_rule([b, b + 2 ** -9, b - 2 ** -9, 0.25], torch.bfloat16, compare, tau, quota)


def test_llada2_threshold_is_compared_in_float32():
    """LLaDA2.x in bf16 still compares in float32: 0.95 is 0.949999988 and 0.8
    is 0.800000012 (rounds up: a float64 comparison would pass it); a bf16
    bar (0.94921875) would pass 0.9496, float32 does not."""
    compare = family("LLaDA2.x").compare_dtype(torch.bfloat16)
    assert compare == torch.float32
    bar95, bar8 = f32(0.95), f32(0.8)
    assert bar95 < 0.95 < np.nextafter(np.float32(bar95), np.float32(1))
    assert bar8 > 0.8
    next8 = float(np.nextafter(np.float32(bar8), np.float32(1)))
    assert check_rule([bar8, next8, 0.3], torch.float32, compare, 0.8, 1) == {1}
    assert engine_commits([bar8, 0.3], 1, 0.8, None) == {0}       # float64: it passes
    assert engine_commits([bar8, bar8], 1, 0.8, None) == {0, 1}
    assert check_rule([bar8, bar8], torch.float32, compare, 0.8, 1) == {0}
    assert check_rule([0.9496, 0.99, 0.2], torch.float32, compare, 0.95, 1) == {1}
    assert engine_commits([0.9496, 0.99, 0.2], 1, 0.95, torch.bfloat16) == {0, 1}
    assert check_rule([bar95, 0.96, 0.97, 0.1], torch.float32, compare, 0.95, 2) == {1, 2}
    assert check_rule([bar95, 0.96, 0.97, 0.1], torch.float32, compare, 0.95, 3) == {0, 1, 2}
    for tau in (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0):
        b = np.float32(tau)
        up = float(np.nextafter(b, np.float32(2)))
        down = float(np.nextafter(b, np.float32(-1)))
        for quota in (1, 2, 3):
            check_rule([float(b), up, down, 0.25], torch.float32, compare, tau, quota)


# --- (2) recording the engine's steps -------------------------------------------------------


@dataclasses.dataclass
class Step:
    """One canvas's part of one engine step."""

    call: int
    block_start: int
    writing: bool
    before: list[int]          # the block's tokens before the step
    after: list[int]           # ... and after it
    offsets: list[int]         # block offsets of the rows that decide
    rows: torch.Tensor         # those logits rows, as the engine computed them


def record_steps(llm, prompts, params, hook_routing=None):
    """One ``generate`` call; returns its outputs and the steps of each prompt
    (``DiffusionModelRunner.sample_tokens`` wrapped)."""
    from vllm_dllm_plugin.worker.runner import DiffusionModelRunner

    original = DiffusionModelRunner.sample_tokens
    state = {"call": 0}
    index = {tuple(p): i for i, p in enumerate(prompts)}
    assert len(index) == len(prompts)
    per_prompt = [[] for _ in prompts]

    def sample_tokens(self, grammar_output):
        step = self._step_rows
        if self.execute_model_state is None or step is None:
            return original(self, grammar_output)
        state["call"] += 1
        bounds = step.row_bounds
        logits = self.execute_model_state.logits[:int(bounds[-1])].detach().clone()
        before = []
        for canvas in step.canvases:
            block = slice(canvas.block_start, canvas.block_end)
            before.append((canvas, block, canvas.writing, canvas.tokens[block].tolist()))
        out = original(self, grammar_output)
        for i, (canvas, block, writing, tokens) in enumerate(before):
            rows = slice(int(bounds[i]), int(bounds[i + 1]))
            key = tuple(canvas.tokens[:canvas.prompt_len].tolist())
            per_prompt[index[key]].append(Step(
                state["call"], block.start, writing, tokens, canvas.tokens[block].tolist(),
                step.row_offset[rows].tolist(), logits[rows]))
        return out

    with pytest.MonkeyPatch.context() as m:
        m.setattr(DiffusionModelRunner, "sample_tokens", sample_tokens)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs], per_prompt


def sampling(max_tokens, **diffusion):
    from engine_utils import sampling as make

    return make(max_tokens, **diffusion)


# --- (2) replay ---------------------------------------------------------------------------


@dataclasses.dataclass
class Loop:
    """What the replay needs of a request: the published loop's settings."""

    family: str               # "SDAR" or "LLaDA2.x"
    block: int
    steps: int                # S (LLaDA2.0: already capped at max_tokens)
    remasking: str = "low_confidence_dynamic"
    threshold: float = 0.85
    editing_threshold: float | None = None
    max_post_steps: int = 16


def sdar_loop(options: dict, block: int = 4) -> Loop:
    return Loop("SDAR", block, options.get("steps_per_block") or block,
                options.get("remasking", "low_confidence_dynamic"),
                options.get("threshold", 0.85))


def llada2_loop(options: dict, max_tokens: int, block: int = 32) -> Loop:
    return Loop("LLaDA2.x", block, min(options.get("steps_per_block") or block, max_tokens),
                threshold=options.get("threshold", 0.95),
                editing_threshold=options.get("editing_threshold"),
                max_post_steps=options.get("max_post_steps", 16))


def replay_request(steps: list[Step], prompt: list[int], loop: Loop, mask: int,
                   max_tokens: int, stops: set[int], engine_tokens: list[int]) -> list[str]:
    """Recompute every decision of one request from the engine's rows with the
    reference's decision functions, on the replay's own canvas; assert each
    equals the engine's; return the kinds of decision seen."""
    from vllm_dllm_plugin.testing.reference.block_steps import choose, passes, quota, ranked

    B, P = loop.block, len(prompt)
    editing = loop.editing_threshold is not None
    x = list(prompt) + [mask] * (max_tokens + 2 * B)
    kinds: list[str] = []
    current, step_index, post, last_post_idle = None, 0, 0, False

    def block_ended():
        if current is None or not editing:
            return
        # LLaDA2.1: a post step that edited nothing, or the post-step budget spent
        assert last_post_idle or post == loop.max_post_steps, (current, post)

    for step in steps:
        s = step.block_start
        if step.writing:   # the prompt's whole blocks or a commit forward: no decision
            assert not step.offsets and step.before == step.after
            continue
        assert step.before == x[s:s + B], f"block {s}: canvas differs before a step"
        if s != current:
            assert current is None or s > current
            assert mask not in x[P:s], "a block began before the ones before it were done"
            block_ended()
            current, step_index, post, last_post_idle = s, 0, 0, False
        candidates = [i for i in range(B) if x[s + i] == mask]
        first_editable = max(P - s, 0)
        if editing:
            assert step.offsets == list(range(first_editable, B))
        else:
            assert step.offsets == candidates and candidates
            assert step_index < loop.steps, "more forwards than the schedule's steps"
        assert step.rows.dtype == torch.bfloat16, step.rows.dtype
        logits = step.rows if loop.family == "SDAR" else step.rows.float()
        tokens_, conf_ = choose(logits, mask,
                                conf_dtype=None if loop.family == "SDAR" else torch.float32)
        tokens = dict(zip(step.offsets, tokens_))
        conf = {o: c for o, c in zip(step.offsets, conf_)}
        if loop.family == "SDAR":
            assert all(c.dtype == torch.bfloat16 for c in conf_)
        if editing:
            if not candidates:
                post += 1
                assert post <= loop.max_post_steps
                assert not last_post_idle
            over = [i for i in candidates if passes(conf[i], loop.threshold)]
            chosen = over if over else ranked(candidates, conf)[:1]
            edited = [i for i in range(first_editable, B)
                      if x[s + i] != mask and tokens[i] != x[s + i]
                      and passes(conf[i], loop.editing_threshold)]
            if edited:
                kinds.append("edit")
            if not candidates:
                kinds.append("post step")
                last_post_idle = not edited
            n = 1
        else:
            n = min(quota(B, loop.steps, step_index), len(candidates))
            edited = []
            if loop.remasking == "sequential":
                chosen = candidates[:n]
            else:
                chosen = ranked(candidates, conf)[:n]
                if loop.remasking == "low_confidence_dynamic":
                    over = [i for i in candidates if passes(conf[i], loop.threshold)]
                    if len(over) >= n:
                        chosen = over
        if candidates and loop.remasking == "low_confidence_dynamic":
            bar = bf16(loop.threshold) if loop.family == "SDAR" else f32(loop.threshold)
            values = [float(conf[i]) for i in candidates]
            if len(chosen) > n:
                kinds.append("over the threshold, beyond the quota")
            elif sum(v > bar for v in values) < n and len(candidates) > n:
                kinds.append("quota best")
            if bar in values:
                kinds.append("confidence equal to the rounded bar")
            if any(loop.threshold < v <= bar or bar < v <= loop.threshold for v in values):
                kinds.append("between the threshold and its rounding")
        elif candidates:
            kinds.append(loop.remasking)
        for i in chosen + edited:
            x[s + i] = tokens[i]
        assert step.after == x[s:s + B], (
            f"block {s} step {step_index}: engine {step.after}, replay {x[s:s + B]}")
        step_index += 1

    generated = x[P:] if loop.family == "SDAR" else x[P:P + max_tokens]
    for i, t in enumerate(generated):
        if t in stops:
            generated = generated[:i + 1]
            break
    assert engine_tokens == generated[:max_tokens]
    return kinds


def replay_runs(runs, prompts, loops, mask, max_tokens, stops) -> dict[str, int]:
    kinds: list[str] = []
    for mode, (outs, per_prompt) in runs.items():
        assert all(per_prompt), mode
        for prompt, steps, out in zip(prompts, per_prompt, outs):
            kinds += replay_request(steps, prompt, loops[mode], mask, max_tokens, stops, out)
    return {k: kinds.count(k) for k in sorted(set(kinds))}


# --- SDAR: its engine in a subprocess ---------------------------------------------------------


def record_sdar(model_dir: str, out_path: str) -> None:
    """Run in a subprocess (``__main__``): every SDAR mode as one batch, the
    steps saved with ``torch.save``."""
    from engine_utils import make_llm

    llm = make_llm(model_dir, dtype="bfloat16", enable_prefix_caching=False)
    prompts = prompts_of(SDAR_PROMPTS, seed=61)
    runs = {mode: record_steps(llm, prompts, sampling(SDAR_GEN, **options))
            for mode, options in SDAR_MODES.items()}
    torch.save({mode: (outs, [[dataclasses.asdict(s) for s in steps] for steps in per])
                for mode, (outs, per) in runs.items()}, out_path)


@pytest.fixture(scope="module")
def sdar_bf16_runs(tmp_path_factory):
    from vllm_dllm_plugin.testing.checkpoints import write_sdar_checkpoint

    tmp = tmp_path_factory.mktemp("sdar-bf16")
    path = write_sdar_checkpoint(tmp / "ckpt", seed=0, dtype="bfloat16")
    out = tmp / "steps.pt"
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0")
    proc = subprocess.run([sys.executable, __file__, "record-sdar", str(path), str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    saved = torch.load(out, weights_only=False)
    runs = {mode: (outs, [[Step(**s) for s in steps] for steps in per])
            for mode, (outs, per) in saved.items()}
    return path, runs


def test_sdar_bf16_replay_every_decision(sdar_bf16_runs):
    """Every SDAR decision of the bf16 engine (dynamic, static, sequential),
    recomputed from its own rows with the reference's functions, is its
    decision, and the outputs are the replayed canvases'."""
    from engine_utils import engine_eos_ids
    from vllm_dllm_plugin.testing.reference.sdar import SDAR

    path, runs = sdar_bf16_runs
    mask = SDAR.from_pretrained(path).mask_id
    loops = {mode: sdar_loop(options) for mode, options in SDAR_MODES.items()}
    counts = replay_runs(runs, prompts_of(SDAR_PROMPTS, seed=61), loops, mask, SDAR_GEN,
                         engine_eos_ids(path))
    print(f"SDAR bf16 decisions replayed: {counts}")
    for kind in ("over the threshold, beyond the quota", "quota best",
                 "confidence equal to the rounded bar", "low_confidence_static", "sequential"):
        assert counts.get(kind, 0) > 0, counts


# --- LLaDA2.x: its engine here ----------------------------------------------------------------


@pytest.fixture(scope="module")
def llada2_bf16_dir(tmp_path_factory):
    from vllm_dllm_plugin.testing.checkpoints import write_llada2_checkpoint

    return write_llada2_checkpoint(tmp_path_factory.mktemp("llada2-bf16"), seed=0,
                                   dtype="bfloat16")


@pytest.fixture(scope="module")
def llada2_bf16_runs(llada2_bf16_dir, sdar_bf16_runs):
    """(runs, routings): every LLaDA2 mode as one batch; each MoE routing the
    engine computed: (layer, hidden states, router logits, expert ids).
    After the SDAR subprocess, so the two engines' CPU work does not overlap."""
    from engine_utils import make_llm
    from vllm.model_executor.models.bailing_moe import BailingMoE

    llm = make_llm(llada2_bf16_dir, dtype="bfloat16", enable_prefix_caching=False)
    model = llm.llm_engine.model_executor.driver_worker.worker.model_runner.model
    routings = []
    moes = [m for m in model.modules() if isinstance(m, BailingMoE)]
    assert moes
    for layer, moe in enumerate(moes):
        router = moe.experts.router

        def compute(hidden_states, router_logits, *args, _orig=router._compute_routing,
                    _layer=layer, **kwargs):
            weights, ids = _orig(hidden_states, router_logits, *args, **kwargs)
            routings.append((_layer, hidden_states.detach().clone(),
                             router_logits.detach().clone(), ids.detach().clone(),
                             weights.detach().clone()))
            return weights, ids

        router._compute_routing = compute
    prompts = prompts_of(LLADA2_PROMPTS, seed=71)
    runs = {mode: record_steps(llm, prompts, sampling(LLADA2_GEN, **options))
            for mode, options in LLADA2_MODES.items()}
    return runs, routings


def test_llada2_bf16_replay_every_decision(llada2_bf16_runs, llada2_bf16_dir):
    """Every LLaDA2.0 / 2.1 decision of the bf16 engine (commits, edits, post
    steps), recomputed from its own rows with the reference's functions in
    float32, is its decision, and the outputs are the replayed canvases'."""
    from engine_utils import engine_eos_ids
    from vllm_dllm_plugin.testing.reference.llada2 import LLaDA2Moe

    runs, _ = llada2_bf16_runs
    mask = LLaDA2Moe.from_pretrained(llada2_bf16_dir).mask_id
    loops = {mode: llada2_loop(options, LLADA2_GEN) for mode, options in LLADA2_MODES.items()}
    counts = replay_runs(runs, prompts_of(LLADA2_PROMPTS, seed=71), loops, mask, LLADA2_GEN,
                         engine_eos_ids(llada2_bf16_dir))
    print(f"LLaDA2 bf16 decisions replayed: {counts}")
    for kind in ("over the threshold, beyond the quota", "quota best", "edit", "post step"):
        assert counts.get(kind, 0) > 0, counts


def test_llada2_bf16_routes_on_float32_router_logits(llada2_bf16_runs, llada2_bf16_dir):
    """The experts vLLM's MoE picks in bf16 are the published model's: routed
    on float32 router logits (``reference.llada2.route``) of the very hidden
    states the layer saw, on every token of the replay runs.  vLLM as it
    stands rounds those logits to bf16 first, which picks other experts for
    some tokens (measured here too)."""
    from vllm_dllm_plugin.testing.reference.llada2 import LLaDA2Moe, route

    _, routings = llada2_bf16_runs
    ref = LLaDA2Moe.from_pretrained(llada2_bf16_dir)
    c = ref.config
    moe_layers = list(range(c.first_k_dense_replace, c.num_hidden_layers))
    assert len({layer for layer, *_ in routings}) == len(moe_layers)
    tokens = differ_bf16 = 0
    for layer, hidden, logits, ids, weights in routings:
        assert hidden.dtype == torch.bfloat16
        weights_of = ref.layers[moe_layers[layer]]
        gate, bias = weights_of["mlp.gate.weight"], weights_of["mlp.gate.expert_bias"]
        want, want_w = route(hidden, gate, bias, c.n_group, c.topk_group,
                             c.num_experts_per_tok, c.routed_scaling_factor, c.norm_topk_prob)
        assert torch.equal(ids.long().sort(-1).values, want.sort(-1).values), layer
        assert logits.dtype == torch.float32, "router logits rounded before routing"
        torch.testing.assert_close(weights.gather(1, ids.long().argsort(-1)),
                                   want_w.gather(1, want.argsort(-1)), rtol=1e-5, atol=1e-6)
        rounded, _ = route_logits(logits.to(torch.bfloat16).float(), bias, c)
        differ_bf16 += int((rounded.sort(-1).values != want.sort(-1).values).any(-1).sum())
        tokens += len(ids)
    print(f"router: {tokens} token-layer routings equal the float32 reference; "
          f"bf16-rounded logits would pick other experts for {differ_bf16} "
          f"({differ_bf16 / tokens:.3%})")
    assert tokens > 1000


def route_logits(logits: torch.Tensor, bias: torch.Tensor, c):
    """``reference.llada2.route`` from given router logits."""
    scores = torch.sigmoid(logits)
    biased = scores + bias.float()
    n, e = biased.shape
    groups = biased.view(n, c.n_group, -1).topk(2, dim=-1).values.sum(-1) \
        .topk(c.topk_group, dim=-1).indices
    keep = torch.zeros(n, c.n_group, dtype=torch.bool).scatter(1, groups, True) \
        .repeat_interleave(e // c.n_group, dim=1)
    experts = biased.masked_fill(~keep, float("-inf")).topk(c.num_experts_per_tok, -1).indices
    return experts, scores.gather(1, experts)


if __name__ == "__main__" and sys.argv[1:2] == ["record-sdar"]:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    record_sdar(sys.argv[2], sys.argv[3])
