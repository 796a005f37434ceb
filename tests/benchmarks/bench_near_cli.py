#!/usr/bin/env python3
"""End to end through the CLI: ``search -s near`` against ``search -s similar`` on a catalog
that already holds the images.

For each size the pictures of ``bench_near.speed_tensors`` (the engine bench's ``--speed``
tensors) are written as JPEG files (quality 95, a tenth of the tensor's recorded width and
height, so ``similar``'s same-dimension buckets look like the engine bench's), indexed once
by a cold ``difpy-index update`` (timed too), then searched in alternating rounds, each a
child process timed from outside (wall, and its user + sys CPU including its workers):

- ``search DIR -s similar|near --format json``: what a user pays, freshness check included,
- the same with ``--no-update``: the catalog read as it is,
- ``status``: the fixed start-up cost of any CLI run.

Best of the rounds is printed, with near/similar CPU ratios and growth exponents between
successive sizes (issue acceptance: near on 4,000 cached images within 2x of ``similar``;
growth exponent 4k -> 16k <= 1.3). Corpora are cached under ``--workdir`` by size and seed.

Usage (not collected by pytest; the photographs come from the [bench] extra):
  python tests/benchmarks/bench_near_cli.py --sizes 4000 16000 --workdir /tmp/nearcli
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_near

#: Files per subfolder of a corpus.
PER_FOLDER = 1000
#: Written last in a corpus folder: the corpus is complete.
MARKER = "complete"
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class Run:
    """One child process: wall and CPU (user + sys, its own waited-for workers included)."""

    wall: float
    cpu: float


def write_chunk(args: tuple[Path, int, np.ndarray, np.ndarray, np.ndarray]) -> int:
    """Write one subfolder's pictures, ``%07d.jpg`` from index ``start``; return the count."""
    from PIL import Image

    folder, start, tensors, widths, heights = args
    folder.mkdir(parents=True, exist_ok=True)
    for k, (t, w, h) in enumerate(zip(tensors, widths, heights, strict=True)):
        im = Image.fromarray(t).resize((int(w) // 10, int(h) // 10), Image.Resampling.BICUBIC)
        im.save(folder / f"{start + k:07d}.jpg", quality=95)
    return len(tensors)


def corpus(workdir: Path, n: int, seed: int, processes: int, textured: bool = True,
           debian: bool = False) -> Path:
    """The folder of ``n`` JPEG files of seed ``seed``, made unless already complete
    (``textured``, ``debian``: as ``bench_near.speed_tensors``)."""
    base = workdir / f"corpus_{n}_{seed}{'' if textured else '_flat'}{'_deb' if debian else ''}"
    images = base / "images"
    if (base / MARKER).exists():
        return images
    shutil.rmtree(base, ignore_errors=True)
    t0 = time.perf_counter()
    tensors, widths, heights, _ = bench_near.speed_tensors(n, seed, textured, debian=debian)
    chunks = [(images / f"{i // PER_FOLDER:03d}", i, tensors[i : i + PER_FOLDER],
               widths[i : i + PER_FOLDER], heights[i : i + PER_FOLDER])
              for i in range(0, n, PER_FOLDER)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        written = sum(pool.imap_unordered(write_chunk, chunks))
    assert written == n, (written, n)
    (base / MARKER).write_text(f"{n} {seed}\n")
    print(f"corpus {n} (seed {seed}) written in {time.perf_counter() - t0:.0f} s", flush=True)
    return images


def timed(cmd: list[str], env: dict[str, str], stdout: Path | None = None) -> Run:
    """Run ``cmd`` as a child process; its stdout to ``stdout`` (default /dev/null)."""
    with open(stdout or os.devnull, "wb") as out, tempfile.TemporaryFile() as errs:
        wall = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=errs, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - wall
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errs.seek(0)
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{errs.read().decode()}")
    return Run(wall, usage.ru_utime + usage.ru_stime)


def best(runs: list[Run]) -> Run:
    """Best of the rounds: the least wall and the least CPU (each on its own)."""
    return Run(min(r.wall for r in runs), min(r.cpu for r in runs))


def groups_of(out: Path) -> tuple[int, int, int]:
    """Groups, lower-quality files and images searched of one ``search --format json``."""
    payload = json.loads(out.read_text())
    searched = payload["stats"]["process"]["search"]["files_searched"]
    return len(payload["result"]), len(payload["lower_quality"]), int(searched)


def measure(n: int, images: Path, cli: list[str], env: dict[str, str], rounds: int,
            scratch: Path) -> dict[str, Run]:
    """Cold update, then ``rounds`` alternating rounds of every search kind and ``status``."""
    cat = scratch / f"catalog_{n}.sqlite"
    for p in scratch.glob(f"catalog_{n}.sqlite*"):
        p.unlink()
    base = [*cli, "--catalog", str(cat)]
    got = {"update": timed([*base, "update", str(images)], env)}
    kinds = {f"{s}{'' if up else ' nu'}": [*base, "search", str(images), "-s", s,
                                           "--format", "json", *([] if up else ["--no-update"])]
             for up in (True, False) for s in ("similar", "near")}
    kinds["status"] = [*base, "status"]
    runs: dict[str, list[Run]] = {k: [] for k in kinds}
    outs = {k: scratch / f"out_{n}_{k.replace(' ', '_')}.json" for k in kinds}
    for _ in range(rounds):
        for k, cmd in kinds.items():
            runs[k].append(timed(cmd, env, outs[k] if k != "status" else None))
    got.update({k: best(r) for k, r in runs.items()})
    for k in ("similar", "near", "similar nu", "near nu"):
        g, lower, searched = groups_of(outs[k])
        print(f"{n}: -s {k.replace(' nu', ' --no-update')}: {searched} images searched, "
              f"{g} groups, {lower} lower-quality files", flush=True)
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000, 16000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS/OpenMP threads of the CLI children (default 1: shared cores)")
    ap.add_argument("--processes", type=int, default=2, help="processes writing the corpora")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--debian", action="store_true",
                    help="also take windows of the Debian package's photographs "
                         "(as bench_near.py --speed --debian)")
    ap.add_argument("--flat-windows", action="store_true",
                    help="allow flat windows (sky, wall) in the corpus, as bench_near.py does")
    a = ap.parse_args()
    print("$ python " + " ".join([os.path.relpath(__file__), *sys.argv[1:]]))
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="difpy-near-cli-"))
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = workdir / "runs"
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, **dict.fromkeys(THREAD_VARS, str(a.threads))}
    exe = shutil.which("difpy-index", path=str(Path(sys.executable).parent))
    cli = [exe] if exe else [sys.executable, "-c", "from difpy_index.cli import main; main()"]
    got = {}
    for n in a.sizes:
        images = corpus(workdir, n, a.seed, a.processes, not a.flat_windows, a.debian)
        got[n] = measure(n, images, cli, env, a.rounds, scratch)

    print(f"\n## CLI, cached catalog: best of {a.rounds} rounds, seconds (wall / cpu = user + sys "
          f"of the process and its workers), {a.threads} BLAS thread(s), {os.cpu_count()} cores")
    print("| images | update wall, files/s | similar wall / cpu | near wall / cpu | ratio (cpu) "
          "| --no-update: similar wall / cpu | near wall / cpu | ratio (cpu) | status cpu |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, g in got.items():
        def pair(k: str, g: dict[str, Run] = g) -> str:
            return f"{g[k].wall:.2f} / {g[k].cpu:.2f}"

        print(f"| {n} | {g['update'].wall:.1f}, {n / g['update'].wall:.0f} | {pair('similar')} "
              f"| {pair('near')} | {g['near'].cpu / g['similar'].cpu:.2f}x | {pair('similar nu')} "
              f"| {pair('near nu')} | {g['near nu'].cpu / g['similar nu'].cpu:.2f}x "
              f"| {g['status'].cpu:.2f} |")
    for a_n, b_n in itertools.pairwise(sorted(got)):
        for k in ("similar", "near", "similar nu", "near nu"):
            e = math.log(got[b_n][k].cpu / got[a_n][k].cpu) / math.log(b_n / a_n)
            print(f"growth exponent {k.replace(' nu', ' --no-update')} {a_n}->{b_n} (cpu): "
                  f"{e:.2f}")


if __name__ == "__main__":
    main()
