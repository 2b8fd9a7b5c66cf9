"""Exact token-count parity with the ``tokenizers`` package on tokenizers trained in the test.

No shared data is needed: small tokenizers in the layouts sftfast fast-paths (Qwen2 / cl100k
regex + byte-level BPE, GPT-2 byte-level BPE, SentencePiece-style BPE with byte fallback) and in
layouts it does not (WordPiece, Whitespace / Metaspace pre-tokenizers) are trained in-process on
generated English + Chinese + code + whitespace-heavy text, then every count sftfast gives is
compared with ``len(tokenizers.Tokenizer.encode(text).ids)``.
"""

from __future__ import annotations

import functools
import json
import random
import time

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers

import sftfast

QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CL100K = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# --------------------------------------------------------------------------------------------
# Generated training text
# --------------------------------------------------------------------------------------------

_EN_WORDS = (
    "the of and to in is that it for on with as was by at be this are from or have an they "
    "which one you were all we her she there been if more when will would who so no time "
    "people water words number first could made may part over new sound take only little work "
    "know place year live back give most very after thing our just name good sentence man think "
    "say great where help through much before line right too mean old any same tell boy follow "
    "came want show also around form three small set put end does another well large must big "
    "even such because turn here why ask went men read need land different home us move try "
    "kind hand picture again change off play spell air away animal house point page letter "
    "mother answer found study still learn should America world high every near add food "
    "between own below country plant last school father keep tree never start city earth eye "
    "light thought head under story saw left few while along might close something seem next "
    "hard open example begin life always those both paper together got group often run "
    "important until children side feet car mile night walk white sea began grow took river "
    "four carry state once book hear stop without second later miss idea enough eat face watch "
    "far Indian really almost let above girl sometimes mountain cut young talk soon list song "
    "being leave family it's don't I'm you're we've they'll she'd HE'S CAN'T Tokenizer model "
    "training dataset sequence length filter packing rebalancing dedup exact count"
).split()

_ZH_TEXT = (
    "人工智能是计算机科学的一个分支它企图了解智能的实质并生产出一种新的能以人类智能相似的方式"
    "做出反应的智能机器该领域的研究包括机器人语言识别图像识别自然语言处理和专家系统等中华人民"
    "共和国是工人阶级领导的以工农联盟为基础的人民民主专政的社会主义国家法律面前人人平等患者"
    "应当及时就医医生建议多喝水注意休息请问这个问题怎么解决谢谢你的帮助我们明天见今天天气很好"
    "，。！？、；：「」『』（）《》【】"
)

_CODE = [
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n"
    "    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\r\n",
    "class Foo(Bar):\n    def __init__(self, x=None):\n        self.x = x or {}\n\n"
    "    def __repr__(self):\n        return f'Foo({self.x!r})'\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 100;\n",
    "const add = (a, b) => a + b;\nconsole.log(add(40, 2)); // 42\n",
    "if __name__ == \"__main__\":\n    main()\n",
    "    \t  \n\n\n   x = [1, 2, 3]  # trailing   \n\t\t\ty = {'a': 1}\n",
    "<html>\n  <body>\n    <p class=\"x\">Hello&nbsp;world</p>\n  </body>\n</html>\n",
]


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_EN_WORDS) for _ in range(rng.randint(3, 20))]
    words[0] = words[0].capitalize()
    s = " ".join(words)
    if rng.random() < 0.3:
        s += f" {rng.randint(0, 10**rng.randint(1, 9))}"
    return s + rng.choice([".", "!", "?", ",", ":", "...", "\n"])


def _chinese(rng: random.Random) -> str:
    i = rng.randrange(len(_ZH_TEXT) - 30)
    return _ZH_TEXT[i : i + rng.randint(5, 30)]


def _whitespace_heavy(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(2, 8)):
        parts.append(rng.choice(_EN_WORDS))
        parts.append(rng.choice([" ", "  ", "    ", "\t", "\n", "\n\n", "\r\n", " \n ", "   \n"]))
    return "".join(parts)


@functools.cache
def training_corpus() -> tuple[str, ...]:
    """About 120 KB of mixed generated text (deterministic)."""
    rng = random.Random(20240521)
    docs = []
    for _ in range(1500):
        kind = rng.random()
        if kind < 0.45:
            docs.append(" ".join(_sentence(rng) for _ in range(rng.randint(1, 3))))
        elif kind < 0.7:
            docs.append(_chinese(rng) + rng.choice(["。", "，", "？", ""]) + _chinese(rng))
        elif kind < 0.85:
            docs.append(rng.choice(_CODE))
        else:
            docs.append(_whitespace_heavy(rng))
    return tuple(docs)


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def _edit_json(tok: Tokenizer, edit) -> Tokenizer:
    spec = json.loads(tok.to_str())
    edit(spec)
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def _byte_level_bpe(split_pattern: str | None, *, vocab_size: int = 1500) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if split_pattern is not None:
        # Qwen2 / cl100k / Llama-3 layout.
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split_pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        # GPT-2 layout: the ByteLevel pre-tokenizer's own regex.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=CHATML_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    return tok


def _sentencepiece_bpe(*, byte_fallback: bool, fuse_unk: bool = True) -> Tokenizer:
    """Llama-2 / Phi-3 layout: Prepend + Replace normaliser, no pre-tokenizer, byte fallback."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=byte_fallback, fuse_unk=fuse_unk))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
    )
    # Train on "▁word" pieces (as SentencePiece does), then drop the pre-tokenizer as Llama does.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never")
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=["<unk>", "<s>", "</s>"],
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)

    def edit(spec):
        spec["pre_tokenizer"] = None
        vocab = spec["model"]["vocab"]
        if byte_fallback:
            nxt = max(vocab.values()) + 1
            for b in range(256):
                vocab[f"<0x{b:02X}>"] = nxt + b
        spec["model"]["byte_fallback"] = byte_fallback
        spec["model"]["fuse_unk"] = fuse_unk
        spec["decoder"] = {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        }

    tok = _edit_json(tok, edit)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A </s> <s> $B", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return tok


def _wordpiece() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=1200, special_tokens=["[UNK]", "[CLS]", "[SEP]"], show_progress=False
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    tok.post_processor = processors.BertProcessing(
        ("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]"))
    )
    return tok


def _bpe_whitespace() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=1200, special_tokens=["[UNK]", "<|im_end|>"], show_progress=False
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    return tok


def _bpe_metaspace() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=1200, special_tokens=["<unk>", "<s>"], show_progress=False
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    return tok


def _byte_level_str(text: str) -> str:
    """GPT-2's byte -> printable-char mapping, as byte-level vocabularies spell tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return "".join(table[b] for b in text.encode("utf-8"))


# Whole pieces (under the cl100k regex) that get vocab entries no merge can build.
UNREACHABLE_PIECES = [" HELLOWORLD", "中文字符串", " xyzzy", "QQQQ", "\n\n\t", " '", "...."]


def _cl100k_ignore_merges(ignore_merges: bool = True) -> Tokenizer:
    """Llama-3 style: byte-level BPE with ``ignore_merges`` (a piece that is a vocab entry is one
    token even when no merge sequence builds it)."""

    def edit(spec):
        vocab = spec["model"]["vocab"]
        nxt = max(vocab.values()) + 1
        for piece in UNREACHABLE_PIECES:
            key = _byte_level_str(piece)
            if key not in vocab:
                vocab[key] = nxt
                nxt += 1
        spec["model"]["ignore_merges"] = ignore_merges

    return _edit_json(_byte_level_bpe(CL100K), edit)


def _gpt2_prefix_lower() -> Tokenizer:
    """GPT-2 byte-level with ``add_prefix_space=True`` and an NFKC + Lowercase normaliser."""
    tok = _byte_level_bpe(None)
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    return tok


# name -> (builder, sftfast is expected to take its fast path)
BUILDERS = {
    "qwen2": (lambda: _byte_level_bpe(QWEN2), True),
    "cl100k": (lambda: _byte_level_bpe(CL100K), True),
    "gpt2": (lambda: _byte_level_bpe(None), True),
    "sentencepiece_bytefallback": (lambda: _sentencepiece_bpe(byte_fallback=True), True),
    "sentencepiece_unk_fused": (lambda: _sentencepiece_bpe(byte_fallback=False), True),
    "sentencepiece_unk_unfused": (
        lambda: _sentencepiece_bpe(byte_fallback=False, fuse_unk=False),
        True,
    ),
    "cl100k_ignore_merges": (_cl100k_ignore_merges, True),
    "cl100k_unreachable_vocab": (lambda: _cl100k_ignore_merges(False), True),
    "gpt2_prefix_nfkc_lower": (_gpt2_prefix_lower, True),
    "wordpiece_fallback": (_wordpiece, False),
    "bpe_whitespace_fallback": (_bpe_whitespace, False),
    "bpe_metaspace": (_bpe_metaspace, True),  # Metaspace(split=True): counted on the fast path
}
NAMES = list(BUILDERS)


@functools.cache
def hf_tokenizer(name: str) -> Tokenizer:
    return BUILDERS[name][0]()


@functools.cache
def sft_tokenizer(name: str) -> sftfast.Tokenizer:
    return sftfast.load_tokenizer(hf_tokenizer(name))


# --------------------------------------------------------------------------------------------
# Comparison helpers
# --------------------------------------------------------------------------------------------


def hf_counts(name: str, texts: list[str | None], add_special_tokens: bool) -> list[int | None]:
    hf = hf_tokenizer(name)
    present = [t for t in texts if t is not None]
    enc = iter(hf.encode_batch_fast(present, add_special_tokens=add_special_tokens))
    return [None if t is None else len(next(enc).ids) for t in texts]


def sft_counts(name: str, texts: list[str | None], add_special_tokens: bool) -> list[int | None]:
    out = sftfast.count_tokens(texts, sft_tokenizer(name), add_special_tokens=add_special_tokens)
    assert out.dtype == pl.UInt32
    assert len(out) == len(texts)
    return out.to_list()


def _short(t: str, limit: int = 300) -> str:
    r = repr(t)
    return r if len(r) <= limit else f"{r[:limit]}... ({len(t)} chars)"


def assert_parity(name: str, texts: list[str | None], add_special_tokens: bool = False) -> None:
    got = sft_counts(name, texts, add_special_tokens)
    want = hf_counts(name, texts, add_special_tokens)
    if got == want:
        return
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    lines = [
        f"tokenizer {name!r} (add_special_tokens={add_special_tokens}): {len(bad)} of "
        f"{len(texts)} counts differ from tokenizers"
    ]
    for i in bad[:5]:
        lines.append(f"  row {i}: sftfast={got[i]} hf={want[i]} text={_short(texts[i])}")
    pytest.fail("\n".join(lines), pytrace=False)


# --------------------------------------------------------------------------------------------
# Text strategies
# --------------------------------------------------------------------------------------------

EDGE_PIECES = [
    # letters, words, CJK, kana, hangul (precomposed and as jamo)
    "a", "Z", "hello", " world", "The", "É", "ß", "İ", "ǅ", "Σ", "ς", "ﬁ", "ª", "ʰ",
    "中", "文字", "的", "。", "，", "あ", "カ", "한", "\u1100\u1161", "𠀀", "𝐀",
    # digits: ASCII, fullwidth, roman numerals, superscripts, fractions, others
    "0", "7", "42", "1234567", "１２３", "Ⅻ", "ⅷ", "²", "½", "①", "٣", "߃", "𝟏",
    # contractions in all cases, and the long s (case-folds to s)
    "'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'ve", "'VE", "'m", "'M", "'ll", "'LL",
    "'d", "'D", "'", "\u017f", "'\u017f", "\u2019s", "K", "\u212a",
    # whitespace of every kind
    " ", "  ", "    ", "\t", "\t\t", "\n", "\n\n", "\r", "\r\n", "\r\n\r\n", "\x0b", "\x0c",
    "\xa0", "\u3000", "\u2028", "\u2029", "\x85", "\u1680", "\u2002", "\u200b", "\u202f",
    "\u205f", "\ufeff", "\x1c", "\x1f", "\u180e",
    # punctuation / symbols / code
    ".", ",", "!", "?", "...", "--", "->", "=>", "{", "}", "()", "[]", "#", "@", "$", "%",
    "\\", "/", "\"", "`", "~", "_", "__init__", "<", ">", "<|", "|>", "<s>", "</s>", "▁",
    "\u2581\u2581",
    # emoji, ZWJ sequences, flags, skin tones, variation selectors
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇺🇸", "❤️", "\ufe0f",
    # combining marks (NFC composes some), compatibility characters
    "e\u0301", "\u0301", "a\u0308\u0304", "\u0915\u094d\u0937", "\u212b", "\u2126", "\uff21",
    "\u00c5", "A\u030a",
    # control characters and private use
    "\x00", "\x01", "\x7f", "\ue000",
    # special / added tokens
    "<|im_end|>", "<|im_start|>", "<|endoftext|>", "<unk>", "[UNK]", "<0x41>",
]

_piece = st.one_of(
    st.sampled_from(EDGE_PIECES),
    st.sampled_from(EDGE_PIECES),
    st.characters(codec="utf-8"),
    st.text(alphabet=st.sampled_from("abcXYZ 0129中文'\n\t"), min_size=1, max_size=12),
)
edge_texts = st.lists(_piece, max_size=40).map("".join)
text_batches = st.lists(edge_texts, min_size=1, max_size=16)

HYPO = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_training_is_fast() -> None:
    for name in NAMES:
        t0 = time.perf_counter()
        BUILDERS[name][0]()
        assert time.perf_counter() - t0 < 1.0, f"training {name} takes >= 1 s"


@pytest.mark.parametrize("name", NAMES)
def test_fast_path_flag(name: str) -> None:
    tok = sft_tokenizer(name)
    expected = BUILDERS[name][1]
    assert tok.fast_path is expected, (name, tok.fast_path_reason)
    if expected:
        assert tok.fast_path_reason is None
    else:
        assert isinstance(tok.fast_path_reason, str) and tok.fast_path_reason


def test_byte_fallback_really_used() -> None:
    hf = hf_tokenizer("sentencepiece_bytefallback")
    assert hf.token_to_id("😀") is None
    toks = hf.encode("😀 x", add_special_tokens=False).tokens
    assert "<0xF0>" in toks and "<0x9F>" in toks and "<unk>" not in toks
    # and without byte fallback, unknown characters become <unk> (fused or not)
    unk = hf_tokenizer("sentencepiece_unk_fused").encode("😀😀", add_special_tokens=False).tokens
    assert unk.count("<unk>") == 1
    unk2 = hf_tokenizer("sentencepiece_unk_unfused").encode("😀😀", add_special_tokens=False)
    assert unk2.tokens.count("<unk>") == 2
    for name in ("sentencepiece_bytefallback", "sentencepiece_unk_fused",
                 "sentencepiece_unk_unfused"):
        assert_parity(name, ["😀", "😀😀", "😀 x", "a😀b", "\U0010fffd", "\x00"])


def test_ignore_merges_matters() -> None:
    texts = [*UNREACHABLE_PIECES, "a HELLOWORLD b", "中文字符串。", "QQQQQQQQ", " '....'"]
    with_ignore = hf_counts("cl100k_ignore_merges", texts, False)
    without = hf_counts("cl100k_unreachable_vocab", texts, False)
    assert with_ignore != without  # the setting really changes counts on these texts
    assert with_ignore[0] == 1
    assert_parity("cl100k_ignore_merges", texts)
    assert_parity("cl100k_unreachable_vocab", texts)


# On a failure, hypothesis' pytest plugin imports libcst, which warns on import (and warnings are
# errors in this project): keep that from turning a real failure into an INTERNALERROR.
@pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", NAMES)
@HYPO
@given(texts=text_batches, add_special_tokens=st.booleans())
def test_hypothesis_parity(name: str, texts: list[str], add_special_tokens: bool) -> None:
    assert_parity(name, texts, add_special_tokens)


_CODE_SAMPLE = (
    "import os\n\n\nclass Walker:\n    \"\"\"Walk.\"\"\"\n\n    def __init__(self, root):\n"
    "        self.root = root\n\n    def run(self):\n        for d, _, fs in os.walk(self.root):\n"
    "            for f in fs:\n                if f.endswith('.py'):\n"
    "                    yield os.path.join(d, f)\n\t\n\t\tpass  \n"
)

SMALL_CASES: list[str | None] = [
    "",
    None,
    " ",
    "  ",
    "\n",
    "\n\n\n",
    "\t",
    " \t \n ",
    "\r\n",
    " \r\n\r\n  ",
    "\u3000\u3000",
    "\xa0",
    "\u2028",
    "\x85",
    "\nSure! Here's the answer:\n\n1. First",
    "\n\n```python\nprint('hi')\n```",
    " leading space",
    "trailing space ",
    "0" * 1000,
    "1234567890" * 500,
    "３１４１５９２６５３５８９７９３２３８４６",
    "Ⅻ²½①" * 50,
    "v1.2.3-rc4 3.14159 1,000,000 0x1F 1e-9",
    _CODE_SAMPLE,
    _CODE_SAMPLE.replace("    ", "\t"),
    _CODE_SAMPLE.replace("\n", "\r\n"),
    "It's, they're, we've, I'm, you'll, he'd, IT'S, THEY'RE, WE'VE, I'M, YOU'LL, HE'D",
    "'s'S'\u017f '\u017f s'\u017f'",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>",
    "<|im_end|>",
    "a<|im_end|>b",
    "<|im_end|><|im_end|>",
    "<|im_end",
    "e\u0301 A\u030a \u212b \uff21\uff22",
    "人工智能是计算机科学的一个分支。" * 20,
    "😀" * 100,
    "👨\u200d👩\u200d👧\u200d👦 family",
    "a" * 5000,
    " " * 5000,
    "\n" * 5000,
    " \n" * 2000,
    "\u2581hello\u2581\u2581world",
]


@functools.cache
def big_cases() -> tuple[str, ...]:
    """1 MiB inputs: mixed documents, and a single 1 MiB word (one pre-tokenizer piece)."""
    rng = random.Random(7)
    corpus = training_corpus()
    docs, size = [], 0
    while size < (1 << 20):
        doc = rng.choice(corpus)
        docs.append(doc)
        size += len(doc.encode())
    return ("".join(docs), "x" * (1 << 20))


@pytest.mark.parametrize("add_special_tokens", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_deterministic_cases(name: str, add_special_tokens: bool) -> None:
    assert_parity(name, SMALL_CASES, add_special_tokens)


# One tokenizer per kind of splitter / model (1 MiB inputs cost ~0.3 s each in `tokenizers`).
@pytest.mark.parametrize("name", ["qwen2", "gpt2", "sentencepiece_bytefallback",
                                  "wordpiece_fallback"])
def test_one_mebibyte_inputs(name: str) -> None:
    assert_parity(name, list(big_cases()))


@pytest.mark.parametrize("name", NAMES)
def test_training_corpus_parity(name: str) -> None:
    assert_parity(name, list(training_corpus()))


@pytest.mark.parametrize("name", NAMES)
def test_series_input_and_nulls(name: str) -> None:
    texts = ["hello world", None, "", "中文", None]
    s = pl.Series("t", texts, dtype=pl.String)
    got = sftfast.count_tokens(s, sft_tokenizer(name))
    assert got.dtype == pl.UInt32
    assert got.to_list() == hf_counts(name, texts, False)
    assert got.null_count() == 2


@pytest.mark.parametrize("name", ["qwen2", "sentencepiece_bytefallback", "wordpiece_fallback"])
def test_thread_count_does_not_change_counts(name: str) -> None:
    rng = random.Random(3)
    corpus = list(training_corpus())
    texts = [" ".join(rng.sample(corpus, 3)) for _ in range(3000)] + SMALL_CASES
    before = sftfast.get_num_threads()
    try:
        sftfast.set_num_threads(1)
        one = sft_counts(name, texts, False)
        sftfast.set_num_threads(2)
        two = sft_counts(name, texts, False)
    finally:
        sftfast.set_num_threads(0)
    assert one == two
    assert one == hf_counts(name, texts, False)
    assert before >= 1


@pytest.mark.parametrize("name", ["qwen2", "gpt2", "sentencepiece_bytefallback",
                                  "wordpiece_fallback"])
def test_load_paths_share_key(name: str, tmp_path) -> None:
    hf = hf_tokenizer(name)
    text = hf.to_str()
    (tmp_path / "tokenizer.json").write_text(text, encoding="utf-8")
    by_obj = sftfast.load_tokenizer(hf)
    by_file = sftfast.load_tokenizer(tmp_path / "tokenizer.json")
    by_str_path = sftfast.load_tokenizer(str(tmp_path / "tokenizer.json"))
    by_dir = sftfast.load_tokenizer(tmp_path)
    assert by_obj.key == by_file.key == by_str_path.key == by_dir.key
    assert by_obj.fast_path == by_file.fast_path == by_dir.fast_path == BUILDERS[name][1]
    assert sftfast.load_tokenizer(by_obj) is by_obj
    texts = ["hello world", "中文 text <|im_end|>", "", "  x\n"]
    want = hf_counts(name, texts, False)
    for tok in (by_obj, by_file, by_dir):
        assert sftfast.count_tokens(texts, tok).to_list() == want
    # a different tokenizer has a different key
    other = "cl100k" if name != "cl100k" else "qwen2"
    assert sft_tokenizer(other).key != by_obj.key
