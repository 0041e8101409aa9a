"""SDAR and LLaDA2.x (block diffusion with a step schedule) through `vllm serve`
and the official `openai` client.

One live server per family (the tiny checkpoints, float32, eager, loopback,
module-scoped: pytest groups each family's tests behind its server).  Every
answer is compared, token id for token id (``return_token_ids``), with the
plain-PyTorch reference of the published loop (``vllm_dllm_plugin/testing/
reference/sdar_loop.py``, ``llada2_loop.py``, through the adapters of
``tests/test_sdar.py`` and ``tests/test_llada2.py``, which show the engine
equals them) on the prompt ids the server used.  Covered: both endpoints
streaming and not, the block-by-block shape of a stream (SDAR, LLaDA2.0 and
LLaDA2.1), requests without sampling fields (greedy, the plugin's
``max_tokens`` default), the 400s of options the family's loop does not
have, per-request options, seeded top-k/top-p sampling.

Every client call is bounded (``timeout`` of the client, ``max_retries=0``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from pathlib import Path
from typing import Any, Callable

import openai
import pytest

import openai_run
from engine_utils import assert_reference, engine_options
from local_server import local_server
from openai_run import flat
from test_llada2 import llada2_reference
from test_sdar import sdar_reference

MAX_MODEL_LEN = 512        # a multiple of both blocks: not rounded by the plugin
DEFAULT_MAX_TOKENS = 256   # docs/options.md: a request without max_tokens (no max_new_tokens
                           # in either checkpoint's generation_config.json)
TEXT = "hello world, the quick brown fox"
CHAT = [{"role": "user", "content": "Tell me a story about a fox."}]
VOCAB = 460                # prompt ids below both tokenizers' special tokens (469, 488)


@dataclasses.dataclass(frozen=True)
class Family:
    key: str
    model: str
    block: int
    reference: Callable
    # max_tokens of the endpoint parity test (short, long)
    max_tokens: tuple
    # streams whose chunks are checked: (prompt: a length of token ids, "text" or
    # "chat"; max_tokens; ignore_eos; options as the reference's keywords)
    streams: tuple
    # options the loop does not have: (vllm_xargs, the field the 400 names)
    bad_options: tuple
    # per-request options (reference keywords) that change the default answer
    options: tuple


# LLaDA2.1: the loop with token editing (a request option); its blocks reach
# vLLM only when they end.
LLADA21 = dict(editing_threshold=0.5)

SDAR = Family(
    key="sdar", model="tiny-sdar", block=4, reference=sdar_reference,
    max_tokens=(30, 100),
    streams=(
        (5, 30, True, {}),
        (8, 30, True, {}),
        ("text", 100, False, {}),   # cut by an end token (at 89)
        ("chat", 30, True, {}),
        (7, 30, True, dict(remasking="low_confidence_static", steps_per_block=2)),
    ),
    bad_options=(
        ({"diffusion_remasking": "entropy_bounded"}, "diffusion_remasking"),
        ({"diffusion_editing_threshold": 0.5}, "diffusion_editing_threshold"),
        ({"diffusion_remasking": "sequential", "diffusion_threshold": 0.9},
         "diffusion_threshold"),
    ),
    options=(dict(remasking="low_confidence_static", steps_per_block=2),
             dict(remasking="sequential", steps_per_block=2),
             dict(threshold=0.5)),
)

LLADA2 = Family(
    key="llada2", model="tiny-llada2", block=32, reference=llada2_reference,
    max_tokens=(20, 100),   # 20: under a block, LLaDA2.0's schedule has 20 steps
    streams=(
        (16, 70, True, LLADA21),
        (32, 70, True, LLADA21),
        ("chat", 70, True, LLADA21),
        (45, 70, True, {}),         # LLaDA2.0
    ),
    bad_options=(
        ({"diffusion_max_post_steps": 3}, "diffusion_max_post_steps"),
        ({"diffusion_editing_threshold": 2}, "diffusion_editing_threshold"),
        ({"diffusion_remasking": "low_confidence_static"}, "diffusion_remasking"),
    ),
    options=(dict(editing_threshold=0.5),
             dict(threshold=0.5, editing_threshold=0.0, max_post_steps=2),
             dict(threshold=0.5, steps_per_block=8)),
)

FAMILIES = {f.key: f for f in (SDAR, LLADA2)}


def _option_id(options) -> str:
    return "-".join(f"{k}={v}" for k, v in options.items()) or "default"


def pytest_generate_tests(metafunc):
    """The family-specific cases of a test class (its ``FAMILY``)."""
    family = getattr(metafunc.cls, "FAMILY", None)
    if family is None:
        return
    if "stream_case" in metafunc.fixturenames:
        metafunc.parametrize("stream_case", family.streams, ids=[
            f"{p}-{m}-{_option_id(o)}" for p, m, _, o in family.streams])
    if "bad" in metafunc.fixturenames:
        metafunc.parametrize("bad", family.bad_options, ids=[
            f"{f}-{'-'.join(map(str, o.values()))}" for o, f in family.bad_options])
    if "options" in metafunc.fixturenames:
        metafunc.parametrize("options", family.options,
                             ids=[_option_id(o) for o in family.options])
    if "max_tokens" in metafunc.fixturenames:
        metafunc.parametrize("max_tokens", family.max_tokens)


@dataclasses.dataclass
class Server:
    family: Family
    url: str
    log: Path
    client: openai.OpenAI
    tokenizer: Any
    ref: Any
    eos: set


@pytest.fixture(scope="class")
def srv(request, tmp_path_factory):
    """The class's family served: one `vllm serve` per test class."""
    family = request.cls.FAMILY
    model_dir = request.getfixturevalue(f"{family.key}_dir")
    ref = request.getfixturevalue(f"{family.key}_ref")
    eos = request.getfixturevalue(f"{family.key}_eos")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    log = tmp_path_factory.mktemp(f"{family.key}-server") / "serve.log"
    with local_server(model_dir, family.model, log_path=log, max_model_len=MAX_MODEL_LEN,
                      startup_timeout=400) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0,
                               timeout=120)
        yield Server(family, url, log, client, tokenizer, ref, eos)


# -- the reference ----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _reference(family_key, ref, prompt_ids, max_tokens, eos_ids, options):
    """Computed once per argument set (several tests ask for the same run)."""
    return FAMILIES[family_key].reference(ref, list(prompt_ids), max_tokens=max_tokens,
                                          eos_ids=eos_ids, **dict(options))


def reference(srv, prompt_ids, max_tokens, *, ignore_eos=False, **options) -> list[int]:
    ends = () if ignore_eos else tuple(sorted(srv.eos))
    return list(_reference(srv.family.key, srv.ref, tuple(prompt_ids), max_tokens, ends,
                           tuple(sorted(options.items()))).tokens)


def assert_reference_tokens(got, srv, prompt_ids, max_tokens, *, what, ignore_eos=False,
                            **options) -> list[int]:
    """``got`` equals the published loop's tokens (float32 reference, the
    engine's end ids), float64-arbitrated (``engine_utils.assert_reference``);
    returns the tokens it matched."""
    ends = () if ignore_eos else tuple(sorted(srv.eos))
    key = tuple(sorted(options.items()))
    want = assert_reference(got, srv.ref, tuple(prompt_ids), what=what, reference=lambda m, p: (
        _reference(srv.family.key, m, p, max_tokens, ends, key)))
    return list(want.tokens)


def chat_prompt_ids(tokenizer, messages) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def id_prompt(length, a=7, b=3):
    return [(a * i + b) % VOCAB for i in range(length)]


# -- one request, streamed or not --------------------------------------------------------

def run(srv, chat, prompt, stream, **kwargs):
    """:func:`openai_run.run` on the family's server."""
    return openai_run.run(srv.client, srv.family.model, chat, prompt, stream, **kwargs)



def xargs(options):
    return {"vllm_xargs": engine_options(options)} if options else {}


def assert_finish(finish, usage, want, max_tokens, eos):
    assert usage.completion_tokens == len(want)
    if want[-1] in eos and len(want) < max_tokens:
        assert finish == "stop"
    else:
        assert finish == "length" and len(want) == max_tokens


def emission_boundaries(prompt_len: int, generated: int, block: int) -> list[int]:
    """Cumulative generated-token counts at which the engine hands tokens over
    (canvas/stepped.py): blocks count from the first prompt token and start
    fully masked after the prompt's tail, so the first unit is the rest of
    the tail block (``block - P % block``, a whole block when ``P % block ==
    0``: the prefill decides no token), then one unit per block.  The last
    unit is cut at ``generated`` (max_tokens, or an end token: SDAR and
    LLaDA2.0 hand over a block up to an end token with nothing masked before
    it, LLaDA2.1 the whole block, which vLLM cuts there)."""
    return list(range(block - prompt_len % block, generated, block)) + [generated]


def test_emission_boundaries_rule():
    assert emission_boundaries(5, 30, 4) == [3, 7, 11, 15, 19, 23, 27, 30]
    assert emission_boundaries(8, 10, 4) == [4, 8, 10]
    assert emission_boundaries(27, 9, 4) == [1, 5, 9]
    assert emission_boundaries(16, 100, 32) == [16, 48, 80, 100]
    assert emission_boundaries(32, 64, 32) == [32, 64]
    assert emission_boundaries(52, 70, 32) == [12, 44, 70]


def bad_request(srv, chat, stream, **body):
    """:func:`openai_run.bad_request` on the family's server."""
    return openai_run.bad_request(srv.client, srv.family.model, chat, stream,
                                  default_text=TEXT, default_messages=CHAT, **body)


class Served:
    """The checks, run once per family (the subclasses below, one server
    each); family-specific cases come from ``FAMILY`` (pytest_generate_tests)."""

    FAMILY: Family

    # -- both endpoints, streaming and not, against the reference ------------------------

    @pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
    def test_stream_and_non_stream_equal_the_reference(self, srv, chat, max_tokens):
        """Token ids == the reference's for the prompt ids the server used
        (for chat: the checkpoint's chat template with the generation
        prompt, as transformers renders it); finish_reason and usage follow;
        streamed == non-streamed, text and ids."""
        prompt = CHAT if chat else TEXT
        prompt_ids, ids, texts, finish, usage = run(srv, chat, prompt, False, temperature=0,
                                                    max_tokens=max_tokens)
        tok = srv.tokenizer
        assert prompt_ids == (chat_prompt_ids(tok, CHAT) if chat else tok(TEXT).input_ids)
        assert usage.prompt_tokens == len(prompt_ids)
        want = assert_reference_tokens(ids[0], srv, prompt_ids, max_tokens,
                                       what="non-streamed answer")
        assert_finish(finish, usage, want, max_tokens, srv.eos)
        assert texts[0] == tok.decode(want, skip_special_tokens=True)

        s_prompt_ids, s_ids, s_texts, s_finish, s_usage = run(
            srv, chat, prompt, True, temperature=0, max_tokens=max_tokens,
            stream_options={"include_usage": True})
        assert s_prompt_ids == prompt_ids
        assert flat(s_ids) == want
        assert "".join(s_texts) == texts[0]
        assert s_finish == finish
        assert (s_usage.prompt_tokens, s_usage.completion_tokens) == (
            usage.prompt_tokens, usage.completion_tokens)

    def test_the_answers_above_span_several_blocks(self, srv):
        """The parity above is not vacuous: the long answers cover several
        blocks (SDAR's text prompt ends on an end token, at 89 tokens)."""
        tok = srv.tokenizer
        for prompt_ids in (tok(TEXT).input_ids, chat_prompt_ids(tok, CHAT)):
            assert len(reference(srv, prompt_ids, max(self.FAMILY.max_tokens))) > (
                2 * self.FAMILY.block)

    # -- a stream follows the block structure ------------------------------------------

    def test_stream_chunks_follow_the_blocks(self, srv, stream_case):
        """The chunks' token counts are the engine's emissions: the rest of
        the prompt's tail block, then one block per chunk, cut at max_tokens
        or the end token.  Token ids (not text: the detokenizer may hold
        back bytes).

        vLLM's API process merges the deltas of engine steps it has not sent
        yet (``RequestOutputCollector``), so a chunk may span several
        emissions, but never part of one: every chunk boundary must be an
        emission boundary, and one of up to three attempts must show every
        emission as its own chunk."""
        prompt, max_tokens, ignore_eos, options = stream_case
        block = self.FAMILY.block
        chat = prompt == "chat"
        body = CHAT if chat else TEXT if prompt == "text" else id_prompt(prompt)
        extra = {**xargs(options), **({"ignore_eos": True} if ignore_eos else {})}
        attempts, want, want_bounds = [], None, None
        for _ in range(3):
            prompt_ids, chunks, _, finish, usage = run(
                srv, chat, body, True, temperature=0, max_tokens=max_tokens,
                extra_body=extra, stream_options={"include_usage": True})
            if want is None:
                assert isinstance(prompt, str) or len(prompt_ids) == prompt
                want = assert_reference_tokens(flat(chunks), srv, prompt_ids, max_tokens,
                                               ignore_eos=ignore_eos, what="streamed answer",
                                               **options)
                want_bounds = emission_boundaries(len(prompt_ids), len(want), block)
                assert len(want_bounds) >= 3, "too few blocks to tell"
            assert flat(chunks) == want
            assert_finish(finish, usage, want, max_tokens, () if ignore_eos else srv.eos)
            assert all(chunks), "a chunk without tokens"
            bounds = list(itertools.accumulate(len(c) for c in chunks))
            assert set(bounds) <= set(want_bounds), (
                f"a chunk ends inside an emission: chunks {[len(c) for c in chunks]}, "
                f"emission boundaries {want_bounds}")
            attempts.append([len(c) for c in chunks])
            if bounds == want_bounds:
                break
        else:
            pytest.fail(f"emissions always merged: chunks {attempts}, "
                        f"boundaries {want_bounds}")

    # -- requests without sampling fields ----------------------------------------------

    @pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
    def test_request_without_sampling_fields_is_greedy_with_the_default_max_tokens(
            self, srv, chat):
        """No temperature, no max_tokens: greedy (SDAR's generation_config.json
        T 0.6, top-k 20, top-p 0.95 are not applied: the answer is the greedy
        reference's), and max_tokens is the plugin's default of 256
        (docs/options.md; on chat too, not the context's remainder): with
        ignore_eos exactly 256 tokens."""
        prompt = CHAT if chat else TEXT
        prompt_ids, ids, _, finish, usage = run(srv, chat, prompt, False)
        want = assert_reference_tokens(ids[0], srv, prompt_ids, DEFAULT_MAX_TOKENS,
                                       what="request without sampling fields")
        assert_finish(finish, usage, want, DEFAULT_MAX_TOKENS, srv.eos)
        # the default itself: with ignore_eos exactly 256 tokens, the answer
        # above continued (block-causal: stopping only cuts the output)
        _, ids, _, finish, usage = run(srv, chat, prompt, False,
                                       extra_body={"ignore_eos": True})
        assert usage.completion_tokens == DEFAULT_MAX_TOKENS and finish == "length"
        assert len(ids[0]) == DEFAULT_MAX_TOKENS and ids[0][:len(want)] == want

    # -- what the family's loop does not have: a 400 naming the field ------------------

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    @pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
    def test_options_the_loop_does_not_have_are_400s(self, srv, bad, chat, stream):
        options, field = bad
        param, message = bad_request(srv, chat, stream, temperature=0,
                                     extra_body={"vllm_xargs": options})
        assert param == field and message.startswith(f"{field}: "), message

    def test_the_server_keeps_serving_after_the_400s(self, srv):
        """Right after each of the family's 400s (and after those of the
        test above): a normal request is still the reference's answer, and
        the log holds no traceback."""
        prompt = id_prompt(20, 5, 1)
        for options, field in self.FAMILY.bad_options:
            assert bad_request(srv, False, False, temperature=0,
                               extra_body={"vllm_xargs": options})[0] == field
            prompt_ids, ids, _, _, _ = run(srv, False, prompt, False, temperature=0,
                                           max_tokens=40)
            assert_reference_tokens(ids[0], srv, prompt_ids, 40,
                                    what=f"after the {field} 400")
        log = srv.log.read_text()
        assert "Traceback" not in log and "Internal Server Error" not in log

    # -- per-request options are honoured ----------------------------------------------

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_per_request_options_are_honoured(self, srv, options, stream):
        """Options through ``vllm_xargs`` equal the reference with those
        options, and that answer differs from the defaults' (so ignoring the
        options would fail).  Streamed on chat, not on completions."""
        chat = stream
        prompt = CHAT if chat else TEXT
        max_tokens = 64
        prompt_ids, ids, texts, _, _ = run(srv, chat, prompt, stream, temperature=0,
                                           max_tokens=max_tokens, extra_body=xargs(options))
        want = assert_reference_tokens(flat(ids), srv, prompt_ids, max_tokens,
                                       what=f"options {options}", **options)
        assert "".join(texts) == srv.tokenizer.decode(want, skip_special_tokens=True)
        assert want != reference(srv, prompt_ids, max_tokens), (
            "the options do not change this answer: the test could not tell")

    # -- seeded sampling ---------------------------------------------------------------

    @pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
    def test_seeded_top_k_top_p_sampling_is_reproducible(self, srv, chat):
        """temperature 1 with top_k 20 and top_p 0.95 is served (both
        families have the filtered top-k/top-p sampler); a seed reproduces
        the text and ids, and the answers are sampled: not the greedy one,
        and not the same for every seed (two seeds can give the same answer:
        the tiny checkpoints are peaked, and only a few draws decide which
        position commits; seen with LLaDA2's chat prompt, seeds 5 and 6)."""
        prompt = CHAT if chat else TEXT
        body = dict(temperature=1.0, top_p=0.95, max_tokens=40,
                    extra_body={"ignore_eos": True, "top_k": 20})
        first = run(srv, chat, prompt, False, seed=5, **body)
        again = run(srv, chat, prompt, False, seed=5, **body)
        others = [run(srv, chat, prompt, False, seed=seed, **body)[1] for seed in (6, 7)]
        greedy = reference(srv, first[0], 40, ignore_eos=True)
        assert first[1] == again[1] and first[2] == again[2] and len(first[1][0]) == 40
        assert first[1][0] != greedy
        assert any(other != first[1] for other in others), "every seed gave the same answer"

class TestSDAR(Served):
    """SDAR: Qwen3, blocks of 4, the quota schedule with remasking strategies."""

    FAMILY = SDAR


class TestLLaDA2(Served):
    """LLaDA2.x: BailingMoeV2 MoE, blocks of 32; LLaDA2.0 by default, LLaDA2.1
    with ``diffusion_editing_threshold``."""

    FAMILY = LLADA2
