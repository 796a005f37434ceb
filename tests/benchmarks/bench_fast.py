#!/usr/bin/env python3
"""Cold first index, side by side (issue 16): difPy 4.2.1's build, czkawka's first run,
difpy-index ``update`` with the exact recipe and with ``--fast``; then how far the fast
tensors are from the exact ones and whether both find the same groups.

Not collected by pytest. Usage:

    python tests/benchmarks/bench_fast.py                 # a 1,000-file corpus (tests/corpus.py)
    python tests/benchmarks/bench_fast.py --n 4000        # the issue's figure
    python tests/benchmarks/bench_fast.py --n 4000 --repeat 3   # best of 3 interleaved rounds
    python tests/benchmarks/bench_fast.py --corpus DIR    # an existing folder (read-only)

Each tool runs in its own child process on the same folder, timed from outside (interpreter
start and imports included, the same for all); the files are read once beforehand so every
tool meets a warm page cache. czkawka (PyPI ``czkawka``, the Python binding of czkawka_core)
runs with a fresh, empty cache folder: its first run. Timings on shared machines drift: read
the ratios, measured in one run.

Acceptance (issue 16): fast cold update >= 1.3x faster than czkawka's first run and >= 2x
faster than difPy's build; the exact cold update no slower than before (compare
``exact_s`` with difPy's build as bench_update.py does).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import corpus

PRESETS = ("duplicates", "similar", "near")


def warm(folder: Path) -> int:
    n = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as fh:
                while fh.read(1 << 20):
                    pass
            n += 1
    return n


@dataclass
class Timing:
    """Wall seconds and CPU seconds (user + system of the whole process tree: pool
    workers and threads included) of each round a tool ran."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    def best(self) -> float:
        return min(self.wall)

    def as_json(self) -> dict[str, object]:
        return {"wall_s": [round(x, 2) for x in self.wall], "best_wall_s": round(min(self.wall), 2),
                "cpu_s": [round(x, 2) for x in self.cpu], "best_cpu_s": round(min(self.cpu), 2)}


def subreaper() -> bool:
    """Linux: become the reaper of our orphaned descendants, so the CPU of worker processes
    whose own parent exits first (a forkserver's workers) is counted too."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall, CPU of the child and all its descendants, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    while True:  # orphans re-parented to us (see subreaper) count once they are reaped
        try:
            os.wait()
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout


def run_difpy(folder: Path, processes: int) -> tuple[float, float]:
    code = (
        "import difPy\n"
        f"dif = difPy.build({str(folder)!r}, show_progress=False, processes={processes})\n"
        "print(len(dif._tensor_dictionary))\n"
    )
    secs, cpu, out = timed([sys.executable, "-c", code])
    print(f"  difPy 4.2.1 build: {secs:.2f} s, cpu {cpu:.1f} s ({out.split()[-1]} tensors)",
          file=sys.stderr)
    return secs, cpu


def run_czkawka(folder: Path, scratch: Path) -> tuple[float, float] | None:
    """czkawka's hashing and grouping in one call (it has no separate build), first run:
    a fresh, empty cache folder every time."""
    try:
        import czkawka  # noqa: F401
    except ImportError:
        print("  czkawka: not installed (pip install czkawka)", file=sys.stderr)
        return None
    home = Path(tempfile.mkdtemp(prefix="czkawka-home", dir=scratch))
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
           "XDG_CONFIG_HOME": str(home / "config")}
    code = (
        "from czkawka import ImageSimilarity\n"
        "f = ImageSimilarity()\n"
        f"f.set_directories([{str(folder)!r}])\n"
        "f.set_similarity(5)\n"
        "print(len(f.find_similar()))\n"
    )
    secs, cpu, out = timed([sys.executable, "-c", code], env)
    print(f"  czkawka first run: {secs:.2f} s, cpu {cpu:.1f} s ({out.split()[-1]} groups)",
          file=sys.stderr)
    return secs, cpu


def run_update(folder: Path, catalog: Path, processes: int, fast: bool) -> tuple[float, float, dict]:
    cmd = [sys.executable, "-m", "difpy_index", "--catalog", str(catalog), "update", str(folder),
           "--processes", str(processes), "--json"]
    if fast:
        cmd.append("--fast")
    for stale in catalog.parent.glob(catalog.name + "*"):
        if stale.is_file():
            stale.unlink()  # a cold update every round
    secs, cpu, out = timed(cmd)
    rep = json.loads(out)
    print(f"  difpy-index update{' --fast' if fast else ''}: {secs:.2f} s, cpu {cpu:.1f} s "
          f"({rep['decoded']} decoded, {rep['invalid']} invalid)", file=sys.stderr)
    return secs, cpu, rep


def per_format(folder: Path, per_ext: int, rounds: int = 3) -> dict[str, dict[str, float]]:
    """CPU milliseconds per file, in this process, by extension: the exact recipe, the fast
    recipe through Pillow alone, and the fast recipe with imagecodecs (when installed).
    The variants alternate file set by file set, ``rounds`` times; the best round counts."""
    from difpy_index import decode, pool

    by_ext: dict[str, list[bytes]] = {}
    for dirpath, _dirs, names in os.walk(folder):
        for name in sorted(names):
            ext = name.rsplit(".", 1)[-1].lower()
            if ext in decode.IMAGE_EXTENSIONS:
                by_ext.setdefault(ext, []).append(os.fsencode(os.path.join(dirpath, name)))
    decode.init_worker(decode.DEFAULT_MAX_PIXELS)
    pool._keep_freed_memory()  # as in a decode worker
    variants = {"exact": (False, False), "fast_pillow": (True, False), "fast_imagecodecs": (True, True)}
    if importlib.util.find_spec("imagecodecs") is None:
        del variants["fast_imagecodecs"]
    out: dict[str, dict[str, float]] = {}
    for ext, paths in sorted(by_ext.items()):
        paths = paths[:per_ext]
        best = {name: float("inf") for name in variants}
        for _ in range(rounds):
            for name, (fast, codecs) in variants.items():
                decode._codecs = None if codecs else False
                t = time.process_time()
                for path in paths:
                    decode.decode_file(path, (50,), fast)
                best[name] = min(best[name], (time.process_time() - t) / len(paths) * 1000)
        out[ext] = {"files": len(paths), **{k: round(v, 2) for k, v in best.items()}}
        print(f"  .{ext}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in best.items()), file=sys.stderr)
    decode._codecs = None
    return out


def groups_of(catalog: Path, similarity: str) -> set[frozenset[str]]:
    from difpy_index import Index

    with Index.open(catalog) as idx:
        found = idx.search(similarity=similarity)
    return {frozenset([g.key, *(m.path for m in g.members)]) for g in found.groups}


def fast_vs_exact(exact_cat: Path, fast_cat: Path) -> dict[str, object]:
    """Per-file MSE between the two recipes' tensors (50 px), overall and per format."""
    from difpy_index import Index

    with Index.open(exact_cat) as e, Index.open(fast_cat) as f:
        de, df = e.search_input(50), f.search_input(50)
    assert de.paths == df.paths, "both catalogs must hold the same files"
    diff = de.tensors.astype(np.int32) - df.tensors.astype(np.int32)
    mse = (diff.reshape(len(de.paths), -1).astype(np.int64) ** 2).mean(axis=1)
    exts = np.array([os.path.splitext(p)[1].lower().decode() for p in de.paths])

    def dist(values: np.ndarray) -> dict[str, float]:
        if not len(values):
            return {}
        q = np.percentile(values, [50, 90, 99])
        return {"n": len(values), "median": round(float(q[0]), 3), "p90": round(float(q[1]), 3),
                "p99": round(float(q[2]), 3), "max": round(float(values.max()), 3),
                "identical": int((values == 0).sum())}

    return {"all": dist(mse), **{ext: dist(mse[exts == ext]) for ext in sorted(set(exts))}}


def truth_scores(groups: set[frozenset[str]], truth: dict[frozenset[str], str]) -> dict[str, float]:
    import itertools

    found = {frozenset(p) for g in groups for p in itertools.combinations(sorted(g), 2)}
    tp = len(found & set(truth))
    return {"precision": round(tp / len(found), 4) if found else 1.0,
            "recall": round(tp / len(truth), 4) if truth else 1.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, help="existing corpus folder (used read-only)")
    ap.add_argument("--n", type=int, default=1000, help="files to generate without --corpus")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-side", type=int, default=2000)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", type=Path, help="keep corpora here (reused between runs)")
    ap.add_argument("--skip-difpy", action="store_true")
    ap.add_argument("--skip-czkawka", action="store_true")
    ap.add_argument("--per-format", type=int, default=0, metavar="N",
                    help="also time N files of each extension in-process (CPU ms per file: "
                         "exact, fast with Pillow only, fast with imagecodecs)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds, each running every tool once in turn; the best round of "
                         "each tool counts (a shared machine's load only ever slows a run)")
    a = ap.parse_args()
    command = " ".join(shlex.quote(x) for x in [os.path.basename(sys.executable), *sys.argv])
    print(f"$ {command}", file=sys.stderr)
    if not subreaper():
        print("  (CPU seconds count only processes their parent waited for)", file=sys.stderr)

    scratch = Path(tempfile.mkdtemp(prefix="bench_fast_"))
    try:
        manifest = None
        if a.corpus is not None:
            folder = a.corpus.resolve()
            if corpus.manifest_path(folder).exists():
                manifest = corpus.load_manifest(folder)
        else:
            base = a.workdir or scratch
            folder = base / f"corpus_{a.n}_{a.seed}_{a.max_side}"
            if not corpus.manifest_path(folder).exists():
                shutil.rmtree(folder, ignore_errors=True)
                t = time.perf_counter()
                corpus.make_corpus(folder, a.n, a.seed, max_side=a.max_side,
                                   processes=a.processes)
                print(f"  corpus generated in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            manifest = corpus.load_manifest(folder)
        files = warm(folder)

        exact_cat, fast_cat = scratch / "exact.sqlite", scratch / "fast.sqlite"
        times = {name: Timing() for name in ("difpy", "czkawka", "exact", "fast")}
        for rnd in range(a.repeat):
            print(f"round {rnd + 1}/{a.repeat}, load average {os.getloadavg()[0]:.1f}",
                  file=sys.stderr)
            if not a.skip_difpy:
                times["difpy"].add(*run_difpy(folder, a.processes))
            ck = None if a.skip_czkawka else run_czkawka(folder, scratch)
            if ck is not None:
                times["czkawka"].add(*ck)
            wall, cpu, exact_rep = run_update(folder, exact_cat, a.processes, fast=False)
            times["exact"].add(wall, cpu)
            wall, cpu, fast_rep = run_update(folder, fast_cat, a.processes, fast=True)
            times["fast"].add(wall, cpu)
        difpy_s = times["difpy"].best() if times["difpy"].wall else None
        czkawka_s = times["czkawka"].best() if times["czkawka"].wall else None
        exact_s, fast_s = times["exact"].best(), times["fast"].best()
        assert fast_rep["recipe"] == "fast" and fast_rep["files"] == exact_rep["files"], fast_rep

        same: dict[str, object] = {}
        truth = corpus.truth_pairs(manifest, folder) if manifest is not None else None
        for preset in PRESETS:
            ge, gf = groups_of(exact_cat, preset), groups_of(fast_cat, preset)
            entry: dict[str, object] = {"groups_exact": len(ge), "groups_fast": len(gf),
                                        "identical": ge == gf,
                                        "only_exact": len(ge - gf), "only_fast": len(gf - ge)}
            if truth is not None:
                entry["truth_exact"] = truth_scores(ge, truth)
                entry["truth_fast"] = truth_scores(gf, truth)
            same[preset] = entry

        def ratio(x: float | None, y: float) -> float | None:
            return round(x / y, 2) if x else None

        def cpu_ratio(x: str, y: str) -> float | None:
            tx, ty = times[x], times[y]
            return round(min(tx.cpu) / min(ty.cpu), 2) if tx.cpu and ty.cpu else None

        out = {
            "command": command, "files": files, "processes": a.processes,
            "valid": exact_rep["files"], "invalid": exact_rep["invalid"],
            "difpy_build_s": round(difpy_s, 2) if difpy_s else None,
            "czkawka_first_run_s": round(czkawka_s, 2) if czkawka_s else None,
            "exact_update_s": round(exact_s, 2), "fast_update_s": round(fast_s, 2),
            "ratio_difpy_over_exact": ratio(difpy_s, exact_s),
            "ratio_difpy_over_fast": ratio(difpy_s, fast_s),
            "ratio_czkawka_over_fast": ratio(czkawka_s, fast_s),
            "ratio_exact_over_fast": round(exact_s / fast_s, 2),
            "cpu_ratio_difpy_over_fast": cpu_ratio("difpy", "fast"),
            "cpu_ratio_czkawka_over_fast": cpu_ratio("czkawka", "fast"),
            "timings": {name: t.as_json() for name, t in times.items() if t.wall},
            "load_average_after": round(os.getloadavg()[0], 1),
            "cpu_ms_per_file": per_format(folder, a.per_format) if a.per_format else None,
            "mse_fast_vs_exact": fast_vs_exact(exact_cat, fast_cat),
            "groups": same,
        }
        print(json.dumps(out, indent=2))
        ok = ((difpy_s is None or difpy_s / fast_s >= 2.0)
              and (czkawka_s is None or czkawka_s / fast_s >= 1.3))
        print("targets met" if ok else "below the targets (fast >= 2x difPy, >= 1.3x czkawka)",
              file=sys.stderr)
        return 0 if ok else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
