"""Structured output, a tool call, streaming and logprobs through the OpenAI
client, against the embedded model served by `make serve`:

    make serve SERVE_FLAGS="--enforce-eager --enable-auto-tool-choice \
        --tool-call-parser pythonic --structured-outputs-config.backend=xgrammar \
        --structured-outputs-config.disable_any_whitespace=true"
    python examples/structured_output.py        # in another shell

Why the flags: vLLM 0.32 answers a named ``tool_choice`` (or ``"required"``)
with a 400 unless the server has ``--enable-auto-tool-choice
--tool-call-parser <parser>`` (``pythonic`` works with any tokenizer); and
the embedded model is an arithmetic model that does not know JSON, so
without ``disable_any_whitespace`` it tends to fill JSON's optional
whitespace with newlines and tabs until ``max_tokens``. On a plain `make
serve` the tool call is vLLM's 400. The answers are what a tiny arithmetic
model writes under a grammar: valid, not correct.

Set DLLM_BASE_URL for another server (default http://127.0.0.1:8000/v1).
"""

import json
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("DLLM_BASE_URL", "http://127.0.0.1:8000/v1"),
                api_key="unused")
MODEL = "llada-arith"
QUESTION = [{"role": "user", "content": "38+57="}]

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

# 1. JSON schema (chat: response_format; any endpoint: structured_outputs.json)
r = client.chat.completions.create(
    model=MODEL, messages=QUESTION, max_tokens=64, temperature=0,
    response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}})
print("json_schema:", json.loads(r.choices[0].message.content))

# 2. a regex, on /v1/completions
r = client.completions.create(model=MODEL, prompt="12+34=", max_tokens=16, temperature=0,
                              extra_body={"structured_outputs": {"regex": "[0-9]{1,3}"}})
print("regex:      ", r.choices[0].text)

# 3. one of a few choices
r = client.chat.completions.create(
    model=MODEL, messages=QUESTION, max_tokens=8, temperature=0,
    extra_body={"structured_outputs": {"choice": ["95", "96", "I don't know"]}})
print("choice:     ", r.choices[0].message.content)

# 4. a named tool call: the arguments are decoded under the parameters' schema
tools = [{"type": "function", "function": {
    "name": "add", "description": "Add two numbers.",
    "parameters": {"type": "object", "properties": {
        "a": {"type": "integer", "minimum": 0, "maximum": 99},
        "b": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["a", "b"], "additionalProperties": False}}}]
r = client.chat.completions.create(
    model=MODEL, messages=QUESTION, max_tokens=64, temperature=0, tools=tools,
    tool_choice={"type": "function", "function": {"name": "add"}})
call = r.choices[0].message.tool_calls[0]
print("tool call:  ", call.function.name, json.loads(call.function.arguments))

# 5. streaming a constrained request: the committed prefix arrives as it grows
stream = client.chat.completions.create(
    model=MODEL, messages=QUESTION, max_tokens=64, temperature=0, stream=True,
    extra_body={"structured_outputs": {"json": SCHEMA}})
deltas = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
print(f"streamed:    {len(deltas)} chunks: {'|'.join(deltas)}")

# 6. logprobs: each token's log probability and its top alternatives
r = client.chat.completions.create(
    model=MODEL, messages=[{"role": "user", "content": "sort 3044"}], max_tokens=16,
    temperature=0, logprobs=True, top_logprobs=2)
print("logprobs:   ", r.choices[0].message.content)
for entry in r.choices[0].logprobs.content:
    alternatives = ", ".join(f"{a.token!r} {a.logprob:.3f}" for a in entry.top_logprobs)
    print(f"    {entry.token!r:16} {entry.logprob:9.5f}   top: {alternatives}")
