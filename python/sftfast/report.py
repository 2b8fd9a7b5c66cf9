"""A self-contained HTML report of a pipeline run: one file, inline CSS, inline SVG plots.

Nothing is loaded from the network; all text from the run is HTML-escaped. Every section but
``steps`` is optional and noted when missing. A plot is ``<svg class="plot" data-plot="NAME">``
with its bars, lines and points in class ``mark``; after load an inline script writes each
plot's ``data-rendered-width``, ``data-rendered-height`` and ``data-visible-marks`` and sets
``data-checked="1"`` on ``<body>``, for a headless-browser test.
"""

from __future__ import annotations

import contextlib
import html
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from sftfast.exceptions import ConfigError

__all__ = ["PLOTS", "recommended_epochs", "write_report"]

#: The ``data-plot`` names, each drawn when its data is present.
PLOTS = ("steps", "lengths", "mix", "cluster-sizes", "s-curve", "row-fill")

# Common SFT guidance as (log10 of the example count, epochs): more data needs fewer passes.
_EPOCH_LOG10, _EPOCHS, _EPOCH_SPREAD = (2.0, 3.0, 4.0), (15.0, 10.0, 2.0), 0.25
_TEXT_CHARS, _MAX_EXAMPLES, _MAX_TEXTS = 600, 20, 4  # example texts are untrusted, maybe huge
_PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#e45756")
_W, _H, _L, _R, _T, _B = 760, 300, 70, 16, 40, 62  # plot size, then margins (px)

_CSS = """body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
max-width:1040px;margin:0 auto;padding:20px 28px 60px}h1{font-size:22px;margin:0 0 10px}
h2{font-size:17px;margin:34px 0 8px;padding-bottom:4px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:18px 0 6px}.note{color:#777;font-style:italic}.muted{color:#777}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right;vertical-align:top}
th{background:#f6f6f6;font-weight:600;white-space:nowrap}#steps td{white-space:nowrap}
th:first-child,td:first-child,#steps :is(td,th):nth-child(6){text-align:left}
#steps td:nth-child(6){font-size:12px}tr.total td{font-weight:600}.kv td{text-align:left}
table.kv th{background:none;text-align:left;font-weight:normal;color:#666}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}svg.plot{display:block;
max-width:100%;height:auto;margin:12px 0}svg.plot text{font:11px system-ui,sans-serif;fill:#444}
svg.plot text.h{font-size:13px;fill:#222}.box{background:#f3f7fb;border:1px solid #c9d9ea;
border-radius:6px;padding:10px 14px}.box b{font-size:18px}.lab{font-size:12px;color:#555;
margin-bottom:2px}.kept .lab{color:#2e7d32}.cluster{display:grid;
grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:8px}.cluster>div{min-width:0}
.cluster pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;background:#fafafa;
border:1px solid #ddd;border-radius:4px;padding:6px;max-height:260px;overflow:auto}
.cluster .kept pre{border-color:#54a24b;background:#f1f9f0}details pre{background:#fafafa;
border:1px solid #ddd;padding:8px;overflow:auto}"""

_SCRIPT = """addEventListener("load",function(){document.querySelectorAll("svg.plot").forEach(
function(s){var r=s.getBoundingClientRect(),n=0;s.querySelectorAll(".mark").forEach(function(m){
var b=m.getBoundingClientRect();if(b.width>0&&b.height>0){n++;}});
s.setAttribute("data-rendered-width",String(Math.round(r.width)));
s.setAttribute("data-rendered-height",String(Math.round(r.height)));
s.setAttribute("data-visible-marks",String(n));});document.body.dataset.checked="1";});"""


def recommended_epochs(n_samples: int) -> tuple[int, int]:
    """A starting range of training epochs for a fine-tuning set of ``n_samples`` examples.

    Follows common SFT guidance: about 15 epochs for ~100 examples, 10 for ~1,000 and 2 for
    ~10,000 or more, interpolated linearly on ``log10(n_samples)`` and clamped outside that
    span. The range is the centre ±25 % rounded outwards, at least 1, with ``low < high``. It is
    a starting point: watch the validation loss.

    Parameters
    ----------
    n_samples : int
        Number of training examples (before packing), at least 1.

    Returns
    -------
    tuple of int
        ``(low, high)`` epochs; neither increases as ``n_samples`` grows.

    Raises
    ------
    ConfigError
        If ``n_samples`` is not an integer of at least 1.

    Examples
    --------
    >>> recommended_epochs(100), recommended_epochs(1_000)
    ((11, 19), (7, 13))
    >>> recommended_epochs(10_000), recommended_epochs(5_000_000)
    ((1, 3), (1, 3))
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"n_samples: expected an integer >= 1, got {n_samples!r}")
    # np.interp clamps outside the anchors; rounding keeps 7.4999999 from flooring to 7.
    centre = round(float(np.interp(math.log10(n_samples), _EPOCH_LOG10, _EPOCHS)), 9)
    low = max(1, math.floor(centre * (1 - _EPOCH_SPREAD)))
    return low, max(low + 1, math.ceil(centre * (1 + _EPOCH_SPREAD)))


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _num(v: Any) -> float | None:
    """A finite number, or None for anything else (missing, text, bool, NaN)."""
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _fmt(v: Any) -> str:
    """A cell: ints with thousands separators, floats to a sensible precision, text escaped."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float) and math.isfinite(v):
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.2f}" if abs(v) >= 1 else f"{v:.3g}"
    return _e(json.dumps(v, default=str) if isinstance(v, Mapping | list) else v)


def _pct(part: Any, whole: Any, digits: int = 1) -> str:
    p, w = _num(part), _num(whole)
    return "—" if p is None or not w else f"{p / w:.{digits}%}"


def _short(v: Any, exact: bool = False) -> str:
    """An axis label: 1.2k, 3M, 0.25; with ``exact``, in full below 100,000 (1,024 not 1.02k)."""
    x = _num(v) or 0.0
    if exact and abs(x) < 1e5:
        return _fmt(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _secs(v: Any, mib: bool = False) -> str:
    """Seconds as ``1.23 s`` or ``2 min 03.0 s``; with ``mib``, bytes in MiB."""
    if (x := _num(v)) is None:
        return "—"
    if mib:
        return f"{x / 2**20:,.1f}"
    return f"{x:.2f} s" if x < 60 else f"{int(x // 60):,} min {x % 60:04.1f} s"


def _map(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list | tuple) else []


def _sec(name: str, title: str, body: str) -> str:
    return f'<section id="{name}"><h2>{_e(title)}</h2>\n{body}</section>\n'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>\n'


def _kv(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{cells}</table>\n'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], total: Sequence[str]) -> str:
    """A table of already formatted cells and a bold total row."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    body += '<tr class="total">' + "".join(f"<td>{c}</td>" for c in total) + "</tr>"
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>\n"


def _ticks(top: float) -> list[float]:
    """About five round ticks from 0 up to at least ``top``."""
    top = top if top > 0 else 1.0
    raw = top / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [step * i for i in range(math.ceil(top / step - 1e-9) + 1)]


def _y(v: float, ymax: float) -> float:
    """The SVG y of value ``v`` on an axis from 0 to ``ymax``, clamped to the plot area."""
    return _H - _B - min(max(v / ymax, 0.0), 1.0) * (_H - _T - _B)


def _frame(name: str, title: str, body: list[str], xlabel: str, ylabel: str,
           yticks: Sequence[float]) -> str:
    """The ``<svg>`` around ``body``: title, y grid with labels, x axis line and axis labels."""
    ys = [_y(t, yticks[-1]) for t in yticks]
    grid = "".join(
        f'<line x1="{_L}" x2="{_W - _R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>'
        f'<text x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_short(t)}</text>'
        for t, y in zip(yticks, ys, strict=True))
    y0, xm, ym = _H - _B, (_L + _W - _R) / 2, (_T + _H - _B) / 2
    return (f'<svg class="plot" data-plot="{_e(name)}" width="{_W}" height="{_H}" '
            f'viewBox="0 0 {_W} {_H}" role="img"><title>{_e(title)}</title>'
            f'<text class="h" x="{_L}" y="18">{_e(title)}</text>{grid}'
            f'<line x1="{_L}" x2="{_W - _R}" y1="{y0}" y2="{y0}" stroke="#888"/>{"".join(body)}'
            f'<text x="{xm:.1f}" y="{_H - 6}" text-anchor="middle">{_e(xlabel)}</text>'
            f'<text transform="translate(16 {ym:.1f}) rotate(-90)" text-anchor="middle">'
            f"{_e(ylabel)}</text></svg>\n")


def _bars(name: str, title: str, labels: Sequence[str], series: Mapping[str, Sequence[Any]],
          xlabel: str, ylabel: str, edges: Sequence[str] | None = None) -> str:
    """Grouped bars, one group per label; given ``edges``, a histogram labelled at bin edges.

    Bins are drawn with equal widths, so log-spaced edges read as a log-scaled axis.
    """
    names = list(series)
    vals = [[max(_num(v) or 0.0, 0.0) for v in series[s]] for s in names]
    n, k = len(labels), max(len(names), 1)
    top = max((v for vs in vals for v in vs), default=0.0)
    yticks, pw, y0 = _ticks(top), _W - _L - _R, _H - _B
    parts, lx = [], _W - _R
    for j in reversed(range(len(names)) if len(names) > 1 else []):  # legend, right-aligned
        lx -= int(6.5 * len(names[j])) + 26
        parts.append(f'<rect x="{lx}" y="9" width="11" height="11" fill="{_PALETTE[j % 6]}"/>'
                     f'<text x="{lx + 15}" y="19">{_e(names[j])}</text>')
    if n == 0 or top <= 0:
        parts.append(f'<text x="{_L + pw / 2}" y="{_y(0.5, 1)}" text-anchor="middle">no data'
                     "</text>")
    slot = pw / max(n, 1)
    gap = 0.0 if edges is not None else min(0.3, 6 / slot)
    bw = slot * (1 - gap) / k
    for (j, s), i in itertools.product(enumerate(names), range(n)):
        v = vals[j][i] if i < len(vals[j]) else 0.0
        if v > 0:  # a zero draws nothing; a small non-zero count still gets one pixel
            h = max(y0 - _y(v, yticks[-1]), 1.0)
            x = _L + i * slot + slot * gap / 2 + j * bw
            parts.append(
                f'<rect class="mark" x="{x:.2f}" y="{y0 - h:.2f}" width="{max(bw - 0.5, 0.5):.2f}"'
                f' height="{h:.2f}" fill="{_PALETTE[j % 6]}"><title>{_e(s)} · {_e(labels[i])}: '
                f"{_fmt(series[s][i])}</title></rect>")
    xt = list(edges) if edges is not None else list(labels)
    every = max(1, math.ceil(len(xt) / (12 if edges is not None else 30)))
    tilt = edges is None and (n > 8 or max((len(str(t)) for t in labels), default=0) > 10)
    for i in range(0, len(xt), every):
        x, text = (_L + i * slot if edges is not None else _L + (i + 0.5) * slot), _e(xt[i][:20])
        parts.append(f'<text transform="translate({x:.1f} {y0 + 12}) rotate(-35)" '
                     f'text-anchor="end">{text}</text>' if tilt else
                     f'<text x="{x:.1f}" y="{y0 + 15}" text-anchor="middle">{text}</text>')
    return _frame(name, title, parts, xlabel, ylabel, yticks)


def _s_curve(points: Sequence[tuple[float, float]], threshold: float | None) -> str:
    """P(detected) against Jaccard similarity on the unit square, the threshold dashed."""
    y0, pw = _H - _B, _W - _L - _R
    xs = [_L + min(max(a, 0.0), 1.0) * pw for a, _ in points]
    ys = [_y(b, 1.0) for _, b in points]
    parts = [f'<text x="{_L + t * pw:.1f}" y="{y0 + 15}" text-anchor="middle">{t:g}</text>'
             for t in (0, 0.2, 0.4, 0.6, 0.8, 1)]
    if threshold is not None:
        x = _L + min(max(threshold, 0.0), 1.0) * pw
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_T}" y2="{y0}" stroke="#e45756" '
                     f'stroke-dasharray="4 3"/><text x="{x + 4:.1f}" y="{y0 - 6}">threshold '
                     f"{threshold:g}</text>")
    d = " ".join(f"{'L' if i else 'M'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(zip(xs, ys)))
    parts.append(f'<path class="mark" d="{d}" fill="none" stroke="{_PALETTE[0]}" '
                 'stroke-width="2"/>')
    parts += [f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{_PALETTE[0]}">'
              f"<title>{a:g}: {b:.3g}</title></circle>"
              for x, y, (a, b) in zip(xs, ys, points, strict=True)]
    return _frame("s-curve", "Detection probability by Jaccard similarity", parts,
                  "Jaccard similarity", "P(detected)", [0, 0.25, 0.5, 0.75, 1])


def _header(run: Mapping[str, Any]) -> str:
    tok, final = _map(run.get("tokenizer")), _map(run.get("final"))
    rows = [(k.removeprefix("sftfast_"), _fmt(run.get(k)))
            for k in ("sftfast_version", "started", "finished")]
    with contextlib.suppress(TypeError, ValueError):  # absent, unparsable, naive against aware
        start, end = (datetime.fromisoformat(str(run.get(k))) for k in ("started", "finished"))
        rows.append(("wall time", _secs((end - start).total_seconds())))
    rows += [(k, f"<code>{_fmt(run.get(k))}</code>") for k in ("output", "fingerprint")]
    tok_text = f"{_fmt(tok.get('name'))} <code class=muted>{_fmt(tok.get('hash'))}</code>"
    rows += [("seed", _fmt(run.get("seed"))), ("tokenizer", tok_text)]
    result = f"{_fmt(final.get('samples'))} samples, {_fmt(final.get('tokens'))} tokens"
    rows += [("result", result)] if final else []
    return "<h1>sftfast run report</h1>\n" + _kv(rows)


def _steps(run: Mapping[str, Any]) -> str:
    steps = [_map(s) for s in _list(run.get("steps"))]
    if not steps:
        return _sec("steps", "Steps", _note("No steps recorded."))
    rows, bars = [], []
    for s in steps:
        drop = {str(k): v for k, v in _map(s.get("dropped")).items()}
        n_in, n_out, n_add = _num(s.get("rows_in")), _num(s.get("rows_out")), _num(s.get("added"))
        n_drop = sum(_num(v) or 0.0 for v in drop.values())
        if not drop and n_in is not None and n_out is not None:
            n_drop = max(n_in + (n_add or 0) - n_out, 0.0)
        why = "<br>".join(f"{_e(k)}&nbsp;{_fmt(v)}" for k, v in drop.items()) or "—"
        rows.append([_e(s.get("name", "?")), _fmt(s.get("rows_in")), _fmt(s.get("rows_out")),
                     _pct(n_out, n_in), _fmt(n_drop), why, _fmt(s.get("added", 0)),
                     _secs(s.get("seconds")), _secs(s.get("cpu_seconds")),
                     _secs(s.get("peak_rss_bytes"), mib=True), "yes" if s.get("resumed") else "no"])
        bars.append((n_out or 0.0, n_drop, n_add or 0.0))
    kept, dropped, added = (list(c) for c in zip(*bars, strict=True))
    rss = [b for s in steps if (b := _num(s.get("peak_rss_bytes"))) is not None]
    total = ["total", "", "", "", _fmt(sum(dropped)), "", _fmt(sum(added)),
             *(_secs(sum(_num(s.get(k)) or 0 for s in steps)) for k in ("seconds", "cpu_seconds")),
             _secs(max(rss, default=None), mib=True), ""]
    head = ["step", "rows in", "rows out", "kept", "dropped", "by reason", "added", "time", "CPU",
            "peak MiB", "resumed"]
    series = {"kept": kept, "dropped": dropped} | ({"added": added} if any(added) else {})
    names = [str(s.get("name", "?")) for s in steps]
    chart = _bars("steps", "Rows kept and dropped per step", names, series, "step", "rows")
    return _sec("steps", "Steps", _table(head, rows, total) + chart)


def _lengths(run: Mapping[str, Any]) -> str:
    ln = _map(run.get("lengths"))
    edges = _list(ln.get("edges"))
    series = {str(k): _list(v) for k, v in _map(ln.get("series")).items()}
    if len(edges) < 2 or not series:
        return _sec("lengths", "Token lengths", _note("Step not run: no length histogram."))
    bounds = "; ".join(f"{_e(k)} " + ("–".join(_fmt(x) for x in v) if isinstance(v, list)
                                       else _fmt(v)) for k, v in _map(ln.get("bounds")).items())
    sums = ", ".join(f"{_e(k)}: {_fmt(sum(_num(c) or 0.0 for c in v))} rows"
                     for k, v in series.items())
    body = (f"<p>Bounds (tokens): {bounds}</p>\n" if bounds else "") + f"<p>{sums}</p>\n"
    labels = [f"{_fmt(a)}–{_fmt(b)}" for a, b in itertools.pairwise(edges)]
    body += _bars("lengths", "Tokens per row", labels, series, "tokens per row (bin edges)",
                  "rows", [_short(e, exact=True) for e in edges])
    return _sec("lengths", "Token lengths", body)


def _mix(run: Mapping[str, Any]) -> str:
    mix = _map(run.get("mix"))
    table = [_map(r) for r in _list(mix.get("table"))]
    if not table:
        return _sec("mix", "Category mix", _note("Step not run: no rebalancing plan."))
    cols = ["category", "available", "selected"]
    for r in table:  # extra columns in order of first appearance
        cols += [str(k) for k in r if str(k) not in cols]
    tot_a, tot_s = (sum(_num(r.get(c)) or 0.0 for r in table) for c in ("available", "selected"))
    rows = [[_fmt(r.get(c)) for c in cols]
            + [_pct(r.get("available"), tot_a), _pct(r.get("selected"), tot_s)] for r in table]
    total = ["total", _fmt(tot_a), _fmt(tot_s), *[""] * (len(cols) - 3), "100%", "100%"]
    meta = [(k.replace("_", " "), _fmt(mix.get(k)))
            for k in ("method", "unit", "budget", "max_epochs") if mix.get(k) is not None]
    series = {"before (available)": [r.get("available") for r in table],
              "after (selected)": [r.get("selected") for r in table]}
    body = _kv(meta) + _table([*cols, "share before", "share after"], rows, total)
    body += _bars("mix", "Category mix before and after rebalancing",
                  [str(r.get("category", "?")) for r in table], series, "category",
                  str(mix.get("unit") or "rows"))
    return _sec("mix", "Category mix", body)


def _examples(examples: list[Any]) -> str:
    """Each cluster's texts side by side, the kept row marked, each text cut and escaped."""
    out = [_note(f"The first {_MAX_EXAMPLES} of {len(examples):,} clusters.")
           if len(examples) > _MAX_EXAMPLES else ""]
    for ex in [_map(x) for x in examples[:_MAX_EXAMPLES]]:
        rows, texts = _list(ex.get("rows")), _list(ex.get("texts"))
        kept = ex.get("kept", rows[0] if rows else None)  # dedup keeps the first row of a cluster
        cells = []
        for i, text in enumerate(map(str, texts[:_MAX_TEXTS])):
            row = rows[i] if i < len(rows) else None
            t = text if len(text) <= _TEXT_CHARS else text[:_TEXT_CHARS] + " …"
            tag = "kept" if row is not None and row == kept else "dropped"
            cells.append(f'<div class="{tag}"><div class="lab">row {_fmt(row)} · {tag}</div>'
                         f"<pre>{_e(t)}</pre></div>")
        shown = f" (first {_MAX_TEXTS} shown)" if len(texts) > _MAX_TEXTS else ""
        out.append(f"<h3>Cluster {_fmt(ex.get('cluster'))} · {_fmt(ex.get('size'))} rows{shown}"
                   f'</h3><div class="cluster">{"".join(cells)}</div>\n')
    return "".join(out)


def _dedup(run: Mapping[str, Any]) -> str:
    dd = _map(run.get("dedup"))
    exact, near = _map(dd.get("exact")), _map(dd.get("near"))
    kv = [[("rows", _fmt(d.get("rows"))), ("duplicates removed", _fmt(d.get("duplicates"))
           + f" ({_pct(d.get('duplicates'), d.get('rows'), 2)})")] for d in (exact, near)]
    parts = ["<h3>Exact duplicates</h3>", _kv(kv[0]) if exact else _note("Step not run."),
             "<h3>Near duplicates (MinHash LSH)</h3>"]
    if not near:
        return _sec("dedup", "Deduplication", "".join(parts) + _note("Step not run."))
    kv[1] += [(k.replace("_", " "), _fmt(near.get(k)))
              for k in ("clusters", "threshold", "num_perm", "bands", "rows_per_band")]
    parts.append(_kv(kv[1]))
    sizes = sorted((int(k), v) for k, v in _map(near.get("cluster_sizes")).items()
                   if str(k).strip().isdigit())
    if sizes:
        parts.append(_bars("cluster-sizes", "Near-duplicate clusters by size",
                           [str(k) for k, _ in sizes], {"clusters": [v for _, v in sizes]},
                           "cluster size (rows)", "clusters"))
    curve = sorted((float(p[0]), float(p[1])) for p in map(_list, _list(near.get("s_curve")))
                   if len(p) == 2 and _num(p[0]) is not None and _num(p[1]) is not None)
    if curve:
        parts.append(_s_curve(curve, _num(near.get("threshold"))))
    if examples := _list(near.get("examples")):
        parts.append("<h3>Example clusters</h3>\n" + _examples(examples))
    return _sec("dedup", "Deduplication", "".join(parts))


def _packing(run: Mapping[str, Any]) -> str:
    pk = _map(run.get("packing"))
    if not pk:
        return _sec("packing", "Packing", _note("Step not run: samples were not packed."))
    loss = f"{_fmt(pk.get('loss_tokens'))} ({_pct(pk.get('loss_tokens'), pk.get('tokens'))})"
    rows = [(k.replace("_", " "), _fmt(pk.get(k))) for k in ("method", "seq_len", "samples",
            "rows", "tokens", "samples_dropped", "samples_truncated", "tokens_lost")]
    rows[5:5] = [("loss tokens", loss), ("efficiency", _pct(pk.get("efficiency"), 1, 2))]
    body = _kv(rows)
    fill = _map(pk.get("row_fill"))
    edges, counts = _list(fill.get("edges")), _list(fill.get("counts"))
    if len(edges) >= 2 and counts:
        labels = [f"{_fmt(a)}–{_fmt(b)}" for a, b in itertools.pairwise(edges)]
        body += _bars("row-fill", "Fill of packed rows", labels, {"rows": counts},
                      "tokens in row", "rows", [_short(e, exact=True) for e in edges])
    return _sec("packing", "Packing", body)


def _epochs(run: Mapping[str, Any]) -> str:
    last = [_map(s).get("rows_out") for s in _list(run.get("steps"))[-1:]]
    found = [_map(run.get("final")).get("samples"), _map(run.get("packing")).get("samples"), *last]
    n = next((int(v) for x in found if (v := _num(x)) is not None), 0)
    if n < 1:
        return _sec("epochs", "Recommended epochs", _note("No samples: no recommendation."))
    low, high = recommended_epochs(n)
    body = (f'<div class="box">Recommended epochs: <b>{low}–{high}</b>, a starting point, not a '
            f'rule.<br><span class="muted">For {n:,} training examples. Common SFT guidance is '
            "about 15 epochs for ~100 examples, 10 for ~1,000 and 2 for ~10,000 or more. Watch "
            "the validation loss and stop when it turns up.</span></div>\n")
    return _sec("epochs", "Recommended epochs", body)


def _config(run: Mapping[str, Any]) -> str:
    if run.get("config") is None:
        return _sec("config", "Configuration", _note("No configuration recorded."))
    text = json.dumps(run.get("config"), indent=2, default=str, ensure_ascii=False)
    return _sec("config", "Configuration", "<details><summary>pipeline configuration (JSON)"
                f"</summary><pre>{_e(text)}</pre></details>\n")


def write_report(run: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a self-contained HTML report of a pipeline run.

    The file has inline CSS and inline SVG plots (named in :data:`PLOTS`) and loads nothing
    from the network. It is written to ``<path>.tmp-<pid>`` and then renamed, so a reader never
    sees half a file.

    Parameters
    ----------
    run : Mapping
        The JSON-serialisable run summary: ``steps`` (a list of per-step dicts) and optional
        header fields and sections (``tokenizer``, ``config``, ``lengths``, ``mix``, ``dedup``,
        ``packing``, ``final``). A missing section is noted in the report.
    path : str or os.PathLike
        The HTML file to write; missing parent folders are created.

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> run = {"steps": [{"name": "read", "rows_in": 3, "rows_out": 2, "dropped": {"empty": 1}}]}
    >>> with tempfile.TemporaryDirectory() as d:
    ...     text = write_report(run, pathlib.Path(d) / "report.html").read_text(encoding="utf-8")
    >>> text.startswith("<!DOCTYPE html>"), 'data-plot="steps"' in text, "Step not run" in text
    (True, True, True)
    """
    path = Path(path)
    body = [_header(run), _steps(run), _lengths(run), _mix(run), _dedup(run), _packing(run),
            _epochs(run), _config(run)]
    title = f"sftfast report {run.get('fingerprint') or ''}".strip()
    doc = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           '<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n{''.join(body)}"
           f"<script>{_SCRIPT}</script>\n</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(doc, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
