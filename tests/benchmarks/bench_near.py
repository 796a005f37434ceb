#!/usr/bin/env python3
"""The ``near`` preset against the hash tools and difPy on everyday edits of real photos.

For each seed, tests/near_corpus.py writes a corpus (real photographs, everyday edits at
several strengths, hard negatives: overlapping windows and burst-like second shots) with
its ground truth; the same folder is then searched by

- difpy-index ``near`` and ``similar`` (cold update first, then each search timed),
- imagehash pHash, Hamming distance <= 8 (every pair within it is a match),
- imagededup PHash, ``max_distance_threshold=10``,
- difPy 4.2.1 itself, build + search ``similar`` (its own process),

and for each it prints pair precision P, recall R and found/total per edit. With
``--synthetic N`` the corpus of tests/corpus.py (composed pictures, the issue 9 ground
truth) is scored too, for precision.

Calibration and evaluation use different seeds: thresholds in difpy_index/near.py come
from ``--calibrate`` on the calibration seeds (see docs/quality.md for the rule), the
tables in docs/quality.md from the evaluation seeds.

Usage (not collected by pytest; the peers are in the [bench] extra):
  python tests/benchmarks/bench_near.py --seeds 2 --bases 700 --debian --workdir DIR
  python tests/benchmarks/bench_near.py --seeds 1 --bases 700 --debian --calibrate
  python tests/benchmarks/bench_near.py --seeds 2 3 4 --bases 1500 --debian --feature-cost
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import itertools
import json
import math
import os
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality
import corpus
import near_corpus

Pairs = set[frozenset[str]]
#: Margin above the largest false detail correlation of the calibration corpora.
MARGIN = 0.03


def image_files(root: Path) -> list[str]:
    return [os.path.realpath(root / p) for p in near_corpus.list_files(root)]


def hamming_pairs(files: list[str], hashes: np.ndarray, limit: int) -> Pairs:
    """Every pair of files whose 64-bit hashes differ in at most ``limit`` bits."""
    bits = np.unpackbits(hashes.view(np.uint8).reshape(len(files), 8), axis=1).astype(np.int16)
    ones = bits.sum(axis=1)
    dist = ones[:, None] + ones[None, :] - 2 * (bits @ bits.T)
    ii, jj = np.nonzero(np.triu(dist <= limit, 1))
    return {frozenset((files[i], files[j])) for i, j in zip(ii, jj, strict=True)}


def run_imagehash(root: Path) -> tuple[Pairs, float]:
    import imagehash
    from PIL import Image

    files = image_files(root)
    t = time.perf_counter()
    hashes = np.zeros(len(files), dtype=np.uint64)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            h = imagehash.phash(im).hash.ravel()
        hashes[i] = int("".join("1" if b else "0" for b in h), 2)
    pairs = hamming_pairs(files, hashes, 8)
    return pairs, time.perf_counter() - t


def _imagededup_hashing() -> types.ModuleType:
    """imagededup's hashing module. Its package __init__ imports its CNN half (torch);
    the hashing half needs none of it, so when torch is absent the two package
    namespaces are set up without running their __init__ files."""
    try:
        from imagededup.methods import hashing

        return hashing
    except ImportError:
        pass
    spec = importlib.util.find_spec("imagededup")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("imagededup is not installed (pip install --no-deps imagededup)")
    base = Path(next(iter(spec.submodule_search_locations)))
    for name in ("imagededup.methods", "imagededup.utils"):
        sys.modules.pop(name, None)
        mod = types.ModuleType(name)
        mod.__path__ = [str(base / name.split(".")[1])]
        sys.modules[name] = mod
    return importlib.import_module("imagededup.methods.hashing")


def run_imagededup(root: Path) -> tuple[Pairs, float]:
    import logging

    hashing = _imagededup_hashing()
    logging.getLogger("imagededup").setLevel(logging.ERROR)
    t = time.perf_counter()
    found = hashing.PHash(verbose=False).find_duplicates(
        image_dir=str(root), max_distance_threshold=10, scores=False, recursive=True)
    pairs = {frozenset((os.path.realpath(root / k), os.path.realpath(root / v)))
             for k, vs in found.items() for v in vs}
    return pairs, time.perf_counter() - t


def score(found: Pairs, truth: dict[frozenset[str], str]) -> dict:
    tp = found & truth.keys()
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for p, lab in truth.items():
        per[lab][1] += 1
        per[lab][0] += p in tp
    return {"precision": len(tp) / len(found) if found else 1.0,
            "recall": len(tp) / len(truth) if truth else 1.0,
            "false_pairs": len(found - truth.keys()), "per_edit": dict(per)}


def run_ours(root: Path, workdir: Path, tag: str, processes: int) -> dict[str, tuple[Pairs, float]]:
    from difpy_index import Index

    cat = workdir / f"cat_{tag}.sqlite"
    cat.unlink(missing_ok=True)
    out: dict[str, tuple[Pairs, float]] = {}
    with Index.open(cat) as idx:
        t = time.perf_counter()
        idx.update([root], processes=processes)
        out["update"] = (set(), time.perf_counter() - t)
        for name, sim in (("difpy-index similar", "similar"), ("difpy-index near", "near")):
            t = time.perf_counter()
            found = idx.search(similarity=sim)
            out[name] = (bench_quality.result_pairs(found), time.perf_counter() - t)
    return out


def evaluate(root: Path, truth: dict[frozenset[str], str], workdir: Path, tag: str,
             processes: int, peers: bool, difpy: bool) -> dict[str, dict]:
    runs = run_ours(root, workdir, tag, processes)
    runs.pop("update")
    if peers:
        runs["imagehash pHash <= 8"] = run_imagehash(root)
        runs["imagededup PHash <= 10"] = run_imagededup(root)
    if difpy:
        got = bench_quality.run_difpy(root, processes, workdir)
        runs["difPy 4.2.1 similar"] = (got["pairs"], got["build_s"] + got["search_s"])
    return {name: {**score(p, truth), "seconds": round(s, 2)} for name, (p, s) in runs.items()}


def print_table(title: str, results: dict[str, dict], truth: dict[frozenset[str], str]) -> None:
    names = list(results)
    print(f"\n## {title}")
    print("| edit | pairs | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    labels = sorted(set(truth.values()))
    for lab in labels:
        total = sum(1 for v in truth.values() if v == lab)
        cells = [f"{results[n]['per_edit'].get(lab, [0, total])[0]}" for n in names]
        print(f"| {lab} | {total} | " + " | ".join(cells) + " |")
    print("| **precision** | | " + " | ".join(f"{results[n]['precision']:.4f}" for n in names) + " |")
    print("| **recall** | | " + " | ".join(f"{results[n]['recall']:.3f}" for n in names) + " |")
    print("| false pairs | | " + " | ".join(str(results[n]["false_pairs"]) for n in names) + " |")
    print("| seconds | | " + " | ".join(str(results[n]["seconds"]) for n in names) + " |")


def calibrate(root: Path, manifest: corpus.Manifest, workdir: Path, tag: str) -> None:
    """Per pair, the best detail correlation over orientations and variants among those
    whose luma correlation passes MIN_CORR; the largest false one and the true ones."""
    from difpy_index import Index, near

    rr = os.path.realpath(root)
    with Index.open(workdir / f"cat_{tag}.sqlite") as idx:
        data = idx.search_input(50)
    base = np.array([manifest.files[os.path.relpath(os.fsdecode(p), rr)].base for p in data.paths])
    f = near.features(data.tensors)
    ia, ib = np.triu_indices(len(base), 1)
    sel = f.eligible[ia] & f.eligible[ib]
    ia, ib = ia[sel], ib[sel]
    d = near.SIDE * near.SIDE
    best = np.full(len(ia), -1.0)
    for c0 in range(0, len(ia), 8192):
        a, b = ia[c0 : c0 + 8192], ib[c0 : c0 + 8192]
        c = len(a)
        for va, vb in near.COMBOS:
            fb = f.full[b, vb].reshape(c, near.SIDE, near.SIDE)
            db = f.detail[b, vb].reshape(c, near.SIDE, near.SIDE)
            for o in range(8):
                cf = np.einsum("ij,ij->i", f.full[a, va], near.orient(fb, o).reshape(c, d)) / d
                cd = np.einsum("ij,ij->i", f.detail[a, va], near.orient(db, o).reshape(c, d)) / d
                best[c0 : c0 + c] = np.maximum(best[c0 : c0 + c], np.where(cf >= near.MIN_CORR, cd, -1))
    same = base[ia] == base[ib]
    false = np.sort(best[~same])[::-1]
    true = best[same]
    print(f"\n## calibration {tag}: {same.sum()} true, {(~same).sum()} false eligible pairs")
    print("largest false detail correlations: " + ", ".join(f"{v:.4f}" for v in false[:8]))
    for q in (0.01, 0.05, 0.1, 0.2, 0.5):
        print(f"true pairs, {q:.0%} quantile: {np.quantile(true, q):.4f}")
    rule = math.ceil((false[0] + MARGIN) * 100) / 100
    print(f"rule: MIN_DETAIL_CORR = largest false + {MARGIN}, rounded up = {rule:.2f} "
          f"(true pairs kept: {(true >= rule).mean():.3f})")
    # the fine rule: every pair, every orientation, whole untrimmed tensors
    every = np.arange(len(base))
    fl, de = near._fine_vectors(data.tensors, every)
    px = data.tensors.shape[1]
    lum = near._luma(data.tensors, every)
    q = near._smooth_basis(px)
    res = lum - (lum @ q) @ q.T
    ok = np.sqrt((res * res).mean(axis=1)) >= near.MIN_DETAIL
    # the rule compares pairs with at least one trimmed border (near.fine_candidates)
    trimmed = (near.trim_boxes(lum.reshape(-1, px, px)) != [0, 0, px, px]).any(axis=1)
    fine = np.full((len(base), len(base)), -1.0)
    for o in range(8):
        fo = near.orient(fl.reshape(-1, px, px), o).reshape(len(base), -1)
        do = near.orient(de.reshape(-1, px, px), o).reshape(len(base), -1)
        cf, cd = fl @ fo.T / px / px, de @ do.T / px / px
        fine = np.maximum(fine, np.where(cf >= near.MIN_CORR, cd, -1.0))
    ia, ib = np.triu_indices(len(base), 1)
    sel = ok[ia] & ok[ib] & (trimmed[ia] | trimmed[ib])
    same, best = base[ia][sel] == base[ib][sel], fine[ia[sel], ib[sel]]
    false = np.sort(best[~same])[::-1]
    if not len(false) or false[0] < -0.5:  # no pair with a trimmed picture passes MIN_CORR
        print("fine rule: no non-duplicate pair with a trimmed picture passes the luma "
              "correlation; nothing to calibrate on this corpus")
        return
    rule = math.ceil((false[0] + MARGIN) * 100) / 100
    print("fine rule, largest false detail correlations: "
          + ", ".join(f"{v:.4f}" for v in false[:8]))
    print(f"rule: MIN_FINE_CORR = largest false + {MARGIN}, rounded up = {rule:.2f} "
          f"(true pairs kept: {(best[same] >= rule).mean():.3f})")
    # the same for the pairs with exactly one trimmed picture (the other's frame is whole)
    one = (trimmed[ia] ^ trimmed[ib])[sel]
    false1 = np.sort(best[~same & one])[::-1]
    if len(false1) and false1[0] > -0.5:
        rule1 = math.ceil((false1[0] + MARGIN) * 100) / 100
        print("fine rule, pairs with one trimmed picture only: largest false "
              + ", ".join(f"{v:.4f}" for v in false1[:8]) + f"; a limit of {rule1:.2f} "
              f"would keep {(best[same & one] >= rule1).mean():.3f} of "
              f"{int((same & one).sum())} true pairs "
              f"(MIN_FINE_CORR keeps {(best[same & one] >= near.MIN_FINE_CORR).mean():.3f})")


def speed_photos(debian: bool) -> list[tuple[str, Path, str]]:
    """The photographs the speed corpus takes its windows from; with ``debian`` the
    Debian package's must be installed (a different corpus without them)."""
    found = near_corpus.photos(debian)
    if debian and len(found) == len(near_corpus.photos(False)):
        sys.exit(f"--debian: install the Debian package {near_corpus.DEBIAN_PACKAGE} first")
    return found


def speed_tensors(n: int, seed: int = 0, textured: bool = True, origin: list | None = None,
                  debian: bool = False) -> tuple[np.ndarray, ...]:
    """``n`` 50 px tensors of distinct pictures (random windows of the photographs: the
    packages', and with ``debian`` those of the Debian package too), a tenth of them
    planted edits of another (mirror, rotation, tone), with dims and sizes. ``origin``, if
    given, receives per picture (its window's picture, photograph, box).

    ``textured``: every window passes the quality corpus's test of a distinct picture
    (``near_corpus._textured``: not flat, not mostly black, fine detail), as its bases do;
    without it a few per cent of the windows are patches of sky or wall, nearly the same
    picture under the MSE rule, which form cliques that grow with the square of ``n``."""
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    arrays = [near_corpus._load(*p) for p in speed_photos(debian)]
    photos = [Image.fromarray(a) for a in arrays]
    greys = [a.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) for a in arrays] \
        if textured else []
    out = np.empty((n, 50, 50, 3), dtype=np.uint8)
    for i in range(n):
        if i and rng.random() < 0.1:
            j = int(rng.integers(i))
            if origin is not None:
                origin.append(origin[j])
            src = Image.fromarray(out[j])
            src = ImageOps.mirror(src) if rng.random() < 0.5 else src.rotate(90)
            out[i] = np.clip(np.asarray(src, dtype=np.float64) * rng.uniform(0.8, 1.2), 0, 255)
            continue
        for _ in range(100):
            k = int(rng.integers(len(photos)))
            w, h = photos[k].size
            side = rng.uniform(0.1, 0.5) * min(w, h)
            x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
            aspect = rng.uniform(0.7, 1.4)
            box = (x0, y0, x0 + side, y0 + min(side * aspect, h - y0))
            if not textured or near_corpus._textured(greys[k], box):
                break
        out[i] = np.asarray(photos[k].resize((50, 50), Image.Resampling.BICUBIC, box=box))
        if origin is not None:
            origin.append((i, k, box))
    # most photos come in a few camera sizes (same_dim compares those), the rest vary
    common = np.array([(4000, 3000), (4032, 3024), (3000, 4000), (1920, 1080), (1600, 1200)])
    pick = rng.integers(len(common), size=n)
    widths = np.where(rng.random(n) < 0.8, common[pick, 0], rng.integers(400, 4000, n))
    heights = np.where(rng.random(n) < 0.8, common[pick, 1], rng.integers(400, 4000, n))
    sizes = rng.integers(10**4, 10**7, n)
    return out, widths, heights, sizes


def speed(sizes: list[int], repeat: int = 3, textured: bool = True, debian: bool = False,
          ) -> None:
    """Engine time of ``near`` and ``similar`` (same_dim on, difPy's default) on the same
    tensors, CPU seconds of this process (the machine may be shared; best of ``repeat``)
    and wall seconds. ``near`` reads its features as a search over the catalog does (stored
    by ``update``: computed before the clock starts); the next column computes them from
    the tensors instead (a catalog whose features are of another version), the last one
    takes the correlation rule's candidate pairs as given (``near.candidate_pairs``, run
    once before the clock starts): what the rest of the search costs, and how it grows."""
    from difpy_index import match, near

    exact_candidates = near.candidate_pairs
    known: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def given_candidates(feat: near.Features, rows_ok: np.ndarray, bucket: np.ndarray | None
                         ) -> tuple[np.ndarray, np.ndarray]:
        if len(rows_ok) not in known:
            known[len(rows_ok)] = exact_candidates(feat, rows_ok, bucket)
        return known[len(rows_ok)]

    print("\n## speed: engine only, tensors (and near's stored features) already in memory"
          + ("" if textured else ", flat windows allowed")
          + f"; windows of {len(speed_photos(debian))} photographs")
    print("| images | similar cpu s | near cpu s | ratio | similar wall s | near wall s "
          "| near, features computed, cpu s | near, candidate pairs given, cpu s |")
    print("|---|---|---|---|---|---|---|---|")
    got = {}
    for n in sizes:
        t, w, h, sz = speed_tensors(n, textured=textured, debian=debian)
        paths = [b"/speed/%07d.jpg" % i for i in range(n)]
        stored = near.stored_of(t)
        runs: list[list[tuple[float, float]]] = [[], [], [], []]
        known.clear()
        near.candidate_pairs = given_candidates
        try:
            near.search(t, w, h, sz, paths, stored=stored)  # the candidates, off the clock
        finally:
            near.candidate_pairs = exact_candidates
        for _ in range(repeat):
            for k in range(4):
                c, wall = time.process_time(), time.perf_counter()
                if k == 0:
                    match.find_groups(t, w, h, sz, paths, 5.0)
                elif k == 1:
                    near.search(t, w, h, sz, paths, stored=stored)
                elif k == 2:
                    near.search(t, w, h, sz, paths)
                else:
                    near.candidate_pairs = given_candidates
                    try:
                        near.search(t, w, h, sz, paths, stored=stored)
                    finally:
                        near.candidate_pairs = exact_candidates
                runs[k].append((time.process_time() - c, time.perf_counter() - wall))
        row = [min(r) for r in runs]
        got[n] = row
        print(f"| {n} | {row[0][0]:.2f} | {row[1][0]:.2f} | {row[1][0] / row[0][0]:.1f}x "
              f"| {row[0][1]:.2f} | {row[1][1]:.2f} | {row[2][0]:.2f} | {row[3][0]:.2f} |",
              flush=True)
    ns = sorted(got)
    for a, b in itertools.pairwise(ns):
        for k, name in ((0, "similar"), (1, "near"), (3, "near, candidate pairs given")):
            e = math.log(got[b][k][0] / got[a][k][0]) / math.log(b / a)
            print(f"growth exponent {name} {a}->{b} (cpu): {e:.2f}")


def feature_cost(roots: list[Path], rounds: int = 3) -> None:
    """What ``near``'s stored features add to a cold update: decode CPU per file of the
    corpora's files (in-process, tasks of 8 files, as a decode worker runs them), without
    any features, with the correlation rule's alone (``lumas``), and with everything a
    worker stores now (``decode.with_near``). Rounds alternate; CPU seconds of this process."""
    from difpy_index import decode, near

    files = [os.fsencode(f) for r in roots for f in image_files(r)]
    tasks = [files[i : i + 8] for i in range(0, len(files), 8)]

    def lumas_only(batch: list[decode.Decoded]) -> None:
        ts = [d.tensors[50] for d in batch if 50 in d.tensors]
        near.lumas(np.frombuffer(b"".join(ts), np.uint8).reshape(len(ts), 50, 50, 3))

    kinds = {"no features": None, "lumas only": lumas_only,
             "everything stored now (lumas, fine, search)": decode.with_near}
    got: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for name, extra in kinds.items():
            c = time.process_time()
            for t in tasks:
                batch = [decode.with_digests(decode.decode_file(p, (50,))) for p in t]
                if extra is not None:
                    extra(batch)
            got[name].append((time.process_time() - c) / len(files) * 1000)
    print(f"\n## update cost: decode CPU ms per file, {len(files)} files, {rounds} rounds")
    for name, ms in got.items():
        print(f"| {name} | " + " | ".join(f"{x:.2f}" for x in ms) + " |")


def trim_limit(n: int, limit: float, debian: bool) -> None:
    """Fine-rule pairs of the speed corpus (``n`` pictures) with exactly one trimmed
    picture that a lower detail limit would accept although neither is an edit of the
    other: the evidence on whether such pairs can have a limit of their own
    (docs/quality.md, "the saturation pair")."""
    from difpy_index import near

    origin: list = []
    t = speed_tensors(n, origin=origin, debian=debian)[0]
    names = [name for name, _, _ in speed_photos(debian)]
    fine = np.concatenate([near.fine_features(t[c0 : c0 + 512]) for c0 in range(0, n, 512)])
    trimmed = fine[:, -1] > 0.5
    old = near.MIN_FINE_CORR
    near.MIN_FINE_CORR = limit
    try:
        ia, ib, _, value = near.fine_pairs(t, np.arange(n), None, fine)
    finally:
        near.MIN_FINE_CORR = old

    print(f"\n## pairs with one trimmed picture at detail limit {limit} ({n} windows, "
          f"{int(trimmed.sum())} trimmed; the fine rule's own limit is {old})")
    print("| detail correlation | photograph | other photograph | window overlap (IoU) |")
    print("|---|---|---|---|")
    for a, b, v in sorted(zip(ia, ib, value, strict=True), key=lambda x: x[2]):
        (wa, ka, ba), (wb, kb, bb) = origin[a], origin[b]
        if wa == wb or trimmed[a] == trimmed[b]:
            continue  # an edit of the same window, or not a one-trimmed pair
        share = corpus._overlap(ba, bb) if ka == kb else 0.0
        print(f"| {v:.4f} | {names[ka]} | {names[kb]} | {share:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2])
    ap.add_argument("--bases", type=int, default=700)
    ap.add_argument("--max-side", type=int, default=900)
    ap.add_argument("--debian", action="store_true",
                    help=f"add the photographs of the Debian package {near_corpus.DEBIAN_PACKAGE}")
    ap.add_argument("--synthetic", type=int, default=0, help="also score a tests/corpus.py corpus")
    ap.add_argument("--processes", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-difpy", action="store_true")
    ap.add_argument("--calibrate", action="store_true", help="print the threshold rule's figures")
    ap.add_argument("--speed", type=int, nargs="*", default=None,
                    help="only time the engines on this many distinct pictures (e.g. 4000 16000)")
    ap.add_argument("--flat-windows", action="store_true",
                    help="--speed: allow flat windows (sky, wall) in the speed corpus, as before")
    ap.add_argument("--trim-limit", type=float, default=None, metavar="LIMIT",
                    help="only list the speed corpus's non-edit pairs with one trimmed picture "
                         "that this fine-rule detail limit would accept (--speed N: its size)")
    ap.add_argument("--feature-cost", action="store_true",
                    help="only measure what the stored features add to decoding the corpora")
    a = ap.parse_args()
    print("$ python " + " ".join([os.path.relpath(__file__), *sys.argv[1:]]))
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="difpy-near-"))
    workdir.mkdir(parents=True, exist_ok=True)
    procs = a.processes or os.cpu_count() or 1
    if a.trim_limit is not None:
        trim_limit((a.speed or [16000])[0], a.trim_limit, a.debian)
        return
    if a.speed is not None:
        speed(a.speed or [4000, 16000], textured=not a.flat_windows, debian=a.debian)
        return
    roots = []
    for seed in a.seeds:
        tag = f"near_{a.bases}_{seed}_{a.max_side}{'_deb' if a.debian else ''}"
        root = workdir / tag
        roots.append(root)
        if not near_corpus.manifest_path(root).exists():
            near_corpus.make_corpus(root, a.bases, seed, max_side=a.max_side, debian=a.debian,
                                    processes=procs)
        if a.feature_cost:
            continue
        m = near_corpus.load_manifest(root)
        truth = near_corpus.truth_pairs(m, root)
        res = evaluate(root, truth, workdir, tag, procs, not a.skip_peers, not a.skip_difpy)
        print_table(f"{tag}: {len(m.files)} files, {len(truth)} true pairs", res, truth)
        if a.calibrate:
            calibrate(root, m, workdir, tag)
        print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "per_edit"}
                          for k, v in res.items()}))
    if a.feature_cost:
        feature_cost(roots)
        return
    if a.synthetic:
        root, m = bench_quality.make_corpus(a.synthetic, 1, workdir, 1600, procs)
        truth = corpus.truth_pairs(m, root)
        tag = f"synthetic_{a.synthetic}"
        res = evaluate(root, truth, workdir, tag, procs, not a.skip_peers, False)
        print_table(f"tests/corpus.py n={a.synthetic} seed 1", res, truth)
        if a.calibrate:
            calibrate(root, m, workdir, tag)


if __name__ == "__main__":
    main()
