"""Exact token-count parity with the ``tokenizers`` package on the real shared data sets.

Every string value of every record of every data file under ``../shared/data`` (dict values,
list items, nested conversations, the ``tools`` JSON strings, ...) is counted by sftfast with
each of the four real tokenizers in ``../shared/data/tokenizers`` and compared with
``len(tokenizers.Tokenizer.encode(text, add_special_tokens=False).ids)``.

``tokenizers`` is run once per distinct text (the data sets repeat many prompts); sftfast gets
every row, duplicates included.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from tokenizers import Tokenizer

import sftfast

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"
TOKENIZER_DIR = DATA / "tokenizers"
TOKENIZER_NAMES = ["qwen2-bpe151k-rebuilt", "cl100k_base", "phi-2", "phi-3-mini"]

if not DATA.is_dir() or not TOKENIZER_DIR.is_dir():
    pytest.skip(
        f"../shared is absent ({SHARED} has no data/ and data/tokenizers/): real-data parity "
        "tests need the shared data sets",
        allow_module_level=True,
    )

# Files the shared README lists; the loader must find (at least) these with these row counts.
EXPECTED_ROWS = {
    "belle_eval_zh/eval_set.json": 1000,
    "codealpaca_2k_en/code_alpaca_2k.json": 2017,
    "fastchat_dummy_conversation_en/dummy_conversation.json": 500,
    "glaive_toolcall_en_demo/glaive_toolcall_en_demo.json": 300,
    "gpteacher_en/codegen-instruct.json": 4535,
    "gpteacher_en/roleplay-simple-deduped-roleplay-instruct.json": 1923,
    "gpteacher_en/toolformer-dedupe-only-dataset.json": 7673,
    "gsm8k_train_en/train.jsonl": 7473,
    "lawyer_llama_zh/fakao_gpt4.json": 1000,
    "lawyer_llama_zh/judical_examination.json": 2000,
    "lawyer_llama_zh/legal_advice.json": 5000,
    "lawyer_llama_zh/legal_counsel_multi_turn_with_article_v2.json": 476,
    "lawyer_llama_zh/legal_counsel_with_article_v2.json": 1000,
    "lawyer_llama_zh/zixun_gpt4.json": 1000,
    "medicalgpt_medical_sft_zh/medical_sft_1K_format.jsonl": 1000,
    "mt_bench_questions_en/question.jsonl": 80,
    "pclue_zh/pCLUE_train_9.json": 705,
}

HF_CHUNK = 4096  # texts per `encode_batch_fast` call (keeps the Encoding objects small)


# --------------------------------------------------------------------------------------------
# Loading the corpus
# --------------------------------------------------------------------------------------------


def iter_records(path: Path) -> Iterator[Any]:
    """Records of a data file: a JSON array (``.json``) or JSON Lines (``.jsonl``, and the
    ``.json`` files that are really JSON Lines). Rows wrapped in one-element lists are kept as
    they are; :func:`collect_strings` walks into them."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            pass  # JSON Lines whose rows are arrays
        else:
            assert isinstance(data, list), path
            yield from data
            return
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:  # pragma: no cover - data problem
                raise AssertionError(f"{path}:{lineno}: not JSON Lines: {e}") from e


def collect_strings(obj: Any, out: list[str]) -> None:
    """Every string value in ``obj``, recursively (dict values, list items), in order."""
    if isinstance(obj, str):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            collect_strings(v, out)
    elif isinstance(obj, list):
        for v in obj:
            collect_strings(v, out)


def _unwrap(record: Any) -> Any:
    while isinstance(record, list) and len(record) == 1:
        record = record[0]
    return record


def _chatml(messages: list[tuple[str, str]]) -> str:
    return "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)


def chat_documents(rel: str, record: Any) -> list[str]:
    """Chat-formatted documents (ChatML, with the special-token text inline) for the data sets
    that hold conversations, as an SFT pipeline would build them."""
    record = _unwrap(record)
    if not isinstance(record, dict):
        return []
    msgs: list[tuple[str, str]] = []
    if isinstance(record.get("conversations"), list):
        if isinstance(record.get("tools"), str):
            msgs.append(("system", record["tools"]))
        for m in record["conversations"]:
            role = m.get("from", m.get("role", "user"))
            msgs.append((str(role), str(m.get("value", m.get("content", "")))))
    elif isinstance(record.get("turns"), list):
        msgs = [("user", t) for t in record["turns"] if isinstance(t, str)]
    elif isinstance(record.get("history"), list):
        msgs = [("user", str(h)) for h in record["history"]]
    else:
        prompt = "\n\n".join(
            str(record[k]) for k in ("instruction", "query", "question", "input") if record.get(k)
        )
        answer = next(
            (str(record[k]) for k in ("output", "response", "answer", "std_answer", "target")
             if k in record),
            None,
        )
        if prompt and answer is not None:
            msgs = [("user", prompt), ("assistant", answer)]
    if not msgs:
        return []
    return [_chatml(msgs)]


@dataclass
class Corpus:
    texts: list[str]  # every string of every record, duplicates kept
    origin: list[str]  # data file of each text
    rows: dict[str, int]  # records per file
    unique: list[str]  # distinct texts, first-seen order
    index: list[int]  # texts[i] == unique[index[i]]
    chat_docs: list[str]  # ChatML documents built from the records
    load_s: float


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    t0 = time.perf_counter()
    files = sorted(
        p
        for p in DATA.rglob("*")
        if p.is_file() and p.suffix in (".json", ".jsonl") and TOKENIZER_DIR not in p.parents
    )
    texts: list[str] = []
    origin: list[str] = []
    rows: dict[str, int] = {}
    chat: list[str] = []
    for path in files:
        rel = path.relative_to(DATA).as_posix()
        n_rows = 0
        for record in iter_records(path):
            n_rows += 1
            before = len(texts)
            collect_strings(record, texts)
            origin.extend([rel] * (len(texts) - before))
            chat.extend(chat_documents(rel, record))
        rows[rel] = n_rows
    position: dict[str, int] = {}
    index = [position.setdefault(t, len(position)) for t in texts]
    unique = list(position)
    return Corpus(texts, origin, rows, unique, index, chat, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Tokenizers and reference counts
# --------------------------------------------------------------------------------------------


_HF_UNIQUE_COUNTS: dict[str, list[int]] = {}  # tokenizer name -> counts of Corpus.unique


@dataclass
class Pair:
    name: str
    hf: Tokenizer
    tok: sftfast.Tokenizer

    def hf_counts(self, texts: list[str], add_special_tokens: bool = False) -> list[int]:
        out: list[int] = []
        for i in range(0, len(texts), HF_CHUNK):
            enc = self.hf.encode_batch_fast(
                texts[i : i + HF_CHUNK], add_special_tokens=add_special_tokens
            )
            out.extend(len(e.ids) for e in enc)
        return out

    def unique_counts(self, corpus: Corpus) -> list[int]:
        if self.name not in _HF_UNIQUE_COUNTS:
            _HF_UNIQUE_COUNTS[self.name] = self.hf_counts(corpus.unique)
        return _HF_UNIQUE_COUNTS[self.name]

    def sft_counts(self, texts: list[str | None] | pl.Series, add_special_tokens: bool = False):
        out = sftfast.count_tokens(texts, self.tok, add_special_tokens=add_special_tokens)
        assert out.dtype == pl.UInt32
        return out.to_list()

    def differs(self, text: str, add_special_tokens: bool = False) -> bool:
        got = self.sft_counts([text], add_special_tokens)[0]
        want = len(self.hf.encode(text, add_special_tokens=add_special_tokens).ids)
        return got != want


@pytest.fixture(scope="module", params=TOKENIZER_NAMES)
def pair(request) -> Pair:
    name = request.param
    hf = Tokenizer.from_file(str(TOKENIZER_DIR / name / "tokenizer.json"))
    return Pair(name, hf, sftfast.load_tokenizer(TOKENIZER_DIR / name))


def minimize(text: str, differs: Callable[[str], bool], budget: int = 4000) -> str:
    """A short substring-deletion reduction of ``text`` that still ``differs`` (ddmin over
    characters, bounded by ``budget`` checks)."""
    cur, n, calls = text, 2, 0
    while len(cur) >= 2 and calls < budget:
        chunk = max(1, len(cur) // n)
        for start in range(0, len(cur), chunk):
            cand = cur[:start] + cur[start + chunk :]
            calls += 1
            if cand and differs(cand):
                cur, n = cand, max(n - 1, 2)
                break
            if calls >= budget:
                break
        else:
            if chunk == 1:
                break
            n = min(n * 2, len(cur))
    return cur


def _short(t: str | None, limit: int = 300) -> str:
    r = repr(t)
    return r if len(r) <= limit else f"{r[:limit]}... ({len(t or '')} chars)"


def report_mismatches(
    pair: Pair,
    texts: list[str],
    got: list[int | None],
    want: list[int | None],
    add_special_tokens: bool,
    origin: list[str] | None = None,
) -> None:
    if got == want:
        return
    assert len(got) == len(want)
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    lines = [
        f"{pair.name} (add_special_tokens={add_special_tokens}): {len(bad)} of {len(texts)} "
        "counts differ from tokenizers"
    ]
    for k, i in enumerate(bad[:5]):
        where = f" [{origin[i]}]" if origin else ""
        lines.append(f"  row {i}{where}: sftfast={got[i]} hf={want[i]} text={_short(texts[i])}")
        if k < 2 and texts[i]:
            small = minimize(texts[i], lambda t: pair.differs(t, add_special_tokens))
            g = pair.sft_counts([small], add_special_tokens)[0]
            w = len(pair.hf.encode(small, add_special_tokens=add_special_tokens).ids)
            lines.append(f"    minimal: {small!r} sftfast={g} hf={w}")
    pytest.fail("\n".join(lines), pytrace=False)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_corpus_covers_every_file(corpus: Corpus) -> None:
    for rel, n in EXPECTED_ROWS.items():
        assert corpus.rows.get(rel) == n, (rel, corpus.rows.get(rel), n)
    assert len(corpus.texts) > 120_000
    assert sum(len(t.encode()) for t in corpus.unique) > 15_000_000
    # quirks the README promises, so the walk really reached them
    assert "closed\xa0qa" in corpus.unique  # BELLE category label
    assert "" in corpus.unique  # empty responses
    assert any(o.startswith("glaive") and t.lstrip().startswith(("{", "[")) and '"name"' in t
               for t, o in zip(corpus.texts, corpus.origin))  # the `tools` JSON strings
    legal = [t for t, o in zip(corpus.texts, corpus.origin) if o.endswith("legal_advice.json")]
    assert len(legal) >= 3 * 5000  # rows wrapped in one-element lists were unwrapped
    assert len(corpus.chat_docs) > 35_000


def test_every_shared_tokenizer_takes_the_fast_path(pair: Pair) -> None:
    assert pair.tok.fast_path is True, (pair.name, pair.tok.fast_path_reason)


def test_counts_match_tokenizers_on_every_row(pair: Pair, corpus: Corpus) -> None:
    t0 = time.perf_counter()
    got = pair.sft_counts(pl.Series("text", corpus.texts, dtype=pl.String))
    t_sft = time.perf_counter() - t0
    t0 = time.perf_counter()
    unique = pair.unique_counts(corpus)
    t_hf = time.perf_counter() - t0
    want = [unique[j] for j in corpus.index]
    print(f"{pair.name}: sftfast {t_sft:.2f}s on {len(corpus.texts)} rows, tokenizers {t_hf:.2f}s "
          f"on {len(corpus.unique)} distinct texts")
    report_mismatches(pair, corpus.texts, got, want, False, corpus.origin)


def test_counts_match_on_chat_documents(pair: Pair, corpus: Corpus) -> None:
    """ChatML documents: special-token text (`<|im_start|>`, `<|im_end|>`) inline with real text,
    newlines right after/before it, multi-turn lengths."""
    docs = corpus.chat_docs[::10]
    report_mismatches(pair, docs, pair.sft_counts(docs), pair.hf_counts(docs), False)


def test_add_special_tokens_on_a_subset(pair: Pair, corpus: Corpus) -> None:
    texts = corpus.unique[::25] + corpus.chat_docs[1::50] + ["", " ", "<|endoftext|>", "<s>"]
    got = pair.sft_counts(texts, add_special_tokens=True)
    want = pair.hf_counts(texts, add_special_tokens=True)
    report_mismatches(pair, texts, got, want, True)


def test_nulls_stay_null(pair: Pair, corpus: Corpus) -> None:
    texts: list[str | None] = []
    for t in corpus.unique[:2000]:
        texts.extend([t, None])
    got = pair.sft_counts(texts)
    assert got[1::2] == [None] * 2000
    assert got[0::2] == pair.unique_counts(corpus)[:2000]


def test_load_variants_agree(pair: Pair, corpus: Corpus) -> None:
    path = TOKENIZER_DIR / pair.name / "tokenizer.json"
    by_file = sftfast.load_tokenizer(path)
    by_str = sftfast.load_tokenizer(str(path))
    by_obj = sftfast.load_tokenizer(pair.hf)
    assert by_file.key == by_str.key == pair.tok.key  # same file, same content hash
    assert by_obj.fast_path is True
    sample = corpus.unique[::97]
    want = pair.unique_counts(corpus)[::97]
    for tok in (by_file, by_obj):
        assert sftfast.count_tokens(sample, tok).to_list() == want


def test_thread_count_does_not_change_counts(corpus: Corpus) -> None:
    pair = Pair(
        "cl100k_base",
        Tokenizer.from_file(str(TOKENIZER_DIR / "cl100k_base" / "tokenizer.json")),
        sftfast.load_tokenizer(TOKENIZER_DIR / "cl100k_base"),
    )
    texts = corpus.texts[::5]
    try:
        sftfast.set_num_threads(1)
        one = pair.sft_counts(texts)
        sftfast.set_num_threads(2)
        two = pair.sft_counts(texts)
    finally:
        sftfast.set_num_threads(0)
    assert one == two


# Fragments that stress the pre-tokenizers and normalisers of the real tokenizers: contractions
# (and U+017F, which case-folds to "s"), every kind of whitespace, Phi-2's whitespace added
# tokens, Phi-3's "▁" and byte-fallback tokens, digits of many scripts, NFC-sensitive sequences,
# emoji and the special tokens of all four tokenizers.
EDGE_FRAGMENTS = [
    "a", "Hello", " world", "É", "ß", "İ", "Σ", "ﬁ", "中文", "。", "한", "\u1100\u1161", "𝐀", "𠀀",
    "0", "42", "12345", "１２３", "Ⅻ", "²", "½", "٣", "'s", "'S", "'re", "'VE", "'m", "'LL", "'d",
    "'", "\u017f", "'\u017f", "\u2019s", " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r",
    "\x0b", "\x0c", "\xa0", "\u3000", "\u2028", "\x85", "\u200b", "\ufeff", "\x00", "\x7f",
    ".", ",", "!?", "...", "->", "{", "}", "#", "\\", "\"", "`", "_", "<", ">", "▁", "▁▁",
    "<0x41>", "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇺🇸", "❤️", "e\u0301", "\u0301",
    "A\u030a", "\u212b", "\uff21", "\ue000", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
    "<|end|>", "<|user|>", "<|assistant|>", "<s>", "</s>", "<unk>", "<|fim_prefix|>",
]


def _edge_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 24)):
            r = rng.random()
            if r < 0.7:
                parts.append(rng.choice(EDGE_FRAGMENTS))
            elif r < 0.9:
                parts.append(chr(rng.randint(0x20, 0x2FFF)))
            else:
                cp = rng.choice([rng.randint(0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])
                parts.append(chr(cp))
        out.append("".join(parts))
    return out


@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_counts_match_on_generated_edge_text(pair: Pair, add_special_tokens: bool) -> None:
    texts = _edge_texts(10_000, seed=len(pair.name))
    got = pair.sft_counts(texts, add_special_tokens)
    want = pair.hf_counts(texts, add_special_tokens)
    report_mismatches(pair, texts, got, want, add_special_tokens)


def test_ignore_merges_variant_on_real_data(corpus: Corpus) -> None:
    """Llama-3 style: cl100k_base with ``ignore_merges: true`` (a pre-tokenizer piece that is a
    vocab entry is one token), on a quarter of the distinct real texts."""
    spec = json.loads((TOKENIZER_DIR / "cl100k_base" / "tokenizer.json").read_text("utf-8"))
    spec["model"]["ignore_merges"] = True
    hf = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    pair = Pair("cl100k_base+ignore_merges", hf, sftfast.load_tokenizer(hf))
    assert pair.tok.fast_path is True, pair.tok.fast_path_reason
    texts = corpus.unique[::4] + ["\u00f7", "\u00c5", "caf\u00e9 \u00e9 \u00f7 \u00c5"]
    report_mismatches(pair, texts, pair.sft_counts(texts), pair.hf_counts(texts), False)
