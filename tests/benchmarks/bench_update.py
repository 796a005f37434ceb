#!/usr/bin/env python3
"""Benchmark: difPy 4.2.1 ``build`` side by side with difpy-index ``update`` (cold, warm, 1%).

Not collected by pytest. Usage:

    python tests/benchmarks/bench_update.py                      # 400 images, seed 1
    python tests/benchmarks/bench_update.py --n 4000 --seed 1    # a larger generated corpus
    python tests/benchmarks/bench_update.py --corpus DIR         # reuses a folder (read-only)

Without ``--corpus`` it generates a ground-truth corpus with tests/corpus.py (real photos
from scikit-image, scikit-learn and matplotlib: ``pip install -e '.[bench]'``).

The corpus is mirrored with hard links into a scratch folder (same file system; a plain copy
otherwise), so "touching" 1% of the files replaces those links with fresh copies and never
modifies the corpus itself. Timings on shared machines drift: read the ratios.
Acceptance (issue 2): difPy build / warm update >= 100; cold update no slower than difPy
build; a 1% change costs about 1% of a cold update.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import corpus as corpus_maker


def mirror(src: Path, dst: Path, limit: int | None = None) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirs, names in os.walk(src):
        dirs.sort()
        out = dst / Path(dirpath).relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for n in sorted(names):
            if limit is not None and len(files) >= limit:
                return sorted(files)
            try:
                os.link(Path(dirpath) / n, out / n)
            except OSError:
                shutil.copy2(Path(dirpath) / n, out / n)
            files.append(out / n)
    return sorted(files)


def time_difpy_build(folder: Path, processes: int) -> float:
    """difPy's build in a child process (its pool and imports are not ours to share)."""
    code = (
        "import sys, time, difPy\n"
        "t = time.perf_counter()\n"
        f"dif = difPy.build({str(folder)!r}, show_progress=False, processes={processes})\n"
        "print(time.perf_counter() - t, len(dif._tensor_dictionary))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    secs, n = out.stdout.split()[-2:]
    print(f"  difPy build: {float(secs):.2f} s, {n} tensors", file=sys.stderr)
    return float(secs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, help="existing corpus folder (used read-only)")
    ap.add_argument("--n", type=int, default=400, help="images to generate without --corpus")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-side", type=int, default=1600, help="longest side of generated images")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--touch", type=float, default=0.01, help="fraction of files to change")
    ap.add_argument("--limit", type=int, help="use only the first N files of the corpus")
    ap.add_argument("--difpy-last", action="store_true",
                    help="time difPy after our cold update (to expose order effects)")
    ap.add_argument("--skip-difpy", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()

    from difpy_index import Index

    scratch = Path(tempfile.mkdtemp(prefix="bench_update_"))
    try:
        if args.corpus is None:
            corpus = scratch / f"corpus_{args.n}"
            t = time.perf_counter()
            corpus_maker.make_corpus(corpus, args.n, args.seed, max_side=args.max_side,
                                     processes=args.processes)
            print(f"  corpus generated in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        else:
            corpus = args.corpus.resolve()
        work = scratch / "mirror"
        files = mirror(corpus, work, args.limit)
        catalog = scratch / "catalog.sqlite"

        difpy_s = None
        if not args.skip_difpy and not args.difpy_last:
            difpy_s = time_difpy_build(work, args.processes)
        with Index.open(catalog) as idx:
            t = time.perf_counter()
            cold = idx.update([work], processes=args.processes)
            cold_s = time.perf_counter() - t
            print(f"  cold update: {cold_s:.2f} s {cold.to_dict()['decoded']} decoded", file=sys.stderr)
            t = time.perf_counter()
            warm = idx.update([work], processes=args.processes)
            warm_s = time.perf_counter() - t
            assert warm.decoded == 0, warm
            if not args.skip_difpy and args.difpy_last:
                difpy_s = time_difpy_build(work, args.processes)
            step = max(1, round(1 / args.touch)) if args.touch > 0 else len(files) + 1
            touched = files[::step]
            for f in touched:  # a fresh copy: new inode and mtime, the corpus untouched
                tmp = f.with_name(f.name + ".tmp")
                shutil.copyfile(f, tmp)
                os.replace(tmp, f)
                st = f.stat()
                os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            t = time.perf_counter()
            touch = idx.update([work], processes=args.processes)
            touch_s = time.perf_counter() - t
            assert touch.decoded == len(touched), (touch, len(touched))
        out = {
            "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
            "files": len(files), "valid": cold.files, "invalid": cold.invalid,
            "processes": args.processes, "touched": len(touched),
            "difpy_build_s": difpy_s, "cold_update_s": round(cold_s, 3),
            "warm_update_s": round(warm_s, 4), "touch_update_s": round(touch_s, 3),
            "ratio_difpy_build_over_warm": round(difpy_s / warm_s, 1) if difpy_s else None,
            "ratio_difpy_build_over_cold": round(difpy_s / cold_s, 3) if difpy_s else None,
            "touch_fraction_of_cold": round(touch_s / cold_s, 4),
            "catalog_bytes": catalog.stat().st_size,
        }
        print(json.dumps(out, indent=2))
        print(f"{len(files)} files, {args.processes} processes:")
        if difpy_s:
            print(f"  difPy build {difpy_s:.2f} s | difpy-index cold update {cold_s:.2f} s | "
                  f"ratio {difpy_s / cold_s:.2f}x")
            print(f"  difPy build {difpy_s:.2f} s | difpy-index warm update {warm_s:.3f} s | "
                  f"ratio {difpy_s / warm_s:.0f}x")
            print(f"  difPy build {difpy_s:.2f} s (difPy decodes everything again) | difpy-index "
                  f"{len(touched)} changed files {touch_s:.2f} s | ratio {difpy_s / touch_s:.1f}x")
        print(f"  {len(touched)} changed files cost {100 * touch_s / cold_s:.1f}% of a cold update")
        ok = (difpy_s is None or (out["ratio_difpy_build_over_warm"] >= 100
                                  and out["ratio_difpy_build_over_cold"] >= 0.95))
        print("PASS" if ok else "FAIL: below the acceptance ratios", file=sys.stderr)
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"  kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
