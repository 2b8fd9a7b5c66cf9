#!/usr/bin/env python3
"""Near-duplicate removal: sftfast.near_dedup vs datasketch and rensa (MinHash + LSH).

Same input (the bilingual synthetic SFT corpus of `../shared/bench/dedup`, with injected
near-duplicates whose ground truth is known), same shingles (NFKC, lowercase, CJK characters as
tokens, word 5-grams: the reference shingling of `common.py`, which the peers call and sftfast
implements natively), 128 permutations, LSH at threshold 0.8, and the same rule: in each cluster
of candidate pairs keep the row with the lowest id. Each (tool, threads) runs in its own fresh
subprocess, end to end: read `corpus.jsonl`, shingle, sign, band, cluster, keep mask out.
CPU-seconds (user+sys, all threads) and peak RSS of that whole process come from `wait4`; wall is
the worker's own load-to-keep-mask time. `evaluate.py` (untimed) scores each result: removal
precision, recall on the true pairs whose exact Jaccard is >= 0.8, and recall by language.

Peers, each with its documented usage, at one thread:
  datasketch  `MinHash.bulk` over UTF-8 shingles, `MinHashLSH(threshold=0.8, num_perm=128)`
              (which picks its bands x rows itself), `insertion_session`, one `query` per row,
              union-find over the candidate pairs.
  rensa       `RMinHash.from_token_sets`, `RMinHashLSH(threshold=0.8, num_perm=128,
              num_bands=16)` (num_bands must divide num_perm: 16 x 8), `insert_many` /
              `query_all`, each candidate pair confirmed by `RMinHash.jaccard >= 0.8` as rensa's
              examples and its own deduplicator do, union-find.
sftfast runs with SFTFAST_NUM_THREADS=1 and 2; its two keep masks must be identical.

    python3 benches/bench_dedup.py            # 100k rows, 3 repeats -> benches/results/dedup.md
    python3 benches/bench_dedup.py --quick    # 5k rows, 1 repeat -> benches/results/dedup-quick.md
    python3 benches/bench_dedup.py --n 3000 --repeats 1 --tools datasketch rensa
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEDUP_DIR = REPO.parent / "shared" / "bench" / "dedup"
TOOLS = ["sftfast", "datasketch", "rensa"]
PEERS = ["datasketch", "rensa"]
SFTFAST_THREADS = [1, 2]
SFTFAST_MISSING = 3  # worker exit status: sftfast.near_dedup does not exist yet


# ----------------------------------------------------------------------------- worker
class Phases:
    """Wall seconds per named phase of the worker."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        yield
        self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0


def load_peer_corpus(corpus: str, ph: Phases) -> tuple[list[int], list[str]]:
    from common import load_corpus

    with ph("load"):
        ids, _langs, texts = load_corpus(corpus)
    if any(a >= b for a, b in zip(ids, ids[1:])):
        sys.exit("bench_dedup: corpus ids are not increasing; the lowest-row rule needs them to be")
    return ids, texts


def pairs_datasketch(texts: list[str], a: argparse.Namespace, ph: Phases):
    from common import ref_shingles
    from datasketch import MinHash, MinHashLSH

    with ph("shingle"):
        shingles = [[s.encode("utf-8") for s in ref_shingles(t, a.ngram)] for t in texts]
    with ph("minhash"):
        mhs = MinHash.bulk(shingles, num_perm=a.num_perm, seed=a.seed)
    with ph("lsh"):
        lsh = MinHashLSH(threshold=a.threshold, num_perm=a.num_perm)
        with lsh.insertion_session() as session:
            for i, m in enumerate(mhs):
                session.insert(i, m, check_duplication=False)  # keys are unique row numbers
        # band collisions are symmetric: each pair once, from its lower row
        pairs = [(i, j) for i, m in enumerate(mhs) for j in lsh.query(m) if j > i]
    return pairs, {"bands": lsh.b, "rows": lsh.r, "verify": "none (LSH candidates)",
                   "candidate_pairs": len(pairs)}


def pairs_rensa(texts: list[str], a: argparse.Namespace, ph: Phases):
    from common import ref_shingles
    from rensa import RMinHash, RMinHashLSH

    with ph("shingle"):
        shingles = [ref_shingles(t, a.ngram) for t in texts]
    with ph("minhash"):
        mhs = RMinHash.from_token_sets(shingles, num_perm=a.num_perm, seed=a.seed)
    with ph("lsh"):
        lsh = RMinHashLSH(threshold=a.threshold, num_perm=a.num_perm, num_bands=a.rensa_bands)
        lsh.insert_many(mhs)  # keys 0..n-1
        cands = [(i, j) for i, js in enumerate(lsh.query_all(mhs)) for j in js if j > i]
    with ph("verify"):
        pairs = cands if a.rensa_no_verify else [
            (i, j) for i, j in cands if mhs[i].jaccard(mhs[j]) >= a.threshold]
    verify = "none (LSH candidates)" if a.rensa_no_verify else f"estimated J >= {a.threshold}"
    return pairs, {"bands": a.rensa_bands, "rows": a.num_perm // a.rensa_bands, "verify": verify,
                   "candidate_pairs": len(cands), "confirmed_pairs": len(pairs)}


def run_peer(tool: str, a: argparse.Namespace) -> None:
    from common import UnionFind

    ph = Phases()
    ids, texts = load_peer_corpus(a.corpus, ph)
    fn = pairs_datasketch if tool == "datasketch" else pairs_rensa
    pairs, params = fn(texts, a, ph)
    with ph("cluster"):
        uf = UnionFind(len(ids))
        for i, j in pairs:
            uf.union(i, j)
        keep = [uf.find(i) == i for i in range(len(ids))]  # root = lowest row of its cluster
    wall = sum(ph.t.values())
    # untimed from here: the scorer's format and the mask file
    clusters = uf.clusters(ids)
    removed = [ids[i] for i, k in enumerate(keep) if not k]
    finish(tool, a, wall, ph, params, clusters, removed, bytes(keep))


def run_sftfast(a: argparse.Namespace) -> None:
    import polars as pl

    try:
        import sftfast

        near_dedup = sftfast.near_dedup
    except (ImportError, AttributeError) as e:
        print(f"bench_dedup: sftfast.near_dedup is not available ({type(e).__name__}: {e}); "
              "build and install sftfast with near-dedup support (`make install`).",
              file=sys.stderr)
        sys.exit(SFTFAST_MISSING)
    ph = Phases()
    with ph("load"):
        frame = pl.read_ndjson(a.corpus)
    with ph("near_dedup"):
        res = near_dedup(frame, text_column="text", threshold=a.threshold, num_perm=a.num_perm,
                         seed=a.seed, ngram=a.ngram)
    wall = sum(ph.t.values())
    keep, cluster = res.keep, res.cluster
    n = frame.height
    if keep.dtype != pl.Boolean or keep.len() != n or cluster.len() != n:
        sys.exit(f"bench_dedup: near_dedup returned keep {keep.dtype}[{keep.len()}], cluster "
                 f"{cluster.dtype}[{cluster.len()}] for {n} rows (want Boolean[{n}], int[{n}])")
    ids = frame["id"]
    groups = (pl.DataFrame({"c": cluster, "id": ids}).group_by("c").agg(pl.col("id").sort())
              .filter(pl.col("id").list.len() > 1))
    params = {"stats": str(getattr(res, "stats", None))[:400], "version": sftfast.__version__}
    finish("sftfast", a, wall, ph, params, groups["id"].to_list(), ids.filter(~keep).to_list(),
           keep.cast(pl.UInt8).to_numpy().tobytes())


def finish(tool: str, a: argparse.Namespace, wall: float, ph: Phases, params: dict,
           clusters: list, removed: list, keep_mask: bytes) -> None:
    with open(a.result, "w") as f:
        json.dump({"tool": tool, "params": params, "clusters": clusters, "removed": removed}, f)
    Path(a.result).with_suffix(".keep").write_bytes(keep_mask)
    print(json.dumps({"tool": tool, "threads": a.worker_threads, "wall": wall, "phases": ph.t,
                      "params": params, "rows": len(keep_mask), "removed": len(removed)}))


# ----------------------------------------------------------------------------- driver
def run_worker(tool: str, threads: int, rep: int, data: Path, tmp: Path,
               a: argparse.Namespace) -> dict | None:
    """One fresh worker process; CPU and peak RSS of that child only, from wait4.
    Returns None when sftfast has no near_dedup yet."""
    stem = tmp / f"{tool}-{threads}t-{rep}"
    cmd = [sys.executable, __file__, "--worker", tool, "--corpus", str(data / "corpus.jsonl"),
           "--result", f"{stem}.json", "--worker-threads", str(threads), "--seed", str(a.seed),
           "--rensa-bands", str(a.rensa_bands), "--dedup-dir", str(a.dedup_dir)]
    cmd += ["--rensa-no-verify"] if a.rensa_no_verify else []
    env = dict(os.environ, SFTFAST_NUM_THREADS=str(threads), POLARS_MAX_THREADS=str(threads),
               RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    with open(f"{stem}.out", "w") as fo, open(f"{stem}.err", "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    err = Path(f"{stem}.err").read_text()
    if tool == "sftfast" and code == SFTFAST_MISSING:
        return None
    if code != 0:
        sys.exit(f"bench_dedup: worker failed ({code}): {shlex.join(cmd)}\n{err[-3000:]}")
    res = json.loads(Path(f"{stem}.out").read_text().strip().splitlines()[-1])
    res.update(cpu=ru.ru_utime + ru.ru_stime, rss_mb=ru.ru_maxrss / 1024,
               result=f"{stem}.json", keep=Path(f"{stem}.keep").read_bytes())
    return res


def evaluate(result: str, data: Path, dedup_dir: Path) -> dict:
    """evaluate.py prints `<tool> <JSON, indent=1>` per result file; it has no JSON-only mode."""
    out = subprocess.run([sys.executable, str(dedup_dir / "evaluate.py"), "--data", str(data),
                          result], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench_dedup: evaluate.py failed on {result}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout[out.stdout.index("{"):])  # json accepts its NaN


def consistency(result: str) -> str:
    """Every predicted cluster keeps exactly one row, and no row outside a cluster is removed."""
    r = json.loads(Path(result).read_text())
    removed = set(r["removed"])
    in_cluster = {i for c in r["clusters"] for i in c}
    bad = sum(1 for c in r["clusters"] if sum(i not in removed for i in c) != 1)
    stray = len(removed - in_cluster)
    return "ok" if not bad and not stray else (f"{bad} clusters keep != 1 row, "
                                               f"{stray} removed rows outside any cluster")


def f3(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


def report(a, meta: dict, runs: dict, scores: dict, notes: list[str]) -> str:
    versions = [f"{t} {_version(t)}" for t in ("sftfast", "datasketch", "rensa", "polars")]
    head = [f"Command: `python3 {shlex.join(sys.argv)}`", "",
            f"{', '.join(versions)}, Python {platform.python_version()}, {os.cpu_count()} CPUs "
            f"({platform.processor() or platform.machine()}), load average {a.load_start:.2f} at "
            f"start, {os.getloadavg()[0]:.2f} at end, {time.strftime('%Y-%m-%d %H:%M')}", "",
            f"Corpus: `gen_corpus.py --n {a.n}` (seed {meta['args']['seed']}): {meta['n_docs']:,} "
            f"rows, {meta['text_bytes_utf8'] / 1e6:.1f} MB UTF-8, {meta['n_zh']:,} Chinese, "
            f"{meta['n_copies']:,} edited copies; sha256 {meta['corpus_sha256'][:12]}.", "",
            f"num_perm {a.num_perm}, threshold {a.threshold}, word {a.ngram}-grams, seed {a.seed}. "
            f"Median of {a.repeats} run(s), each (tool, threads) in a fresh process. CPU-s = "
            "user+sys of the whole worker process (interpreter start, imports, reading the JSONL "
            "and writing the result included); wall = the worker's read-to-keep-mask time; peak "
            "RSS = max over runs. Scores from `evaluate.py` on the first run. `×peer` = peer "
            "CPU-s / sftfast CPU-s; `RSS/ds` = sftfast peak RSS / datasketch peak RSS.", ""]
    table = ["| tool | threads | CPU-s | wall s | peak RSS MB | removal precision | "
             "recall_j>=0.8 | recall en / zh | ×datasketch | ×rensa | RSS/ds |",
             "|" + "---|" * 11]
    med = {k: statistics.median(r["cpu"] for r in rs) for k, rs in runs.items()}
    rss = {k: max(r["rss_mb"] for r in rs) for k, rs in runs.items()}
    for (tool, threads), rs in runs.items():
        s = scores[(tool, threads)]
        ratios = ["", "", ""]
        if tool == "sftfast":
            ratios = [f"{med[(p, 1)] / med[(tool, threads)]:.1f}x" if (p, 1) in med else ""
                      for p in PEERS]
            ratios.append(f"{rss[(tool, threads)] / rss[('datasketch', 1)]:.2f}"
                          if ("datasketch", 1) in rss else "")
        table.append(f"| {tool} | {threads} | {med[(tool, threads)]:.2f} | "
                     f"{statistics.median(r['wall'] for r in rs):.2f} | {rss[(tool, threads)]:.0f} "
                     f"| {f3(s['removal_precision'])} | {f3(s[f'recall_j>={a.threshold}'])} | "
                     f"{f3(s['recall_en'])} / {f3(s['recall_zh'])} | {' | '.join(ratios)} |")
    detail = ["", "| tool | threads | removed / expected | removal recall | pair precision / "
              "recall | clusters (largest) | consistency | phases, wall s (first run) |",
              "|" + "---|" * 8]
    for (tool, threads), rs in runs.items():
        s = scores[(tool, threads)]
        phases = ", ".join(f"{k} {v:.2f}" for k, v in rs[0]["phases"].items())
        detail.append(f"| {tool} | {threads} | {s['removed']:,} / {s['expected_removed']:,} | "
                      f"{f3(s['removal_recall'])} | {f3(s['pair_precision'])} / "
                      f"{f3(s['pair_recall'])} | {s['pred_clusters']:,} ({s['largest_cluster']}) "
                      f"| {rs[0]['consistency']} | {phases} |")
    params = ["", "Parameters as run:", ""]
    params += [f"- {tool} {threads}t: {json.dumps(rs[0]['params'])}" for (tool, threads), rs
               in runs.items() if threads == 1 or tool != "sftfast"]
    return "\n".join(head + table + detail + params + ["", "Notes:", ""] +
                     (notes or ["- none"])) + "\n"


def driver(a: argparse.Namespace) -> None:
    a.load_start = os.getloadavg()[0]
    out = a.out or REPO / "benches/results" / f"dedup{'-quick' if a.quick else ''}.md"
    configs = [(t, k) for t in a.tools for k in (SFTFAST_THREADS if t == "sftfast" else [1])]
    runs: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_dedup-", dir=a.dir) as d:
        tmp, data = Path(d), Path(d) / "data"
        t0 = time.perf_counter()
        gen = subprocess.run([sys.executable, str(a.dedup_dir / "gen_corpus.py"), "--out",
                              str(data), "--n", str(a.n)], capture_output=True, text=True)
        if gen.returncode != 0:
            sys.exit(f"bench_dedup: gen_corpus.py failed\n{gen.stderr[-3000:]}")
        meta = json.loads((data / "meta.json").read_text())
        log(f"corpus: {meta['n_docs']:,} rows, {meta['text_bytes_utf8'] / 1e6:.1f} MB in "
            f"{time.perf_counter() - t0:.0f} s")
        for rep in range(a.repeats):
            for tool, threads in configs:
                if (tool, threads) not in runs:
                    continue
                r = run_worker(tool, threads, rep, data, tmp, a)
                if r is None:
                    notes.append("- sftfast skipped: `sftfast.near_dedup` does not exist in the "
                                 "installed sftfast yet.")
                    for k in SFTFAST_THREADS:
                        runs.pop(("sftfast", k), None)
                    log("sftfast.near_dedup not available: skipping sftfast")
                    continue
                runs[(tool, threads)].append(r)
                log(f"run {rep} {tool} {threads}t: CPU {r['cpu']:.2f} s, wall {r['wall']:.2f} s, "
                    f"RSS {r['rss_mb']:.0f} MB, removed {r['removed']:,}")
        if not runs:
            sys.exit("bench_dedup: no tool ran")
        scores = {}
        for cfg, rs in runs.items():
            scores[cfg] = evaluate(rs[0]["result"], data, a.dedup_dir)
            rs[0]["consistency"] = consistency(rs[0]["result"])
            if any(r["keep"] != rs[0]["keep"] for r in rs[1:]):
                notes.append(f"- **{cfg[0]} {cfg[1]}t: keep mask changed between repeats**")
    if ("sftfast", 1) in runs and ("sftfast", 2) in runs:
        m1, m2 = runs[("sftfast", 1)][0]["keep"], runs[("sftfast", 2)][0]["keep"]
        diff = sum(x != y for x, y in zip(m1, m2)) + abs(len(m1) - len(m2))
        line = (f"sftfast keep masks, 1 vs 2 threads: identical ({len(m1):,} rows, "
                f"{len(m1) - sum(m1):,} removed)" if not diff else
                f"**sftfast keep masks, 1 vs 2 threads: DIFFER in {diff:,} rows**")
        notes.insert(0, f"- {line}")
        log(line)
    text = report(a, meta, runs, scores, notes)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    log(f"wrote {out}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="corpus rows (100000)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per (tool, threads) (3)")
    ap.add_argument("--tools", nargs="+", default=TOOLS, choices=TOOLS)
    ap.add_argument("--quick", action="store_true", help="smoke run: --n 5000, 1 repeat")
    ap.add_argument("--seed", type=int, default=0, help="MinHash seed for every tool (0)")
    ap.add_argument("--rensa-bands", type=int, default=16,
                    help="rensa num_bands; must divide num_perm=128 (16 = 16 x 8)")
    ap.add_argument("--rensa-no-verify", action="store_true",
                    help="rensa: union raw LSH candidates, no jaccard check (as datasketch)")
    ap.add_argument("--dedup-dir", type=Path, default=DEDUP_DIR,
                    help="folder with gen_corpus.py, evaluate.py, common.py")
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (default: /tmp)")
    ap.add_argument("--out", type=Path, help="Markdown output (default benches/results/dedup.md; "
                                             "dedup-quick.md with --quick)")
    ap.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.num_perm, a.threshold, a.ngram = 128, 0.8, 5
    sys.path.insert(0, str(a.dedup_dir))  # common.py: reference shingling, union-find, loader
    if a.worker:
        return run_sftfast(a) if a.worker == "sftfast" else run_peer(a.worker, a)
    if a.quick:
        a.n, a.repeats = 5000, 1
    if a.num_perm % a.rensa_bands:
        sys.exit(f"bench_dedup: --rensa-bands {a.rensa_bands} must divide num_perm {a.num_perm}")
    driver(a)


if __name__ == "__main__":
    main()
