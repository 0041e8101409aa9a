"""One OpenAI request as a test reads it: the prompt ids the server used,
the token ids and text of each streamed chunk, finish reason and usage."""

from __future__ import annotations

import itertools


def run(client, model, chat, prompt, stream, **kwargs):
    """One request; returns ``(prompt_ids, [token ids of each chunk], [text of
    each chunk], finish_reason, usage)``.  Non-streamed: one "chunk".
    ``prompt``: a text (or token ids on /v1/completions), or chat messages."""
    extra = {"return_token_ids": True, **kwargs.pop("extra_body", {})}
    if chat:
        response = client.chat.completions.create(model=model, messages=prompt, stream=stream,
                                                  extra_body=extra, **kwargs)
    else:
        response = client.completions.create(model=model, prompt=prompt, stream=stream,
                                             extra_body=extra, **kwargs)
    if not stream:
        choice = response.choices[0]
        prompt_ids = (response.model_extra if chat else choice.model_extra)["prompt_token_ids"]
        text = choice.message.content if chat else choice.text
        return (prompt_ids, [choice.model_extra["token_ids"]], [text], choice.finish_reason,
                response.usage)
    prompt_ids, ids, texts, finish, usage = None, [], [], None, None
    for chunk in response:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        where = chunk.model_extra if chat else choice.model_extra
        if where.get("prompt_token_ids") is not None:
            assert prompt_ids is None, "prompt ids sent twice"
            prompt_ids = where["prompt_token_ids"]
        tokens = choice.model_extra.get("token_ids") or []
        text = (choice.delta.content if chat else choice.text) or ""
        if tokens or text:
            ids.append(tokens)
            texts.append(text)
        finish = choice.finish_reason or finish
    return prompt_ids, ids, texts, finish, usage


def flat(chunks):
    return list(itertools.chain.from_iterable(chunks))


def bad_request(client, model, chat, stream, *, default_text, default_messages, **body):
    """The 400 for ``body`` (prompted with ``default_text`` /
    ``default_messages`` unless it has its own): ``(param, message)``."""
    import openai
    import pytest

    with pytest.raises(openai.BadRequestError) as e:
        if chat:
            body.setdefault("messages", default_messages)
            response = client.chat.completions.create(model=model, max_tokens=16,
                                                      stream=stream, **body)
        else:
            body.setdefault("prompt", default_text)
            response = client.completions.create(model=model, max_tokens=16, stream=stream,
                                                 **body)
        if stream:
            list(response)
    assert e.value.status_code == 400
    return e.value.param, e.value.body["message"]
