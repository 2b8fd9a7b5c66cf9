"""`sftfast.read`: formats × schemas, every reject reason, strict mode, compression, overrides,
extra columns, and all of ../shared/data with exact row accounting."""

from __future__ import annotations

import doctest
import gzip
import importlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sftfast
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sftfast import ConfigError, InputError, SchemaError
from sftfast.reader import ReadResult, read

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"

Row = dict[str, Any]


def msgs(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


def write(path: Path, rows: list[Row], fmt: str) -> Path:
    """Write ``rows`` to ``path`` in ``fmt`` (the test's own converter, not sftfast's)."""
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), "utf-8")
    elif fmt == "parquet":
        pl.DataFrame(rows).write_parquet(path)
    elif fmt == "csv":
        pl.DataFrame(rows).write_csv(path)
    elif fmt == "xlsx":
        pytest.importorskip("fastexcel")
        pytest.importorskip("xlsxwriter")
        pl.DataFrame(rows).write_excel(path)
    return path


def assert_accounted(res: ReadResult) -> None:
    for fs in res.stats.files.values():
        assert fs.rows_in == fs.rows_kept + sum(fs.rejected.values())
    assert res.frame.select(pl.len()).collect().item() == res.stats.rows_kept
    assert res.rejects.height == sum(res.stats.rejected.values())


# --- formats × schemas -----------------------------------------------------------------------

QA = [{"question": "1+1?", "answer": "2"}, {"question": "你好", "answer": "你好！"}]
ALPACA = [
    {"instruction": "Sum", "input": "1 2", "output": "3"},
    {"instruction": "Greet", "input": "", "output": "Hi"},
]
GPTEACHER = [{"instruction": "Say hi", "input": "", "response": "hi"}]
SHAREGPT = [
    {
        "id": "a",
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
    }
]
OPENAI = [{"messages": msgs(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))}]
HISTORY = [
    {"query": "q", "history": ["[客户] 你好", "[律师] 您好", "[客户] 谢谢", "[律师] 不客气"]}
]
TURNS = [{"question_id": 1, "category": "math", "turns": ["a?", "b?"]}]
TWO = [("user", "1+1?"), ("assistant", "2")]

CASES: list[tuple[str, list[Row], str, list[tuple[str, str]]]] = [
    ("qa", QA, "qa", TWO),
    ("alpaca", ALPACA, "alpaca", [("user", "Sum\n\n1 2"), ("assistant", "3")]),
    ("gpteacher", GPTEACHER, "alpaca", [("user", "Say hi"), ("assistant", "hi")]),
    ("sharegpt", SHAREGPT, "sharegpt", [("user", "Hi"), ("assistant", "Hello")]),
    ("openai", OPENAI, "openai", [("user", "Hi"), ("assistant", "Hello")]),
    (
        "history",
        HISTORY,
        "history",
        [("user", "你好"), ("assistant", "您好"), ("user", "谢谢"), ("assistant", "不客气")],
    ),
]
FLAT = {"qa", "alpaca", "gpteacher"}


# CSV and Excel cells hold no lists, so only the flat schemas exist there.
MATRIX = [
    pytest.param(fmt, *case, id=f"{fmt}-{case[0]}")
    for fmt in ("jsonl", "json", "parquet", "csv", "xlsx")
    for case in CASES
    if fmt in ("jsonl", "json", "parquet") or case[0] in FLAT
]


@pytest.mark.parametrize(("fmt", "name", "rows", "schema", "first"), MATRIX)
def test_format_by_schema(
    tmp_path: Path, fmt: str, name: str, rows: list[Row], schema: str, first: list[tuple[str, str]]
) -> None:
    path = write(tmp_path / f"{name}.{fmt}", rows, fmt)
    res = read(path)
    info = res.schemas[str(path)]
    assert (info.format, info.schema) == ({"xlsx": "excel"}.get(fmt, fmt), schema)
    df = res.frame.collect()
    assert df.schema["messages"] == pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
    assert [(m["role"], m["content"]) for m in df["messages"][0]] == first
    assert df["sft_row"].to_list() == list(range(len(rows)))
    assert df["source"].unique().to_list() == [str(path)]
    assert res.stats.rows_kept == len(rows)
    assert_accounted(res)


def test_system_tools_and_tool_roles(tmp_path: Path) -> None:
    row = {
        "conversations": [
            {"from": "system", "value": "Use tools."},
            {"from": "human", "value": "Weather?"},
            {"from": "function_call", "value": '{"name": "w", "arguments": {}}'},
            {"from": "observation", "value": '{"t": 20}'},
            {"from": "gpt", "value": "20 C."},
        ],
        "tools": '[{"name": "w"}]',
        "system": "You are helpful.",
    }
    path = write(tmp_path / "tools.json", [row, {**row, "tools": "[]", "system": ""}], "json")
    df = read(path).frame.collect()
    assert [m["role"] for m in df["messages"][0]] == ["user", "tool_call", "tool", "assistant"]
    assert df["messages"][0][1]["content"] == '{"name": "w", "arguments": {}}'
    assert df["system"].to_list() == ["You are helpful.\n\nUse tools.", "Use tools."]
    assert df["tools"].to_list() == ['[{"name": "w"}]', None]


def test_openai_tool_calls_become_tool_call_turns(tmp_path: Path) -> None:
    call = [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]
    row = {
        "messages": [
            {"role": "user", "content": "Weather?", "tool_calls": None},
            {"role": "assistant", "content": None, "tool_calls": call},
            {"role": "tool", "content": "20", "tool_calls": None},
            {"role": "assistant", "content": "20 C.", "tool_calls": None},
        ],
        "tools": [{"type": "function", "function": {"name": "w"}}],
    }
    res = read(write(tmp_path / "oa.jsonl", [row], "jsonl"))
    df = res.frame.collect()
    roles = [(m["role"], m["content"]) for m in df["messages"][0]]
    assert roles[1][0] == "tool_call" and json.loads(roles[1][1]) == call
    assert json.loads(df["tools"][0]) == row["tools"]


# --- rejects ---------------------------------------------------------------------------------

REJECT_CASES: list[tuple[str, str, str]] = [
    ("invalid_json", "jsonl", '{"question": "q", "answer": "a"}\n{"question": oops}\n'),
    ("not_an_object", "jsonl", '{"question": "q", "answer": "a"}\n["question"]\n'),
    ("not_an_object", "json", '[[{"question": "q", "answer": "a"}], []]'),
    ("missing_field:answer", "jsonl", '{"question": "q", "answer": "a"}\n{"question": "q"}\n'),
    (
        "empty_assistant",
        "jsonl",
        '{"question": "q", "answer": "a"}\n{"question": "q", "answer": " \\n"}\n',
    ),
    (
        "wrong_role_order",
        "jsonl",
        json.dumps({"messages": msgs(("user", "a"), ("assistant", "b"))})
        + "\n"
        + json.dumps({"messages": msgs(("assistant", "b"), ("user", "a"))})
        + "\n",
    ),
    (
        "unknown_role",
        "jsonl",
        json.dumps({"messages": msgs(("user", "a"), ("assistant", "b"))})
        + "\n"
        + json.dumps({"messages": msgs(("user", "a"), ("narrator", "b"))})
        + "\n",
    ),
    ("no_assistant_turn", "jsonl", json.dumps({"turns": ["a", "b"]}) + "\n"),
    (
        "non_string_content",
        "jsonl",
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "a"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
                ]
            }
        )
        + "\n",
    ),
    ("non_string_content", "json", '[{"question": "q", "answer": 42}]'),
]


@pytest.mark.parametrize(("reason", "fmt", "text"), REJECT_CASES)
def test_reject_reason(tmp_path: Path, reason: str, fmt: str, text: str) -> None:
    path = tmp_path / f"data.{fmt}"
    path.write_text(text, "utf-8")
    res = read(path)
    bad = res.rejects.filter(pl.col("reason") == reason)
    assert bad.height == 1, res.rejects
    assert bad["source"][0] == str(path)
    assert res.stats.rejected == {reason: 1}
    assert_accounted(res)
    with pytest.raises(
        InputError, match=rf"{re.escape(str(path))}: row {bad['row'][0]}\b.*{reason}"
    ):
        read(path, strict=True)


def test_jsonl_rows_are_physical_lines(tmp_path: Path) -> None:
    ok = '{"question": "q%d", "answer": "a"}'
    lines = [ok % 0, "", "{broken", "  ", ok % 4, "[1]", ok % 6, '{"question": "q7"}', ok % 8]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    res = read(path)
    df = res.frame.collect()
    assert df["sft_row"].to_list() == [0, 4, 6, 8]
    assert [m[0]["content"] for m in df["messages"]] == ["q0", "q4", "q6", "q8"]
    assert res.rejects.select("row", "reason").rows() == [
        (2, "invalid_json"),
        (5, "not_an_object"),
        (7, "missing_field:answer"),
    ]
    assert res.stats.files[str(path)].rows_in == 7  # blank lines are not rows
    assert json.loads(res.rejects["raw"][2]) == {"question": "q7", "answer": None}
    with pytest.raises(InputError, match=r"mixed.jsonl: row 2 \(line 3\): invalid_json"):
        read(path, strict=True)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
       final_newline=st.booleans(), size=st.integers(1, 64))
def test_jsonl_blocks_end_at_newlines_and_cover_the_file(lines: list[bytes],
                                                         final_newline: bool, size: int) -> None:
    import tempfile

    from sftfast._formats import _blocks

    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.jsonl"
        path.write_bytes(data)
        blocks = list(_blocks(path, size))
    assert b"".join(b for _, b in blocks) == data
    offset = 0
    for at, b in blocks:
        assert at == offset and b
        assert b.endswith(b"\n") or at + len(b) == len(data)
        offset += len(b)


def _unordered(dt: pl.DataType) -> Any:
    """A type with struct fields as a name → type mapping (Polars orders them by hash)."""
    if isinstance(dt, pl.Struct):
        return {f.name: _unordered(f.dtype) for f in dt.fields}
    if isinstance(dt, pl.List):
        return ("list", _unordered(dt.inner))
    return dt


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                  st.floats(allow_nan=False, allow_infinity=False, width=64), st.text(max_size=5))
_turn = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"])},
                              optional={"content": st.one_of(st.none(), st.text(max_size=5)),
                                        "n": st.integers(0, 9)})
_value = st.one_of(_leaf, st.lists(_turn, max_size=3), st.lists(st.integers(0, 9), max_size=3),
                   st.fixed_dictionaries({}, optional={"x": st.integers(0, 9), "y": st.text()}))


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.dictionaries(st.sampled_from(["a", "b", "m", "k"]), _value, min_size=1),
                     min_size=1, max_size=8))
def test_scanned_jsonl_schema_is_polars_schema(rows: list[Row]) -> None:
    """Where the Rust scan names a schema, it is the one Polars infers (fields in first-seen
    order rather than Polars' hash order), and parsing with it gives the same rows."""
    import tempfile

    from sftfast import _native
    from sftfast._formats import _polars_type

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", "utf-8")
        jtype = _native.scan_jsonl(str(path))[4]
        try:
            want = pl.read_ndjson(path, infer_schema_length=None)
        except pl.exceptions.PolarsError:
            assert jtype is None
            return
        if jtype is None:
            return
        schema = pl.Schema(_polars_type(jtype).to_schema())
        assert {k: _unordered(v) for k, v in schema.items()} == {
            k: _unordered(v) for k, v in want.schema.items()}
        got = pl.read_ndjson(path, schema=schema)
        assert got.select(want.columns).to_dicts() == want.to_dicts()


# Rows whose fields keep one type (nulls and int/float mixes aside): a schema is found.
_typed_row = st.fixed_dictionaries({}, optional={
    "a": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    "b": st.one_of(st.none(), st.integers(-9, 9),
                   st.floats(allow_nan=False, allow_infinity=False, width=64)),
    "m": st.one_of(st.none(), st.lists(st.one_of(st.none(), _turn), max_size=3)),
    "k": st.one_of(st.none(), st.text(max_size=20), st.booleans().map(str))})


@settings(max_examples=200, deadline=None)
@given(rows=st.one_of(
    st.lists(st.dictionaries(st.sampled_from(["a", "b", "m", "k"]), _value, min_size=1),
             min_size=1, max_size=8),
    st.lists(_typed_row.filter(bool), min_size=1, max_size=12)),
       ascii=st.booleans(), blank=st.sampled_from(["", "\n", "  \n", "\r\n"]),
       crlf=st.booleans(), per_frame=st.integers(1, 9), only=st.sets(st.sampled_from("abmk")))
def test_jsonl_frames_equal_polars_parse(rows: list[Row], ascii: bool, blank: str, crlf: bool,
                                          per_frame: int, only: set[str]) -> None:
    """The Rust parse into Arrow columns gives what Polars' NDJSON reader gives with the same
    schema: values, nulls, widened ints, escapes, blank lines and CRLF, column subsets."""
    from polars.testing import assert_frame_equal

    from sftfast import _native
    from sftfast._formats import _polars_type

    end = "\r\n" if crlf else "\n"
    text = blank + end.join(json.dumps(r, ensure_ascii=ascii) for r in rows) + end + blank
    data = text.encode()
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.jsonl"
        path.write_bytes(data)
        jtype = _native.scan_jsonl(str(path))[4]
    event(f"schema: {jtype is not None}")
    if jtype is None:  # Polars' coercions: not ours to build
        return
    want = pl.read_ndjson(data, schema=pl.Schema(_polars_type(jtype).to_schema()))
    frames = _native.jsonl_frames(data, jtype, None, per_frame)
    assert [f.height for f in frames] == [
        min(per_frame, len(rows) - i) for i in range(0, len(rows), per_frame)]
    assert_frame_equal(pl.concat(frames), want)
    cols = [c for c in want.columns if c in only]
    if cols:
        got = pl.concat(_native.jsonl_frames(data, jtype, sorted(only), per_frame))
        assert_frame_equal(got, want.select(cols))


def test_jsonl_frames_name_the_line_that_does_not_fit() -> None:
    from sftfast import _native

    jtype = ("struct", [("a", ("i64",))])
    with pytest.raises(SchemaError, match="line 3 of the block"):
        _native.jsonl_frames(b'{"a": 1}\n\n{"a": "x"}\n', jtype)


def test_scanned_jsonl_schema_orders_fields_by_first_appearance(tmp_path: Path) -> None:
    from sftfast import _native

    path = tmp_path / "rows.jsonl"
    path.write_text('{"c": 1, "m": [{"role": "u", "content": "x"}]}\n{"b": 2.5, "c": 2.5}\n'
                    '{"a": null, "m": [{"content": "y", "name": "z"}]}\n', "utf-8")
    jtype = _native.scan_jsonl(str(path))[4]
    msg = ("struct", [("role", ("str",)), ("content", ("str",)), ("name", ("str",))])
    assert jtype == ("struct", [("c", ("f64",)), ("m", ("list", msg)), ("b", ("f64",)),
                                ("a", ("null",))])
    path.write_text('{"a": 1}\n{"a": "1"}\n', "utf-8")  # Polars makes that a string: not ours
    assert _native.scan_jsonl(str(path))[4] is None


def test_jsonl_in_many_blocks_reads_like_one(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Big JSON Lines are parsed in blocks whose schemas may differ (a field that appears late,
    an int that becomes a float); the rows, rejects and schema equal a one-block read."""
    from sftfast import _formats

    rows = []
    for i in range(300):
        r: Row = {"messages": msgs(("user", f"q{i}"), ("assistant", "a" * (i % 7)))}
        if i > 250:
            r["system"] = "be brief"
            r["score"] = i / 2
        elif i % 3 == 0:
            r["score"] = i
        rows.append(json.dumps(r, ensure_ascii=False))
    rows[17] = "{broken"
    rows[120] = ""
    rows[121] = "[1, 2]"
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(rows) + "\n", "utf-8")
    one = read(path)
    monkeypatch.setattr(_formats, "JSONL_CHUNK", 700)
    many = read(path)
    assert many.frame.collect().equals(one.frame.collect())
    assert many.rejects.equals(one.rejects)
    assert many.stats == one.stats
    df = many.frame.collect()
    kept = [i for i in range(300) if i not in (17, 120, 121) and i % 7]
    assert df["sft_row"].to_list() == kept
    assert df["system"].null_count() == len([i for i in kept if i <= 250])
    assert df.schema["score"] == pl.Float64


def test_many_files_globs_and_folders(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "a.jsonl", QA, "jsonl")
    write(tmp_path / "sub" / "b.json", ALPACA, "json")
    (tmp_path / "notes.md").write_text("not data")
    by_dir = read(tmp_path)
    by_glob = read([str(tmp_path / "**" / "*.json*")])
    assert by_dir.stats == by_glob.stats
    assert by_dir.stats.rows_kept == 4 and len(by_dir.schemas) == 2
    with pytest.raises(InputError, match="no such file"):
        read(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="matches no"):
        read(str(tmp_path / "*.parquet"))


def test_compressed_inputs(tmp_path: Path) -> None:
    raw = "".join(json.dumps(r) + "\n" for r in QA).encode()
    (tmp_path / "qa.jsonl.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "qa.json.gz").write_bytes(gzip.compress(json.dumps(ALPACA).encode()))
    paths = [tmp_path / "qa.jsonl.gz", tmp_path / "qa.json.gz"]
    zstandard = importlib.util.find_spec("zstandard") and importlib.import_module("zstandard")
    if zstandard:
        (tmp_path / "qa.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
        paths.append(tmp_path / "qa.jsonl.zst")
    res = read(paths)
    assert [s.schema for s in res.schemas.values()] == ["qa", "alpaca", "qa"][: len(paths)]
    assert res.stats.rows_kept == 2 * len(paths)
    assert res.frame.collect()["source"].unique(maintain_order=True).to_list() == list(
        map(str, paths)
    )


def test_extra_columns_survive_as_they_were(tmp_path: Path) -> None:
    rows = [
        {**QA[0], "class": "closed\xa0qa", "score": 1.5, "tags": ["x"], "source": "web"},
        {**QA[1], "class": "open qa", "score": 2.0, "tags": [], "source": "book"},
    ]
    df = read(write(tmp_path / "cat.parquet", rows, "parquet")).frame.collect()
    assert df["class"].to_list() == ["closed\xa0qa", "open qa"]
    assert df.schema["score"] == pl.Float64 and df.schema["tags"] == pl.List(pl.String)
    assert df["source_orig"].to_list() == ["web", "book"]
    assert df["source"].str.ends_with("cat.parquet").all()


def test_schema_override(tmp_path: Path) -> None:
    rows = [{"q": "Hi", "a": "Hello", "sys": "Be kind.", "qid": 7, "lang": "en"}]
    path = write(tmp_path / "custom.csv", rows, "csv")
    with pytest.raises(SchemaError, match="custom.csv"):
        read(path)
    mapping = {"user": "q", "assistant": "a", "system": "sys", "id": "qid"}
    df = read(path, schema=mapping).frame.collect()
    assert df.select("system", "id", "lang").row(0) == ("Be kind.", "7", "en")
    chat = [{"dialog": [{"speaker": "client", "text": "Hi"}, {"speaker": "bot", "text": "Yo"}]}]
    path = write(tmp_path / "chat.jsonl", chat, "jsonl")
    res = read(
        path,
        schema={"messages": "dialog", "role": "speaker", "content": "text"},
        roles={"client": "user", "bot": "assistant"},
    )
    assert res.stats.rows_kept == 1 and res.schemas[str(path)].schema == "mapping"
    assert read(write(tmp_path / "q.json", QA, "json"), schema="qa").stats.rows_kept == 2
    with pytest.raises(SchemaError, match="schema 'openai'"):
        read(tmp_path / "q.json", schema="openai")
    with pytest.raises(ConfigError, match="schema"):
        read(path, schema={"prompt": "q"})
    with pytest.raises(ConfigError, match="roles"):
        read(path, roles={"bot": "robot"})
    with pytest.raises(ConfigError, match="format"):
        read(path, format="xml")


def test_format_override_and_sniffing(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("".join(json.dumps(r) + "\n" for r in QA), "utf-8")
    assert read(path).schemas[str(path)].format == "jsonl"  # unknown suffix: sniffed
    assert read(path, format="jsonl").stats.rows_kept == 2
    one_line = tmp_path / "one.json"
    one_line.write_text(json.dumps(QA), "utf-8")
    assert read(one_line).schemas[str(one_line)].format == "json"


def test_empty_inputs_and_tsv(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n \n", "utf-8")
    (tmp_path / "empty.json").write_text("[]", "utf-8")
    write(tmp_path / "qa.tsv", QA, "jsonl").write_text("question\tanswer\n1+1?\t2\n", "utf-8")
    res = read(sorted(tmp_path.iterdir()))
    assert res.stats.rows_in == res.stats.rows_kept == 1
    assert {s.schema for s in res.schemas.values()} == {"none", "qa"}
    assert res.frame.collect()["messages"][0][1]["content"] == "2"


def test_docstring_examples() -> None:
    module = importlib.import_module("sftfast.reader")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --- all of ../shared/data -------------------------------------------------------------------

EXPECTED_SCHEMA = {
    "belle_eval_zh/eval_set.json": "qa",
    "codealpaca_2k_en/code_alpaca_2k.json": "alpaca",
    "fastchat_dummy_conversation_en/dummy_conversation.json": "sharegpt",
    "glaive_toolcall_en_demo/glaive_toolcall_en_demo.json": "sharegpt",
    "gpteacher_en/codegen-instruct.json": "alpaca",
    "gpteacher_en/roleplay-simple-deduped-roleplay-instruct.json": "alpaca",
    "gpteacher_en/toolformer-dedupe-only-dataset.json": "alpaca",
    "gsm8k_train_en/train.jsonl": "qa",
    "lawyer_llama_zh/fakao_gpt4.json": "qa",
    "lawyer_llama_zh/judical_examination.json": "alpaca",
    "lawyer_llama_zh/legal_advice.json": "alpaca",
    "lawyer_llama_zh/legal_counsel_multi_turn_with_article_v2.json": "history",
    "lawyer_llama_zh/legal_counsel_with_article_v2.json": "qa",
    "lawyer_llama_zh/zixun_gpt4.json": "qa",
    "medicalgpt_medical_sft_zh/medical_sft_1K_format.jsonl": "sharegpt",
    "mt_bench_questions_en/question.jsonl": "turns",
    "pclue_zh/pCLUE_train_9.json": "qa",
}


def independent_rows(path: Path) -> list[Any]:
    """The file's rows by plain json parsing: an array, else one value per non-blank line."""
    text = path.read_text("utf-8")
    if text.lstrip().startswith("[") and "\n" in text.strip():
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def expected_rejects(rel: str, rows: list[Any]) -> Counter[str]:
    """What the README and SOURCE.md files say should be rejected, computed here from the data."""
    rows = [r[0] if isinstance(r, list) and len(r) == 1 else r for r in rows]
    out: Counter[str] = Counter()
    for r in rows:
        answer = next(
            (r[k] for k in ("std_answer", "output", "response", "answer", "target") if k in r), None
        )
        if isinstance(answer, str) and not answer.strip():
            out["empty_assistant"] += 1
        if "turns" in r:
            out["no_assistant_turn"] += 1
        if "history" in r:
            tags = "".join("U" if h.startswith("[客户]") else "A" for h in r["history"])
            if not re.fullmatch("(UA)+", tags):
                out["wrong_role_order"] += 1
    return out


@pytest.mark.skipif(not DATA.is_dir(), reason=f"../shared is absent ({DATA} does not exist)")
def test_all_shared_data_accounted_for() -> None:
    files = sorted(p for p in DATA.glob("*/*.json*") if p.parent.name != "tokenizers")
    assert {str(p.relative_to(DATA)) for p in files} == set(EXPECTED_SCHEMA)
    res = read(files)
    assert_accounted(res)
    for path in files:
        rel = str(path.relative_to(DATA))
        rows = independent_rows(path)
        fs = res.stats.files[str(path)]
        assert res.schemas[str(path)].schema == EXPECTED_SCHEMA[rel], rel
        assert fs.rows_in == len(rows) == fs.rows_kept + sum(fs.rejected.values()), rel
        assert fs.rejected == dict(expected_rejects(rel, rows)), rel
        print(f"{rel}: in {fs.rows_in}, kept {fs.rows_kept}, rejected {fs.rejected}")
    assert res.stats.rejected["empty_assistant"] == 369 + 2  # BELLE std_answer, Code Alpaca
    df = res.frame.collect()
    belle = df.filter(pl.col("source").str.ends_with("eval_set.json"))
    assert "closed\xa0qa" in belle["class"].to_list()  # the category label survives as it was
    assert df.filter(pl.col("source").str.ends_with("fakao_gpt4.json"))["type"].n_unique() == 2
    assert df["id"].null_count() == 0 and df["messages"].list.len().min() >= 2  # type: ignore[operator]


def test_scan_jsonl_keeps_fields_that_appear_late(tmp_path: Path) -> None:
    """The public block scanner takes its schema from the whole file: a field first seen deep
    in the file, or a column that widens from int to float, reads as Polars reads the file."""
    path = tmp_path / "late.jsonl"
    rows: list[Row] = [{"q": f"q{i}", "n": i} for i in range(2000)]
    rows += [{"q": "x", "n": 2.5, "late": {"k": [1, 2]}}, {"late": None, "q": "中文"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    got = sftfast.scan_jsonl(path, block_bytes=1024).collect()
    want = pl.read_ndjson(path, infer_schema_length=None)
    assert got.columns == ["q", "n", "late"]
    assert got.select(want.columns).to_dicts() == want.to_dicts()
    assert sftfast.scan_jsonl(path, block_bytes=1024).select(pl.len()).collect().item() == 2002
    # Types Polars coerces: its own schema over the whole file.
    path.write_text('{"a": 1}\n\n{"a": "x", "b": true}\n', "utf-8")
    assert sftfast.scan_jsonl(path, block_bytes=8).collect().to_dicts() == [
        {"a": "1", "b": None}, {"a": "x", "b": True}]
    path.write_text("\n  \n", "utf-8")
    assert sftfast.scan_jsonl(path).collect().height == 0


def test_scan_jsonl_names_the_first_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n{"a": \n', "utf-8")
    with pytest.raises(InputError, match=r"line 2: not_an_object"):
        sftfast.scan_jsonl(path)
    path.write_text('{"a": 1}\n{"a": \n', "utf-8")
    with pytest.raises(InputError, match=r"line 2: invalid_json"):
        sftfast.scan_jsonl(path)
