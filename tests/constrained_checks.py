"""Structured output against the constrained reference loops, for any family.

The engine takes its grammars from vLLM's xgrammar backend; the references
take theirs from ``vllm_dllm_plugin.testing.reference.grammar.Acceptor``,
which shares no code with it.  Each check runs constrained requests (a
regex, a choice, a JSON schema) beside free ones in the family module's
engine and compares every request with its reference, token for token
(float64-arbitrated, ``engine_utils.assert_reference``).  The family module
passes its reference function, which takes a ``grammar`` keyword.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine_utils import assert_reference, engine_options, forwards_of, run_staggered, scheduler_of

REGEX = "[0-9]{1,3}(, [0-9]{1,3})*"
CHOICES = ["red", "green", "blue", "yellow"]
SCHEMA = {"type": "object",
          "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"},
                         "unit": {"enum": ["cm", "kg"]}},
          "required": ["n", "ok", "unit"]}
KINDS = ("regex", "choice", "json")


def _vocab_size(model_dir) -> int:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return config.get("vocab_size") or config["text_config"]["vocab_size"]


def grammars(model_dir, eos_ids) -> dict[str, tuple]:
    """Kind -> (vLLM's ``StructuredOutputsParams``, the reference's acceptor)."""
    from vllm.sampling_params import StructuredOutputsParams

    from vllm_dllm_plugin.testing.reference.grammar import Acceptor

    stops, vocab = sorted(eos_ids), _vocab_size(model_dir)
    return {
        "regex": (StructuredOutputsParams(regex=REGEX),
                  Acceptor.regex(REGEX, model_dir, stops, vocab)),
        "choice": (StructuredOutputsParams(choice=CHOICES),
                   Acceptor.choice(CHOICES, model_dir, stops, vocab)),
        "json": (StructuredOutputsParams(json=SCHEMA),
                 Acceptor.json_schema(SCHEMA, model_dir, stops, vocab)),
        "free": (None, None),
    }


STRUCTURED = {"regex": {"regex": REGEX}, "choice": {"choice": CHOICES}, "json": {"json": SCHEMA}}


def split_grammar(case: dict, model_dir, eos_ids) -> tuple[dict, dict | None, object]:
    """A test case whose ``grammar`` key names a kind -> (its diffusion
    options, ``StructuredOutputsParams`` keywords for an engine in another
    process (JSON), the reference's acceptor (None without ``model_dir``));
    without one: no grammar."""
    options = dict(case)
    kind = options.pop("grammar", None)
    if kind is None:
        return options, None, None
    acceptor = None if model_dir is None else grammars(model_dir, eos_ids)[kind][1]
    return options, STRUCTURED[kind], acceptor


def params(max_tokens: int, structured, **options):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, structured_outputs=structured,
                          extra_args=engine_options(options))


def _kind_of(i: int, kinds) -> str:
    return kinds[i % len(kinds)]


def assert_valid(kind: str, text: str) -> None:
    """An output that ended (not cut by ``max_tokens``) is in the language,
    checked with tools that know nothing of either grammar engine."""
    if kind == "regex":
        assert re.fullmatch(REGEX, text), text
    elif kind == "choice":
        assert text in CHOICES, text
    elif kind == "json":
        import jsonschema

        jsonschema.validate(json.loads(text), SCHEMA)


def check_constrained_batch(llm, ref, eos_ids, reference, model_dir, prompts, max_tokens, *,
                            expected_forwards=lambda want: want.forwards,
                            kinds=KINDS + ("free",), **options) -> list:
    """One batch where constrained and free requests share steps: each
    equals its reference (constrained: the reference loop under the
    independent acceptor) in tokens and forwards; an output that ended is
    valid.  Returns ``(kind, reference result)`` per request."""
    cases = grammars(model_dir, eos_ids)
    kinds_of = [_kind_of(i, kinds) for i in range(len(prompts))]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        [params(max_tokens, cases[k][0], **options) for k in kinds_of],
                        use_tqdm=False)
    tokenizer = llm.get_tokenizer()
    results = []
    for prompt, kind, out in zip(prompts, kinds_of, outs):
        got = out.outputs[0]
        want = assert_reference(
            got.token_ids, ref, prompt, what=f"{kind} request, prompt len {len(prompt)}",
            got_forwards=forwards_of(llm, out.request_id), reference=reference,
            expected_forwards=expected_forwards, max_tokens=max_tokens, eos_ids=eos_ids,
            grammar=cases[kind][1], **options)
        if kind != "free" and got.finish_reason == "stop":
            assert_valid(kind, tokenizer.decode(got.token_ids, skip_special_tokens=True))
        results.append((kind, want))
    return results


def check_constrained_staggered(llm, ref, eos_ids, reference, model_dir, prompts, max_tokens,
                                tag, **options) -> None:
    """Constrained and free requests arriving while others run mid-block."""
    engine = llm.llm_engine
    cases = grammars(model_dir, eos_ids)
    kinds = [_kind_of(i, ("free",) + KINDS) for i in range(len(prompts))]
    arrivals = {0: [0, 1]}
    for i in range(2, len(prompts)):
        arrivals.setdefault(2 * i - 1, []).append(i)

    def request(i):
        return f"{tag}-{i}", prompts[i], params(max_tokens, cases[kinds[i]][0], **options)

    outputs = run_staggered(engine, arrivals, request)
    for i, prompt in enumerate(prompts):
        assert_reference(outputs[f"{tag}-{i}"], ref, prompt, what=f"{kinds[i]} request {i}",
                         reference=reference, max_tokens=max_tokens, eos_ids=eos_ids,
                         grammar=cases[kinds[i]][1], **options)


def check_constrained_preemption(llm, ref, eos_ids, reference, model_dir, prompts, max_tokens,
                                 evict_after, tag, **options) -> None:
    """Every running request's K/V evicted mid-block (constrained ones have
    emitted part of their block): all resume with their reference's tokens."""
    from test_reliability import run_with_evictions

    engine, sched = llm.llm_engine, scheduler_of(llm)
    cases = grammars(model_dir, eos_ids)
    kinds = [_kind_of(i, KINDS + ("free",)) for i in range(len(prompts))]
    for i, p in enumerate(prompts):
        engine.add_request(f"{tag}-{i}", {"prompt_token_ids": p},
                           params(max_tokens, cases[kinds[i]][0], **options))
    outputs = run_with_evictions(engine, evict_after=evict_after, steps=60)
    for i, p in enumerate(prompts):
        assert_reference(outputs[f"{tag}-{i}"].outputs[0].token_ids, ref, p,
                         what=f"{kinds[i]} request {i}", reference=reference,
                         max_tokens=max_tokens, eos_ids=eos_ids, grammar=cases[kinds[i]][1],
                         **options)
    assert sched.get_kv_cache_usage() == 0.0


def check_constrained_abort(llm, ref, eos_ids, reference, model_dir, prompts, max_tokens, tag,
                            **options) -> None:
    """A constrained request aborted mid-output; the others finish exactly."""
    from test_reliability import drain

    engine, sched = llm.llm_engine, scheduler_of(llm)
    cases = grammars(model_dir, eos_ids)
    kinds = [_kind_of(i, KINDS) for i in range(len(prompts))]
    for i, p in enumerate(prompts):
        engine.add_request(f"{tag}-{i}", {"prompt_token_ids": p},
                           params(max_tokens, cases[kinds[i]][0], **options))
    for _ in range(2):
        engine.step()
    engine.abort_request([f"{tag}-1"])
    outputs = {}
    drain(engine, outputs)
    assert f"{tag}-1" not in outputs or outputs[f"{tag}-1"].outputs[0].finish_reason == "abort"
    for i in (0, 2):
        assert_reference(outputs[f"{tag}-{i}"].outputs[0].token_ids, ref, prompts[i],
                         what=f"{kinds[i]} request {i}", reference=reference,
                         max_tokens=max_tokens, eos_ids=eos_ids, grammar=cases[kinds[i]][1],
                         **options)
    assert sched.get_kv_cache_usage() == 0.0 and not sched.plans


def several_tokens_per_step(results) -> bool:
    """Some constrained request committed a run of more than one token in a
    step (the rule was exercised, not just the grammar's first position)."""
    return any(max(want.commits or [0]) > 1 for kind, want in results if kind != "free")
