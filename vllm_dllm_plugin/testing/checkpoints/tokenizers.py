"""The two tokenizer builders, LLaDA's byte-level BPE and the Qwen2 BPE that
Dream and Fast-dLLM v2 share, and the writer of any family's tokenizer files.

Both BPEs are trained on built-in corpora, so a vocabulary size always gives
the same ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from .core import write_json

# LLaDA's special tokens (names and relative order as in LLaDA-8B-Instruct).
BOS = "<|startoftext|>"  # 126080 in the 8B model
EOS = "<|endoftext|>"  # 126081; also pad, and pads the answer after <|eot_id|>
CLS = "[CLS]"  # 126082
GMASK = "[gMASK]"  # 126083
MASK = "<|mdm_mask|>"  # 126336, config.json mask_token_id
ADDITIONAL = [
    "<role>",
    "</role>",
    "<|arithmetic_start|>",
    "<|arithmetic_end|>",
    "<|number_start|>",
    "<|number_end|>",
]
START_HEADER = "<|start_header_id|>"  # 126346
END_HEADER = "<|end_header_id|>"  # 126347
EOT = "<|eot_id|>"  # 126348, ends a turn
MIN_RESERVED = 4  # at least this many <|reserved_token_N|> fillers

# A small English corpus to train the byte-level BPE on, so that token ids
# decode to real word pieces.  Written for these checkpoints; any change to it
# changes every tiny tokenizer.
CORPUS = """\
The quick brown fox jumps over the lazy dog. A small model can still learn to speak.
Once upon a time there was a little town by the sea. The people of the town were fishermen,
and every morning they went out in their boats before the sun came up. In the evening they
came back with fish, and the children ran down to the water to meet them.
What is the capital of France? The capital of France is Paris. What is two plus three? It is five.
Please write a short poem about the moon. The moon is bright tonight; it lights the road home.
Question: How many days are there in a week? Answer: There are seven days in a week.
Question: Which is larger, ten or twelve? Answer: Twelve is larger than ten.
The weather today is sunny with a light wind from the west. Tomorrow it will rain in the afternoon.
She opened the window and looked at the garden. The flowers were red, yellow, white and blue.
He said that he would come back later, but nobody believed him. They waited for an hour.
I think that the best way to learn something new is to practice a little every day.
You should always read the instructions carefully before you start working on a problem.
We are going to the market to buy bread, milk, eggs, apples, cheese and some vegetables.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 20 42 100 256 1000 2024 3.14 1/2 50% $5.
First, take the first number. Second, add the second number. Finally, write down the result.
Let us think step by step. If Tom has three apples and gives one to Mary, he has two apples left.
The computer program reads a file, counts the words and prints the number of lines.
def add(a, b):
    return a + b
for i in range(10):
    print(i)
A good answer is clear, correct and short. A bad answer is long, vague or wrong.
Thank you for your question. I am happy to help. Here is a simple explanation of the idea.
Diffusion language models generate text by filling in masked tokens over several steps.
At each step the model predicts every masked position at once and keeps the most confident ones.
Hello! How are you today? I am fine, thank you. What would you like to talk about?
The history of science is full of people who asked simple questions and found surprising answers.
Water boils at one hundred degrees and freezes at zero degrees on the Celsius scale.
The train leaves the station at nine o'clock and arrives in the city two hours later.
My favourite colours are green and orange, and my favourite animal is the cat.
They built a new house near the river, with a large kitchen and three small bedrooms.
The teacher asked the students to write an essay about their summer holidays.
In the end, everything worked out well, and they all lived happily together.
"""

# Qwen2's pre-tokenization: this split, then byte-level mapping without a
# regex of its own; NFC normalization first.  (The same regex as in the hub's
# tokenization_dream.py.)
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# More text for the Qwen2 BPE (Qwen2 pre-tokenization splits digits one by
# one, so CORPUS alone yields fewer merges than the larger presets need).
# Written for these checkpoints; changing it changes every Dream and v2 tokenizer.
DREAM_EXTRA_CORPUS = """\
The library opens at eight in the morning and closes at six in the evening, except on Sundays.
Students borrowed books about mountains, rivers, forests, deserts, islands and distant planets.
A careful engineer measures twice, writes the plan down, and only then starts to build the bridge.
The orchestra played a quiet melody while the audience listened without making a single sound.
Gardeners plant tomatoes in spring, harvest them in summer, and prepare the soil again in autumn.
Our neighbours have a friendly dog called Biscuit who loves chasing balls across the park.
The museum shows paintings, sculptures, ancient coins, old maps and a very large dinosaur skeleton.
Scientists observed that the temperature of the ocean changes slowly from season to season.
If you follow the path through the valley, you will reach the village before the sunset.
Cooking rice requires water, salt, patience and a pot with a tight lid; stir it gently.
The children built a castle of sand, decorated it with shells and watched the waves wash it away.
Every programmer knows that testing small functions first saves hours of debugging later.
Mathematics describes patterns: triangles, circles, squares, sequences, functions and probabilities.
Travellers should carry a passport, a ticket, comfortable shoes, a warm jacket and some snacks.
The mayor announced that the new hospital would open next month near the central station.
Birds migrate south when the days become shorter and the nights grow colder and longer.
"""


def train_byte_level_bpe(tok: Tokenizer, vocab_size: int, lines: list[str]) -> None:
    """Train ``tok``'s BPE model on ``lines`` up to ``vocab_size`` tokens, every
    byte in the initial alphabet.  Training on a fixed list of lines makes the
    result depend only on the built-in corpora."""
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer=trainer)


def check_special_ids(tok: Tokenizer, ids: dict[str, int], n_base: int, vocab_size: int) -> None:
    """The special tokens must fill ``[n_base, vocab_size)`` in order, so the
    tokenizer covers every id a model of ``vocab_size`` can emit."""
    assert list(ids.values()) == list(range(n_base, vocab_size)), "special ids not contiguous"
    assert tok.get_vocab_size() == vocab_size


def unreadable_ids(tok: Tokenizer, ids: dict[str, int], mask: str) -> list[int]:
    """``mask``'s id, then every non-special id that alone decodes to no
    readable text (see :func:`unreadable_token_ids` for why)."""
    special = set(ids.values())
    unreadable = [ids[mask]]
    for i in range(tok.get_vocab_size()):
        text = tok.decode([i]).replace("\n", "").replace("\t", "")
        if i not in special and ("\ufffd" in text or not text.isprintable()):
            unreadable.append(i)
    return unreadable


@dataclass(frozen=True)
class TokenizerFiles:
    """What one family's tokenizer files say beyond the tokenizer itself (its
    BPE and added tokens); :func:`write_tokenizer` writes any family's files
    from it.

    ``roles`` (``bos_token``, ``eos_token``, ...) go into
    tokenizer_config.json as given, ``None`` included, and the set ones into
    special_tokens_map.json; ``config`` holds the family's other
    tokenizer_config.json keys.  Every added token is "special" except those
    in ``not_special``.  ``tokenizer_json`` writes tokenizer.json (the fast
    tokenizer); ``slow_files`` writes vocab.json, merges.txt and
    added_tokens.json (a slow, Qwen2-style BPE).
    """

    roles: Mapping[str, str | None]
    additional_special_tokens: Sequence[str]
    chat_template: str
    config: Mapping[str, object]
    not_special: frozenset[str] = frozenset()
    tokenizer_json: bool = True
    slow_files: bool = False


def _token_entry(content: str) -> dict:
    """A special_tokens_map.json entry: the content with all flags False."""
    flags = dict(lstrip=False, normalized=False, rstrip=False, single_word=False)
    return {"content": content, **flags}


def _bpe_vocab_and_merges(tok: Tokenizer) -> tuple[dict[str, int], list[str]]:
    """The trained BPE model's vocabulary (without added tokens) and merges
    as ``merges.txt`` lines."""
    model = json.loads(tok.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def write_tokenizer(out_dir: Path, files: TokenizerFiles, tok: Tokenizer, ids: dict[str, int]) -> None:
    """The tokenizer files ``files`` describes, for ``tok`` whose added
    tokens have the ids ``ids``: tokenizer_config.json (with an
    ``added_tokens_decoder`` entry per added token), special_tokens_map.json,
    and tokenizer.json and/or vocab.json, merges.txt, added_tokens.json."""
    if files.tokenizer_json:
        tok.save(str(out_dir / "tokenizer.json"))
    if files.slow_files:
        vocab, merges = _bpe_vocab_and_merges(tok)
        (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
        (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        (out_dir / "added_tokens.json").write_text(
            json.dumps(ids, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )

    flags = dict(lstrip=False, normalized=False, rstrip=False, single_word=False)
    added_tokens_decoder = {
        str(i): {"content": s, **flags, "special": s not in files.not_special} for s, i in ids.items()
    }
    additional = list(files.additional_special_tokens)
    write_json(
        out_dir / "tokenizer_config.json",
        {
            "added_tokens_decoder": added_tokens_decoder,
            "additional_special_tokens": additional,
            "chat_template": files.chat_template,
            **files.roles,
            **files.config,
        },
    )
    write_json(
        out_dir / "special_tokens_map.json",
        {
            "additional_special_tokens": additional,
            **{role: _token_entry(s) for role, s in files.roles.items() if s is not None},
        },
    )


def build_llada_tokenizer(vocab_size: int, *, merges: bool = True) -> tuple[Tokenizer, dict[str, int]]:
    """Byte-level BPE trained on ``CORPUS``, plus LLaDA's special tokens.

    With ``merges=False`` the BPE has no merges: every character is its own
    token (the 256 byte symbols), as a model trained on digits wants.

    Layout mirrors the 8B tokenizer: ordinary BPE tokens first, then the
    special block <|startoftext|>, <|endoftext|>, [CLS], [gMASK],
    <|reserved_token_N|>..., <|mdm_mask|>, <role>..., <|start_header_id|>,
    <|end_header_id|>, <|eot_id|>.  Reserved fillers make the tokenizer cover
    every id in [0, vocab_size), so any id a random model emits decodes.
    Returns the tokenizer and the special token ids by content.
    """
    named_after_mask = [MASK, *ADDITIONAL, START_HEADER, END_HEADER, EOT]
    n_named = 4 + len(named_after_mask)
    n_base_target = vocab_size - n_named - MIN_RESERVED
    if n_base_target < 256 + (16 if merges else 0):
        raise ValueError(f"vocab_size={vocab_size} is too small for a byte-level BPE")

    if merges:
        tok = Tokenizer(models.BPE())
    else:
        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if merges:
        train_byte_level_bpe(tok, n_base_target, CORPUS.splitlines(keepends=True))
    n_base = tok.get_vocab_size()  # may be below the target if CORPUS runs out

    n_reserved = vocab_size - n_base - n_named
    specials = [BOS, EOS, CLS, GMASK]
    specials += [f"<|reserved_token_{i}|>" for i in range(n_reserved)]
    specials += named_after_mask
    flags = dict(special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
    tok.add_special_tokens([AddedToken(s, **flags) for s in specials])
    ids = {s: tok.token_to_id(s) for s in specials}
    check_special_ids(tok, ids, n_base, vocab_size)
    return tok, ids


def _qwen2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def build_qwen2_tokenizer(added: Sequence[tuple[str, bool]], size: int) -> tuple[Tokenizer, dict[str, int]]:
    """Qwen2-style byte-level BPE trained on the built-in corpora, plus the
    ``added`` tokens at the top: the BPE fills ids ``[0, size - len(added))``
    exactly and the added tokens the rest, so every id below ``size``
    decodes.  Returns the tokenizer and the added token ids by content.
    """
    n_base = size - len(added)
    if n_base < 256 + 16:
        raise ValueError(f"vocab_size={size} is too small for a byte-level BPE")

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = _qwen2_pre_tokenizer()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    train_byte_level_bpe(tok, n_base, (CORPUS + DREAM_EXTRA_CORPUS).splitlines(keepends=True))
    if tok.get_vocab_size() != n_base:
        raise ValueError(
            f"the built-in corpus yields only {tok.get_vocab_size()} BPE tokens; "
            f"vocab_size={size} needs {n_base} (use a smaller vocab_size)"
        )

    flags = dict(normalized=False, lstrip=False, rstrip=False, single_word=False)
    tok.add_tokens([AddedToken(s, special=special, **flags) for s, special in added])
    ids = {s: tok.token_to_id(s) for s, _ in added}
    check_special_ids(tok, ids, n_base, size)
    return tok, ids
