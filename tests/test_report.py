"""The HTML run report: one self-contained file, escaped text, plots that render in a browser."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st


def _load_report() -> ModuleType:
    try:
        return importlib.import_module("sftfast.report")
    except ModuleNotFoundError:  # an installed wheel built before report.py: use the source
        src = Path(__file__).resolve().parents[1] / "python" / "sftfast" / "report.py"
        spec = importlib.util.spec_from_file_location("sftfast.report", src)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


report = _load_report()

EVIL = "<script>alert(1)</script> & \"quotes\" 'single'"
PLOTS = ["steps", "lengths", "mix", "cluster-sizes", "s-curve", "row-fill"]


def make_run() -> dict[str, Any]:
    """A run summary shaped like the pipeline's, with every section filled in."""
    edges = [0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
    near_text = "Solve for x: 2x + 3 = 7. " * 40  # longer than the 600-character cut
    return {
        "sftfast_version": "0.1.0", "started": "2026-11-21T19:30:00Z",
        "finished": "2026-11-21T19:31:42Z", "output": "/data/runs/demo", "fingerprint": "ab12cd34",
        "seed": 0, "tokenizer": {"name": "qwen2 tokenizer.json", "hash": "9f8e7d"},
        "config": {"max_tokens": 4096, "threshold": 0.8, "note": "</pre><b>not bold</b>"},
        "steps": [
            {"name": "read", "rows_in": 10_000, "rows_out": 9_900, "dropped": {"invalid_json": 100},
             "added": 0, "seconds": 1.2, "cpu_seconds": 2.1, "peak_rss_bytes": 123_456_789,
             "resumed": False},
            {"name": "length_filter", "rows_in": 9_900, "rows_out": 9_500,
             "dropped": {"too_long": 350, "empty": 50}, "added": 0, "seconds": 3.4,
             "cpu_seconds": 40.2, "peak_rss_bytes": 456_000_000, "resumed": True},
            {"name": "near_dedup", "rows_in": 9_500, "rows_out": 9_200,
             "dropped": {"near_duplicate": 300}, "added": 0, "seconds": 75.5,
             "cpu_seconds": 600.0, "peak_rss_bytes": 900_000_000, "resumed": False},
            {"name": "rebalance", "rows_in": 9_200, "rows_out": 5_000,
             "dropped": {"over_quota": 4_500}, "added": 300, "seconds": 0.3,
             "cpu_seconds": 0.3, "peak_rss_bytes": 950_000_000, "resumed": False},
        ],
        "lengths": {
            "edges": edges,
            "series": {"before filter": [50, 400, 1200, 2500, 3000, 1800, 700, 200, 100, 50],
                       "after filter": [0, 390, 1180, 2450, 2950, 1780, 600, 150, 0, 0]},
            "bounds": {"prompt": [1, 4096], "response": [1, 4096], "max_total": 4096},
        },
        "mix": {
            "method": "unimax", "unit": "rows", "budget": 5_000, "max_epochs": 4.0,
            "table": [
                {"category": "math", "available": 4_200, "selected": 1_700, "epochs": 0.4048},
                {"category": "code", "available": 3_000, "selected": 1_700, "epochs": 0.5667},
                {"category": "chat", "available": 1_800, "selected": 1_300, "epochs": 0.7222},
                {"category": "safety", "available": 200, "selected": 300, "epochs": 1.5,
                 "note": "repeated"},
            ],
        },
        "dedup": {
            "exact": {"rows": 9_500, "duplicates": 120},
            "near": {
                "rows": 9_380, "duplicates": 180, "clusters": 95, "threshold": 0.8,
                "num_perm": 128, "bands": 14, "rows_per_band": 8,
                "cluster_sizes": {"2": 70, "3": 20, "4": 4, "12": 1},
                "s_curve": [[s / 10, 1 - (1 - (s / 10) ** 8) ** 14] for s in range(11)],
                "examples": [
                    {"cluster": 17, "size": 3, "rows": [17, 230, 511],
                     "texts": [near_text, near_text + "!", EVIL]},
                    {"cluster": 40, "size": 2, "rows": [40, 41],
                     "texts": ["What is 2 + 2?", "What is 2+2 ?"]},
                ],
            },
        },
        "packing": {
            "seq_len": 4096, "samples": 5_000, "rows": 620, "tokens": 2_530_000,
            "loss_tokens": 1_100_000, "efficiency": 0.9962, "samples_dropped": 0,
            "samples_truncated": 3, "tokens_lost": 1_500, "method": "bfd",
            "row_fill": {"edges": [0, 1024, 2048, 3072, 3584, 3840, 4096],
                         "counts": [0, 1, 2, 10, 40, 567]},
        },
        "final": {"samples": 5_000, "tokens": 2_530_000},
    }


def _write(tmp_path: Path, run: dict[str, Any]) -> str:
    out = report.write_report(run, tmp_path / "sub" / "report.html")
    assert out == tmp_path / "sub" / "report.html"
    return str(out.read_text(encoding="utf-8"))


def test_one_self_contained_file(tmp_path: Path) -> None:
    text = _write(tmp_path, make_run())
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["report.html"]  # no temp left
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"""(?:src|href)\s*=|@import|url\(""", text, re.IGNORECASE)
    assert text.count("<script") == 1 and "<link" not in text
    for name in PLOTS:
        assert f'data-plot="{name}"' in text
    assert tuple(PLOTS) == report.PLOTS
    assert "a starting point" in text


def test_numbers_are_formatted(tmp_path: Path) -> None:
    text = _write(tmp_path, make_run())
    for expected in ("10,000", "2,530,000", "99.62%", "117.7", "1 min 15.5 s", "43.5%"):
        assert expected in text, expected


def test_untrusted_text_is_escaped(tmp_path: Path) -> None:
    text = _write(tmp_path, make_run())
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot;" in text
    assert "<b>not bold</b>" not in text and "&lt;/pre&gt;&lt;b&gt;" in text
    assert "Solve for x: 2x + 3 = 7. " * 24 + " …</pre>" in text  # cut at 600 characters
    assert "2x + 3 = 7. " * 30 not in text


def test_missing_sections_render(tmp_path: Path) -> None:
    run = {"steps": make_run()["steps"], "mix": None, "dedup": {"exact": None}}
    text = _write(tmp_path, run)
    assert 'data-plot="steps"' in text
    assert text.count("Step not run") >= 4  # lengths, mix, exact and near dedup, packing
    assert "No configuration recorded" in text


@pytest.mark.parametrize(
    "run",
    [
        {"steps": []},
        {"steps": [{"name": "read"}]},
        {"steps": [{"name": "read", "rows_in": 0, "rows_out": 0, "dropped": {}}]},
        {"steps": [], "lengths": {"edges": [0, 10], "series": {"all": [0]}},
         "mix": {"table": [{"category": "a", "available": 0, "selected": 0}]},
         "dedup": {"near": {"rows": 0, "duplicates": 0, "cluster_sizes": {}, "s_curve": [],
                            "examples": [{"rows": [], "texts": []}]}},
         "packing": {"seq_len": 8, "efficiency": None, "row_fill": {"edges": [0], "counts": []}},
         "final": {"samples": 0}},
        {"steps": None, "lengths": {"edges": [1, 2], "series": {"x": [5]}}, "final": "bad",
         "started": "not a date", "finished": None, "tokenizer": "plain"},
    ],
)
def test_degenerate_input_does_not_crash(tmp_path: Path, run: dict[str, Any]) -> None:
    assert "</html>" in _write(tmp_path, run)


def test_recommended_epochs_anchors() -> None:
    for n, epochs in ((100, 15), (1_000, 10), (10_000, 2), (1_000_000, 2), (1, 15)):
        low, high = report.recommended_epochs(n)
        assert 1 <= low <= epochs <= high and low < high, (n, low, high)
    with pytest.raises(ValueError, match="n_samples"):
        report.recommended_epochs(0)


@given(st.integers(1, 10**9), st.integers(1, 10**9))
def test_recommended_epochs_never_increase(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    (low_a, high_a), (low_b, high_b) = report.recommended_epochs(lo), report.recommended_epochs(hi)
    assert low_a >= low_b and high_a >= high_b
    assert 1 <= low_b < high_b


def test_docstring_examples() -> None:
    result = doctest.testmod(report, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


class _Dom(HTMLParser):
    """Collects the attributes of ``<body>`` and of every ``<svg>``."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.svgs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.body = dict(attrs)
        elif tag == "svg":
            self.svgs.append(dict(attrs))


def test_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium or chromium-browser on PATH for the headless rendering check")
    page = report.write_report(make_run(), tmp_path / "report.html")
    cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _Dom()
    dom.feed(done.stdout)
    assert dom.body.get("data-checked") == "1", done.stdout[-2000:]
    plots = {svg.get("data-plot"): svg for svg in dom.svgs if "plot" in (svg.get("class") or "")}
    assert set(PLOTS) <= set(plots)
    for name in PLOTS:
        svg = plots[name]
        assert float(svg.get("data-rendered-width") or 0) > 0, name
        assert float(svg.get("data-rendered-height") or 0) > 0, name
        assert int(svg.get("data-visible-marks") or 0) > 0, name
