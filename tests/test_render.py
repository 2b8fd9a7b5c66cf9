"""Chat-template rendering (issue #3): parity with transformers' ``apply_chat_template``.

For every conversation of the multi-turn sets in ``../shared/data`` (read with
:func:`sftfast.read`), ``sftfast.render`` must give the ``input_ids`` and assistant mask that

    tokenizer.apply_chat_template([system?] + messages, chat_template=SRC, tools=tools,
                                  tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)

gives, with each built-in template (they carry ``{% generation %}`` blocks) on two tokenizers:
phi-3-mini (``AutoTokenizer``: SentencePiece-style BPE with byte fallback, sftfast's
SentencePiece fast path) and the rebuilt Qwen2 ``tokenizer.json`` (``PreTrainedTokenizerFast``:
byte-level BPE, sftfast's byte-level fast path); a test checks that both take the fast path. The Phi-3-mini template shipped in ``tokenizer_config.json`` has no generation
blocks (transformers' mask is all zero), so there ids are compared and the labels are checked
against the reply spans computed here.

Roles are mapped as sftfast maps them: ``tool_call`` → ``assistant``, the ``system`` column →
a leading ``system`` message. The transformers tokenizer *object* is what sftfast gets: it is
what transformers tokenises with (transformers 5 rewrites the Llama/Phi-3 normaliser at load).

Edge cases (replies starting with newlines, empty system prompt, tool turns, a ~20k-character
turn, Chinese, ``train_on`` / ``end_of_turn``, ``raise_exception``, null rows, the streaming
engine) use small hand-written conversations on the demo tokenizer, and on the two real ones
when ``../shared`` is present.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sftfast
from sftfast.render import builtin_template

transformers = pytest.importorskip(
    "transformers",
    reason="transformers is a test-only dependency: the render parity tests compare with "
    "its apply_chat_template",
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
TOKENIZERS = DATA / "tokenizers"
HAVE_SHARED = all((TOKENIZERS / d).is_dir() for d in ("phi-3-mini", "qwen2-bpe151k-rebuilt"))
needs_shared = pytest.mark.skipif(
    not HAVE_SHARED,
    reason=f"../shared is absent ({DATA} has no tokenizers/phi-3-mini and "
    "tokenizers/qwen2-bpe151k-rebuilt): real-data render parity needs the shared data sets",
)

# The multi-turn sets, and the rows sftfast.read keeps of each (all of them, but for 11 rows of
# the lawyer-llama set whose turns are out of order: read rejects them as wrong_role_order).
SETS = {
    "fastchat": ("fastchat_dummy_conversation_en", 500),
    "glaive": ("glaive_toolcall_en_demo", 300),
    "medical": ("medicalgpt_medical_sft_zh", 1000),
    "lawyer": ("lawyer_llama_zh/legal_counsel_multi_turn_with_article_v2.json", 465),
}
BUILTINS = ["chatml", "llama3", "phi3"]
REAL_TOKENIZERS = ["phi-3-mini", "qwen2"]
MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
# ChatML without generation blocks (the template Qwen ships): replies are found by search.
PLAIN_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
)
# ChatML with a Qwen-2.5-like tools block: exercises `tojson` (compact and indented).
TOOLS_CHATML = (
    "{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}{%- for tool in tools %}"
    "{{- '\\n' }}{{- tool | tojson }}{%- endfor %}{{- '\\n</tools>\\n' + (tools | tojson(indent=2))"
    " + '<|im_end|>\\n' }}{%- endif %}" + builtin_template("chatml")
)


# --------------------------------------------------------------------------------------------
# Tokenizers, data, the transformers reference
# --------------------------------------------------------------------------------------------


@cache
def hf_tokenizer(name: str, demo_path: str | None = None) -> Any:
    """A transformers tokenizer, loaded from local files only."""
    if name == "demo":
        assert demo_path is not None
        return transformers.PreTrainedTokenizerFast(tokenizer_file=demo_path)
    if not HAVE_SHARED:
        pytest.skip(f"../shared is absent: no {name} tokenizer in {TOKENIZERS}")
    if name == "phi-3-mini":
        return transformers.AutoTokenizer.from_pretrained(str(TOKENIZERS / "phi-3-mini"))
    if name == "qwen2":
        return transformers.PreTrainedTokenizerFast(
            tokenizer_file=str(TOKENIZERS / "qwen2-bpe151k-rebuilt" / "tokenizer.json"))
    raise AssertionError(name)


@pytest.fixture(params=["demo", *REAL_TOKENIZERS])
def any_tok(request: pytest.FixtureRequest, tok_path: Path) -> Any:
    return hf_tokenizer(request.param, str(tok_path))


@cache
def dataset(name: str) -> pl.DataFrame:
    rel, rows = SETS[name]
    result = sftfast.read(DATA / rel)
    df = result.frame.collect()
    assert df.height == rows, (name, result.stats)
    return df


def hf_messages(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """What sftfast gives the template: system column first, tool_call rendered as assistant."""
    out = [] if system is None else [{"role": "system", "content": system}]
    for m in messages:
        out.append({"role": "assistant" if m["role"] == "tool_call" else m["role"],
                    "content": m["content"]})
    return out


def hf_render(tok: Any, messages: list[dict[str, str]], system: str | None, src: str | None,
              tools: str | None = None) -> tuple[list[int], list[int]]:
    """transformers' (input_ids, assistant mask) for one conversation."""
    r = tok.apply_chat_template(
        hf_messages(messages, system), chat_template=src,
        tools=json.loads(tools) if tools else None, tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True)
    return list(r["input_ids"]), list(r["assistant_masks"])


def frame_of(*convs: list[dict[str, str]], system: list[str | None] | None = None) -> pl.DataFrame:
    cols: dict[str, Any] = {"messages": pl.Series("messages", list(convs), dtype=MESSAGES)}
    if system is not None:
        cols["system"] = pl.Series("system", system, dtype=pl.String)
    return pl.DataFrame(cols)


def ours(df: pl.DataFrame, tok: Any, **kw: Any) -> tuple[list[list[int]], list[list[int]]]:
    """sftfast's (input_ids, labels) per row; every row must render."""
    out = sftfast.render(df, tok, **kw)
    assert out.rejected.height == 0, out.rejected["sft_drop_reason"].to_list()
    assert out.frame.height == df.height
    return out.frame["input_ids"].to_list(), out.frame["labels"].to_list()


def mask_of(labels: list[int]) -> list[int]:
    return [int(x != -100) for x in labels]


def first_mismatch(tok: Any, rows: list[dict[str, Any]], ids: list[list[int]],
                   masks: list[list[int]], ref: list[tuple[list[int], list[int]]],
                   check_mask: bool = True) -> str | None:
    """A readable description of the first row that differs, or None."""
    bad = [i for i, (a, m, (b, n)) in enumerate(zip(ids, masks, ref))
           if a != b or (check_mask and m != n)]
    if not bad:
        return None
    i = bad[0]
    a, m = ids[i], masks[i]
    b, n = ref[i]
    at = next((j for j in range(min(len(a), len(b))) if a[j] != b[j] or m[j] != n[j]),
              min(len(a), len(b)))
    lo, hi = max(0, at - 3), at + 4
    mine = list(zip(tok.convert_ids_to_tokens(a[lo:hi]), m[lo:hi]))
    theirs = list(zip(tok.convert_ids_to_tokens(b[lo:hi]), n[lo:hi]))
    return (f"{len(bad)}/{len(rows)} rows differ; first: row {i} {rows[i]['messages']!r:.300}; "
            f"at token {at}: sftfast {mine} transformers {theirs}")


# --------------------------------------------------------------------------------------------
# Every conversation of the shared multi-turn sets
# --------------------------------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("template", BUILTINS)
@pytest.mark.parametrize("tokenizer", REAL_TOKENIZERS)
@pytest.mark.parametrize("data", list(SETS))
def test_builtin_templates_match_transformers(data: str, tokenizer: str, template: str) -> None:
    """input_ids and the assistant mask, every conversation, both tokenizers, each built-in."""
    tok = hf_tokenizer(tokenizer)
    df = dataset(data)
    ids, labels = ours(df, tok, template=template)
    rows = df.to_dicts()
    ref = [hf_render(tok, r["messages"], r["system"], builtin_template(template), r["tools"])
           for r in rows]
    masks = [mask_of(x) for x in labels]
    assert first_mismatch(tok, rows, ids, masks, ref) is None
    # labels are the ids where learned
    assert all(lab in (-100, i) for a, b in zip(ids, labels) for i, lab in zip(a, b))
    assert all(any(m) for m in masks)


@needs_shared
@pytest.mark.parametrize("tokenizer", REAL_TOKENIZERS)
def test_tools_template_matches_transformers(tokenizer: str) -> None:
    """The glaive tool-calling set with a template that writes ``tools | tojson`` (both forms):
    sftfast's tojson must write what Python's json.dumps writes."""
    tok = hf_tokenizer(tokenizer)
    df = dataset("glaive")
    assert df["tools"].is_not_null().sum() > 100
    ids, labels = ours(df, tok, template=TOOLS_CHATML)
    rows = df.to_dicts()
    ref = [hf_render(tok, r["messages"], r["system"], TOOLS_CHATML, r["tools"]) for r in rows]
    assert first_mismatch(tok, rows, ids, [mask_of(x) for x in labels], ref) is None


def shipped_phi3_expected_mask(tok: Any, row: dict[str, Any], ids: list[int]) -> list[int]:
    """The tokens of each assistant reply (from its first non-space character) through the
    ``<|end|>`` that closes its turn, for the Phi-3-mini template shipped with the tokenizer.

    That template writes ``<|role|>\\n`` + content + ``<|end|>\\n`` for system, user and
    assistant messages (others are dropped), then the eos token; the spans are computed from that
    layout (checked against transformers' text) and mapped to tokens with transformers' offsets.
    """
    msgs = hf_messages(row["messages"], row["system"])
    text = tok.apply_chat_template(msgs, tokenize=False)
    pos, spans = 0, []
    for m in msgs:
        if m["role"] not in ("system", "user", "assistant"):
            continue
        head = f"<|{m['role']}|>\n"
        assert text.startswith(head + m["content"] + "<|end|>\n", pos)
        start = pos + len(head)
        if m["role"] == "assistant":
            lead = len(m["content"]) - len(m["content"].lstrip())
            spans.append((start + lead, start + len(m["content"]) + len("<|end|>")))
        pos = start + len(m["content"]) + len("<|end|>\n")
    assert text[pos:] == tok.eos_token
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert list(enc["input_ids"]) == ids
    return [int(any(s < b and e > a for a, b in spans)) for s, e in enc["offset_mapping"]]


@needs_shared
@pytest.mark.parametrize("name", REAL_TOKENIZERS)
def test_real_tokenizers_render_through_the_fast_path(name: str) -> None:
    """The parity tests here go through sftfast's own ids and offsets, not the ``tokenizers``
    crate: phi-3-mini as transformers rewrites it (Metaspace pre-tokeniser) and Qwen2."""
    tok = sftfast.load_tokenizer(hf_tokenizer(name))
    assert tok.encode_fast_path_reason is None
    assert tok.fast_path_reason is None


@needs_shared
@pytest.mark.parametrize("data", list(SETS))
def test_shipped_phi3_template_ids_match_transformers(data: str) -> None:
    """The Phi-3-mini template from its tokenizer_config.json (``template=None``): input_ids
    identical to transformers for every conversation (its mask is all zero: no generation
    blocks)."""
    tok = hf_tokenizer("phi-3-mini")
    df = dataset(data)
    ids, labels = ours(df, tok)
    rows = df.to_dicts()
    ref = [hf_render(tok, r["messages"], r["system"], None, r["tools"]) for r in rows]
    assert not any(any(m) for _, m in ref)  # why only ids are compared
    assert first_mismatch(tok, rows, ids, [mask_of(x) for x in labels], ref,
                          check_mask=False) is None




@needs_shared
@pytest.mark.parametrize(
    "data",
    SETS,
)
def test_shipped_phi3_template_labels_mark_replies(data: str) -> None:
    """With the shipped Phi-3 template, the learned tokens are exactly each assistant reply and
    the <|end|> closing it (end_of_turn="template" learns it when there are no generation
    blocks)."""
    tok = hf_tokenizer("phi-3-mini")
    df = dataset(data)
    ids, labels = ours(df, tok)
    rows = df.to_dicts()
    bad = [i for i, r in enumerate(rows)
           if mask_of(labels[i]) != shipped_phi3_expected_mask(tok, r, ids[i])]
    assert not bad, f"{len(bad)}/{len(rows)} rows: {bad[:20]}"


# --------------------------------------------------------------------------------------------
# Edge cases, against transformers, on the demo tokenizer and (with ../shared) the real ones
# --------------------------------------------------------------------------------------------


def U(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def A(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


# ~20k characters, English and Chinese, inner newlines (no leading or trailing whitespace)
LONG = ("The quick brown fox jumps over the lazy dog. 天地玄黄，宇宙洪荒。"
        "日月盈昃，辰宿列张。\n" * 320).strip()
EDGE: dict[str, tuple[list[dict[str, str]], str | None]] = {
    "reply_starts_with_newline": ([U("hi"), A("\nHello there.")], None),
    "reply_starts_with_two_newlines": (
        [U("hi"), A("\n\nHello there."), U("and?"), A("\n\n")], None),
    "reply_ends_with_newline": ([U("hi"), A("Hello\n"), U("ok"), A("bye \n\n")], None),
    "reply_spaces": ([U("  hi  "), A("   Hello   ")], None),
    "empty_system": ([U("hi"), A("Hello.")], ""),
    "system": ([U("hi"), A("Hello.")], "You are terse.\n"),
    "tool_turns": ([
        U("Weather in Paris?"),
        {"role": "tool_call", "content": '{"name": "weather", "arguments": {"city": "Paris"}}'},
        {"role": "tool", "content": '{"temp_c": 21, "sky": "clear"}'},
        A("It is 21 °C and clear."),
        U("And Lyon?"),
        {"role": "tool_call", "content": '{"name": "weather", "arguments": {"city": "Lyon"}}'},
    ], None),
    "very_long_turn": ([U(LONG), A(LONG[::-1]), U("短"), A(LONG)], None),
    "chinese": ([U("你好，请问北京今天的天气怎么样？"),
                 A("北京今天晴，气温２５度。\n祝您愉快！"),
                 U("谢谢"), A("不客气。")], "你是一个乐于助人的助手。"),
    "emoji_and_accents": ([U("🙂 café"), A("🙂🙂 naïve – ok"), U("x"), A("é")], None),
    "empty_reply": ([U("say nothing"), A("")], None),
}


@pytest.mark.parametrize("template", BUILTINS)
@pytest.mark.parametrize("case", list(EDGE))
def test_edge_cases_match_transformers(any_tok: Any, case: str, template: str) -> None:
    messages, system = EDGE[case]
    df = frame_of(messages, system=None if system is None else [system])
    ids, labels = ours(df, any_tok, template=template)
    ref_ids, ref_mask = hf_render(any_tok, messages, system, builtin_template(template))
    assert ids[0] == ref_ids
    assert mask_of(labels[0]) == ref_mask


def test_empty_system_is_a_turn_and_null_system_is_none(tok_path: Path) -> None:
    """``""`` renders an (empty) system turn; null renders none."""
    tok = hf_tokenizer("demo", str(tok_path))
    df = frame_of([U("hi"), A("yo")], [U("hi"), A("yo")], system=["", None])
    ids, _ = ours(df, tok, template="chatml")
    text = [tok.decode(x) for x in ids]
    assert text[0] == "<|im_start|>system\n<|im_end|>\n" + text[1]


def test_reply_starting_with_newline_merges_across_the_boundary() -> None:
    """Qwen2 BPE joins the header's newline and the reply's into one token ("\\n\\n"): the
    text must be tokenised whole, and that token is learned (it holds the reply's first
    character), as transformers does."""
    tok = hf_tokenizer("qwen2")
    ids, labels = ours(frame_of([U("hi"), A("\nyo")]), tok, template="chatml")
    toks = tok.convert_ids_to_tokens(ids[0])
    j = toks.index("ĊĊ")
    assert toks[j - 1] == "assistant" and labels[0][j] == ids[0][j]


def _last_run(mask: list[int]) -> list[int]:
    end = max(i for i, m in enumerate(mask) if m) + 1
    start = end
    while start > 0 and mask[start - 1]:
        start -= 1
    return [int(start <= i < end) for i in range(len(mask))]


@pytest.mark.parametrize("case", ["chinese", "tool_turns", "reply_starts_with_two_newlines"])
def test_train_on(any_tok: Any, case: str) -> None:
    messages, system = EDGE[case]
    df = frame_of(messages, system=None if system is None else [system])
    ref_ids, ref_mask = hf_render(any_tok, messages, system, builtin_template("chatml"))
    ids, labels = ours(df, any_tok, template="chatml", train_on="last_assistant")
    assert ids[0] == ref_ids
    assert mask_of(labels[0]) == _last_run(ref_mask)
    ids, labels = ours(df, any_tok, template="chatml", train_on="all")
    assert labels[0] == ids[0] == ref_ids


def im_end_or_skip(tok: Any) -> int:
    """The id of <|im_end|>; skip where it is not a special token (phi-3-mini: there it is plain
    text, which no end-of-turn policy touches)."""
    if "<|im_end|>" not in tok.all_special_tokens and "<|im_end|>" not in {
            t.content for t in tok.added_tokens_decoder.values() if t.special}:
        pytest.skip("<|im_end|> is not a special token of this tokenizer")
    return tok.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.parametrize("template", ["chatml", PLAIN_CHATML])
def test_end_of_turn(any_tok: Any, template: str) -> None:
    """``include`` learns <|im_end|> after each reply, ``exclude`` does not, ``template``
    follows the generation blocks (and learns it where there are none), with or without
    generation blocks. The reference is transformers' mask with the built-in chatml."""
    messages = [U("What is 2+2?"), A("4"), U("And 3+3?"), A("It is 6.")]
    end = im_end_or_skip(any_tok)
    ref_ids, ref_mask = hf_render(any_tok, messages, None, builtin_template("chatml"))
    assert sum(ref_mask[i] for i, t in enumerate(ref_ids) if t == end) == 2
    no_end = [int(m and t != end) for t, m in zip(ref_ids, ref_mask)]
    df = frame_of(messages)
    for policy, want in [("template", ref_mask), ("include", ref_mask), ("exclude", no_end)]:
        ids, labels = ours(df, any_tok, template=template, end_of_turn=policy)
        assert ids[0] == ref_ids
        assert mask_of(labels[0]) == want, policy


def test_end_of_turn_exclude_on_real_tokenizers() -> None:
    """Phi-3's <|end|> and Qwen2's <|im_end|> are special tokens there: exclude drops them from
    the labels of the built-in phi3/chatml templates, and nothing else."""
    for name, template, end in [("phi-3-mini", "phi3", "<|end|>"),
                                ("qwen2", "chatml", "<|im_end|>")]:
        tok = hf_tokenizer(name)
        messages, system = EDGE["chinese"]
        ref_ids, ref_mask = hf_render(tok, messages, system, builtin_template(template))
        end_id = tok.convert_tokens_to_ids(end)
        df = frame_of(messages, system=[system])
        ids, labels = ours(df, tok, template=template, end_of_turn="exclude")
        assert ids[0] == ref_ids
        assert mask_of(labels[0]) == [int(m and t != end_id) for t, m in zip(ref_ids, ref_mask)]


# Templates without generation blocks: replies are found in the text. Reference: transformers'
# mask with the same text marked by generation blocks (the built-in chatml).
@pytest.mark.parametrize("case", ["chinese", "tool_turns", "very_long_turn", "emoji_and_accents"])
def test_template_without_generation_blocks(any_tok: Any, case: str) -> None:
    im_end_or_skip(any_tok)
    messages, system = EDGE[case]
    df = frame_of(messages, system=None if system is None else [system])
    ref_ids, ref_mask = hf_render(any_tok, messages, system, builtin_template("chatml"))
    ids, labels = ours(df, any_tok, template=PLAIN_CHATML)
    assert ids[0] == ref_ids
    assert mask_of(labels[0]) == ref_mask




@pytest.mark.parametrize("reply", ["hi", "a", "user"])
def test_reply_that_occurs_earlier_is_found_in_its_own_turn(tok_path: Path, reply: str) -> None:
    """Minimal repro (demo tokenizer, ChatML without generation blocks): [user 'hi', assistant
    'hi'] marks the user's 'hi' + <|im_end|>; [user 'hi', assistant 'a'] marks <|im_start|>
    (the 'a' in 'im_start'); 'user' marks the user header."""
    tok = hf_tokenizer("demo", str(tok_path))
    messages = [U("hi"), A(reply)]
    ref_ids, ref_mask = hf_render(tok, messages, None, builtin_template("chatml"))
    ids, labels = ours(frame_of(messages), tok, template=PLAIN_CHATML)
    assert ids[0] == ref_ids
    assert mask_of(labels[0]) == ref_mask


def test_reply_that_occurs_earlier_phi3_shipped() -> None:
    """Minimal repro on the real data's case (medical rows 301, 912): the shipped Phi-3-mini
    template, [user '颈部', assistant '颈部'] → the user's tokens and <|end|> are learned, the
    reply's are not. And [user 'q', assistant 'a'] learns <|assistant|> only."""
    tok = hf_tokenizer("phi-3-mini")
    for messages in ([U("颈部"), A("颈部")], [U("q"), A("a")]):
        ids, labels = ours(frame_of(messages), tok)
        row = {"messages": messages, "system": None}
        assert mask_of(labels[0]) == shipped_phi3_expected_mask(tok, row, ids[0])




@pytest.mark.parametrize("reply", ["ok\n", "ok ", "好。\u3000"])
@pytest.mark.parametrize("end_of_turn", ["template", "include"])
def test_reply_ending_in_whitespace_learns_end_of_turn(tok_path: Path, reply: str,
                                                      end_of_turn: str) -> None:
    """Minimal repro (demo tokenizer, ChatML without generation blocks): [user 'q', assistant
    'ok\\n'] → labels mark 'ok' but not <|im_end|>. (Same on phi-3-mini's shipped template:
    medical rows 131, 177, 366, 506, 608, 726, 778, 816.) Only the end token is asserted: whether
    the whitespace before it is learned is left open."""
    tok = hf_tokenizer("demo", str(tok_path))
    ids, labels = ours(frame_of([U("q"), A(reply)]), tok, template=PLAIN_CHATML,
                       end_of_turn=end_of_turn)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    last_end = max(i for i, t in enumerate(ids[0]) if t == end)
    assert labels[0][last_end] == end


# --------------------------------------------------------------------------------------------
# Failures, nulls, the plugin in lazy and streaming queries
# --------------------------------------------------------------------------------------------

STRICT_TEMPLATE = (
    "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
)


def test_raise_exception_rejects_the_row(tok_path: Path) -> None:
    tok = hf_tokenizer("demo", str(tok_path))
    good, bad = [U("q"), A("a")], [A("a"), U("q")]
    df = frame_of(good, bad, good).with_columns(k=pl.Series([0, 1, 2]))
    out = sftfast.render(df, tok, template=STRICT_TEMPLATE)
    assert out.frame["k"].to_list() == [0, 2]
    assert out.rejected["k"].to_list() == [1]
    reason = out.rejected["sft_drop_reason"][0]
    assert reason.startswith("render_error: ")
    assert "Conversation roles must alternate user/assistant/user/assistant/..." in reason
    assert out.rejected["messages"].to_list() == [bad]
    # transformers raises the same message
    with pytest.raises(Exception, match="Conversation roles must alternate"):
        tok.apply_chat_template(bad, chat_template=STRICT_TEMPLATE, tokenize=False)
    ids, _ = ours(frame_of(good), tok, template=STRICT_TEMPLATE)
    assert ids[0] == hf_render(tok, good, None, STRICT_TEMPLATE)[0]


def test_nulls_bad_tools_and_bad_templates(tok_path: Path) -> None:
    tok = hf_tokenizer("demo", str(tok_path))
    df = pl.DataFrame(
        {"messages": pl.Series([[U("q"), A("a")], None,
                                [U("q"), {"role": "assistant", "content": None}],
                                [U("q"), A("a")]], dtype=MESSAGES),
         "tools": ["[]", None, None, "{not json"]})
    out = sftfast.render(df, tok, template="chatml")
    # a null conversation is rejected with its reason; nothing is lost
    assert out.frame.height == 1 and out.frame["input_ids"].null_count() == 0
    reasons = out.rejected["sft_drop_reason"].to_list()
    assert len(reasons) == 3
    assert reasons[0] == "render_error: messages: null"
    assert reasons[1] == "render_error: turn 1: null role or content"
    assert reasons[2].startswith("render_error: ") and "tools" in reasons[2]
    # Jinja that does not compile is a ConfigError before the query runs
    with pytest.raises(sftfast.ConfigError, match="chat template does not compile"):
        sftfast.render(df, tok, template="{% for %}")
    with pytest.raises(sftfast.ConfigError):
        sftfast.render(df, tok, template="no-such-template")
    with pytest.raises(sftfast.ConfigError):
        sftfast.render(df, tok, template="chatml", train_on="users")
    with pytest.raises(sftfast.ConfigError):
        sftfast.render(df, tok, template="chatml", end_of_turn="maybe")


STREAM_CASES = [c for c in EDGE if c != "very_long_turn"]


def _edge_frame(copies: int, chunks: int) -> pl.DataFrame:
    """The edge cases (but the long one), repeated, in several chunks."""
    convs = [EDGE[c] for c in STREAM_CASES] * copies
    part = frame_of(*[m for m, _ in convs], system=[s for _, s in convs])
    return pl.concat([part] * chunks, rechunk=False)


def test_plugin_in_lazy_and_streaming_queries(any_tok: Any) -> None:
    """``pl.col("messages").sft.render(...)`` in a lazy query on the streaming engine gives what
    the in-memory engine and ``sftfast.render`` give (several chunks, so several calls)."""
    df = _edge_frame(copies=20, chunks=4)
    assert df.n_chunks() == 4
    query = df.lazy().select(
        pl.col("messages").sft.render(any_tok, template="chatml", system="system").alias("r"),
        pl.int_range(pl.len()).alias("i"))
    streamed = query.collect(engine="streaming").sort("i")
    in_memory = query.collect(engine="in-memory")
    assert streamed.equals(in_memory)
    r = streamed.unnest("r")
    assert r["render_error"].null_count() == r.height
    ids, labels = ours(df, any_tok, template="chatml")
    assert r["input_ids"].to_list() == ids and r["labels"].to_list() == labels
    n = len(STREAM_CASES)
    for j, (messages, system) in enumerate(EDGE[c] for c in STREAM_CASES):
        ref_ids, ref_mask = hf_render(any_tok, messages, system, builtin_template("chatml"))
        assert ids[j] == ids[j + n] == ref_ids and mask_of(labels[j]) == ref_mask


def test_render_takes_a_lazyframe_and_stays_lazy(tok_path: Path) -> None:
    tok = hf_tokenizer("demo", str(tok_path))
    lf = frame_of([U("q"), A("a")], [A("a"), U("q")]).lazy()
    out = sftfast.render(lf, tok, template=STRICT_TEMPLATE)
    assert isinstance(out.frame, pl.LazyFrame) and isinstance(out.rejected, pl.LazyFrame)
    assert out.frame.collect(engine="streaming").height == 1
    assert out.rejected.collect().height == 1


def test_builtin_template_sources() -> None:
    for name in BUILTINS:
        src = builtin_template(name)
        assert "{% generation %}" in src and "{% endgeneration %}" in src
    with pytest.raises(sftfast.ConfigError):
        builtin_template("vicuna")
