"""Fast-dLLM v2 (block diffusion) through `vllm serve` and the official `openai` client.

One live server of the tiny v2 checkpoint (float32, eager, loopback); every
answer is compared, token id for token id (``return_token_ids``), with the
plain-PyTorch reference of the published loop (``vllm_dllm_plugin/
testing/reference/fast_dllm_v2.py``) on the prompt ids the server used, which
``tests/test_fast_dllm_v2.py`` shows the engine equals.  Covered: both
endpoints streaming and not, the block-by-block shape of a stream, requests
without sampling fields (greedy, the plugin's ``max_tokens`` default), the
400s of options and sampling fields the family cannot follow, seeded
sampling, and per-request options.

Every client call is bounded (``timeout`` of the client, ``max_retries=0``).
"""

from __future__ import annotations

import functools
import itertools

import openai
import pytest

import openai_run
from engine_utils import assert_reference
from openai_run import flat
from local_server import local_server

MODEL = "tiny-v2"
MAX_MODEL_LEN = 512        # a multiple of the block: not rounded by the plugin
BLOCK = 32                 # the checkpoint's bd_size
DEFAULT_MAX_TOKENS = 256   # docs/options.md: a request without max_tokens
TEXT = "hello world, the quick brown fox"
CHAT = [{"role": "user", "content": "Tell me a story about a fox."}]
VOCAB = 470                # prompt ids below the tokenizer's special tokens


@pytest.fixture(scope="module")
def server(v2_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("v2-server") / "serve.log"
    with local_server(v2_dir, MODEL, log_path=log, max_model_len=MAX_MODEL_LEN,
                      startup_timeout=400) as url:
        yield url, log


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0,
                         timeout=120)


@pytest.fixture(scope="module")
def tokenizer(v2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(v2_dir, trust_remote_code=False)


def reference(v2_ref, prompt_ids, max_tokens, eos_ids, *, ignore_eos=False, cache="prefix",
              threshold=0.9, sub_block_length=8) -> list[int]:
    """The published loop's tokens (float32 reference) with the engine's end ids."""
    return list(_reference(v2_ref, tuple(prompt_ids), max_tokens,
                           () if ignore_eos else tuple(sorted(eos_ids)), cache, threshold,
                           sub_block_length).tokens)


def assert_reference_tokens(got, v2_ref, prompt_ids, max_tokens, eos_ids, *, what,
                            ignore_eos=False, cache="prefix", threshold=0.9,
                            sub_block_length=8) -> list[int]:
    """``got`` equals :func:`reference`'s tokens, float64-arbitrated
    (``engine_utils.assert_reference``); returns the tokens it matched."""
    ends = () if ignore_eos else tuple(sorted(eos_ids))
    want = assert_reference(got, v2_ref, tuple(prompt_ids), what=what, reference=lambda model, p: (
        _reference(model, p, max_tokens, ends, cache, threshold, sub_block_length)))
    return list(want.tokens)


@functools.lru_cache(maxsize=None)
def _reference(v2_ref, prompt_ids, max_tokens, eos_ids, cache, threshold, sub_block_length):
    """Computed once per argument set (several tests ask for the same run)."""
    from vllm_dllm_plugin.testing.reference.fast_dllm_v2 import generate

    return generate(v2_ref, list(prompt_ids), max_tokens=max_tokens, threshold=threshold,
                    sub_block_length=sub_block_length, block_cache=cache == "dual",
                    eos_ids=eos_ids)


def chat_prompt_ids(tokenizer, messages) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


# -- one request, streamed or not, as (prompt ids, token ids per chunk, text per chunk) --

def run(client, chat, prompt, stream, **kwargs):
    """:func:`openai_run.run` on this module's model."""
    return openai_run.run(client, MODEL, chat, prompt, stream, **kwargs)



# -- both endpoints, streaming and not, against the reference ----------------------------

@pytest.mark.parametrize("max_tokens", [40, 100])
@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_stream_and_non_stream_equal_the_reference(client, tokenizer, v2_ref, v2_eos, chat,
                                                   max_tokens):
    """Streamed text == non-streamed text; token ids == the reference's for the
    prompt ids the server used (for chat: the checkpoint's ChatML template
    with the generation prompt, as transformers renders it)."""
    prompt = CHAT if chat else TEXT
    prompt_ids, ids, texts, finish, usage = run(client, chat, prompt, False, temperature=0,
                                                max_tokens=max_tokens)
    want_prompt = chat_prompt_ids(tokenizer, CHAT) if chat else tokenizer(TEXT).input_ids
    assert prompt_ids == want_prompt
    want = assert_reference_tokens(ids[0], v2_ref, prompt_ids, max_tokens, v2_eos,
                                   what="non-streamed answer")
    assert usage.completion_tokens == len(want)
    if want[-1] in v2_eos and len(want) < max_tokens:
        assert finish == "stop"
    else:
        assert finish == "length" and len(want) == max_tokens
    assert texts[0] == tokenizer.decode(want, skip_special_tokens=True)

    s_prompt_ids, s_ids, s_texts, s_finish, _ = run(client, chat, prompt, True, temperature=0,
                                                    max_tokens=max_tokens)
    assert s_prompt_ids == prompt_ids
    assert flat(s_ids) == want
    assert "".join(s_texts) == texts[0]
    assert s_finish == finish


def test_generation_is_long_enough_to_cover_several_blocks(client, v2_ref, v2_eos,
                                                          tokenizer):
    """The parity above is not vacuous: without ignore_eos the prompts used
    there generate past the first block (no early end token)."""
    for prompt_ids in (tokenizer(TEXT).input_ids, chat_prompt_ids(tokenizer, CHAT)):
        assert len(reference(v2_ref, prompt_ids, 100, v2_eos)) > BLOCK


# -- a stream follows the block structure ------------------------------------------------

def emission_boundaries(prompt_len: int, max_tokens: int) -> list[int]:
    """Cumulative generated-token counts at which the engine hands tokens over
    (block_canvas.py: tokens are emitted when final).  The first block holds
    the prompt tail, so it generates ``BLOCK - P % BLOCK`` tokens (decoded
    together), except when the prompt ends on a block boundary: then the
    prefill's argmax is the first token, alone.  After that, each commit
    forward gives the next block's first token alone, and the rest of that
    block (``BLOCK - 1`` tokens) arrives when decoded.  ``max_tokens`` cuts
    the last unit."""
    tail = prompt_len % BLOCK
    # (first unit, then the repeating pair)
    first, pair = ((1, (BLOCK - 1, 1)) if tail == 0 else (BLOCK - tail, (1, BLOCK - 1)))
    units = itertools.chain([first], itertools.cycle(pair))
    bounds = []
    for total in itertools.accumulate(units):
        bounds.append(min(total, max_tokens))
        if total >= max_tokens:
            return bounds


def test_emission_boundaries_rule():
    assert emission_boundaries(16, 100) == [16, 17, 48, 49, 80, 81, 100]
    assert emission_boundaries(31, 40) == [1, 2, 33, 34, 40]
    assert emission_boundaries(32, 70) == [1, 32, 33, 64, 65, 70]
    assert emission_boundaries(69, 100) == [27, 28, 59, 60, 91, 92, 100]


@pytest.mark.parametrize("chat, prompt_len", [(False, 16), (False, 31), (False, 32),
                                             (False, 45), (True, None)],
                         ids=["completions-16", "completions-31", "completions-32",
                              "completions-45", "chat"])
def test_stream_chunks_follow_the_blocks(client, v2_ref, v2_eos, chat, prompt_len):
    """With ignore_eos and max_tokens 100, the chunks' token counts are the
    engine's emissions: the first block's generated part, then each commit
    forward's token alone and each next block's 31 decoded tokens, cut at
    max_tokens.  Token ids (not text: the detokenizer may hold back bytes).
    Prompts of P tokens around the block boundary (token ids), and the chat
    prompt (P as the server reports it).

    vLLM's API process merges the deltas of two engine steps when it has not
    sent the first yet (``RequestOutputCollector``; seen on a server's first
    stream), so a chunk may span several emissions, but never part of one:
    every chunk boundary must be an emission boundary, and one of up to three
    attempts must show every emission as its own chunk."""
    max_tokens = 100
    prompt = CHAT if chat else [(7 * i + 3) % VOCAB for i in range(prompt_len)]
    attempts, want, want_bounds = [], None, None
    for _ in range(3):
        prompt_ids, chunks, _, finish, usage = run(
            client, chat, prompt, True, temperature=0, max_tokens=max_tokens,
            extra_body={"ignore_eos": True}, stream_options={"include_usage": True})
        if want is None:
            assert chat or len(prompt_ids) == prompt_len
            want = assert_reference_tokens(flat(chunks), v2_ref, prompt_ids, max_tokens, v2_eos,
                                           ignore_eos=True, what="streamed answer")
            want_bounds = emission_boundaries(len(prompt_ids), max_tokens)
        assert flat(chunks) == want
        assert finish == "length" and usage.completion_tokens == max_tokens
        assert all(chunks), "a chunk without tokens"
        bounds = list(itertools.accumulate(len(c) for c in chunks))
        assert set(bounds) <= set(want_bounds), (
            f"a chunk ends inside an emission: chunks {[len(c) for c in chunks]}, "
            f"emission boundaries {want_bounds}")
        attempts.append([len(c) for c in chunks])
        if bounds == want_bounds:
            break
    else:
        pytest.fail(f"emissions always merged: chunks {attempts}, boundaries {want_bounds}")


# -- requests without sampling fields --------------------------------------------------

@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_request_without_sampling_fields_is_greedy_with_the_default_canvas(
        client, v2_ref, v2_eos, chat):
    """No temperature, no max_tokens: answered (generation_config.json's
    repetition_penalty 1.05, or its top_k 20 with temperature 0.7, would be a
    400), greedy (its temperature 0.7 is not applied: the explicit
    temperature-0 answer, the reference's), and the canvas is the plugin's
    default of 256 tokens (docs/options.md)."""
    prompt = CHAT if chat else TEXT
    prompt_ids, ids, texts, finish, usage = run(client, chat, prompt, False)
    assert_reference_tokens(ids[0], v2_ref, prompt_ids, DEFAULT_MAX_TOKENS, v2_eos,
                            what="request without sampling fields")
    explicit = run(client, chat, prompt, False, temperature=0, max_tokens=DEFAULT_MAX_TOKENS)
    assert explicit[1] == ids and explicit[2] == texts
    # the canvas itself: with ignore_eos exactly the default
    _, ids, _, finish, usage = run(client, chat, prompt, False,
                                   extra_body={"ignore_eos": True})
    assert usage.completion_tokens == DEFAULT_MAX_TOKENS and finish == "length"
    assert_reference_tokens(ids[0], v2_ref, prompt_ids, DEFAULT_MAX_TOKENS, v2_eos,
                            ignore_eos=True, what="default canvas")


def test_long_prompt_without_max_tokens_gets_the_room_left(client, v2_ref, v2_eos):
    """docs/options.md: only the default is shortened, to the room the prompt
    leaves (here 512 - 420 = 92 < 256), never a 400 about a max_tokens nobody
    sent."""
    prompt = [(11 * i + 5) % VOCAB for i in range(420)]
    prompt_ids, ids, _, finish, usage = run(client, False, prompt, False,
                                            extra_body={"ignore_eos": True})
    assert usage.prompt_tokens == 420
    assert usage.completion_tokens == MAX_MODEL_LEN - 420 and finish == "length"
    assert_reference_tokens(ids[0], v2_ref, prompt_ids, MAX_MODEL_LEN - 420, v2_eos,
                            ignore_eos=True, what="long prompt")


# -- what the family cannot follow: a 400 naming the field -----------------------------

BAD_OPTIONS = [
    ({"diffusion_cache": "none"}, "diffusion_cache"),
    ({"diffusion_block_length": 16}, "diffusion_block_length"),
    ({"diffusion_factor": 1.0}, "diffusion_factor"),
    ({"diffusion_steps_per_block": 4}, "diffusion_steps_per_block"),
    ({"diffusion_sub_block_length": 5}, "diffusion_sub_block_length"),
]


def bad_request(client, chat, stream, **body):
    """:func:`openai_run.bad_request` on this module's model and prompts."""
    return openai_run.bad_request(client, MODEL, chat, stream, default_text=TEXT,
                                  default_messages=CHAT, **body)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize("xargs, field", BAD_OPTIONS, ids=[f for _, f in BAD_OPTIONS])
def test_options_the_family_cannot_follow_are_400s(client, xargs, field, chat, stream):
    param, message = bad_request(client, chat, stream, temperature=0,
                                 extra_body={"vllm_xargs": xargs})
    assert param == field and message.startswith(f"{field}: "), message


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize("field, value", [("top_k", 20), ("min_p", 0.1)])
def test_sampling_fields_the_sampler_lacks_are_400s(client, chat, stream, field, value):
    """The published sampler is temperature + top-p: with temperature > 0,
    top_k and min_p (generation_config.json's top_k 20, say) are 400s."""
    param, message = bad_request(client, chat, stream, temperature=0.7, seed=1,
                                 extra_body={field: value})
    assert param == field and message.startswith(f"{field}: "), message


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_sampling_is_served_and_reproducible_with_a_seed(client, chat):
    """temperature 0.7 with top_p 0.8 (the checkpoint's chat settings, minus
    top_k) is served; a seed reproduces it; the sampled answer is not the
    greedy one."""
    prompt = CHAT if chat else TEXT
    body = dict(temperature=0.7, top_p=0.8, max_tokens=64, extra_body={"ignore_eos": True})
    first = run(client, chat, prompt, False, seed=5, **body)
    again = run(client, chat, prompt, False, seed=5, **body)
    other = run(client, chat, prompt, False, seed=6, **body)
    greedy = run(client, chat, prompt, False, temperature=0, max_tokens=64,
                 extra_body={"ignore_eos": True})
    assert first[1] == again[1] and len(first[1][0]) == 64
    assert first[1] != greedy[1] and first[1] != other[1]


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_mask_token_text_in_the_prompt_is_a_400(client, tokenizer, chat):
    mask_id = tokenizer.convert_tokens_to_ids("|<MASK>|")
    text = "the quick |<MASK>| fox"
    assert mask_id in tokenizer(text).input_ids  # the text really is the token
    if chat:
        param, message = bad_request(client, True, False,
                                     messages=[{"role": "user", "content": text}])
        assert param == "messages"
    else:
        param, message = bad_request(client, False, False, prompt=text)
        assert param == "prompt"
    assert f"mask token (id {mask_id})" in message


def test_the_server_keeps_serving_after_the_400s(server, client, v2_ref, v2_eos):
    """After every 400 above (pytest keeps file order): a normal request is
    still the reference's answer, and the log holds no traceback."""
    prompt = [(5 * i + 1) % VOCAB for i in range(20)]
    prompt_ids, ids, _, _, _ = run(client, False, prompt, False, temperature=0, max_tokens=50)
    assert_reference_tokens(ids[0], v2_ref, prompt_ids, 50, v2_eos, what="after the 400s")
    log = server[1].read_text()
    assert "Traceback" not in log and "Internal Server Error" not in log


# -- per-request options are honoured ----------------------------------------------------

OPTIONS = {"diffusion_cache": "dual", "diffusion_threshold": 0.7,
           "diffusion_sub_block_length": 4}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_per_request_options_are_honoured(client, v2_ref, v2_eos, tokenizer, chat, stream):
    """dual cache + threshold 0.7 + sub-blocks of 4 equals the reference with
    those options, and that answer differs from the defaults' (so ignoring
    the options would fail)."""
    prompt = CHAT if chat else TEXT
    max_tokens = 100
    prompt_ids, ids, texts, _, _ = run(client, chat, prompt, stream, temperature=0,
                                       max_tokens=max_tokens,
                                       extra_body={"vllm_xargs": OPTIONS})
    want = assert_reference_tokens(flat(ids), v2_ref, prompt_ids, max_tokens, v2_eos,
                                   cache="dual", threshold=0.7, sub_block_length=4,
                                   what="per-request options")
    assert "".join(texts) == tokenizer.decode(want, skip_special_tokens=True)
    assert want != reference(v2_ref, prompt_ids, max_tokens, v2_eos), (
        "the options do not change this answer: the test could not tell")


# -- prefix caching ----------------------------------------------------------------------

def _prefix_cache_counters(url: str) -> dict[str, float]:
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{url}/metrics", timeout=10).text
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total")}


def test_shared_prefix_hits_show_in_vllms_prefix_cache_metrics(server, client, v2_ref, v2_eos):
    """`vllm serve` keeps vLLM's prefix caching on for block diffusion: a
    request sharing a 256-token prefix (whole blocks, whole KV pages) with an
    earlier one hits all of it, vLLM's own counters say so, and its answer is
    still the published loop's."""
    import time

    shared = [(7 * i + 3) % VOCAB for i in range(256)]
    prompts = [shared + [(11 * i + 5) % VOCAB for i in range(n)] for n in (10, 21)]
    prompt_ids, ids, _, _, _ = run(client, False, prompts[0], False, temperature=0,
                                   max_tokens=32)
    assert_reference_tokens(ids[0], v2_ref, prompt_ids, 32, v2_eos, what="the first")
    before = _prefix_cache_counters(server[0])
    prompt_ids, ids, _, _, _ = run(client, False, prompts[1], False, temperature=0,
                                   max_tokens=32)
    assert_reference_tokens(ids[0], v2_ref, prompt_ids, 32, v2_eos, what="after the hit")
    deadline = time.time() + 10
    while True:   # the step's stats reach the API process just after the reply
        after = _prefix_cache_counters(server[0])
        hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
        if hits or time.time() > deadline:
            break
        time.sleep(0.2)
    assert hits == 256
    assert (after["vllm:prefix_cache_queries_total"]
            - before["vllm:prefix_cache_queries_total"]) >= len(prompts[1]) - BLOCK
