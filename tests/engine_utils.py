"""Helpers to drive the engine in tests and compare it with the reference."""

from __future__ import annotations

import json
from pathlib import Path

MAX_MODEL_LEN = 512


def make_llm(model_dir, **kwargs):
    from vllm import LLM

    args = dict(model=str(model_dir), enforce_eager=True, max_model_len=MAX_MODEL_LEN,
                dtype="float32", seed=0)
    args.update(kwargs)
    return LLM(**args)


def scheduler_of(llm):
    """The engine-core scheduler (in-process engine only)."""
    return llm.llm_engine.engine_core.engine_core.scheduler


def forwards_of(llm, request_id: str) -> int:
    """Forward passes the engine ran for a finished request.

    The LLM API suffixes user ids (``"3"`` -> ``"3-<hex>"``).
    """
    finished = scheduler_of(llm).diffusion_stats.finished
    matches = [v.forwards for k, v in finished.items()
               if k == request_id or k.rsplit("-", 1)[0] == request_id]
    assert matches, f"no finished record for request {request_id}"
    return matches[-1]


def run_staggered(engine, arrivals: dict[int, list[int]], request) -> dict[str, list[int]]:
    """Add requests while others run, then run until all finish.

    ``arrivals``: engine step -> request indices added before it;
    ``request(i)`` -> ``(request id, prompt ids, SamplingParams)``.
    Returns finished request id -> output token ids.
    """
    outputs, step = {}, 0
    while step <= max(arrivals) or engine.has_unfinished_requests():
        for i in arrivals.get(step, []):
            request_id, prompt, params = request(i)
            engine.add_request(request_id, {"prompt_token_ids": prompt}, params)
        for out in engine.step():
            if out.finished:
                outputs[out.request_id] = list(out.outputs[0].token_ids)
        step += 1
    return outputs


def engine_options(case: dict) -> dict:
    """Request options as ``extra_args``: ``{"threshold": 0.9}`` ->
    ``{"diffusion_threshold": 0.9}``."""
    return {f"diffusion_{k}": v for k, v in case.items()}


def sampling(max_tokens: int, stop_token_ids=None, min_tokens: int = 0, **diffusion):
    from vllm import SamplingParams

    extra = engine_options(diffusion)
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, extra_args=extra,
                          stop_token_ids=stop_token_ids, min_tokens=min_tokens)


def engine_eos_ids(model_dir) -> set[int]:
    """The end tokens vLLM stops on: the tokenizer's eos + generation_config's."""
    from transformers import AutoTokenizer

    import vllm_dllm_plugin

    vllm_dllm_plugin.register()  # Dream's tokenizer class
    model_dir = Path(model_dir)
    ids = {AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False).eos_token_id}
    gen = json.loads((model_dir / "generation_config.json").read_text())
    eos_ids = gen.get("eos_token_id")
    ids.update(eos_ids if isinstance(eos_ids, list) else [eos_ids])
    return ids - {None}


def reference_run(model, prompt_ids, *, max_tokens, eos_ids, **diffusion):
    """The plain-PyTorch reference with the same settings as ``sampling``."""
    from vllm_dllm_plugin.testing.reference.fast_dllm import generate

    return generate(model, prompt_ids, gen_length=max_tokens, eos_ids=eos_ids, **diffusion)


def assert_reference(got, ref, prompt_ids, *, what, got_forwards=None, reference=reference_run,
                     expected_forwards=lambda want: want.forwards, **settings):
    """The engine's tokens ``got`` (and ``got_forwards``, if given) equal
    ``reference(ref, prompt_ids, **settings)``; where the float32 reference
    differs, a float64 rerun decides (``vllm_dllm_plugin.testing.parity``).
    Returns the reference result the engine matched."""
    from vllm_dllm_plugin.testing.parity import assert_matches_reference

    return assert_matches_reference(got, lambda model: reference(model, prompt_ids, **settings), ref,
                                    got_forwards=got_forwards, expected_forwards=expected_forwards,
                                    what=what)


def assert_option_refused(llm, options: dict, field: str) -> None:
    """A request with ``extra_args=options`` is refused before any work, with
    an error whose message starts with ``field``."""
    import pytest
    from vllm import SamplingParams

    from vllm_dllm_plugin.serving.validation import DiffusionRequestError

    with pytest.raises(DiffusionRequestError, match=f"^{field}"):
        llm.generate([{"prompt_token_ids": [1, 2, 3]}],
                     SamplingParams(temperature=0, max_tokens=8, extra_args=options),
                     use_tqdm=False)


def check_in_own_engine(model_dir, ref, eos_ids, reference, prompts, cases, max_tokens, *,
                        tp: int, what: str) -> None:
    """``prompts[i]`` with options ``cases[i]`` (a ``grammar`` key: a kind of
    ``constrained_checks``) through a fresh engine in its own process
    (``test_tensor_parallel.run_engine``: a second checkpoint, or TP=2) equal
    ``reference`` request by request."""
    from constrained_checks import split_grammar
    from test_tensor_parallel import run_engine

    split = [split_grammar(case, model_dir, eos_ids) for case in cases]
    requests = [dict(prompt=p, max_tokens=max_tokens, options=engine_options(options),
                     structured_outputs=structured)
                for p, (options, structured, _) in zip(prompts, split)]
    got = run_engine(model_dir, requests, tp=tp)
    for i, (p, case, (options, _, grammar)) in enumerate(zip(prompts, cases, split)):
        assert_reference(got[i], ref, p, what=f"request {i} ({case}) {what}",
                         reference=reference, max_tokens=max_tokens, eos_ids=eos_ids,
                         grammar=grammar, **options)
