"""Scale benchmark: the partitioned search over a real catalog of N synthetic 50 px tensors.

Not collected by pytest (``bench_*.py``). Run::

    python tests/benchmarks/bench_scale.py --n 1000000
    python tests/benchmarks/bench_scale.py --n 20000 --check   # also the in-memory search
    python tests/benchmarks/bench_scale.py --n 100000 --similarity duplicates --check

The tensors are perturbed real photographs (the seed photos of ``tests/corpus.py``: a few
hundred 50 px crops, each copy with its own brightness, colour gain, flip or rotation and
+-3 noise, so copies of one crop differ by MSE > 5), with planted pairs: 1 % near copies
(+-1 on a third of the elements, MSE about 0.2), half of them rotated, and 0.2 % exact
copies. They are written straight into a real SQLite catalog (schema by ``Index.open``,
rows by plain ``sqlite3``, with each tensor's pixel sum and digests as ``update`` writes
them: decoding a million files is not what is measured here). The
search is the real one: ``python -m difpy_index --catalog DB search -s similar --no-update
--format json`` in a child process, whose whole process tree is sampled for resident memory.
Prints the search time, ``peak_rss_mib N`` and how many planted pairs came back.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

PX = 50
DIMS = [(4000, 3000), (3000, 4000), (1920, 1080), (1080, 1920), (1600, 1200), (1024, 768),
        (800, 600), (2048, 1536), (1280, 720), (640, 480), (3264, 2448), (1000, 1000)]
CHUNK = 10_000


def bases(count: int, seed: int) -> np.ndarray:
    """``count`` 50 px crops of the seed photos (corpus.base_array), as uint8 tensors."""
    import corpus

    return np.stack([corpus.base_array(seed, b, PX, PX) for b in range(count)])


def generate(n: int, seed: int, base: np.ndarray):
    """Yield chunks (tensors, widths, heights, sizes, planted pairs as (i, j, kind))."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        c = min(CHUNK, n - done)
        pick = rng.integers(0, len(base), c)
        t = base[pick].astype(np.float32)
        t *= rng.uniform(0.8, 1.2, (c, 1, 1, 3)).astype(np.float32)
        t += rng.integers(-45, 46, (c, 1, 1, 1)).astype(np.float32)
        t += rng.integers(-3, 4, t.shape, dtype=np.int8)
        t = np.clip(np.rint(t, out=t), 0, 255, out=t).astype(np.uint8)
        flip = rng.random(c) < 0.5
        t[flip] = t[flip][:, :, ::-1]
        d = rng.integers(0, len(DIMS), c)
        w = np.array([DIMS[i][0] for i in d]) + rng.integers(0, 3, c)
        h = np.array([DIMS[i][1] for i in d])
        sizes = rng.integers(50_000, 5_000_000, c)
        planted = []
        # near copies (1 %), half rotated, and exact copies (0.2 %) of earlier rows of the chunk
        n_near, n_same = c // 100, c // 500
        src = rng.choice(c // 2, n_near + n_same, replace=False)
        dst = c // 2 + rng.choice(c - c // 2, n_near + n_same, replace=False)
        for q, (i, j) in enumerate(zip(src, dst, strict=True)):
            x = t[i].astype(np.int16)
            kind = "same"
            if q < n_near:
                x = np.clip(x + rng.integers(-1, 2, x.shape) * (rng.random(x.shape) < 0.33), 0, 255)
                kind = "near"
            k = int(rng.integers(1, 4)) if q % 2 else 0
            t[j] = np.rot90(x.astype(np.uint8), k)
            w[j], h[j] = (h[i], w[i]) if k % 2 else (w[i], h[i])
            sizes[j] = sizes[i] - 1
            planted.append((done + int(i), done + int(j), kind))
        yield t, w, h, sizes, planted
        done += c


def write_catalog(path: Path, n: int, seed: int) -> tuple[list[tuple[int, int, str]], float]:
    """A real catalog of n rows; returns the planted pairs and the seconds it took."""
    from difpy_index import Index
    from difpy_index.decode import recipe
    from difpy_index.tensorhash import tensor_digests

    t0 = time.perf_counter()
    photos = path.parent / "photos"
    photos.mkdir(exist_ok=True)
    Index.open(path).close()  # schema by the real migrations
    base = bases(120, seed)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    root = os.fsencode(os.path.realpath(photos))
    conn.execute("INSERT INTO roots(id, path, added_ns) VALUES (1, ?, 0)", (root,))
    rec = recipe()
    planted: list[tuple[int, int, str]] = []
    done = 0
    for t, w, h, sizes, pl in generate(n, seed, base):
        planted.extend(pl)
        ids = range(done + 1, done + len(t) + 1)
        conn.executemany(
            "INSERT INTO files(id, root_id, path, size, mtime_ns, inode, status, width, height,"
            " format, updated_ns) VALUES (?, 1, ?, ?, 0, NULL, 'ok', ?, ?, 'JPEG', 0)",
            [(i, root + b"/%07d.jpg" % (i - 1), int(s), int(ww), int(hh))
             for i, s, ww, hh in zip(ids, sizes, w, h, strict=True)])
        sums = t.reshape(len(t), -1).sum(axis=1, dtype=np.int64)
        blobs = [t[k].tobytes() for k in range(len(t))]
        conn.executemany(
            "INSERT INTO tensors(file_id, px_size, recipe, data, pixel_sum, digest, turned_digest)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(i, PX, rec, blobs[k], int(sums[k]), *tensor_digests(blobs[k], PX))
             for k, i in enumerate(ids)])
        conn.commit()
        done += len(t)
        print(f"  wrote {done:,}/{n:,}", file=sys.stderr, end="\r")
    conn.close()
    print(file=sys.stderr)
    return planted, time.perf_counter() - t0


def copy_to_pg(catalog: Path, url: str) -> float:
    """The SQLite catalog's rows into the PostgreSQL database at ``url`` (schema by
    ``Index.open``, rows by ``COPY``); kept when it already holds as many files. Seconds."""
    import psycopg

    from difpy_index import Index

    t0 = time.perf_counter()
    Index.open(url).close()
    conninfo = "postgresql://" + url.split("://", 1)[1]
    src = sqlite3.connect(catalog)
    n = src.execute("SELECT count(*) FROM files").fetchone()[0]
    with psycopg.connect(conninfo) as pg:
        if pg.execute("SELECT count(*) FROM files").fetchone()[0] == n:
            return 0.0
        pg.execute("TRUNCATE roots, files, tensors")
        tables = (("roots", "id, path, added_ns, updated_ns"),
                  ("files", "id, root_id, path, size, mtime_ns, inode, status, width, height, "
                            "format, updated_ns"),
                  ("tensors", "file_id, px_size, recipe, data, pixel_sum, digest, turned_digest"))
        for table, cols in tables:
            with pg.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for row in src.execute(f"SELECT {cols} FROM {table}"):
                    cp.write_row(row)
        pg.execute("ANALYZE")
    src.close()
    return time.perf_counter() - t0


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


#: ``--check`` of ``duplicates``: the engine over every tensor (the SQL grouping switched off)
ENGINE_DUPLICATES = """
import json, sys
from difpy_index import Index
from difpy_index.store.catalog import Catalog
Catalog.twin_candidates = lambda *a, **k: None
with Index.open(sys.argv[1]) as idx:
    found = idx.search(similarity="duplicates", max_band_rows=int(sys.argv[2]))
json.dump({"result": found.result, "stats": found.stats}, sys.stdout)
"""


def run_search(catalog: Path, out: Path, extra: list[str], env: dict[str, str],
               similarity: str = "similar", cmd: list[str] | None = None) -> tuple[float, int]:
    """The real CLI search in a child process: (seconds, peak tree RSS in bytes)."""
    cmd = cmd or [sys.executable, "-m", "difpy_index", "--catalog", str(catalog), "search",
                  "-s", similarity, "--no-update", "--format", "json", *extra]
    peak = 0
    t0 = time.perf_counter()
    with open(out, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, env=env)
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, tree_rss(proc.pid))
                stop.wait(0.05)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        rc = proc.wait()
        stop.set()
        th.join()
    secs = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"search failed with exit code {rc}")
    return secs, peak


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", help="keep the catalog here (reused if it has --n rows)")
    ap.add_argument("--max-band-rows", type=int, default=None,
                    help="partition setting (default: the package's)")
    ap.add_argument("--check", action="store_true",
                    help="also run the in-memory search and require the very same result "
                         "(for duplicates: the engine over every tensor, without the SQL grouping)")
    ap.add_argument("--similarity", default="similar", choices=["similar", "duplicates"])
    ap.add_argument("--pg", metavar="URL",
                    help="also copy the catalog into this PostgreSQL database (postgresql+"
                         "psycopg://...) and search it there: tensors read band by band from bytea")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    catalog = work / f"scale_{args.n}_{args.seed}.sqlite"
    planted_file = catalog.with_suffix(".planted.json")
    if catalog.exists() and planted_file.exists():
        planted = [tuple(p) for p in json.loads(planted_file.read_text())]
        print(f"catalog    {catalog} (reused)")
    else:
        for p in work.glob(catalog.name + "*"):
            p.unlink()
        planted, secs = write_catalog(catalog, args.n, args.seed)
        planted_file.write_text(json.dumps(planted))
        print(f"catalog    {catalog}: {args.n:,} rows written in {secs:.1f} s "
              f"({catalog.stat().st_size / 2**30:.2f} GiB)")
    # the rows' files are not on disk; a non-empty root is a mounted one (searches leave
    # out the files of an empty or missing root)
    (work / "photos").mkdir(exist_ok=True)
    (work / "photos" / "tensors-only.txt").write_text("the images of this catalog are synthetic\n")
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]))
    extra = [] if args.max_band_rows is None else ["--max-band-rows", str(args.max_band_rows)]
    out = work / "result.json"
    secs, peak = run_search(catalog, out, extra, env, args.similarity)
    found = json.loads(out.read_text())
    stats = found["stats"]["process"]["search"]
    pairs = set()
    for key, members in found["result"].items():
        for path, _mse in members:
            pairs.add(frozenset((key, path)))
    root = os.path.realpath(work / "photos")
    hit = {kind: 0 for _i, _j, kind in planted}
    for i, j, kind in planted:
        hit[kind] += frozenset((f"{root}/{i:07d}.jpg", f"{root}/{j:07d}.jpg")) in pairs
    got = sum(hit.values())
    print(f"images     {stats['files_searched']:,}")
    print(f"groups     {stats['groups']:,} ({len(pairs):,} members)")
    print(f"planted    {got:,}/{len(planted):,} planted pairs reported as key and member ("
          + ", ".join(f"{k} {v:,}/{sum(1 for p in planted if p[2] == k):,}" for k, v in hit.items())
          + ")")
    print(f"search_s   {stats['duration']['seconds_elapsed']:.1f} (engine) "
          f"{secs:.1f} (whole command)")
    print(f"peak_rss_mib {peak / 2**20:.0f}")
    if args.pg:
        secs_copy = copy_to_pg(catalog, args.pg)
        out3 = work / "result_pg.json"
        secs3, peak3 = run_search(catalog, out3, extra, env, args.similarity,
                                  cmd=[sys.executable, "-m", "difpy_index", "--catalog", args.pg,
                                       "search", "-s", args.similarity, "--no-update",
                                       "--format", "json", *extra])
        pg_found = json.loads(out3.read_text())
        same = pg_found["result"] == found["result"]
        print(f"postgresql copied in {secs_copy:.1f} s; search_s "
              f"{pg_found['stats']['process']['search']['duration']['seconds_elapsed']:.1f} "
              f"(engine) {secs3:.1f} (whole command), peak_rss_mib {peak3 / 2**20:.0f} "
              f"(this process tree, not the server), identical result: {same}")
        if not same:
            return 1
    if args.check:
        out2 = work / "result_in_memory.json"
        if args.similarity == "duplicates":
            cmd = [sys.executable, "-c", ENGINE_DUPLICATES, str(catalog),
                   str(args.max_band_rows or 10**9)]
            secs2, peak2 = run_search(catalog, out2, [], env, cmd=cmd)
        else:
            secs2, peak2 = run_search(catalog, out2, ["--max-band-rows", str(10**9)], env)
        same = json.loads(out2.read_text())["result"] == found["result"]
        print(f"in-memory  {secs2:.1f} s, peak_rss_mib {peak2 / 2**20:.0f}, "
              f"identical result: {same}")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
