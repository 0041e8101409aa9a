"""Structured output, tool calls and logprobs as a client sees them: `vllm
serve` of the embedded model (`make serve`'s context of 1024, eager) and the
official `openai` client, on /v1/completions and /v1/chat/completions,
streamed and not, on one module-wide server started with the flags below
(the 400s of a server without tool flags are checked on
tests/test_openai_contract.py's server).

Server flags, and why:

* ``--structured-outputs-config '{"backend": "xgrammar",
  "disable_any_whitespace": true}'``. The arithmetic model knows digits, not
  JSON: with the default any-whitespace JSON grammars it fills the places
  where whitespace is allowed with ``\\r\\n\\t`` runs and several schemas ran
  out of 64 tokens (finish ``length``). Without whitespace every bounded schema
  below completes in under 64 tokens. vLLM 0.32 takes
  ``disable_any_whitespace`` only with an explicit xgrammar or guidance
  backend (with ``auto`` start-up fails), hence ``"backend": "xgrammar"``,
  which is what ``auto`` picks for these requests anyway.
* ``--enable-auto-tool-choice --tool-call-parser pythonic``. In vLLM 0.32
  a named ``tool_choice`` or ``"required"`` is a 400 unless the server has a
  tool parser, and the parser is loaded only with ``--enable-auto-tool-choice``
  (``test_tool_choice_without_tool_flags_is_vllms_400`` shows both 400s on a
  second, bare server). ``pythonic`` because it needs no special tokens
  (``llama3_json`` refuses this byte-level tokenizer, which has no
  ``<|python_tag|>``) and, having no xgrammar structural tag (``hermes`` and
  ``llama3_json`` have one, and turn named and required tool choice into a
  structural tag), keeps vLLM's JSON-schema path for named and required
  tool choice: the arguments are decoded under the function's parameters
  schema (``"required"``: an array of ``{"name", "parameters"}``).

``response_format: json_object`` is asserted on "38+57=", where the model
closes the object at once (``{}``): on most prompts it opens a key and fills it
with digits until ``max_tokens``. The JSON-schema tests use bounded schemas
(enums, booleans, ranged integers, strings with a pattern), which the model
does complete.

All requests are greedy (``temperature=0``), so every output here is
deterministic for this checkpoint.
"""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from local_server import local_server
from openai_run import flat, run

MAX_MODEL_LEN = 1024  # as `make serve`
MODEL = "llada-arith"
SERVE_ARGS = ["--structured-outputs-config",
              json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
              "--enable-auto-tool-choice", "--tool-call-parser", "pythonic"]

PROMPT = "38+57="
MESSAGES = [{"role": "user", "content": PROMPT}]

SCHEMA = {
    "type": "object",
    "properties": {
        "op": {"type": "string", "enum": ["add", "sort"]},
        "answer": {"type": "string", "pattern": "^[0-9]{1,4}$"},
        "ok": {"type": "boolean"},
    },
    "required": ["op", "answer", "ok"],
    "additionalProperties": False,
}
REGEX = "[0-9]+"
CHOICES = ["95", "132", "neither"]
GRAMMAR = 'root ::= ("yes" | "no") " " [0-9] [0-9]?'   # EBNF as xgrammar takes it
GRAMMAR_RE = "(yes|no) [0-9][0-9]?"

TOOLS = [
    {"type": "function", "function": {
        "name": "add", "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {
            "a": {"type": "integer", "minimum": 0, "maximum": 99},
            "b": {"type": "integer", "minimum": 0, "maximum": 99}},
            "required": ["a", "b"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "sort_digits", "description": "Sort the digits of a number.",
        "parameters": {"type": "object", "properties": {
            "digits": {"type": "string", "pattern": "^[0-9]{1,6}$"},
            "descending": {"type": "boolean"}},
            "required": ["digits", "descending"], "additionalProperties": False}}},
]
TOOL_SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


# -- the servers ---------------------------------------------------------------

@pytest.fixture(scope="module")
def embedded_dir():
    from vllm_dllm_plugin import EMBEDDED_MODEL

    return EMBEDDED_MODEL


@pytest.fixture(scope="module")
def server(embedded_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("structured") / "serve.log"
    with local_server(embedded_dir, MODEL, log_path=log, max_model_len=MAX_MODEL_LEN,
                      extra_args=SERVE_ARGS) as url:
        yield url, log


@pytest.fixture(scope="module")
def client(server):
    return _client_of(server[0])


def _client_of(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)


# -- constrained output: valid, and streamed as the committed prefix grows -----

def _json_object(text):
    assert isinstance(json.loads(text), dict), text


def _json_schema(text):
    jsonschema.validate(json.loads(text), SCHEMA)


SUM_SCHEMA = {"type": "object", "properties": {
    "answer": {"type": "integer", "minimum": 0, "maximum": 999}},
    "required": ["answer"], "additionalProperties": False}
# xgrammar's structural tag: "<sum>", JSON under SUM_SCHEMA, "</sum>" (xgrammar
# compiles the JSON inside a tag with its own whitespace rule: the server's
# disable_any_whitespace does not reach it)
STRUCTURAL_TAG = json.dumps({"type": "structural_tag", "format": {
    "type": "tag", "begin": "<sum>", "end": "</sum>",
    "content": {"type": "json_schema", "json_schema": SUM_SCHEMA}}})


def _structural_tag(text):
    match = re.fullmatch("<sum>(.*)</sum>", text, re.DOTALL)
    assert match, text
    jsonschema.validate(json.loads(match[1]), SUM_SCHEMA)


CONSTRAINTS = {
    # kind: (request fields for chat, request fields for completions, check)
    "response_format json_object": (
        {"response_format": {"type": "json_object"}},
        {"extra_body": {"response_format": {"type": "json_object"}}}, _json_object),
    "response_format json_schema": (
        {"response_format": {"type": "json_schema",
                             "json_schema": {"name": "answer", "schema": SCHEMA}}},
        {"extra_body": {"response_format": {
            "type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}}},
        _json_schema),
    "structured_outputs json": (
        {"extra_body": {"structured_outputs": {"json": SCHEMA}}},
        {"extra_body": {"structured_outputs": {"json": SCHEMA}}}, _json_schema),
    "structured_outputs json_object": (
        {"extra_body": {"structured_outputs": {"json_object": True}}},
        {"extra_body": {"structured_outputs": {"json_object": True}}}, _json_object),
    "structured_outputs regex": (
        {"extra_body": {"structured_outputs": {"regex": REGEX}}},
        {"extra_body": {"structured_outputs": {"regex": REGEX}}},
        lambda text: re.fullmatch(REGEX, text) or pytest.fail(text)),
    "structured_outputs choice": (
        {"extra_body": {"structured_outputs": {"choice": CHOICES}}},
        {"extra_body": {"structured_outputs": {"choice": CHOICES}}},
        lambda text: text in CHOICES or pytest.fail(text)),
    "structured_outputs grammar": (
        {"extra_body": {"structured_outputs": {"grammar": GRAMMAR}}},
        {"extra_body": {"structured_outputs": {"grammar": GRAMMAR}}},
        lambda text: re.fullmatch(GRAMMAR_RE, text) or pytest.fail(text)),
    "structured_outputs structural_tag": (
        {"extra_body": {"structured_outputs": {"structural_tag": STRUCTURAL_TAG}}},
        {"extra_body": {"structured_outputs": {"structural_tag": STRUCTURAL_TAG}}},
        _structural_tag),
}


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize("kind", list(CONSTRAINTS))
def test_constrained_output_is_valid_streamed_or_not(client, kind, chat):
    """The text satisfies the constraint and the request finished ("stop", not
    "length"). Streamed, the same request gives the same tokens and text, and
    an output of 8 characters or more arrives in more than one content chunk
    (the committed prefix is sent as it grows, not once at the end)."""
    chat_fields, completion_fields, check = CONSTRAINTS[kind]
    fields = chat_fields if chat else completion_fields
    prompt = MESSAGES if chat else PROMPT
    _, ids, texts, finish, usage = run(client, MODEL, chat, prompt, False, max_tokens=64,
                                       temperature=0, **fields)
    text = texts[0]
    assert finish == "stop", (finish, text)
    check(text)
    _, s_ids, s_texts, s_finish, _ = run(client, MODEL, chat, prompt, True, max_tokens=64,
                                         temperature=0, **fields)
    assert flat(s_ids) == ids[0] and "".join(s_texts) == text and s_finish == "stop"
    assert len(ids[0]) == usage.completion_tokens
    if len(text) >= 8:
        assert len([t for t in s_texts if t]) > 1, s_texts


def test_every_schema_field_kind_completes(client):
    """Ranged integers, integer enums, patterns and maxLength: each parses and
    validates, on several prompts."""
    schema = {"type": "object", "properties": {
        "n": {"type": "integer", "minimum": 0, "maximum": 999},
        "digit": {"type": "integer", "enum": [1, 2, 3]},
        "tag": {"type": "string", "maxLength": 4},
        "flag": {"type": "boolean"}},
        "required": ["n", "digit", "tag", "flag"], "additionalProperties": False}
    for prompt in ["38+57=", "sort 3044", "4+5="]:
        r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=96, temperature=0,
                                      extra_body={"structured_outputs": {"json": schema}})
        assert r.choices[0].finish_reason == "stop", r.choices[0].text
        jsonschema.validate(json.loads(r.choices[0].text), schema)


def test_constrained_and_free_requests_together_decode_as_alone(client):
    """Requests with and without a grammar in flight at once (sharing engine
    steps) give the same tokens and logprobs as each alone."""
    requests = [
        dict(prompt="38+57=", max_tokens=64, extra_body={"structured_outputs": {"json": SCHEMA}}),
        dict(prompt="sort 3044", max_tokens=32),
        dict(prompt="12+34=", max_tokens=16, extra_body={"structured_outputs": {"regex": REGEX}}),
        dict(prompt="sort 906182", max_tokens=64, extra_body={"ignore_eos": True}),
        dict(prompt="85+46=", max_tokens=32,
             extra_body={"structured_outputs": {"choice": CHOICES}}),
        dict(prompt="4+5=", max_tokens=64, extra_body={"ignore_eos": True}),
    ]

    def one(body):
        extra = {"return_token_ids": True, **body.get("extra_body", {})}
        r = client.completions.create(model=MODEL, temperature=0, logprobs=1,
                                      **{**body, "extra_body": extra})
        return r.choices[0].model_extra["token_ids"], r.choices[0].logprobs.token_logprobs

    alone = [one(body) for body in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(one, requests))
    assert together == alone


# -- tool calls ----------------------------------------------------------------

def _stream_tool_calls(stream):
    """Accumulate tool-call deltas as a client does: ``{index: [name,
    arguments]}``, the content text, the number of chunks carrying tool-call
    deltas, and the finish reason."""
    calls, content, chunks, finish = {}, "", 0, None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            chunks += 1
            call = calls.setdefault(tc.index, [None, ""])
            if tc.function and tc.function.name:
                assert call[0] is None, "function name sent twice"
                call[0] = tc.function.name
            if tc.function and tc.function.arguments:
                call[1] += tc.function.arguments
        finish = choice.finish_reason or finish
    return calls, content, chunks, finish


def _tool_request(client, tool_choice, stream):
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0,
                                          max_tokens=128, tools=TOOLS,
                                          tool_choice=tool_choice, stream=stream)


@pytest.mark.parametrize("name", list(TOOL_SCHEMAS))
def test_named_tool_call(client, name):
    """``tool_choice`` naming a function: one tool call of that function whose
    arguments parse and validate against its parameters; streamed, the deltas
    add up to the same call, over several chunks."""
    tool_choice = {"type": "function", "function": {"name": name}}
    r = _tool_request(client, tool_choice, stream=False)
    message = r.choices[0].message
    assert r.choices[0].finish_reason == "stop"
    assert len(message.tool_calls) == 1, message
    call = message.tool_calls[0]
    assert call.type == "function" and call.function.name == name
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, TOOL_SCHEMAS[name])

    calls, content, chunks, finish = _stream_tool_calls(_tool_request(client, tool_choice, True))
    assert list(calls) == [0] and calls[0][0] == name and finish == "stop"
    assert json.loads(calls[0][1]) == arguments
    assert chunks > 1 and not content


def test_required_tool_call(client):
    """``tool_choice="required"``: at least one tool call, each naming one of the
    tools, with arguments valid for that tool; streamed, the same calls."""
    r = _tool_request(client, "required", stream=False)
    assert r.choices[0].finish_reason == "tool_calls"
    got = [(c.function.name, json.loads(c.function.arguments))
           for c in r.choices[0].message.tool_calls]
    assert got
    for name, arguments in got:
        jsonschema.validate(arguments, TOOL_SCHEMAS[name])

    calls, _, chunks, finish = _stream_tool_calls(_tool_request(client, "required", True))
    assert finish == "tool_calls" and chunks > 1
    assert [(calls[i][0], json.loads(calls[i][1])) for i in sorted(calls)] == got


def test_auto_tool_choice_is_unconstrained(client):
    """``tool_choice="auto"`` (the server has ``--enable-auto-tool-choice``):
    no grammar; the model's text (digits, no call for the pythonic parser)
    comes back as content, the same as without tools (this chat template
    does not render tools)."""
    r = _tool_request(client, "auto", stream=False)
    plain = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0,
                                           max_tokens=128)
    assert not r.choices[0].message.tool_calls
    assert r.choices[0].message.content == plain.choices[0].message.content


# -- logprobs ------------------------------------------------------------------

def _check_entries(entries, k, n_tokens):
    """``entries``: ``[(token, logprob, [(alt, logprob), ...])]``. One per
    generated token; logprobs <= 0; alternatives at most k, sorted descending;
    greedy: the chosen token is the top alternative, with the same value."""
    assert len(entries) == n_tokens
    for token, logprob, alternatives in entries:
        assert logprob <= 0.0
        values = [v for _, v in alternatives]
        assert 1 <= len(alternatives) <= k and values == sorted(values, reverse=True)
        assert alternatives[0] == (token, logprob), (token, logprob, alternatives)


def _completion_entries(logprobs):
    return [(t, v, list(top.items())) for t, v, top in
            zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs)]


def _chat_entries(content):
    return [(e.token, e.logprob, [(a.token, a.logprob) for a in e.top_logprobs])
            for e in content]


@pytest.mark.parametrize("constraint", [None, "regex", "json"])
def test_completion_logprobs(client, constraint):
    """``logprobs=k`` on /v1/completions, with or without a grammar, streamed
    or not (the streamed entries are the same)."""
    k = 3
    extra = {} if constraint is None else {
        "structured_outputs": {"regex": REGEX} if constraint == "regex" else {"json": SCHEMA}}
    body = dict(model=MODEL, prompt=PROMPT, max_tokens=64, temperature=0, logprobs=k,
                extra_body=extra)
    r = client.completions.create(**body)
    entries = _completion_entries(r.choices[0].logprobs)
    _check_entries(entries, k, r.usage.completion_tokens)
    assert "".join(t for t, _, _ in entries).startswith(r.choices[0].text)
    streamed = []
    for chunk in client.completions.create(**body, stream=True):
        if chunk.choices and chunk.choices[0].logprobs:
            streamed += _completion_entries(chunk.choices[0].logprobs)
    assert streamed == entries


@pytest.mark.parametrize("constraint", [None, "json_schema"])
def test_chat_logprobs(client, constraint):
    """``logprobs=True, top_logprobs=k`` on /v1/chat/completions, with or
    without a grammar, streamed or not."""
    k = 4
    fields = {} if constraint is None else {"response_format": {
        "type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}}
    body = dict(model=MODEL, messages=[{"role": "user", "content": "sort 3044"}],
                max_tokens=64, temperature=0, logprobs=True, top_logprobs=k, **fields)
    r = client.chat.completions.create(**body)
    entries = _chat_entries(r.choices[0].logprobs.content)
    _check_entries(entries, k, r.usage.completion_tokens)
    if constraint:
        _json_schema(r.choices[0].message.content)
    streamed = []
    for chunk in client.chat.completions.create(**body, stream=True):
        if chunk.choices and chunk.choices[0].logprobs:
            streamed += _chat_entries(chunk.choices[0].logprobs.content)
    assert streamed == entries


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_prompt_logprobs_is_a_400_naming_it(client, chat, stream):
    with pytest.raises(openai.BadRequestError) as e:
        run(client, MODEL, chat, MESSAGES if chat else PROMPT, stream, max_tokens=8,
            extra_body={"prompt_logprobs": 1})
    assert e.value.status_code == 400 and e.value.body["param"] == "prompt_logprobs"


# -- bad input -----------------------------------------------------------------

BAD = [
    # (extra_body, the param the 400 names on completions and on chat (None: vLLM
    # names none), words of its message)
    ({"structured_outputs": {"regex": "[0-9"}}, None, "regex"),
    ({"structured_outputs": {"json": {"type": "object",
                                      "properties": {"a": {"type": "nonsense"}}}}},
     None, "json schema"),
    ({"structured_outputs": {"json": "{not json"}}, None, "JSON"),
    ({"structured_outputs": {"grammar": "root ::= "}}, None, "grammar"),
    ({"structured_outputs": {"regex": REGEX, "choice": ["a"]}}, ("structured_outputs", None),
     "one kind of constraints"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema"),
    ({"guided_json": {"type": "object"}}, "guided_json", "guided_json: "),
    ({"guided_regex": REGEX}, "guided_regex", "guided_regex: "),
]


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize("extra, param, words", BAD,
                         ids=[f"{next(iter(b[0]))}-{i}" for i, b in enumerate(BAD)])
def test_bad_constraint_is_a_400_and_the_server_serves_on(client, chat, extra, param, words):
    with pytest.raises(openai.BadRequestError) as e:
        run(client, MODEL, chat, MESSAGES if chat else PROMPT, False, max_tokens=8,
            extra_body=extra)
    assert e.value.status_code == 400
    if isinstance(param, tuple):   # vLLM's two endpoints differ
        param = param[chat]
    assert e.value.body["param"] == param and words in e.value.body["message"], e.value.body
    _, _, texts, _, _ = run(client, MODEL, chat, MESSAGES if chat else PROMPT, False,
                            max_tokens=16, temperature=0,
                            extra_body={"structured_outputs": {"regex": REGEX}})
    assert re.fullmatch(REGEX, texts[0])


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize("extra, words", [
    ({"structured_outputs": {"regex": "[0-9"}}, "regex"),
    ({"structured_outputs": {"json": "{not json"}}, "JSON"),
    ({"logprobs": 30}, "logprobs"),
], ids=["regex", "json", "logprobs"])
def test_bad_request_in_a_stream_is_a_400_before_it_starts(client, chat, extra, words):
    """vLLM runs its own request checks (the grammar compiled, logprobs
    bounds) once a stream may have started, where they become an error event
    inside an HTTP 200; the plugin runs them before the response starts, so
    a streamed request gets the same 400 as a non-streamed one."""
    if chat and "logprobs" in extra:
        extra = {"logprobs": True, "top_logprobs": 30}
    with pytest.raises(openai.BadRequestError) as e:
        run(client, MODEL, chat, MESSAGES if chat else PROMPT, True, max_tokens=8,
            extra_body=extra)
    assert e.value.status_code == 400 and words in e.value.body["message"], e.value.body
    assert client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8).choices[0].text
