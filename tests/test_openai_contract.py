"""The OpenAI server gives a client exactly what it asked for, or a 400 naming
the field, as the official `openai` client sees it.

One `vllm serve` of the embedded model with `make serve`'s context (1024),
and the same checkpoint through the `LLM` API in this process: every server
answer is compared with the `LLM` API's tokens for the same prompt ids and
options.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from engine_utils import make_llm, sampling
from local_server import local_server

MAX_MODEL_LEN = 1024  # as `make serve`
MODEL = "llada-arith"


@pytest.fixture(scope="module")
def embedded_dir():
    from vllm_dllm_plugin import EMBEDDED_MODEL

    return EMBEDDED_MODEL


@pytest.fixture(scope="module")
def server(embedded_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("contract") / "serve.log"
    with local_server(embedded_dir, MODEL, log_path=log, max_model_len=MAX_MODEL_LEN) as url:
        yield url, log


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0,
                         timeout=300)


@pytest.fixture(scope="module")
def llm(embedded_dir):
    return make_llm(embedded_dir, max_model_len=MAX_MODEL_LEN)


@pytest.fixture(scope="module")
def mask_id(embedded_dir):
    return json.loads((embedded_dir / "config.json").read_text())["mask_token_id"]


def llm_tokens(llm, prompt_ids, max_tokens, ignore_eos=False, **options):
    params = sampling(max_tokens, **options)
    params.ignore_eos = ignore_eos
    out = llm.generate([{"prompt_token_ids": prompt_ids}], params, use_tqdm=False)[0]
    return list(out.outputs[0].token_ids)


def complete(client, prompt, **kwargs):
    """A completion with its prompt and output token ids."""
    extra = kwargs.pop("extra_body", {})
    r = client.completions.create(model=MODEL, prompt=prompt, temperature=0,
                                  extra_body={"return_token_ids": True, **extra}, **kwargs)
    choice = r.choices[0]
    return r, choice.model_extra["prompt_token_ids"], choice.model_extra["token_ids"]


# -- max_tokens is the canvas --------------------------------------------------

@pytest.mark.parametrize("max_tokens", [512, 1000])
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_long_generation_equals_llm_api(client, llm, max_tokens, cache):
    """Past the old 256 cap: exactly max_tokens tokens with ignore_eos, the same
    tokens as the LLM API, in every cache mode."""
    xargs = {"diffusion_cache": cache}
    r, prompt_ids, tokens = complete(client, "38+57=", max_tokens=max_tokens,
                                     extra_body={"ignore_eos": True, "vllm_xargs": xargs})
    assert r.usage.completion_tokens == max_tokens and r.choices[0].finish_reason == "length"
    assert tokens == llm_tokens(llm, prompt_ids, max_tokens, ignore_eos=True, cache=cache)


def test_long_chat_stream_arrives_block_by_block(client):
    """Streaming a 960-token canvas (the chat template takes 33 of the 1024):
    one chunk per 32-token block, the same text as without streaming, and
    usage counts the whole canvas."""
    body = dict(model=MODEL, messages=[{"role": "user", "content": "sort 52817"}],
                temperature=0, max_tokens=960, extra_body={"ignore_eos": True})
    full = client.chat.completions.create(**body)
    assert full.usage.completion_tokens == 960
    chunks = list(client.chat.completions.create(
        **body, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    # then one chunk per block (a block of special tokens alone carries ""),
    # then the usage chunk
    deltas = [c.choices[0].delta.content for c in chunks[1:] if c.choices]
    assert len(deltas) == 30
    assert "".join(deltas) == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 960


@pytest.mark.parametrize("chat", [False, True])
def test_without_max_tokens_the_canvas_is_256(client, chat):
    """Not /v1/completions' 16 (which turned "38+57=" into "132")."""
    if chat:
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "38+57="}], temperature=0,
            extra_body={"ignore_eos": True})
    else:
        r = client.completions.create(model=MODEL, prompt="38+57=", temperature=0,
                                      extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 256


def test_without_max_tokens_the_answer_is_the_long_canvas_one(client, llm):
    r, prompt_ids, tokens = complete(client, "38+57=")
    assert tokens == llm_tokens(llm, prompt_ids, 256)
    assert r.choices[0].text == "95"


def test_long_prompt_without_max_tokens_gets_the_room_left(client):
    """The default never produces a 400 about a max_tokens nobody sent."""
    prompt = "1+1=" * 240  # 960 tokens + BOS
    r = client.completions.create(model=MODEL, prompt=prompt, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.usage.prompt_tokens + r.usage.completion_tokens == MAX_MODEL_LEN


@pytest.mark.parametrize("chat", [False, True])
def test_max_tokens_beyond_context_is_a_400_naming_it(client, chat):
    body = {"messages": [{"role": "user", "content": "1+1="}]} if chat else {
        "prompt": "1+1=" * 10}
    param, message = _bad_request(client, chat=chat, **body, extra_body={"max_tokens": 1000})
    assert param == "max_tokens"
    assert "exceeds the model's maximum context length (1024)" in message


# -- bad input: a 400 naming the field, before any work ---------------------------

def _bad_request(client, chat=False, stream=False, **body):
    """The 400 for ``body``; returns (param, the server's message)."""
    with pytest.raises(openai.BadRequestError) as e:
        if chat:
            body.setdefault("messages", [{"role": "user", "content": "1+1="}])
            client.chat.completions.create(model=MODEL, max_tokens=16, stream=stream, **body)
        else:
            body.setdefault("prompt", "1+1=")
            client.completions.create(model=MODEL, max_tokens=16, stream=stream, **body)
    return e.value.param, e.value.body["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_with_the_mask_token_is_a_400(client, mask_id, stream):
    param, message = _bad_request(client, stream=stream, prompt=[5, mask_id, 7])
    assert param == "prompt" and f"mask token (id {mask_id})" in message


def test_one_masked_prompt_in_a_list_is_a_400_naming_it(client, mask_id):
    param, message = _bad_request(client, prompt=[[5, 6], [5, mask_id, 7]])
    assert param == "prompt" and "item 1 contains the mask token" in message


def test_mask_token_text_in_a_chat_message_is_a_400(client):
    param, message = _bad_request(client, chat=True,
                                  messages=[{"role": "user", "content": "1+<|mdm_mask|>="}])
    assert param == "messages" and "mask token" in message


@pytest.mark.parametrize("option", ["diffusion_block_length", "diffusion_threshold",
                                    "diffusion_factor", "diffusion_steps_per_block"])
@pytest.mark.parametrize("value", [True, None])
def test_true_or_null_option_is_a_400_naming_it(client, option, value):
    param, message = _bad_request(client, extra_body={"vllm_xargs": {option: value}})
    assert param == option
    assert message.startswith(f"{option}: must be") and "got" in message


@pytest.mark.parametrize("field, value", [
    ("best_of", 2), ("guided_json", {"type": "object"}), ("guided_regex", "[0-9]+"),
    ("guided_choice", ["a", "b"]), ("guided_grammar", "root ::= 'a'"),
    ("use_beam_search", True), ("prompt_logprobs", 1),
    ("presence_penalty", 0.5), ("logit_bias", {"5": 1.0})])
@pytest.mark.parametrize("chat", [False, True])
def test_unsupported_field_is_a_400_naming_it(client, field, value, chat):
    param, message = _bad_request(client, chat=chat, extra_body={field: value})
    assert param == field and message.startswith(f"{field}: "), message


def test_bad_option_in_a_stream_is_a_400_not_an_error_event(server):
    import requests

    r = requests.post(f"{server[0]}/v1/completions", timeout=60, json={
        "model": MODEL, "prompt": "1+1=", "max_tokens": 16, "stream": True,
        "vllm_xargs": {"diffusion_cache": "full"}})
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": "diffusion_cache: must be one of none, prefix, dual, got 'full'",
        "type": "BadRequestError", "param": "diffusion_cache", "code": 400}


def test_the_server_logged_no_traceback(server, client):
    """Every bad request above was answered without a stack trace in the log
    (runs last in this module: pytest keeps file order)."""
    client.completions.create(model=MODEL, prompt="1+1=", max_tokens=8)
    log = server[1].read_text()
    assert "Traceback" not in log and "Internal Server Error" not in log


# -- start-up --------------------------------------------------------------------

def test_typo_in_additional_config_stops_start_up(embedded_dir, tmp_path):
    """`{"diffusion_treshold": 0.5}` must not start a server with the defaults."""
    cmd = [str(Path(sys.executable).with_name("vllm")), "serve", str(embedded_dir),
           "--port", "0", "--additional-config", json.dumps({"diffusion_treshold": 0.5})]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode != 0
    log = out.stdout + out.stderr
    assert "Invalid --additional-config: diffusion_treshold: unknown diffusion option; " \
           "did you mean diffusion_threshold?" in log


# -- every documented option, as the openai client sends it -------------------------

DOCUMENTED_OPTIONS = [
    {"diffusion_cache": "none"},
    {"diffusion_cache": "prefix", "diffusion_threshold": 0.7},
    {"diffusion_cache": "dual", "diffusion_factor": 1.0},
    {"diffusion_cache": "prefix", "diffusion_block_length": 16, "diffusion_steps_per_block": 8},
    {"diffusion_cache": "dual", "diffusion_block_length": 64, "diffusion_threshold": 0.95},
]


def _llm_options(xargs):
    return {k.removeprefix("diffusion_"): v for k, v in xargs.items()}


@pytest.mark.parametrize("xargs", DOCUMENTED_OPTIONS, ids=lambda x: "-".join(
    f"{k.removeprefix('diffusion_')}={v}" for k, v in x.items()))
@pytest.mark.parametrize("chat", [False, True])
def test_documented_options_equal_the_llm_api_streaming_or_not(client, llm, xargs, chat):
    """The same tokens as the LLM API for the prompt ids the server used, and
    the same text when streamed (one chunk per block)."""
    extra = {"vllm_xargs": xargs, "return_token_ids": True, "ignore_eos": True}
    if chat:
        body = dict(model=MODEL, messages=[{"role": "user", "content": "sort 90618"}],
                    temperature=0, max_tokens=96, extra_body=extra)
        r = client.chat.completions.create(**body)
        text = r.choices[0].message.content
        prompt_ids, tokens = r.model_extra["prompt_token_ids"], r.choices[0].model_extra[
            "token_ids"]
        streamed = [c.choices[0].delta.content or "" for c in
                    client.chat.completions.create(**body, stream=True) if c.choices]
    else:
        body = dict(model=MODEL, prompt="47+86=", temperature=0, max_tokens=96,
                    extra_body=extra)
        r = client.completions.create(**body)
        text = r.choices[0].text
        prompt_ids, tokens = (r.choices[0].model_extra["prompt_token_ids"],
                              r.choices[0].model_extra["token_ids"])
        streamed = [c.choices[0].text for c in client.completions.create(**body, stream=True)
                    if c.choices]
    assert tokens == llm_tokens(llm, prompt_ids, 96, ignore_eos=True, **_llm_options(xargs))
    assert "".join(streamed) == text
    block = xargs.get("diffusion_block_length", 32)
    assert len([s for s in streamed if s is not None]) >= 96 // block


def test_seeded_sampling_n_and_stop_through_the_openai_client(client):
    """temperature/seed reproduce, n gives n choices, a stop string cuts."""
    body = dict(model=MODEL, prompt="sort 52817", max_tokens=32, temperature=1.0, seed=11,
                n=2)
    first, again = (client.completions.create(**body) for _ in range(2))
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert len(first.choices) == 2
    greedy = client.completions.create(model=MODEL, prompt="sort 52817", max_tokens=32,
                                       temperature=0)
    assert greedy.choices[0].text == "12578"
    cut = client.completions.create(model=MODEL, prompt="sort 52817", max_tokens=32,
                                    temperature=0, stop=["5"])
    assert cut.choices[0].text == "12" and cut.choices[0].finish_reason == "stop"


def test_tool_choice_without_tool_flags_is_vllms_400(client):
    """This server runs without ``--enable-auto-tool-choice --tool-call-parser``
    (tests/test_structured_server.py serves with them): ``"auto"`` is vLLM's
    400 saying to pass both; a named function and ``"required"`` are vLLM's
    400 asking for ``--tool-call-parser``; the server keeps serving."""
    from test_structured_server import MESSAGES, TOOLS

    for tool_choice, needs in [
            ("auto", "--enable-auto-tool-choice and --tool-call-parser"),
            ({"type": "function", "function": {"name": "add"}}, "--tool-call-parser"),
            ("required", "--tool-call-parser")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0,
                                           max_tokens=128, tools=TOOLS, tool_choice=tool_choice)
        assert e.value.status_code == 400
        assert needs in e.value.body["message"], e.value.body
    assert client.completions.create(model=MODEL, prompt="38+57=", max_tokens=8).choices[0].text
