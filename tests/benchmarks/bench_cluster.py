"""Cluster benchmark: update and search locally and on a Dask LocalCluster, side by side.

Not collected by pytest. Run::

    python tests/benchmarks/bench_cluster.py --n 4000            # generates a corpus first
    python tests/benchmarks/bench_cluster.py --corpus DIR        # reuses a folder
    python tests/benchmarks/bench_cluster.py --corpus DIR --rounds 2   # local, dask, dask, local

Cold ``update`` into fresh catalogs, once with our own process pool (``--processes``
workers), once on a ``distributed.LocalCluster`` of as many single-threaded worker
processes (``client.get_executor()``, what ``--scheduler`` uses); then ``search -s
similar`` on each (local: in memory; cluster: the partitioned search, one band pair per
task). The workers are started and have imported difpy-index before the clock starts, as
on a running cluster. Prints seconds, images per hour per core, the cluster/local ratio, and whether the
catalogs and results are identical. Needs the cluster extra.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _rows(catalog: Path) -> dict[bytes, tuple]:
    conn = sqlite3.connect(catalog)
    try:
        return {bytes(p): (s, d) for p, s, d in conn.execute(
            "SELECT f.path, f.status, t.data FROM files f LEFT JOIN tensors t ON t.file_id = f.id")}
    finally:
        conn.close()


def _warm() -> None:
    import difpy_index.decode
    import difpy_index.match
    import difpy_index.pool  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    from difpy_index import Index

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--corpus")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run local and dask this many times each, alternating (local, dask, "
                         "dask, local, ...), so a load that drifts during the run weighs on "
                         "both alike; the ratio is of the summed seconds")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_cluster_"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = Path(args.corpus) if args.corpus else work / f"corpus_{args.n}"
    if not corpus.exists():
        import corpus as gen

        t0 = time.perf_counter()
        gen.make_corpus(corpus, args.n, seed=1, processes=args.workers)
        print(f"corpus     {corpus}: generated in {time.perf_counter() - t0:.1f} s")
    from distributed import Client, LocalCluster

    out: dict[str, tuple[float, float, object]] = {}
    order = [h for r in range(args.rounds) for h in (("local", "dask") if r % 2 == 0
                                                      else ("dask", "local"))]
    for how in order:
        cat = work / f"{how}.sqlite"
        for p in work.glob(f"{how}.sqlite*"):
            p.unlink()
        cluster = client = None
        ex = None
        if how == "dask":
            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
            # a running cluster's workers have imported the decoder long ago: warm them up
            # here too, so worker start-up is not counted as decoding
            client.run(_warm)
            ex = client.get_executor()
        try:
            with Index.open(cat) as idx:
                t0 = time.perf_counter()
                rep = idx.update([corpus], processes=args.workers, executor=ex)
                t_up = time.perf_counter() - t0
                t0 = time.perf_counter()
                found = idx.search(similarity="similar", executor=ex)
                t_se = time.perf_counter() - t0
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
        prev = out.get(how)
        if prev is not None and prev[2] != found.result:
            print(f"{how}: the result differs between rounds")
            return 1
        out[how] = (t_up + (prev[0] if prev else 0.0), t_se + (prev[1] if prev else 0.0),
                    found.result)
        rate = rep.decoded / t_up * 3600 / args.workers
        print(f"{how:6} update {t_up:7.1f} s ({rep.decoded} decoded, {rate:,.0f} images/hour/core)"
              f"  search {t_se:6.2f} s ({len(found.groups)} groups)  load {os.getloadavg()[0]:.1f}",
              flush=True)
    same_rows = _rows(work / "local.sqlite") == _rows(work / "dask.sqlite")
    same = out["local"][2] == out["dask"][2]
    print(f"ratio      update dask/local {out['dask'][0] / out['local'][0]:.2f}x, "
          f"search dask/local {out['dask'][1] / out['local'][1]:.2f}x")
    print(f"identical  catalogs {same_rows}, results {same}")
    return 0 if same and same_rows else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(HERE.parents[1]))
    raise SystemExit(main())
