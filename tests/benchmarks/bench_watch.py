#!/usr/bin/env python3
"""Benchmark: what a ``difpy-index watch`` daemon costs at rest, and how long a new file
takes from its last write to its row in the catalog. Not collected by pytest. Usage:

    python tests/benchmarks/bench_watch.py [--polling] [--files 200] [--idle 20] [--n 10] [--seed 0]

Starts the real CLI daemon (default settings: 1 s debounce, 1 s stable-wait) as a
subprocess on a scratch folder, waits for the start-up reconcile, samples the daemon's
CPU time (utime+stime from /proc/<pid>/stat) over ``--idle`` seconds and its VmRSS, then
writes ``--n`` 640x480 PNGs one at a time and polls the catalog (read-only SQLite, every
10 ms) from the moment each write returns until its row exists. Linux only (/proc).
difPy 4.2.1 has no watcher, so there is nothing to compare with: the figures are
difpy-index's own.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: tuple[int, int]) -> None:
    """A PNG of uniform noise from ``seed`` (incompressible: the slowest file to decode)."""
    w, h = size
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path, "PNG")


def has_row(cat: Path, path: str) -> bool:
    try:
        c = sqlite3.connect(f"file:{cat}?mode=ro", uri=True)
        try:
            return c.execute("SELECT 1 FROM files WHERE path=?", (path.encode(),)).fetchone() is not None
        finally:
            c.close()
    except sqlite3.OperationalError:
        return False


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--polling", action="store_true", help="watchdog's polling observer")
    ap.add_argument("--files", "--size", dest="files", type=int, default=200,
                    help="files catalogued before the idle measurement")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idle sampling")
    ap.add_argument("--n", type=int, default=10, help="new files timed one at a time")
    ap.add_argument("--seed", type=int, default=0, help="picture seed")
    a = ap.parse_args()
    print("(no difPy counterpart: difPy 4.2.1 has no watcher; these are difpy-index's own figures)")
    mode = "polling" if a.polling else "native"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(os.path.realpath(tmp)) / "pics"
        cat = Path(tmp) / "cat.sqlite"
        for i in range(a.files):
            write_image(root / f"seed_{i}.png", a.seed * 1_000_003 + 10_000 + i, size=(64, 48))
        args = [sys.executable, "-m", "difpy_index", "--catalog", str(cat), "-q", "watch", str(root)]
        if a.polling:
            args.insert(-1, "--polling")
        p = subprocess.Popen(args)
        try:
            while not has_row(cat, str(root / f"seed_{a.files - 1}.png")):
                time.sleep(0.05)
            time.sleep(2)
            c0, t0 = cpu_seconds(p.pid), time.monotonic()
            time.sleep(a.idle)
            c1, t1 = cpu_seconds(p.pid), time.monotonic()
            print(f"{mode}: idle CPU {100 * (c1 - c0) / (t1 - t0):.2f}% of one core over "
                  f"{t1 - t0:.0f} s; RSS {rss_mib(p.pid):.0f} MiB ({a.files} files catalogued)")
            lat = []
            for i in range(a.n):
                path = root / f"new_{i}.png"
                write_image(path, a.seed * 1_000_003 + i, size=(640, 480))
                t = time.monotonic()
                while not has_row(cat, str(path)):
                    time.sleep(0.01)
                lat.append(time.monotonic() - t)
                time.sleep(0.5)
            lat.sort()
            print(f"{mode}: last write -> row: median {lat[len(lat) // 2]:.2f} s, "
                  f"max {lat[-1]:.2f} s (n={len(lat)})")
            p.send_signal(signal.SIGTERM)
            t = time.monotonic()
            rc = p.wait(30)
            print(f"{mode}: SIGTERM -> exit {rc} in {time.monotonic() - t:.2f} s")
        finally:
            if p.poll() is None:
                p.kill()


if __name__ == "__main__":
    main()
