#!/usr/bin/env python3
"""Detection quality against ground truth, side by side with difPy 4.2.1 (issue 9).

For corpora of several sizes and seeds, made by tests/corpus.py (real photographs with
planted edits and a manifest of what is a copy of what), it indexes each corpus with
difpy-index and prints:
- per edit, the largest true MSE (min over 4 rotations, any dimensions) among the
  ground-truth pairs, and the smallest MSE from any file to an unrelated file (the nearest
  unrelated neighbour): the margin between the two is what a threshold can use;
- the threshold the rule below picks from those figures;
- precision and recall, overall and per edit, of difPy's defaults ('similar' with same_dim,
  our exact semantics) beside the 'near' preset and other settings, with their search time;
- difPy 4.2.1 itself on the same folder (build + search 'similar', its defaults): seconds,
  precision and recall, and the ratios to difpy-index (cold update + 'near' search).

Threshold rule: the geometric mean of (largest true-pair MSE over the reachable edits) and
(smallest unrelated-neighbour MSE), over every corpus measured, rounded down to a whole
number, so both sides keep the same factor of margin. Brightness changes are not reachable
by any threshold that keeps precision (their MSE overlaps unrelated images'), so they are
reported but excluded from the rule.

Usage (not collected by pytest):
  python tests/benchmarks/bench_quality.py [--n 400 1000] [--seed 1 2] [--workdir DIR]
      [--max-side 1600] [--processes 2] [--skip-difpy]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import corpus

UNREACHABLE = corpus.UNREACHABLE


def make_corpus(n: int, seed: int, workdir: Path, max_side: int = 1600,
                processes: int | None = None) -> tuple[Path, corpus.Manifest]:
    """The corpus (n, seed) in ``workdir``, generated once and reused."""
    out = workdir / f"corpus_{n}_{seed}_{max_side}"
    if not corpus.manifest_path(out).exists():
        t = time.perf_counter()
        corpus.make_corpus(out, n, seed, max_side=max_side, processes=processes)
        print(f"  corpus n={n} seed={seed}: generated in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
    return out, corpus.load_manifest(out)


def rotations(t: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(t, k, axes=(1, 2)).reshape(len(t), -1) for k in range(4)]


def exact_mse(a: np.ndarray, b: np.ndarray) -> float:
    best = math.inf
    for k in range(4):
        d = a.astype(np.int64) - np.rot90(b, k).astype(np.int64)
        best = min(best, float((d * d).sum()) / d.size)
    return best


def nearest_unrelated(tensors: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per file, the smallest MSE to a file of another group (float64 BLAS, exact enough
    for a margin figure; the search itself never uses this)."""
    n = len(tensors)
    flat = tensors.reshape(n, -1).astype(np.float64)
    sq = (flat * flat).sum(1)
    best = np.full(n, np.inf)
    d = flat.shape[1]
    for rot in rotations(tensors):
        r = rot.astype(np.float64)
        rsq = (r * r).sum(1)
        for start in range(0, n, 512):
            blk = flat[start : start + 512]
            m = (sq[start : start + 512, None] + rsq[None, :] - 2 * blk @ r.T) / d
            same = groups[start : start + 512, None] == groups[None, :]
            m[same] = np.inf
            np.minimum(best[start : start + 512], m.min(1), out=best[start : start + 512])
    return best


def score(found_pairs: set[frozenset[str]], pairs: dict[frozenset[str], str]) -> dict:
    """Precision and recall over pairs, and found/total per edit label."""
    tp = found_pairs & pairs.keys()
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for p, label in pairs.items():
        per[label][1] += 1
        per[label][0] += p in tp
    return {
        "precision": len(tp) / len(found_pairs) if found_pairs else 1.0,
        "recall": len(tp) / len(pairs) if pairs else 1.0,
        "per_transform": {k: f"{v[0]}/{v[1]}" for k, v in sorted(per.items())},
        "false_pairs": len(found_pairs - pairs.keys()),
    }


def result_pairs(found) -> set[frozenset[str]]:
    """Pairs inside each group (key and members) of a difpy-index search result."""
    out = set()
    for g in found.groups:
        members = [g.key] + [m.path for m in g.members]
        out.update(frozenset(p) for p in itertools.combinations(members, 2))
    return out


_DIFPY = """
import json, sys, time, difPy
folder, out, processes = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
dif = difPy.build(folder, show_progress=False, processes=processes)
build = time.perf_counter() - t
t = time.perf_counter()
s = difPy.search(dif, similarity="similar", show_progress=False, processes=processes)
search = time.perf_counter() - t
groups = [[k] + [m[0] for m in v] for k, v in s.result.items()]
json.dump({"build_s": build, "search_s": search, "files": len(dif._tensor_dictionary),
           "groups": groups}, open(out, "w"))
"""


def run_difpy(root: Path, processes: int, workdir: Path) -> dict:
    """difPy 4.2.1's build + search with its defaults, in a child process (its own pool)."""
    out = workdir / "difpy_result.json"
    subprocess.run([sys.executable, "-c", _DIFPY, str(root), str(out), str(processes)],
                   check=True)
    got = json.loads(out.read_text())
    got["pairs"] = {frozenset(map(os.path.realpath, p))
                    for g in got.pop("groups") for p in itertools.combinations(g, 2)}
    return got


def measure(n: int, seed: int, workdir: Path, max_side: int = 1600,
            processes: int | None = None, difpy: bool = True) -> dict:
    from difpy_index import Index

    root, manifest = make_corpus(n, seed, workdir, max_side, processes)
    pairs = corpus.truth_pairs(manifest, root)
    group_of = {os.path.realpath(root / p): e.base for p, e in manifest.files.items()}
    procs = processes or os.cpu_count() or 1
    cat = workdir / f"cat_{n}_{seed}_{max_side}.sqlite"
    cat.unlink(missing_ok=True)
    with Index.open(cat) as idx:
        t = time.perf_counter()
        idx.update([root], processes=procs)
        update_s = time.perf_counter() - t
        data = idx.search_input(50)
        paths = [os.fsdecode(p) for p in data.paths]
        pos = {p: i for i, p in enumerate(paths)}
        groups = np.array([group_of[p] for p in paths])
        per_t: dict[str, float] = defaultdict(float)
        for pair, label in pairs.items():
            a, b = (pos[p] for p in pair)
            per_t[label] = max(per_t[label], exact_mse(data.tensors[a], data.tensors[b]))
        nn = nearest_unrelated(data.tensors, groups)
        runs = {}
        for name, kwargs in {
            "difPy defaults ('similar', same_dim)": {"similarity": "similar"},
            "'duplicates' (same_dim off)": {"similarity": "duplicates", "same_dim": False},
            "'near' preset": {"similarity": "near"},
            "threshold 5 (same_dim off)": {"similarity": 5, "same_dim": False},
        }.items():
            t0 = time.perf_counter()
            found = idx.search(**kwargs)
            runs[name] = {"seconds": round(time.perf_counter() - t0, 3),
                          **score(result_pairs(found), pairs)}
    dp = None
    if difpy:
        got = run_difpy(root, procs, workdir)
        dp = {"build_s": round(got["build_s"], 2), "search_s": round(got["search_s"], 2),
              "files": got["files"], **score(got["pairs"], pairs)}
    return {
        "n": len(paths), "seed": seed, "gt_pairs": len(pairs), "update_s": round(update_s, 2),
        "max_true_mse": {k: round(v, 3) for k, v in sorted(per_t.items())},
        "min_unrelated_mse": round(float(nn.min()), 3),
        "runs": runs, "difpy": dp,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", "--sizes", dest="sizes", type=int, nargs="+", default=[400],
                    help="corpus sizes (files)")
    ap.add_argument("--seed", "--seeds", dest="seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--max-side", type=int, default=1600, help="longest image side in px")
    ap.add_argument("--processes", type=int, default=None, help="default: every CPU")
    ap.add_argument("--workdir", type=Path, default=None, help="keeps corpora between runs")
    ap.add_argument("--skip-difpy", action="store_true")
    a = ap.parse_args()
    print("$ python " + " ".join([os.path.relpath(__file__), *sys.argv[1:]]))
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="difpy-quality-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = [measure(n, s, workdir, a.max_side, a.processes, not a.skip_difpy)
               for n in a.sizes for s in a.seeds]
    reach = max(v for r in results for k, v in r["max_true_mse"].items() if k not in UNREACHABLE)
    near = min(r["min_unrelated_mse"] for r in results)
    rule = math.floor(math.sqrt(reach * near))
    for r in results:
        print(f"\n## n={r['n']} seed={r['seed']} ({r['gt_pairs']} true pairs)")
        print("largest true-pair MSE per edit: " + json.dumps(r["max_true_mse"]))
        print(f"nearest unrelated neighbour MSE: {r['min_unrelated_mse']}")
        print("| setting | seconds | precision | recall | false pairs | per edit found/total |")
        print("|---|---|---|---|---|---|")
        rows = list(r["runs"].items())
        if r["difpy"]:
            rows.append(("difPy 4.2.1 itself ('similar')", {**r["difpy"],
                                                            "seconds": r["difpy"]["search_s"]}))
        for name, run in rows:
            per = ", ".join(f"{k} {v}" for k, v in run["per_transform"].items())
            print(f"| {name} | {run['seconds']} | {run['precision']:.4f} | {run['recall']:.4f} "
                  f"| {run['false_pairs']} | {per} |")
        if r["difpy"]:
            d, ours = r["difpy"], r["runs"]["'near' preset"]
            dt, ot = d["build_s"] + d["search_s"], r["update_s"] + ours["seconds"]
            print(f"difPy build+search {dt:.1f} s | difpy-index cold update+near {ot:.1f} s | "
                  f"ratio {dt / ot:.2f}x")
            print(f"difPy recall {d['recall']:.3f} (precision {d['precision']:.3f}) | "
                  f"difpy-index near recall {ours['recall']:.3f} (precision "
                  f"{ours['precision']:.3f}) | ratio {ours['recall'] / max(d['recall'], 1e-9):.2f}x"
                  f" (difPy skips .bmp files: {r['n'] - d['files']} here)")
    print(f"\nlargest reachable true-pair MSE: {reach:.3f}; smallest unrelated MSE: {near:.3f}; "
          f"margin x{near / reach:.1f}")
    print(f"rule (floor of the geometric mean): {rule}")


if __name__ == "__main__":
    main()
