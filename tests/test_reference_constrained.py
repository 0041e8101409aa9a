"""The constrained reference loops (``grammar=`` of each family's reference
``generate``), on the tiny checkpoints, without the engine.

docs/options.md, "Structured output": each step decides the first masked
position under the grammar's mask, the family's rule picks what it would
commit, and only the left-to-right run from that position that the grammar
accepts is committed. Checked here for every family and grammar kind (a
regex, a choice, a JSON schema in both of vLLM's whitespace modes): the
output is in the language once it ends with an end token (and a viable
prefix of it when ``max_tokens`` cut it), the JSON parses and validates; the
grammar was consulted exactly on the committed prefix, growing by the
committed run each step; runs of more than one token occur, and the
grammar does cut the rule's runs; ``grammar=None`` changes nothing.
"""

from __future__ import annotations

import json

import pytest

from vllm_dllm_plugin.testing.reference import fast_dllm, fast_dllm_v2, llada2_loop, sdar_loop
from vllm_dllm_plugin.testing.reference.grammar import Acceptor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_TOKENS = 64
PROMPT = [5, 6, 7, 8, 9, 10, 11]

# Bounded languages (every member fits in MAX_TOKENS tokens, so the output
# always ends with an end token) and an unbounded one.
REGEX = r"[a-z ]{1,12}"
CHOICES = ["yes", "no", "maybe so"]
BOUNDED_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 6}, "ok": {"type": "boolean"},
                   "color": {"enum": ["red", "green"]}},
    "required": ["name", "ok", "color"],
}
SCHEMA = {
    "type": "object",
    "properties": {"age": {"type": "integer"}, "ok": {"type": "boolean"}, "note": {"type": "string"}},
    "required": ["age", "ok", "note"],
}

# family -> (model fixture, eos fixture, directory fixture, generate, option sets)
FAMILIES = {
    "llada": ("llada_ref", "llada_eos", "llada_dir",
              lambda m, p, **o: fast_dllm.generate(m, p, gen_length=MAX_TOKENS, block_length=16, **o),
              [dict(threshold=0.0), dict(steps_per_block=2, cache="dual"), dict(factor=1.0, cache="none")]),
    "dream": ("dream_ref", "dream_eos", "dream_dir",
              lambda m, p, **o: fast_dllm.generate(m, p, gen_length=MAX_TOKENS, block_length=16, **o),
              [dict(threshold=0.0), dict(steps_per_block=2, cache="none")]),
    "v2": ("v2_ref", "v2_eos", "v2_dir",
           lambda m, p, **o: fast_dllm_v2.generate(m, p, max_tokens=MAX_TOKENS, **o),
           [dict(threshold=0.0), dict(threshold=0.0, block_cache=True, sub_block_length=4)]),
    "sdar": ("sdar_ref", "sdar_eos", "sdar_dir",
             lambda m, p, **o: sdar_loop.generate(m, p, max_tokens=MAX_TOKENS, **o),
             [dict(steps=1, remasking="low_confidence_static"), dict(steps=2, remasking="sequential"),
              dict(threshold=0.0)]),
    "llada2": ("llada2_ref", "llada2_eos", "llada2_dir",
               lambda m, p, **o: llada2_loop.generate(m, p, max_tokens=MAX_TOKENS, block_length=16, **o),
               [dict(steps=1), dict(steps=4, threshold=0.0)]),
}



class Spy:
    """An acceptor that records the loop's calls: the prefix of each
    ``allowed`` (a masked row) and each ``run``'s (offered, accepted) before
    the grammar terminated."""

    def __init__(self, acceptor: Acceptor):
        self.acceptor = acceptor
        self.events: list[tuple[str, int]] = []
        self.prefixes: list[list[int]] = []
        self.runs: list[tuple[int, int]] = []

    def allowed(self, prefix):
        self.events.append(("allowed", len(prefix)))
        self.prefixes.append(list(prefix))
        return self.acceptor.allowed(prefix)

    def run(self, prefix, tokens):
        count = self.acceptor.run(prefix, tokens)
        if not self.acceptor.terminated(prefix):
            self.events.append(("run", count))
            self.runs.append((len(tokens), count))
        return count

    def __getattr__(self, name):
        return getattr(self.acceptor, name)

    def __repr__(self):
        return f"Spy({self.acceptor!r})"


def grammars(path, eos, vocab_size) -> list[tuple[str, Acceptor]]:
    args = (path, eos, vocab_size)
    return [("regex", Acceptor.regex(REGEX, *args)),
            ("choice", Acceptor.choice(CHOICES, *args)),
            ("bounded_json", Acceptor.json_schema(BOUNDED_SCHEMA, *args, any_whitespace=False)),
            ("json", Acceptor.json_schema(SCHEMA, *args))]


def check_output(kind: str, acceptor: Acceptor, tokens: list[int], eos) -> bool:
    """The output is in the language (ended by an end token) or a viable
    prefix of it cut by max_tokens; returns whether it ended."""
    import jsonschema

    ended = bool(tokens) and tokens[-1] in eos
    body = tokens[:-1] if ended else tokens
    text = b"".join(acceptor.tokens[t] for t in body)
    acceptor.state(tokens)  # raises unless every token was allowed
    if not ended:
        assert len(tokens) == MAX_TOKENS and acceptor.viable(text), (kind, text)
        return False
    assert acceptor.complete(text), (kind, text)
    if kind == "regex":
        import regex

        assert regex.fullmatch(REGEX, text.decode("utf-8")), text
    elif kind == "choice":
        assert text.decode("utf-8") in CHOICES
    else:
        jsonschema.validate(json.loads(text), BOUNDED_SCHEMA if kind == "bounded_json" else SCHEMA)
    return True


def check_left_to_right(spy: Spy, generated: list[int]) -> None:
    """The grammar saw exactly the committed prefix at every step: each mask
    after the previous one's prefix plus its committed run (or plus the one
    token of a v2 write forward, a mask with no run after it), each a prefix
    of the final output."""
    expected = None
    events = spy.events + [("allowed", None)]
    for (kind, value), (next_kind, _) in zip(events, events[1:]):
        if kind == "allowed":
            assert expected is None or value == expected, spy.events
            expected = value + (1 if next_kind == "allowed" else 0)
        else:
            expected += value
    for prefix in spy.prefixes:
        assert prefix == generated[:len(prefix)]


@pytest.mark.parametrize("family", FAMILIES)
def test_constrained_outputs_are_in_the_language(request, family):
    model_fixture, eos_fixture, dir_fixture, generate, option_sets = FAMILIES[family]
    model, eos = request.getfixturevalue(model_fixture), request.getfixturevalue(eos_fixture)
    path = request.getfixturevalue(dir_fixture)
    long_runs = cut_runs = ended = 0
    for options in option_sets:
        for kind, acceptor in grammars(path, eos, model.config.vocab_size):
            spy = Spy(acceptor)
            result = generate(model, PROMPT, eos_ids=eos, grammar=spy, **options)
            finished = check_output(kind, acceptor, result.tokens, eos)
            assert finished or kind == "json", f"{family} {options} {kind}: a bounded language did not end"
            ended += finished
            check_left_to_right(spy, result.canvas[len(PROMPT):])
            assert all(1 <= accepted <= offered for offered, accepted in spy.runs)
            long_runs += sum(accepted > 1 for _, accepted in spy.runs)
            cut_runs += sum(accepted < offered for offered, accepted in spy.runs)
            assert len(result.commits) >= len(spy.runs)  # one run per step until the end token
    assert long_runs > 0, f"{family}: no step committed more than one token"
    assert cut_runs > 0, f"{family}: the grammar never cut a run"
    assert ended >= 3 * len(option_sets)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_grammar_is_the_unconstrained_loop(request, family):
    model_fixture, eos_fixture, _, generate, option_sets = FAMILIES[family]
    model, eos = request.getfixturevalue(model_fixture), request.getfixturevalue(eos_fixture)
    for options in option_sets[:2]:
        plain = generate(model, PROMPT, eos_ids=eos, **options)
        none = generate(model, PROMPT, eos_ids=eos, grammar=None, **options)
        assert none == plain


def test_constrained_forward_counts(llada2_ref, llada2_eos, llada2_dir, sdar_ref, sdar_eos, sdar_dir):
    """SDAR and LLaDA2.0 blocks outlast their step count when runs are
    shorter than the quota; every step is still one denoising forward, and
    each block one commit forward (SDAR's published loop)."""
    acceptor = Acceptor.json_schema(SCHEMA, llada2_dir, llada2_eos, llada2_ref.config.vocab_size)
    result = llada2_loop.generate(llada2_ref, PROMPT, max_tokens=16, block_length=8, steps=1,
                                  eos_ids=llada2_eos, grammar=acceptor)
    assert result.tokens[-1] not in llada2_eos
    blocks = -(-(len(PROMPT) + 16) // 8)
    assert len(result.commits) > blocks and result.published_forwards == len(result.commits)
    assert result.kinds.count("denoise") <= len(result.commits)

    B = sdar_ref.config.block_size
    acceptor = Acceptor.json_schema(SCHEMA, sdar_dir, sdar_eos, sdar_ref.config.vocab_size)
    result = sdar_loop.generate(sdar_ref, PROMPT, max_tokens=8, steps=1, remasking="low_confidence_static",
                                eos_ids=sdar_eos, grammar=acceptor)
    assert result.tokens[-1] not in sdar_eos
    blocks = -(-(len(PROMPT) + 8) // B) - len(PROMPT) // B
    assert len(result.commits) > blocks
    assert result.published_forwards == (len(PROMPT) >= B) + len(result.commits) + blocks
    assert result.kinds.count("denoise") <= len(result.commits)


def test_editing_with_a_grammar_is_refused(llada2_ref, llada2_eos, llada2_dir):
    acceptor = Acceptor.choice(CHOICES, llada2_dir, llada2_eos, llada2_ref.config.vocab_size)
    with pytest.raises(ValueError, match="editing"):
        llada2_loop.generate(llada2_ref, PROMPT, max_tokens=8, editing_threshold=0.5, grammar=acceptor)
