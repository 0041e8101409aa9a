"""Streaming chat through the OpenAI client against `make serve`.

    make serve            # in one shell
    python examples/openai_chat_stream.py
"""

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
stream = client.chat.completions.create(
    model="llada-arith",
    messages=[{"role": "user", "content": "sort 906182"}],
    max_tokens=64,
    temperature=0,
    stream=True,
    extra_body={"vllm_xargs": {"diffusion_cache": "dual", "diffusion_threshold": 0.9}},
)
for chunk in stream:  # one chunk per decoded block
    delta = chunk.choices[0].delta.content if chunk.choices else None
    if delta:
        print(delta, end="", flush=True)
print()
