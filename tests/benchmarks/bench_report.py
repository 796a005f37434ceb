#!/usr/bin/env python3
"""Benchmark: writing the HTML review page for 1,000 groups (issue 8: "a few seconds").

Not collected by pytest. Usage:

    python tests/benchmarks/bench_report.py                      # 1000 groups, 640x480
    python tests/benchmarks/bench_report.py --groups 3000 --width 1600 --height 1200 --seed 2

Generates ``--groups`` groups of three real files each (a PNG key, an exact copy, a JPEG
re-encode), indexes them into a fresh catalog, builds the groups from the cached tensors
(the report is timed, not the search), then times ``write_report`` end to end and its
thumbnail phase alone. Timings on shared machines drift: run it twice. difPy 4.2.1 writes
no review page, so there is nothing to compare with: the figures are difpy-index's own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def corpus(root: Path, groups: int, width: int, height: int,
           seed: int = 0) -> list[tuple[str, list[str]]]:
    import imagefactory as F

    out = []
    for i in range(groups):
        sub = root / f"d{i // 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        img = F.synthetic(seed * 1_000_003 + i, width, height)
        key = F.save(img, sub / f"k{i}.png", compress_level=1)
        copy = F.save(img, sub / f"copy{i}.png", compress_level=1)
        jpg = F.save(img, sub / f"jpeg{i}.jpg", quality=90)
        out.append((os.path.realpath(key), [os.path.realpath(copy), os.path.realpath(jpg)]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", "--n", dest="groups", type=int, default=1000,
                    help="groups of three files (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="picture seed (default 0)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--processes", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (prints it)")
    args = ap.parse_args()

    from difpy_index import Index
    from difpy_index.match import mse_exact
    from difpy_index.report import make_thumbs, write_report
    from difpy_index.results import GroupInfo, MemberInfo, SearchResult

    scratch = Path(tempfile.mkdtemp(prefix="bench-report-"))
    t = time.perf_counter()
    pairs = corpus(scratch / "pics", args.groups, args.width, args.height, args.seed)
    t_gen = time.perf_counter() - t
    with Index.open(scratch / "catalog.sqlite") as idx:
        t = time.perf_counter()
        idx.update([str(scratch / "pics")], processes=args.processes)
        t_update = time.perf_counter() - t
        groups = []
        for key, members in pairs:
            kt = idx.tensor(key)
            groups.append(GroupInfo(key, tuple(MemberInfo(m, mse_exact(kt, idx.tensor(m), False)[0], 0)
                                               for m in members)))
        lower = sorted(m.path for g in groups for m in g.members)
        result = SearchResult({}, lower, {}, groups, 50.0, True, True, 50, [str(scratch / "pics")], idx)
        files = [os.fsencode(p) for k, ms in pairs for p in (k, *ms)]

        t = time.perf_counter()
        make_thumbs(files, processes=args.processes)
        t_thumbs = time.perf_counter() - t
        t = time.perf_counter()
        info = write_report(result, scratch / "review.html", processes=args.processes)
        t_report = time.perf_counter() - t
    size = (scratch / "review.html").stat().st_size
    print(json.dumps({
        "groups": info.groups, "files": info.files, "image": f"{args.width}x{args.height}",
        "cpus": os.cpu_count(), "processes": args.processes,
        "seconds": {"generate_corpus": round(t_gen, 2), "update": round(t_update, 2),
                    "thumbnails_only": round(t_thumbs, 2), "write_report": round(t_report, 2)},
        "html_bytes": size, "html_bytes_per_file": size // max(info.files, 1), "pages": info.pages,
    }, indent=1))
    print(f"{info.groups} groups, {info.files} files: write_report {t_report:.2f} s; thumbnails "
          f"alone (timed separately) {t_thumbs:.2f} s (no difPy counterpart: difPy writes no "
          "review page)")
    if args.keep:
        print(f"kept {scratch}")
    else:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
