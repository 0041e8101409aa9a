"""`vllm serve` on a tiny LLaDA checkpoint: OpenAI endpoints, streaming, errors."""

import json
import time

import pytest
import requests

from engine_utils import assert_reference, reference_run
from local_server import local_server

BLOCK = 8


@pytest.fixture(scope="module")
def server(llada_dir, tmp_path_factory):
    with local_server(llada_dir, "tiny-llada",
                      log_path=tmp_path_factory.mktemp("server") / "serve.log") as base:
        yield base


def post(server, path, body, stream=False, model="tiny-llada"):
    body = {"model": model, "temperature": 0, **body}
    return requests.post(f"{server}{path}", json=body, stream=stream, timeout=120)


def stream_deltas(response, chat: bool) -> list[str]:
    deltas = []
    for line in response.iter_lines(decode_unicode=True):
        if not line or not line.startswith("data: ") or line == "data: [DONE]":
            continue
        choice = json.loads(line[len("data: "):])["choices"][0]
        text = choice["delta"].get("content") if chat else choice["text"]
        if text:
            deltas.append(text)
    return deltas


def test_completion_tokens_equal_reference(server, llada_ref, llada_eos):
    prompt = [5, 17, 300, 42, 99, 7, 250]
    r = post(server, "/v1/completions", {
        "prompt": prompt, "max_tokens": 32, "return_token_ids": True,
        "vllm_xargs": {"diffusion_block_length": BLOCK, "diffusion_cache": "dual"}})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    want = assert_reference(choice["token_ids"], llada_ref, prompt, what="completion",
                            max_tokens=32, eos_ids=llada_eos, cache="dual", block_length=BLOCK)
    assert r.json()["usage"]["completion_tokens"] == len(want.tokens)


def test_chat_completion_uses_chat_template(server):
    r = post(server, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 16, "vllm_xargs": {"diffusion_block_length": BLOCK}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    # the Llama-3 style template: one <|startoftext|> + headers around the turn
    assert body["usage"]["prompt_tokens"] > len("Tell me a story.".split()) + 4


@pytest.mark.parametrize("chat", [False, True])
def test_streaming_delivers_one_block_per_chunk(server, chat):
    path = "/v1/chat/completions" if chat else "/v1/completions"
    prompt = ({"messages": [{"role": "user", "content": "Count with me."}]} if chat
              else {"prompt": "Once upon a time"})
    body = {**prompt, "max_tokens": 3 * BLOCK, "ignore_eos": True,
            "vllm_xargs": {"diffusion_block_length": BLOCK, "diffusion_threshold": 0.7}}
    full = post(server, path, body).json()["choices"][0]
    full_text = full["message"]["content"] if chat else full["text"]
    deltas = stream_deltas(post(server, path, {**body, "stream": True}, stream=True), chat)
    assert len(deltas) == 3, deltas
    assert "".join(deltas) == full_text


@pytest.mark.parametrize("xargs, field", [
    ({"diffusion_threshold": 1.5}, "diffusion_threshold"),
    ({"diffusion_cache": "full"}, "diffusion_cache"),
    ({"diffusion_block_length": 0}, "diffusion_block_length"),
    ({"diffusion_threshold": 0.9, "diffusion_steps_per_block": 4}, "diffusion_steps_per_block"),
])
def test_bad_option_is_a_400_naming_it(server, xargs, field):
    r = post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 8, "vllm_xargs": xargs})
    assert r.status_code == 400
    assert field in r.json()["error"]["message"]
    # and the server keeps serving
    ok = post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 8})
    assert ok.status_code == 200


def test_cache_mode_per_request_in_one_server(server, llada_ref, llada_eos):
    """Concurrent requests with different cache modes and rules, one server."""
    from concurrent.futures import ThreadPoolExecutor

    settings = [
        {"cache": "none", "steps_per_block": BLOCK},
        {"cache": "prefix", "threshold": 0.9},
        {"cache": "dual", "threshold": 0.7},
        {"cache": "prefix", "factor": 1.0},
        {"cache": "dual", "steps_per_block": BLOCK // 2},
        {"cache": "none", "threshold": 0.9},
    ]
    prompts = [[11 + i, 40, 7 * i + 3, 200, 5][: 2 + i % 4] for i in range(len(settings))]

    def complete(i):
        xargs = {f"diffusion_{k}": v for k, v in settings[i].items()}
        r = post(server, "/v1/completions", {
            "prompt": prompts[i], "max_tokens": 24, "return_token_ids": True,
            "vllm_xargs": {"diffusion_block_length": BLOCK, **xargs}})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["token_ids"]

    with ThreadPoolExecutor(len(settings)) as pool:
        got = list(pool.map(complete, range(len(settings))))
    for i, setting in enumerate(settings):
        assert_reference(got[i], llada_ref, prompts[i], what=f"request {i} {setting}",
                         max_tokens=24, eos_ids=llada_eos, block_length=BLOCK, **setting)


@pytest.mark.parametrize("body, field", [
    ({"prompt_logprobs": 1}, "prompt_logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"repetition_penalty": 1.2}, "repetition_penalty"),
    ({"min_tokens": 20}, "min_tokens"),   # over max_tokens: vLLM's own 400
    ({"logit_bias": {"5": 3.0}}, "logit_bias"),
    ({"temperature": 0.7, "top_p": 0.9}, "top_p"),
])
def test_unsupported_feature_is_a_400_naming_it(server, body, field):
    r = post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 8, **body})
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["message"]


def test_seeded_sampling_is_reproducible(server):
    """The same seed gives the same sample, another seed another sample, and
    temperature 1 really samples (its answer is not the greedy one)."""
    body = {"prompt": "Once", "max_tokens": 16, "temperature": 1.0, "seed": 1234,
            "return_token_ids": True, "vllm_xargs": {"diffusion_block_length": BLOCK}}

    def sample(**overrides) -> list[int]:
        r = post(server, "/v1/completions", {**body, **overrides})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["token_ids"]

    first = sample()
    assert sample() == first
    assert sample(seed=99) != first
    assert sample(temperature=0) != first


def test_dream_instruct_chat_template(dream_dir, tmp_path):
    """Dream's hub tokenizer (remote code on the hub) and its chat template."""
    from transformers import AutoTokenizer

    import vllm_dllm_plugin

    vllm_dllm_plugin.register()
    messages = [{"role": "user", "content": "Name three colours."}]
    tokenizer = AutoTokenizer.from_pretrained(dream_dir)
    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    prompt_ids = prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids
    with local_server(dream_dir, "tiny-dream", log_path=tmp_path / "serve.log") as base:
        body = {"messages": messages, "max_tokens": 16,
                "vllm_xargs": {"diffusion_block_length": BLOCK, "diffusion_cache": "dual"}}
        r = post(base, "/v1/chat/completions", body, model="tiny-dream")
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == len(prompt_ids)
        deltas = stream_deltas(post(base, "/v1/chat/completions", {**body, "stream": True},
                                    stream=True, model="tiny-dream"), chat=True)
        assert "".join(deltas) == r.json()["choices"][0]["message"]["content"]


def test_default_generation_length_is_bounded(server):
    """Chat requests without max_tokens: 256, not the rest of the context."""
    r = post(server, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "hi"}], "ignore_eos": True,
        "vllm_xargs": {"diffusion_block_length": 64}})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 256


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "hi there"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
])
def test_prompt_plus_max_tokens_beyond_context_is_a_400(server, path, body):
    """max-model-len is 512: the canvas cannot be shortened, so no clamping."""
    r = post(server, path, {**body, "max_tokens": 512})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "max_tokens" in message and "512" in message
    assert post(server, path, {**body, "max_tokens": 8}).status_code == 200


def _diffusion_metrics(server) -> dict:
    """``vllm:diffusion_*`` samples of /metrics: name{cache_mode} -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{server}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("vllm:diffusion_"):
                key = s.name + "".join(f"/{s.labels[k]}" for k in ("cache_mode", "le")
                                       if k in s.labels)
                out[key] = s.value
    return out


def test_metrics_count_what_the_reference_does(server, llada_ref, llada_eos):
    """Deltas of every vllm:diffusion_* series over three requests equal the
    reference's forwards, commits per forward and blocks entered."""
    import collections
    import math

    settings = [{"cache": "none", "threshold": 0.7}, {"cache": "prefix", "threshold": 0.9},
                {"cache": "dual", "steps_per_block": BLOCK // 2}]
    prompts = [[5, 9, 13], [40, 41], [7, 300, 8, 21]]
    expected = collections.Counter()
    histogram = collections.Counter()
    for prompt, setting in zip(prompts, settings):
        ref = reference_run(llada_ref, prompt, max_tokens=24, eos_ids=llada_eos,
                            block_length=BLOCK, **setting)
        expected["vllm:diffusion_denoising_steps_total"] += ref.forwards
        expected["vllm:diffusion_committed_tokens_total"] += sum(ref.commits)
        blocks = math.ceil(len(ref.tokens) / BLOCK)
        expected["vllm:diffusion_refresh_forwards_total"] += (
            ref.forwards if setting["cache"] == "none" else blocks)
        expected[f"vllm:diffusion_requests_total/{setting['cache']}"] += 1
        histogram.update(ref.commits)
    expected["vllm:diffusion_tokens_per_step_count"] = sum(histogram.values())
    expected["vllm:diffusion_tokens_per_step_sum"] = sum(k * v for k, v in histogram.items())
    expected["vllm:diffusion_tokens_per_step_bucket/2.0"] = histogram[1] + histogram[2]

    before = _diffusion_metrics(server)
    for prompt, setting in zip(prompts, settings):
        xargs = {f"diffusion_{k}": v for k, v in setting.items()}
        r = post(server, "/v1/completions", {
            "prompt": prompt, "max_tokens": 24,
            "vllm_xargs": {"diffusion_block_length": BLOCK, **xargs}})
        assert r.status_code == 200, r.text
    deadline = time.time() + 10
    while True:  # the last step's stats reach the API process just after the reply
        after = _diffusion_metrics(server)
        got = {k: after.get(k, 0) - before.get(k, 0) for k in expected}
        if got == dict(expected) or time.time() > deadline:
            break
        time.sleep(0.2)
    assert got == dict(expected)
