#!/usr/bin/env python3
"""Calibrate and check the 'near' preset against ground truth (issue 9).

For corpora of several sizes and seeds (made by ../shared/bench/make_corpus.py), it indexes
each corpus with difpy-index and prints:
- per transform, the largest true MSE (min over 4 rotations, any dimensions) among the
  ground-truth pairs, and the smallest MSE from any file to an unrelated file (the nearest
  unrelated neighbour): the margin between the two is what a threshold can use;
- the threshold the rule below picks from those figures;
- precision and recall, overall and per transform, of difPy's defaults ('similar' with
  same_dim, which is what difPy users run) beside the 'near' preset, and the search time
  of each, so the preset's speed can be compared with any other threshold.

Threshold rule: the geometric mean of (largest true-pair MSE over the reachable
transforms) and (smallest unrelated-neighbour MSE), over every corpus measured, rounded
down to a whole number, so both sides keep the same factor of margin. Brightness changes are
not reachable by any threshold that keeps precision (their MSE overlaps unrelated images'),
so they are reported but excluded from the rule.

Usage:
  python tests/benchmarks/bench_quality.py --sizes 500 1000 --seeds 1 2 [--workdir DIR]
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

HERE = Path(__file__).resolve()
MAKE_CORPUS = HERE.parents[3] / "shared" / "bench" / "make_corpus.py"
UNREACHABLE = {"brightness"}


def make_corpus(n: int, seed: int, workdir: Path) -> tuple[Path, dict]:
    out = workdir / f"corpus_{n}_{seed}"
    gt = workdir / f"corpus_{n}_{seed}.gt.json"
    if not gt.exists():
        subprocess.run(
            [sys.executable, str(MAKE_CORPUS), "--n", str(n), "--out", str(out), "--seed", str(seed)],
            check=True, stdout=subprocess.DEVNULL,
        )
    return out, json.loads(gt.read_text())


def truth(gt: dict, root: Path) -> tuple[dict[frozenset[str], str], dict[str, int]]:
    """Ground-truth pairs (real paths) labelled by transform, and each file's group id."""
    pairs: dict[frozenset[str], str] = {}
    group_of: dict[str, int] = {}
    for gid, group in enumerate(gt["groups"]):
        real = [os.path.realpath(root / m["path"]) for m in group]
        for p in real:
            group_of[p] = gid
        for (a, ma), (b, mb) in itertools.combinations(zip(real, group), 2):
            if ma["transform"] == "original":
                label = mb["transform"]
            elif mb["transform"] == "original":
                label = ma["transform"]
            elif "brightness" in (ma["transform"], mb["transform"]):
                label = "brightness"  # two derived files, one of them brightness-shifted
            else:
                label = "derived-derived"
            pairs[frozenset((a, b))] = label
    return pairs, group_of


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
    out = set()
    for g in found.groups:
        members = [g.key] + [m.path for m in g.members]
        out.update(frozenset(p) for p in itertools.combinations(members, 2))
    return out


def measure(n: int, seed: int, workdir: Path) -> dict:
    from difpy_index import Index

    root, gt = make_corpus(n, seed, workdir)
    pairs, group_of = truth(gt, root)
    with Index.open(workdir / f"cat_{n}_{seed}.sqlite") as idx:
        idx.update([root])
        data = idx.search_input(50)
        paths = [os.fsdecode(p) for p in data.paths]
        pos = {p: i for i, p in enumerate(paths)}
        groups = np.array([group_of.get(p, -1 - i) for i, p in enumerate(paths)])
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
            runs[name] = {"seconds": round(time.perf_counter() - t0, 3), **score(result_pairs(found), pairs)}
    return {
        "n": len(paths), "seed": seed, "gt_pairs": len(pairs),
        "max_true_mse": {k: round(v, 3) for k, v in sorted(per_t.items())},
        "min_unrelated_mse": round(float(nn.min()), 3),
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args()
    print("$ python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]))
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="difpy-quality-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = [measure(n, s, workdir) for n in a.sizes for s in a.seeds]
    reach = max(v for r in results for k, v in r["max_true_mse"].items() if k not in UNREACHABLE)
    near = min(r["min_unrelated_mse"] for r in results)
    rule = math.floor(math.sqrt(reach * near))
    for r in results:
        print(f"\n## n={r['n']} seed={r['seed']} ({r['gt_pairs']} true pairs)")
        print("largest true-pair MSE per transform: " + json.dumps(r["max_true_mse"]))
        print(f"nearest unrelated neighbour MSE: {r['min_unrelated_mse']}")
        print("| setting | seconds | precision | recall | false pairs | per transform found/total |")
        print("|---|---|---|---|---|---|")
        for name, run in r["runs"].items():
            per = ", ".join(f"{k} {v}" for k, v in run["per_transform"].items())
            print(f"| {name} | {run['seconds']} | {run['precision']:.4f} | {run['recall']:.4f} "
                  f"| {run['false_pairs']} | {per} |")
    print(f"\nlargest reachable true-pair MSE: {reach:.3f}; smallest unrelated MSE: {near:.3f}; "
          f"margin x{near / reach:.1f}")
    print(f"rule (floor of the geometric mean): {rule}")


if __name__ == "__main__":
    main()
