"""An independent grammar acceptor for the constrained reference loops.

The engine takes its grammars from vLLM's structured-output backend
(xgrammar by default); the reference loops take them from here, so that a
constrained engine run can be checked token for token against a grammar
that shares no code with the engine's. Nothing here imports xgrammar,
llguidance, outlines or vLLM: the grammar is a byte-level regular
expression matched with the ``regex`` package's partial matching
(``fullmatch(..., partial=True)``: "can this text still become a match?").

What it mirrors of vLLM's xgrammar backend
(``vllm/v1/structured_output/backend_xgrammar.py``), as measured against
xgrammar 0.2.8 (``tests/test_reference_grammar.py`` compares the allowed
sets token for token):

* Tokens: ``TokenizerInfo.from_huggingface(tokenizer, vocab_size=model's)``
  for a byte-level BPE. Every vocabulary string, added tokens included, is
  turned into bytes through the GPT-2 byte<->unicode table when all its
  characters are in that table, else it is its own UTF-8 text. So added
  tokens (``<role>``, ``<|mdm_mask|>``, ``<|im_start|>`` ...) are literal
  text to the grammar: xgrammar's ``special_token_ids`` holds only ids
  without a string (those beyond the tokenizer, up to the model's vocab
  size), which are never allowed.
* End tokens: ``GrammarMatcher(ctx, override_stop_tokens=all_stop_token_ids)``:
  exactly the ``stop_ids`` given end the output; they are allowed exactly
  when the text so far is a complete match, and are never literal text.
  After an end token the grammar is terminated and imposes nothing more.
* Regexes (``compile_regex``): xgrammar's reading of the pattern, which is
  not Python's: ``.`` matches any code point including a newline, ``\\s``
  is ``[\\t\\n\\v\\f\\r \\xa0]``, ``\\d`` and ``\\w`` are ASCII, a leading
  ``^`` and a trailing ``$`` are ignored, and code points are matched as
  their UTF-8 bytes (surrogates included: xgrammar does not exclude them).
  Supported: literals, escapes ``\\d \\w \\s \\D \\W \\S \\n \\r \\t \\f \\v
  \\xHH \\uHHHH`` and escaped punctuation, classes (ranges, negation,
  class escapes inside), ``.``, groups (``(...)``, ``(?:...)``),
  alternation, the quantifiers ``* + ? {m} {m,} {m,n}`` (lazy or not).
  Anything else (look-arounds, back-references, flags, anchors inside) is
  a ``ValueError``.
* Choices (``choice_as_grammar``: an EBNF alternation of the literal
  strings): an alternation of the choices' exact bytes.
* JSON schemas (``compile_json_schema(any_whitespace=..., separators=...)``,
  strict mode): a flat object whose properties are all required, emitted
  in the schema's order, each value one of ``integer`` and ``number``
  (without bounds), ``boolean``, ``null``, ``string`` (without ``pattern``
  or ``format``; ``minLength`` / ``maxLength`` switch to xgrammar's
  length-limited form, whose characters are any code point but ``"``,
  ``\\``, CR and LF, escapes not allowed), ``enum`` / ``const`` of
  strings, integers, booleans and null. ``any_whitespace=True`` (vLLM's
  default) allows ``[ \\n\\r\\t]*`` around every ``{``, ``,``, ``:`` and
  ``}`` inside the object; ``False`` (vLLM's ``disable_any_whitespace``,
  separators ``,`` and ``:``) allows none.

Only byte-level BPE tokenizers are read (tokenizer.json, or vocab.json and
added tokens: every tiny checkpoint's and the embedded model's).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import regex
import torch

MAX_CODE_POINT = 0x10FFFF
WHITESPACE = "[ \\n\\r\\t]*"   # JSON whitespace, as xgrammar's any_whitespace


# ---------------------------------------------------------------------------------------
# Token bytes.
# ---------------------------------------------------------------------------------------


def byte_level_table() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: the printable bytes
    stand for themselves, the others (controls, space, DEL, ...) for the
    characters U+0100 onwards, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def decode_vocab_string(token: str, table: dict[str, int]) -> bytes:
    """xgrammar's byte-level decoding of one vocabulary string: through the
    byte-level table when every character is in it, else its UTF-8 text."""
    if all(c in table for c in token):
        return bytes(table[c] for c in token)
    return token.encode("utf-8")


def _vocabulary(path: Path) -> dict[str, int]:
    """Every vocabulary string with its id: the BPE's and the added tokens'."""
    vocab: dict[str, int] = {}
    tok_json = path / "tokenizer.json"
    if tok_json.exists():
        data = json.loads(tok_json.read_text(encoding="utf-8"))
        if data["model"].get("type") != "BPE":
            raise ValueError(f"{tok_json}: only BPE tokenizers are supported")
        vocab.update(data["model"]["vocab"])
        vocab.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
    elif (path / "vocab.json").exists():
        vocab.update(json.loads((path / "vocab.json").read_text(encoding="utf-8")))
        added = path / "added_tokens.json"
        if added.exists():
            vocab.update(json.loads(added.read_text(encoding="utf-8")))
    else:
        raise ValueError(f"{path}: no tokenizer.json or vocab.json")
    config = path / "tokenizer_config.json"
    if config.exists():
        decoder = json.loads(config.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}
        vocab.update({entry["content"]: int(i) for i, entry in decoder.items()})
    return vocab


@lru_cache(maxsize=16)
def token_bytes(tokenizer_dir: str) -> tuple[bytes | None, ...]:
    """Each id's bytes as xgrammar sees them (index = token id, up to the
    tokenizer's largest id); None for an id without a string or with an
    empty one (xgrammar's special tokens: never allowed)."""
    vocab = _vocabulary(Path(tokenizer_dir))
    table = byte_level_table()
    singles = sum(c in vocab for c in table)
    if singles < 128:
        raise ValueError(f"{tokenizer_dir}: not a byte-level BPE vocabulary")
    out: list[bytes | None] = [None] * (max(vocab.values()) + 1)
    for token, i in vocab.items():
        out[i] = decode_vocab_string(token, table) or None
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Code point sets as byte regexes.
# ---------------------------------------------------------------------------------------


def _hex(b: int) -> str:
    return f"\\x{b:02x}"


def literal(data: bytes) -> str:
    """A byte-regex source matching exactly ``data``."""
    return "".join(chr(b) if chr(b).isalnum() and b < 128 else _hex(b) for b in data)


def _utf8(cp: int) -> bytes:
    return chr(cp).encode("utf-8", "surrogatepass")


def _utf8_sequences(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    """Code points ``[lo, hi]`` as sequences of byte ranges: split where the
    encoded length changes, then until every continuation byte of a piece
    spans a whole ``[80, BF]`` or only the bytes of the piece's ends."""
    for limit in (0x7F, 0x7FF, 0xFFFF):
        if lo <= limit < hi:
            return _utf8_sequences(lo, limit) + _utf8_sequences(limit + 1, hi)
    for i in (1, 2, 3):
        m = (1 << (6 * i)) - 1
        if lo & ~m != hi & ~m:
            if lo & m:
                return _utf8_sequences(lo, lo | m) + _utf8_sequences((lo | m) + 1, hi)
            if hi & m != m:
                return _utf8_sequences(lo, (hi & ~m) - 1) + _utf8_sequences(hi & ~m, hi)
    return [list(zip(_utf8(lo), _utf8(hi)))]


def normalized(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged code point ranges."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def complement(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every code point (0 to U+10FFFF) not in ``ranges``."""
    out, nxt = [], 0
    for lo, hi in normalized(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODE_POINT:
        out.append((nxt, MAX_CODE_POINT))
    return out


def code_points(ranges: Iterable[tuple[int, int]]) -> str:
    """A byte-regex source matching the UTF-8 encoding of exactly one code
    point in ``ranges``."""
    alternatives = []
    for lo, hi in normalized(ranges):
        for seq in _utf8_sequences(lo, hi):
            alternatives.append("".join(_hex(a) if a == b else f"[{_hex(a)}-{_hex(b)}]" for a, b in seq))
    return "(?:" + "|".join(alternatives) + ")" if alternatives else "(?!)"


# ---------------------------------------------------------------------------------------
# Regexes, read as xgrammar reads them.
# ---------------------------------------------------------------------------------------

CLASS_ESCAPES = {
    "d": [(0x30, 0x39)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "s": [(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0)],
}
CHAR_ESCAPES = {"n": 0x0A, "r": 0x0D, "t": 0x09, "f": 0x0C, "v": 0x0B, "0": 0x00}


class _RegexTranslator:
    """One pass over a regex pattern (text), writing the byte regex that
    matches the UTF-8 encodings of what xgrammar's regex matches."""

    def __init__(self, pattern: str):
        self.p = pattern
        self.i = 0

    def fail(self, why: str):
        raise ValueError(f"unsupported regex {self.p!r} at {self.i}: {why}")

    def take(self) -> str:
        c = self.p[self.i]
        self.i += 1
        return c

    def escape(self) -> list[tuple[int, int]]:
        """After a backslash: the code point set it stands for."""
        if self.i >= len(self.p):
            self.fail("trailing backslash")
        c = self.take()
        if c.lower() in CLASS_ESCAPES:
            ranges = CLASS_ESCAPES[c.lower()]
            return complement(ranges) if c.isupper() else ranges
        if c in CHAR_ESCAPES:
            cp = CHAR_ESCAPES[c]
        elif c in "xu":
            width = 2 if c == "x" else 4
            digits = self.p[self.i:self.i + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                self.fail(f"\\{c} needs {width} hex digits")
            self.i += width
            cp = int(digits, 16)
        elif not c.isalnum():
            cp = ord(c)
        else:
            self.fail(f"escape \\{c}")
        return [(cp, cp)]

    def class_atom(self) -> tuple[list[tuple[int, int]], bool]:
        """One item of a character class: (its set, whether it is a single
        character that may start a range)."""
        c = self.take()
        if c == "\\":
            ranges = self.escape()
            return ranges, len(ranges) == 1 and ranges[0][0] == ranges[0][1]
        if c == "[":
            self.fail("nested class or POSIX class")
        return [(ord(c), ord(c))], True

    def char_class(self) -> list[tuple[int, int]]:
        """After ``[``: the class's code point set."""
        negate = self.p.startswith("^", self.i)
        self.i += negate
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            if self.i >= len(self.p):
                self.fail("unterminated class")
            if self.p[self.i] == "]" and not first:
                self.i += 1
                break
            first = False
            start, single = self.class_atom()
            if single and self.p.startswith("-", self.i) and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                self.i += 1
                end, end_single = self.class_atom()
                if not end_single or end[0][0] < start[0][0]:
                    self.fail("bad range in class")
                ranges.append((start[0][0], end[0][0]))
            else:
                ranges.extend(start)
        return complement(ranges) if negate else normalized(ranges)

    def quantifier(self) -> str:
        """After ``{``: the quantifier's source (``{m}``, ``{m,}``, ``{m,n}``)."""
        m = regex.match(r"\{(\d+)(,(\d*))?\}", self.p[self.i - 1:])
        if not m:
            self.fail("'{' not starting a quantifier")
        self.i += m.end() - 1
        return m.group(0)

    def translate(self) -> str:
        out: list[str] = []
        depth = 0
        after_atom = False
        p = self.p
        if p.startswith("^"):
            self.i = 1
        escapes = len(p[:-1]) - len(p[:-1].rstrip("\\"))   # backslashes before a final "$"
        end = len(p) - 1 if p.endswith("$") and escapes % 2 == 0 else len(p)
        while self.i < end:
            c = self.take()
            if c in "*+?" or c == "{":
                if not after_atom:
                    self.fail("quantifier without an atom")
                out.append(self.quantifier() if c == "{" else c)
                if self.p.startswith("?", self.i):   # lazy: the same language
                    out.append(self.take())
                elif self.p.startswith("+", self.i):
                    self.fail("possessive quantifier")
                after_atom = False
                continue
            after_atom = True
            if c == "\\":
                out.append(code_points(self.escape()))
            elif c == "[":
                out.append(code_points(self.char_class()))
            elif c == ".":
                out.append(code_points([(0, MAX_CODE_POINT)]))
            elif c == "(":
                if p.startswith("?", self.i):
                    if not p.startswith("?:", self.i):
                        self.fail("only (?:...) groups")
                    self.i += 2
                out.append("(?:")
                depth += 1
                after_atom = False
            elif c == ")":
                if not depth:
                    self.fail("unbalanced ')'")
                out.append(")")
                depth -= 1
            elif c == "|":
                out.append("|")
                after_atom = False
            elif c in "^$":
                self.fail("anchor inside the pattern")
            else:
                data = c.encode("utf-8", "surrogatepass")
                out.append(literal(data) if len(data) == 1 else f"(?:{literal(data)})")
        if depth:
            self.fail("unbalanced '('")
        return "".join(out)


def regex_as_bytes(pattern: str) -> str:
    """The byte-regex source of ``pattern`` as xgrammar reads it."""
    return _RegexTranslator(pattern).translate()


# ---------------------------------------------------------------------------------------
# JSON schemas, as xgrammar writes their grammar.
# ---------------------------------------------------------------------------------------

INTEGER = "(?:0|-?[1-9][0-9]*)"
NUMBER = "-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?(?:[eE][+\\-]?[0-9]+)?"
BOOLEAN = "(?:true|false)"
NULL = "null"


def _json_literal(value) -> str:
    return literal(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def json_string() -> str:
    """xgrammar's ``basic_string``: any code point but controls, ``"`` and
    ``\\``, or an escape."""
    char = code_points(complement([(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]))
    escape = '\\\\(?:[\\"\\\\/bfnrt]|u[A-Fa-f0-9]{4})'
    return f'"(?:{char}|{escape})*"'


def json_string_of_length(min_length: int, max_length: int | None) -> str:
    """xgrammar's length-limited string: ``min..max`` code points other than
    ``"``, ``\\``, CR and LF; no escapes."""
    char = code_points(complement([(0x0A, 0x0A), (0x0D, 0x0D), (0x22, 0x22), (0x5C, 0x5C)]))
    upper = "" if max_length is None else str(max_length)
    return f'"{char}{{{min_length},{upper}}}"'


SCALAR_KEYS = {"type", "title", "description"}


def json_value(schema: dict) -> str:
    """The byte regex of one property's value (the supported subset only)."""
    if not isinstance(schema, dict):
        raise ValueError(f"unsupported property schema {schema!r}")
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        if not values or not all(v is None or isinstance(v, (str, int, bool)) for v in values):
            raise ValueError(f"enum/const values must be strings, integers, booleans or null: {values!r}")
        return "(?:" + "|".join(_json_literal(v) for v in values) + ")"
    kind = schema.get("type")
    extra = set(schema) - SCALAR_KEYS - ({"minLength", "maxLength"} if kind == "string" else set())
    if extra:
        raise ValueError(f"unsupported keywords {sorted(extra)} for type {kind!r}")
    if kind == "integer":
        return INTEGER
    if kind == "number":
        return NUMBER
    if kind == "boolean":
        return BOOLEAN
    if kind == "null":
        return NULL
    if kind == "string":
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if low == 0 and high is None:
            return json_string()
        return json_string_of_length(low, None if high is None else int(high))
    raise ValueError(f"unsupported type {kind!r}")


def json_object(schema: dict, any_whitespace: bool) -> str:
    """The byte regex of a flat object with every property required, in the
    schema's order (xgrammar's strict mode: no other properties)."""
    if schema.get("type") != "object" or not schema.get("properties"):
        raise ValueError("the schema must be an object with properties")
    extra = set(schema) - {"type", "properties", "required", "additionalProperties", "title", "description"}
    if extra or schema.get("additionalProperties", False) is not False:
        raise ValueError(f"unsupported object keywords {sorted(extra) or ['additionalProperties']}")
    props = schema["properties"]
    if set(schema.get("required", [])) != set(props):
        raise ValueError("every property must be required")
    ws = WHITESPACE if any_whitespace else ""
    members = [f"{_json_literal(key)}{ws}:{ws}{json_value(value)}" for key, value in props.items()]
    return "\\{" + ws + f"{ws},{ws}".join(members) + ws + "\\}"


# ---------------------------------------------------------------------------------------
# The acceptor.
# ---------------------------------------------------------------------------------------


class Acceptor:
    """A grammar over one tokenizer's token ids: which next tokens keep the
    output a viable prefix of the language, and whether a token is
    accepted after a committed prefix.

    ``pattern``: a byte-regex source (the language, as bytes);
    ``tokenizer_dir``: a Hugging Face tokenizer directory (byte-level BPE);
    ``stop_ids``: the request's end tokens (vLLM's ``all_stop_token_ids``);
    ``vocab_size``: the model's vocabulary (ids at or past the tokenizer's
    size are never allowed); default config.json's ``vocab_size`` there."""

    def __init__(self, pattern: str, tokenizer_dir, stop_ids: Iterable[int], vocab_size: int | None = None,
                 *, description: str = ""):
        self.source = pattern
        self.pattern = regex.compile(pattern.encode("ascii"))
        self.description = description or pattern
        self.tokens = token_bytes(str(Path(tokenizer_dir).resolve()))
        self.stop_ids = frozenset(int(t) for t in stop_ids)
        if not self.stop_ids:
            raise ValueError("a grammar needs at least one stop id")
        if vocab_size is None:
            vocab_size = json.loads((Path(tokenizer_dir) / "config.json").read_text())["vocab_size"]
        self.vocab_size = int(vocab_size)
        self._allowed: dict[bytes, torch.Tensor] = {}
        self._texts = torch.tensor([i < len(self.tokens) and self.tokens[i] is not None
                                    and i not in self.stop_ids for i in range(self.vocab_size)])

    # --- constructors --------------------------------------------------------------

    @classmethod
    def regex(cls, pattern: str, tokenizer_dir, stop_ids, vocab_size=None) -> "Acceptor":
        """vLLM's ``structured_outputs.regex`` (``compile_regex``)."""
        return cls(regex_as_bytes(pattern), tokenizer_dir, stop_ids, vocab_size, description=f"regex {pattern!r}")

    @classmethod
    def choice(cls, choices: Sequence[str], tokenizer_dir, stop_ids, vocab_size=None) -> "Acceptor":
        """vLLM's ``structured_outputs.choice`` (``choice_as_grammar``: one of
        the literal strings)."""
        if not choices:
            raise ValueError("no choices")
        source = "(?:" + "|".join(literal(c.encode("utf-8")) for c in choices) + ")"
        return cls(source, tokenizer_dir, stop_ids, vocab_size, description=f"choice {list(choices)!r}")

    @classmethod
    def json_schema(cls, schema, tokenizer_dir, stop_ids, vocab_size=None, *,
                    any_whitespace: bool = True) -> "Acceptor":
        """vLLM's ``structured_outputs.json`` for a flat schema (see the
        module docstring); ``any_whitespace=False`` is vLLM's
        ``disable_any_whitespace``."""
        if isinstance(schema, str):
            schema = json.loads(schema)
        return cls(json_object(schema, any_whitespace), tokenizer_dir, stop_ids, vocab_size,
                   description=f"json {json.dumps(schema)} any_whitespace={any_whitespace}")

    def __repr__(self) -> str:
        return f"Acceptor({self.description})"

    # --- matching ------------------------------------------------------------------

    def viable(self, text: bytes) -> bool:
        """``text`` is a prefix of some member of the language."""
        return self.pattern.fullmatch(text, partial=True) is not None

    def complete(self, text: bytes) -> bool:
        """``text`` is a member of the language."""
        return self.pattern.fullmatch(text) is not None

    def state(self, prefix: Sequence[int]) -> tuple[bytes, bool]:
        """(the text of a valid ``prefix``, whether it holds an end token:
        the grammar is then terminated). ``ValueError`` for a prefix the
        grammar does not accept."""
        text = []
        for i, token in enumerate(prefix):
            token = int(token)
            if token in self.stop_ids:
                data = b"".join(text)
                if not self.complete(data):
                    raise ValueError(f"{self!r}: end token {token} at {i} after an incomplete {data!r}")
                return data, True
            data = self.tokens[token] if 0 <= token < min(len(self.tokens), self.vocab_size) else None
            if data is None:
                raise ValueError(f"{self!r}: token {token} at {i} is never allowed")
            text.append(data)
        data = b"".join(text)
        if not self.viable(data):
            raise ValueError(f"{self!r}: {data!r} is no prefix of the language")
        return data, False

    def terminated(self, prefix: Sequence[int]) -> bool:
        """``prefix`` holds an accepted end token: nothing is imposed after it."""
        return self.state(prefix)[1]

    def allowed(self, prefix: Sequence[int]) -> torch.Tensor:
        """``[vocab_size]`` bool: the tokens accepted after ``prefix`` (all of
        them once it is terminated, as vLLM applies no mask then)."""
        text, terminated = self.state(prefix)
        if terminated:
            return torch.ones(self.vocab_size, dtype=torch.bool)
        cached = self._allowed.get(text)
        if cached is None:
            cached = torch.zeros(self.vocab_size, dtype=torch.bool)
            first = [self.viable(text + bytes([b])) for b in range(256)]  # prunes most tokens
            for i in torch.nonzero(self._texts).flatten().tolist():
                data = self.tokens[i]
                cached[i] = first[data[0]] and (len(data) == 1 or self.viable(text + data))
            if self.complete(text):
                cached[[t for t in self.stop_ids if t < self.vocab_size]] = True
            if len(self._allowed) > 4096:
                self._allowed.clear()
            self._allowed[text] = cached
        return cached.clone()

    def accepts(self, prefix: Sequence[int], token: int) -> bool:
        """``token`` may follow ``prefix`` (always, once it is terminated)."""
        text, terminated = self.state(prefix)
        if terminated:
            return True
        token = int(token)
        if token in self.stop_ids:
            return self.complete(text)
        data = self.tokens[token] if 0 <= token < min(len(self.tokens), self.vocab_size) else None
        return data is not None and self.viable(text + data)

    def run(self, prefix: Sequence[int], tokens: Sequence[int]) -> int:
        """How many of ``tokens`` (predictions for the positions after
        ``prefix``, in order) the grammar accepts one after the other, as
        vLLM's ``validate_tokens``: up to the first it rejects, and no further
        than an end token that terminates it. Once terminated before the
        run, all of them."""
        prefix = list(prefix)
        if self.terminated(prefix):
            return len(tokens)
        for n, token in enumerate(tokens):
            if not self.accepts(prefix, token):
                return n
            prefix.append(int(token))
            if int(token) in self.stop_ids:
                return n + 1
        return len(tokens)
