"""The reference grammar acceptor (vllm_dllm_plugin/testing/reference/grammar.py)
against xgrammar, as vLLM's xgrammar backend builds it.

The acceptor is the oracle of the constrained reference loops, so it must
allow exactly what the engine's grammar allows: for every tokenizer of the
five families (the embedded LLaDA model's and the tiny checkpoints') and
every test grammar, walks of token prefixes (a valid sample's tokens, the
same with a random tail, random ones) compare its allowed set after each
prefix with xgrammar's token bitmask, bit for bit. The walks draw their next
token from the allowed set, so they reach the end tokens, multi-byte UTF-8
and the added tokens. A deliberately wrong acceptor is shown to differ, so
the comparison can fail.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from vllm_dllm_plugin import EMBEDDED_MODEL
from vllm_dllm_plugin.testing.reference.grammar import Acceptor

xgr = pytest.importorskip("xgrammar")

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer"},
        "ok": {"type": "boolean"},
        "color": {"enum": ["red", "green", 3, None]},
        "note": {"type": "string"},
    },
    "required": ["name", "age", "ok", "color", "note"],
}
SAMPLE = {"name": "Bé <x", "age": -42, "ok": False, "color": "green", "note": 'a "q" \\ é\n'}

# (kind, spec, a member of the language): the test grammars.
GRAMMARS = [
    ("regex", r"(yes|no)[0-9]{1,3}", "yes42"),
    ("regex", r"[a-z ]{1,12}", "the cat"),
    ("regex", r"\w+ .\s[^a-c]{2}é+", "ab_9 \n\xa0zéé"),
    ("regex", r"^-?\d+(\.\d+)?$", "-3.14"),
    ("regex", r"[\w.\-]+@[a-z]+\.(com|org)|é{2}|[à-ÿ]", "a.b-c@x.org"),
    ("choice", ["yes", "no", "maybe so", "é!"], "maybe so"),
    ("json", SCHEMA, json.dumps(SAMPLE, ensure_ascii=False, indent=1)),
    ("json_compact", SCHEMA, json.dumps(SAMPLE, ensure_ascii=False, separators=(",", ":"))),
]
STEPS = 14     # tokens per random walk
FAMILIES = ["embedded", "llada", "dream", "v2", "sdar", "llada2"]


class Tokenizer:
    """One checkpoint's tokenizer as vLLM loads it, with xgrammar's compiler
    over it and the engine's end tokens (SamplingParams.all_stop_token_ids)."""

    def __init__(self, path):
        import vllm_dllm_plugin
        from engine_utils import engine_eos_ids
        from vllm.tokenizers import get_tokenizer

        vllm_dllm_plugin.register()  # Dream's tokenizer class
        self.path = path
        self.hf = get_tokenizer(str(path))
        self.vocab_size = json.loads((path / "config.json").read_text())["vocab_size"]
        self.info = xgr.TokenizerInfo.from_huggingface(self.hf, vocab_size=self.vocab_size)
        self.compiler = xgr.GrammarCompiler(self.info)
        self.stops = sorted(engine_eos_ids(path))

    def pair(self, kind: str, spec) -> tuple[Acceptor, object]:
        """(the reference acceptor, xgrammar's compiled grammar), each built
        the way its side builds it (vLLM: backend_xgrammar.compile_grammar)."""
        from vllm.v1.structured_output.utils import choice_as_grammar

        args = (self.path, self.stops, self.vocab_size)
        if kind == "regex":
            return Acceptor.regex(spec, *args), self.compiler.compile_regex(spec)
        if kind == "choice":
            return Acceptor.choice(spec, *args), self.compiler.compile_grammar(choice_as_grammar(spec))
        compact = kind == "json_compact"
        ctx = self.compiler.compile_json_schema(json.dumps(spec), any_whitespace=not compact,
                                                separators=(",", ":") if compact else None)
        return Acceptor.json_schema(spec, *args, any_whitespace=not compact), ctx

    def matcher(self, ctx):
        return xgr.GrammarMatcher(ctx, override_stop_tokens=self.stops)


@pytest.fixture(scope="module")
def tokenizers(request) -> dict[str, Tokenizer]:
    dirs = {"embedded": EMBEDDED_MODEL}
    for name, fixture in [("llada", "llada_dir"), ("dream", "dream_dir"), ("v2", "v2_dir"),
                          ("sdar", "sdar_dir"), ("llada2", "llada2_dir")]:
        dirs[name] = request.getfixturevalue(fixture)
    return {name: Tokenizer(path) for name, path in dirs.items()}


def xgrammar_allowed(matcher, vocab_size: int) -> torch.Tensor:
    """The matcher's token bitmask as ``[vocab_size]`` bool (bit j of word w: token 32 w + j)."""
    bitmask = xgr.allocate_token_bitmask(1, vocab_size)
    matcher.fill_next_token_bitmask(bitmask)
    bits = (bitmask[0].unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.reshape(-1)[:vocab_size].bool()


def walk(acceptor: Acceptor, matcher, choose, steps: int) -> tuple[int, str | None]:
    """Advance both grammars by ``choose(step, allowed)`` tokens, comparing
    the allowed sets before each; returns (steps compared, the first
    difference or None). Ends after an end token."""
    prefix: list[int] = []
    for step in range(steps):
        mine = acceptor.allowed(prefix)
        theirs = xgrammar_allowed(matcher, acceptor.vocab_size)
        if not torch.equal(mine, theirs):
            diff = torch.nonzero(mine != theirs).flatten().tolist()
            shown = [(t, acceptor.tokens[t] if t < len(acceptor.tokens) else None, bool(mine[t])) for t in diff[:6]]
            return step + 1, f"after {prefix}: {len(diff)} differ, (id, bytes, mine) {shown}"
        token = choose(step, torch.nonzero(mine).flatten().tolist())
        if token is None:
            return step + 1, None
        assert acceptor.accepts(prefix, token) and matcher.accept_token(token)
        prefix.append(token)
        if matcher.is_terminated():
            assert acceptor.terminated(prefix)
            return step + 1, None
    return steps, None


def follow(tokens: list[int], rng: random.Random | None = None):
    """A walk's chooser: ``tokens`` in order, then random allowed tokens (or stop)."""
    def choose(step, allowed):
        if step < len(tokens):
            assert tokens[step] in allowed, f"the sample's token {tokens[step]} is not allowed"
            return tokens[step]
        return rng.choice(allowed) if rng and allowed else None
    return choose


def follow_while_allowed(tokens: list[int]):
    """A walk's chooser: ``tokens`` in order while allowed, then stop."""
    return lambda step, allowed: tokens[step] if step < len(tokens) and tokens[step] in allowed else None


@pytest.mark.parametrize("family", FAMILIES)
def test_token_bytes_are_xgrammars(tokenizers, family):
    """Every id's bytes as xgrammar decodes them; ids without a string (past
    the tokenizer, up to the model's vocab) are xgrammar's special ids."""
    tok = tokenizers[family]
    acceptor, _ = tok.pair("regex", "a")
    decoded = tok.info.decoded_vocab
    for i in range(tok.vocab_size):
        mine = acceptor.tokens[i] if i < len(acceptor.tokens) else None
        assert (mine or b"") == decoded[i], i
    assert [i for i in range(tok.vocab_size) if acceptor.tokens[i:i + 1] in ((), (None,))] \
        == sorted(tok.info.special_token_ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_allowed_sets_equal_xgrammars_on_walks(tokenizers, family):
    tok = tokenizers[family]
    rng = random.Random(f"{family}")
    compared = 0
    for kind, spec, sample in GRAMMARS:
        acceptor, ctx = tok.pair(kind, spec)
        tokens = tok.hf.encode(sample, add_special_tokens=False) + [tok.stops[0]]
        cut = rng.randrange(len(tokens))
        choosers = [follow(tokens), follow(tokens[:cut], rng), follow([], rng), follow([], rng)]
        for i, choose in enumerate(choosers):
            steps, problem = walk(acceptor, tok.matcher(ctx), choose, len(tokens) if i == 0 else STEPS)
            assert problem is None, f"{family} {acceptor!r} walk {i}: {problem}"
            compared += steps
        assert acceptor.complete(b"".join(acceptor.tokens[t] for t in tokens[:-1])), sample
    assert compared > 100


def test_utf8_continuations_equal_xgrammars(tokenizers):
    """After every lead byte (and after a lead and each boundary second byte),
    the same continuation bytes as xgrammar: the code points xgrammar reads
    (surrogates included, no overlong forms), in a regex ``.``, a negated
    class, and both kinds of JSON string."""
    tok = tokenizers["llada"]
    byte_id = {data[0]: i for i, data in enumerate(tok.info.decoded_vocab) if len(data) == 1}
    grammars = [("regex", "a.{1,2}b"), ("regex", "a[^b-z]+b"),
                ("json_compact", {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}),
                ("json_compact", {"type": "object", "properties": {"a": {"type": "string", "maxLength": 2}},
                                  "required": ["a"]})]
    heads = {"regex": [ord("a")], "json_compact": [ord(c) for c in '{"a":"']}
    seconds = [0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0]
    for kind, spec in grammars:
        acceptor, ctx = tok.pair(kind, spec)
        head = [byte_id[b] for b in heads[kind]]
        tails = [[lead] for lead in range(0x80, 0x100)]
        tails += [[lead, second] for lead in (0xC2, 0xE0, 0xED, 0xEF, 0xF0, 0xF4) for second in seconds]
        for tail in tails:
            prefix = head + [byte_id[b] for b in tail]
            steps, problem = walk(acceptor, tok.matcher(ctx), follow_while_allowed(prefix), len(prefix) + 1)
            assert problem is None, (spec, [hex(b) for b in tail], problem)


def test_a_wrong_acceptor_is_caught(tokenizers):
    """The comparison finds a difference where the acceptor is wrong: Python's
    own reading of a regex (``.`` one byte, never a newline), and end tokens
    that are not the engine's."""
    tok = tokenizers["v2"]
    _, ctx = tok.pair("regex", "a.b")
    wrong = Acceptor("a.b", tok.path, tok.stops, tok.vocab_size)
    a_id = tok.hf.encode("a", add_special_tokens=False)
    newline = tok.hf.encode("\n", add_special_tokens=False)
    assert walk(wrong, tok.matcher(ctx), follow(a_id + newline), 3)[1] is not None

    right, ctx = tok.pair("choice", ["yes"])
    fewer_stops = Acceptor(right.source, tok.path, tok.stops[:1], tok.vocab_size)
    yes = tok.hf.encode("yes", add_special_tokens=False)
    assert len(tok.stops) > 1 and walk(fewer_stops, tok.matcher(ctx), follow(yes), 8)[1] is not None
    assert walk(right, tok.matcher(ctx), follow(yes + tok.stops[-1:]), 8)[1] is None


def test_acceptor_contract(tokenizers):
    """End tokens only after a complete match, then nothing imposed;
    ``run`` stops at the first rejected token and after an end token; a
    prefix the grammar rejects is an error; unsupported input is refused."""
    tok = tokenizers["sdar"]
    acceptor, _ = tok.pair("choice", ["ab", "abc"])
    a, b, c = (tok.hf.encode(ch, add_special_tokens=False)[0] for ch in "abc")
    stop, other_stop = tok.stops
    allowed = acceptor.allowed([a])
    assert allowed[b] and not allowed[c] and not allowed[stop]
    assert acceptor.allowed([a, b])[stop] and acceptor.allowed([a, b])[c]
    assert acceptor.accepts([a, b, c], other_stop) and not acceptor.accepts([a, b, c], c)
    assert acceptor.allowed([a, b, stop]).all() and acceptor.accepts([a, b, stop], c)
    assert acceptor.run([], [a, b, c, a]) == 3
    assert acceptor.run([], [a, b, stop, c]) == 3
    assert acceptor.run([a, b, stop], [c, c]) == 2
    assert not acceptor.allowed([a])[tok.vocab_size - 1]          # past the tokenizer: never
    with pytest.raises(ValueError):
        acceptor.allowed([c])
    with pytest.raises(ValueError):
        acceptor.allowed([a, stop])
    for bad in [r"(?=a)b", r"(a)\1", r"a\bb", "a^b"]:
        with pytest.raises(ValueError):
            Acceptor.regex(bad, tok.path, tok.stops, tok.vocab_size)
    for bad in [{"type": "object", "properties": {"a": {"type": "integer", "minimum": 1}}, "required": ["a"]},
                {"type": "object", "properties": {"a": {"type": "integer"}}},
                {"type": "object", "properties": {"a": {"type": "array"}}, "required": ["a"]}]:
        with pytest.raises(ValueError):
            Acceptor.json_schema(bad, tok.path, tok.stops, tok.vocab_size)
