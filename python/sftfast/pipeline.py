"""Run steps from raw files to shards, resumably, with counts, timings and a report.

A run lives in one folder::

    <out>/pipeline.json          the config and its fingerprint
    <out>/steps/NN-<step>/       each step's files and stats.json (written last)
    <out>/shards/                the packed dataset (WriteShards)
    <out>/rejects.parquet        every dropped row with its step and reason (rejects=True)
    <out>/report.html            the report (report=True)

A step is written into ``NN-<step>.tmp-<pid>`` and renamed when finished, so a crash or
``kill -9`` leaves either a finished step or nothing. Each step's fingerprint hashes its options,
the previous step's fingerprint, the tokenizer's content hash (for steps that use it), the
seed and, for ``read``, each input file's path, size and mtime. Re-running the same command
skips the finished steps whose fingerprints match; a changed step is refused unless
``force=True``, which re-runs it and every step after it. Output is deterministic, so a
resumed run writes byte-identical shards.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from sftfast import _native
from sftfast._progress import progress, read_peak_rss, reset_peak_rss
from sftfast._steputil import CODECS
from sftfast.exceptions import ConfigError
from sftfast.steps import (
    ID,
    REASON,
    STEPS,
    Read,
    Rebalance,
    Render,
    Step,
    StepContext,
    StepOutcome,
    WriteShards,
)

__all__ = ["Pipeline", "RunResult", "StepStats"]

FORMAT = 1
TOP_KEYS = ("tokenizer", "seed", "compression", "steps", "output", "rejects", "report")
_LATE = (Rebalance.name, Render.name, WriteShards.name)


@dataclass(frozen=True)
class StepStats:
    """One step's counts (``rows_in + added == rows_out + sum(dropped)``), time and memory."""

    name: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int]
    added: int
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    resumed: bool
    fingerprint: str


@dataclass(frozen=True)
class RunResult:
    """What a run did: per-step stats, the shards' folder and the files it wrote."""

    output: Path
    steps: tuple[StepStats, ...]
    fingerprint: str
    shards: Path | None
    rejects: Path | None
    report: Path | None

    def summary(self) -> str:
        """A table: one line per step."""
        head = (f"{'step':<14}{'rows in':>15}{'rows out':>15}{'dropped':>15}{'added':>13}"
                f"{'time':>11}{'CPU':>11}{'peak MiB':>10}")
        lines = [head]
        for s in self.steps:
            lines.append(f"{s.name:<14}{s.rows_in:>15,}{s.rows_out:>15,}"
                         f"{sum(s.dropped.values()):>15,}{s.added:>13,}{s.seconds:>10.2f}s"
                         f"{s.cpu_seconds:>10.2f}s{s.peak_rss_bytes / 2**20:>10,.0f}"
                         + ("  (resumed)" if s.resumed else ""))
            for reason, n in sorted(s.dropped.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"    {reason:<40}{n:>15,}")
        return "\n".join(lines)


def _load_file(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(f"{path}: expected a .yaml, .yml, .toml or .json config")
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            import yaml  # type: ignore[import-untyped]

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - parse errors of three libraries, all reported
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    return data


def _step_from(spec: Any, i: int) -> Step:
    if isinstance(spec, Mapping) and "step" in spec:
        name, params = spec["step"], {k: v for k, v in spec.items() if k != "step"}
    elif isinstance(spec, Mapping) and len(spec) == 1:
        ((name, params),) = spec.items()
        params = params or {}
    else:
        raise ConfigError(f"steps[{i}]: expected {{name: {{options}}}} or {{step: name, ...}}, "
                          f"got {spec!r}")
    if name not in STEPS:
        raise ConfigError(f"steps[{i}]: unknown step {name!r}; steps are {list(STEPS)}")
    if not isinstance(params, Mapping):
        raise ConfigError(f"steps[{i}] {name}: options must be a mapping, got {params!r}")
    try:
        return STEPS[name](**params)
    except TypeError as exc:
        raise ConfigError(f"steps[{i}] {name}: {exc}") from None


def _check_order(steps: Sequence[Step]) -> None:
    if not steps or not isinstance(steps[0], Read):
        raise ConfigError("steps: the first step must be 'read'")
    names = [s.name for s in steps]
    for n in set(names):
        if names.count(n) > 1 and n in (Read.name, *_LATE):
            raise ConfigError(f"steps: {n!r} may appear once, got {names.count(n)} times")
    late = [n for n in names if n in _LATE]
    if late != [n for n in _LATE if n in late]:
        raise ConfigError(f"steps: rebalance, render and write_shards must come in that order, "
                          f"got {names}")
    first_late = min((names.index(n) for n in late), default=len(names))
    for n in names[first_late:]:
        if n not in _LATE:
            raise ConfigError(f"steps: {n!r} must come before {names[first_late]!r} ({names})")
    if WriteShards.name in names and Render.name not in names:
        raise ConfigError("steps: write_shards needs a 'render' step before it")


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Pipeline:
    """Steps from raw files to shards, run resumably in an output folder.

    Parameters
    ----------
    steps
        :mod:`sftfast.steps` objects, ``read`` first (see that module for the order rules).
    tokenizer
        What :func:`sftfast.load_tokenizer` takes, or ``"demo"`` (the built-in one).
    seed
        The default seed of every step that takes one.
    compression
        Codec of the step files (``steps/*/*.parquet``): ``"none"`` (the default: the
        fastest; a run's step files take about as much disk as its JSON Lines input),
        ``"lz4"`` (about half the disk for ~8% more CPU time on the synthetic benchmark) or
        ``"zstd"`` (smaller, slower). It changes no result, so it is not part of the
        fingerprints: a resumed run may use another.

    Examples
    --------
    >>> import json, pathlib, tempfile, sftfast
    >>> from sftfast.steps import Read, LengthFilter, ExactDedup, Render, WriteShards
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [{"messages": [{"role": "user", "content": f"Question {i % 3}?"},
    ...                       {"role": "assistant", "content": "An answer."}]} for i in range(6)]
    >>> _ = (d / "a.jsonl").write_text("\\n".join(json.dumps(r) for r in rows))
    >>> p = sftfast.Pipeline([Read(d / "a.jsonl"), LengthFilter(), ExactDedup(),
    ...                       Render(template="chatml"), WriteShards(seq_len=64)],
    ...                      tokenizer="demo")
    >>> result = p.run(d / "run", quiet=True, report=False)
    >>> [(s.name, s.rows_in, s.rows_out) for s in result.steps]
    [('read', 6, 6), ('length_filter', 6, 6), ('exact_dedup', 6, 3), ('render', 3, 3), ('write_shards', 3, 3)]
    >>> p.run(d / "run", quiet=True, report=False).steps[-1].resumed
    True
    """

    def __init__(self, steps: Sequence[Step], *, tokenizer: Any = None, seed: int = 0,
                 compression: str = "none") -> None:
        steps = list(steps)
        for s in steps:
            if not isinstance(s, Step):
                raise ConfigError(f"steps: expected sftfast.steps objects, got {s!r}")
        _check_order(steps)
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed: expected an int >= 0, got {seed!r}")
        if compression not in CODECS:
            raise ConfigError(f"compression: expected one of {sorted(CODECS)}, got {compression!r}")
        self.steps = steps
        self.compression = compression
        self.tokenizer = tokenizer
        self.seed = seed
        self.defaults: dict[str, Any] = {}

    @classmethod
    def from_config(cls, config: str | os.PathLike[str] | Mapping[str, Any]) -> Pipeline:
        """Build from a YAML/TOML/JSON file or a mapping with ``tokenizer``, ``seed``,
        ``compression``, ``steps`` (a list of ``{name: {options}}`` or ``{step: name,
        options...}``) and
        optionally ``output``, ``rejects``, ``report``. Relative paths in a file resolve
        against the file's folder."""
        base = Path.cwd()
        if isinstance(config, Mapping):
            data = dict(config)
        else:
            path = Path(config)
            if not path.is_file():
                raise ConfigError(f"config: {path} is not a file")
            data, base = _load_file(path), path.resolve().parent
        unknown = set(data) - set(TOP_KEYS)
        if unknown:
            raise ConfigError(f"config: unknown keys {sorted(unknown)}; expected {TOP_KEYS}")
        specs = data.get("steps")
        if not isinstance(specs, list) or not specs:
            raise ConfigError("config: 'steps' must be a non-empty list")
        steps = [_step_from(s, i) for i, s in enumerate(specs)]
        first = steps[0]
        if isinstance(first, Read):
            paths = first.params["paths"]
            paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
            first.params["paths"] = [os.path.normpath(base / p) for p in paths]
        tok = data.get("tokenizer")
        if isinstance(tok, str) and tok != "demo" and not Path(tok).is_absolute():
            tok = os.path.normpath(base / tok)
        p = cls(steps, tokenizer=tok, seed=data.get("seed", 0),
                compression=data.get("compression", "none"))
        for k in ("output", "rejects", "report"):
            if k in data:
                v = data[k]
                p.defaults[k] = os.path.normpath(base / v) if k == "output" and v else v
        return p

    def config(self) -> dict[str, Any]:
        """The pipeline as a config mapping (what :meth:`from_config` takes)."""
        tok = self.tokenizer if isinstance(self.tokenizer, (str, type(None))) else repr(
            self.tokenizer)
        return {"tokenizer": tok, "seed": self.seed, "compression": self.compression,
                "steps": [s.config() for s in self.steps]}

    def _fingerprints(self, tok_hash: str | None) -> list[str]:
        out, prev = [], f"sftfast-pipeline-v{FORMAT}"
        for s in self.steps:
            prev = _digest([prev, s.config(), self.seed, s.inputs(),
                            tok_hash if s.uses_tokenizer else None])
            out.append(prev)
        return out

    def _tok_hash(self, ctx: StepContext) -> str | None:
        if not any(s.uses_tokenizer for s in self.steps):
            return None
        return ctx.tokenizer.key

    def plan(self, out: str | os.PathLike[str] | None = None) -> str:
        """What :meth:`run` would do, without running: steps, inputs with estimated rows, and
        which steps a run in ``out`` would resume."""
        from sftfast.cli import _count_rows

        out_path = Path(out) if out is not None else self.defaults.get("output")
        lines = [f"sftfast {_native.__version__} pipeline, seed {self.seed}, tokenizer "
                 f"{self.tokenizer!r}" + (f", output {out_path}" if out_path else "")]
        files = self.steps[0].inputs()
        est = _count_rows([f["path"] for f in files])
        lines.append(f"inputs: {len(files)} file(s), {sum(f['size'] for f in files):,} bytes, "
                     + (f"~{est:,} rows" if est is not None else "rows unknown (not JSONL/Parquet)"))
        for f in files[:20]:
            lines.append(f"  {f['path']} ({f['size']:,} bytes)")
        if len(files) > 20:
            lines.append(f"  ... and {len(files) - 20} more")
        done: dict[str, str] = {}
        fps: list[str] = []
        if out_path is not None and (Path(out_path) / "steps").is_dir():
            ctx = StepContext(Path(out_path), Path(out_path), self.seed, self.tokenizer)
            fps = self._fingerprints(self._tok_hash(ctx))
            for i, s in enumerate(self.steps):
                st = Path(out_path) / "steps" / f"{i:02d}-{s.name}" / "stats.json"
                if st.is_file():
                    fp = json.loads(st.read_text())["fingerprint"]
                    done[s.name] = "done, will resume" if fp == fps[i] else "CHANGED (--force)"
        lines.append("steps:")
        for i, s in enumerate(self.steps):
            opts = json.dumps(s.config()[s.name], ensure_ascii=False, default=str)
            lines.append(f"  {i:02d} {s.name:<14} {opts}"
                         + (f"  [{done[s.name]}]" if s.name in done else ""))
        return "\n".join(lines)

    def run(self, out: str | os.PathLike[str] | None = None, *, force: bool = False,
            quiet: bool = False, rejects: bool | None = None,
            report: bool | None = None) -> RunResult:
        """Run (or resume) in ``out``; see the module docs. ``rejects=True`` writes every
        dropped row with its step and reason to ``rejects.parquet``; ``report`` (default on)
        writes ``report.html``. Progress goes to stderr on a terminal unless ``quiet``.

        Raises
        ------
        ConfigError
            ``out`` holds a run whose finished steps have other fingerprints, and not
            ``force``.
        """
        if out is None:
            out = self.defaults.get("output")
            if out is None:
                raise ConfigError("out: no output folder given (and no 'output' in the config)")
        rejects = bool(self.defaults.get("rejects", False) if rejects is None else rejects)
        report = bool(self.defaults.get("report", True) if report is None else report)
        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        (root / "steps").mkdir(exist_ok=True)
        ctx = StepContext(root, root, self.seed, self.tokenizer, compression=self.compression)
        fps = self._fingerprints(self._tok_hash(ctx))
        started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        stats: list[StepStats] = []
        reports: dict[str, Any] = {}
        total: int | None = None
        if not quiet and isinstance(self.steps[0], Read):
            total = self.steps[0].estimate_rows()
        for i, (step, fp) in enumerate(zip(self.steps, fps)):
            folder = root / "steps" / f"{i:02d}-{step.name}"
            outcome, st = self._run_step(step, fp, folder, ctx, i, force, quiet, total)
            stats.append(st)
            reports.update(outcome.report)
            total = st.rows_out
            _register(ctx, step, folder)
        _write_json(root / "pipeline.json", {"format": FORMAT, "fingerprint": fps[-1],
                                             "config": self.config(), "started": started})
        shards = root / "shards" if any(isinstance(s, WriteShards) for s in self.steps) else None
        rej = _write_rejects(root, ctx, self.steps) if rejects else None
        rep = None
        if report:
            from sftfast.report import write_report

            run = _report_data(self, root, fps[-1], started, stats, reports, ctx)
            rep = write_report(run, root / "report.html")
        return RunResult(root, tuple(stats), fps[-1], shards, rej, rep)

    def _run_step(self, step: Step, fp: str, folder: Path, ctx: StepContext, i: int,
                  force: bool, quiet: bool, total: int | None) -> tuple[StepOutcome, StepStats]:
        stats_file = folder / "stats.json"
        if stats_file.is_file():
            saved = json.loads(stats_file.read_text())
            if saved["fingerprint"] == fp:
                st = StepStats(**{**saved["stats"], "resumed": True})
                return StepOutcome(st.rows_in, st.rows_out, st.dropped, st.added,
                                   saved.get("report", {})), st
            if not force:
                raise ConfigError(
                    f"step {i:02d} {step.name}: {folder} was written with another config or "
                    f"other inputs (fingerprint {saved['fingerprint']}, now {fp}); re-run with "
                    f"--force (force=True) to redo it and every later step, or use another "
                    f"output folder")
        for later in sorted((ctx.out / "steps").glob("*")):  # this step and all after it
            if later.name[:2].isdigit() and int(later.name[:2]) >= i:
                shutil.rmtree(later, ignore_errors=True)
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True)
        ctx.folder = tmp
        if isinstance(step, WriteShards):
            step.fingerprint = fp
        reset_peak_rss()
        t0, c0 = time.perf_counter(), time.process_time()
        with progress(f"[{i + 1}/{len(self.steps)}] {step.name}", total, enabled=not quiet,
                      per_row=step.progress_per_row()):
            outcome = step.run(ctx)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        outcome.check(step.name)
        st = StepStats(step.name, outcome.rows_in, outcome.rows_out, outcome.dropped,
                       outcome.added, round(seconds, 4), round(cpu, 4), read_peak_rss(), False,
                       fp)
        _write_json(tmp / "stats.json", {"fingerprint": fp, "stats": asdict(st),
                                         "report": outcome.report})
        os.replace(tmp, folder)
        ctx.folder = folder
        if not quiet:
            print(f"{step.name}: {st.rows_in:,} in, {st.rows_out:,} out"
                  + (f", dropped {sum(st.dropped.values()):,}" if st.dropped else "")
                  + (f", added {st.added:,}" if st.added else "")
                  + f" ({st.seconds:.2f}s, {st.cpu_seconds:.2f} CPU-s, "
                  f"peak {st.peak_rss_bytes / 2**20:,.0f} MiB)", flush=True)
        return outcome, st


def _register(ctx: StepContext, step: Step, folder: Path) -> None:
    """Tell later steps where this step's files are."""
    if isinstance(step, Read):
        ctx.rows = folder / "rows.parquet"
    if (folder / "dropped.parquet").is_file() and not isinstance(step, (Render, WriteShards)):
        ctx.dropped.append(folder / "dropped.parquet")
    if isinstance(step, Rebalance):
        ctx.selection = folder / "selection.parquet"
    if isinstance(step, Render):
        ctx.rendered = folder / "rendered.arrow"
        if not ctx.rendered.is_file():  # a run of sftfast before Arrow IPC render files
            ctx.rendered = folder / "rendered.parquet"
        ctx.dropped.append(folder / "dropped.parquet")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_rejects(root: Path, ctx: StepContext, steps: Sequence[Step]) -> Path:
    """Every dropped row, with the step and reason, joined back to its data."""
    parts: list[pl.LazyFrame] = []
    for i, s in enumerate(steps):
        folder = root / "steps" / f"{i:02d}-{s.name}"
        if isinstance(s, Read) and ctx.rows is not None:
            parts.append(pl.scan_parquet(ctx.rows).filter(pl.col(REASON).is_not_null())
                         .rename({"sft_raw": "raw"}).with_columns(pl.lit(s.name).alias("step")))
            if (folder / "rejects.parquet").is_file():  # rows that did not parse
                parts.append(pl.scan_parquet(folder / "rejects.parquet").select(
                    pl.lit(s.name).alias("step"), pl.col("source"),
                    pl.col("row").alias("sft_row"), pl.col("reason").alias(REASON),
                    pl.col("detail").alias("sft_drop_detail"), pl.col("raw")))
        d = folder / "dropped.parquet"
        if not isinstance(s, (Read, WriteShards)) and d.is_file() and ctx.rows is not None:
            drops = pl.scan_parquet(d).select(ID, REASON)
            rows = pl.scan_parquet(ctx.rows)
            parts.append(drops.join(rows, on=ID, how="left", maintain_order="left")
                         .with_columns(pl.lit(s.name).alias("step")))
    out = root / "rejects.parquet"
    tmp = root / f"rejects.parquet.tmp-{os.getpid()}"
    if parts:
        pl.concat(parts, how="diagonal_relaxed").sink_parquet(tmp)
    else:
        pl.DataFrame(schema={"step": pl.String, REASON: pl.String}).write_parquet(tmp)
    os.replace(tmp, out)
    return out


def _report_data(p: Pipeline, root: Path, fp: str, started: str, stats: list[StepStats],
                 reports: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    tok = None
    if any(s.uses_tokenizer for s in p.steps):
        tok = {"name": str(p.tokenizer), "hash": ctx.tokenizer.key}
    dedup = {k: reports[k] for k in ("exact", "near") if k in reports}
    packing = reports.get("packing")
    final = None
    if packing:
        final = {"samples": packing["samples"], "tokens": packing["tokens"]}
    elif stats:
        final = {"samples": stats[-1].rows_out, "tokens": reports.get("render", {}).get("tokens")}
    return {
        "sftfast_version": _native.__version__, "started": started,
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "output": str(root.resolve()), "fingerprint": fp, "seed": p.seed, "tokenizer": tok,
        "config": p.config(), "steps": [asdict(s) for s in stats],
        "lengths": reports.get("lengths"), "mix": reports.get("mix"),
        "dedup": dedup or None, "packing": packing, "final": final,
    }
