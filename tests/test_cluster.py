"""Decoding and searching on outside executors: a Dask LocalCluster (the `cluster` extra),
plain thread pools, failing and broken executors. Results must equal the local path's."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagefactory as imf
import numpy as np
import pytest
from PIL import Image

from difpy_index import Index, pool


def _library(root: Path) -> Path:
    """40 images: copies, rotations, near copies, unrelated ones, and one corrupt file."""
    lib = root / "lib"
    (lib / "sub").mkdir(parents=True)
    for i in range(8):
        base = imf.synthetic(300 + i, 64, 48)
        base.save(lib / f"o{i}.png")
        base.save(lib / "sub" / f"copy{i}.png")
        imf.rotated(base, 90).save(lib / f"r{i}.png")
        imf.noisy(base, 1.5, seed=i).save(lib / "sub" / f"n{i}.png")
        arr = np.asarray(base).astype(np.int16)
        Image.fromarray(np.clip(arr + 1, 0, 255).astype(np.uint8)).save(lib / f"b{i}.png")
    (lib / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return lib


def _rows(catalog: Path) -> dict[bytes, tuple]:
    conn = sqlite3.connect(catalog)
    try:
        return {bytes(p): (st, err, w, h, bytes(d) if d is not None else None, s)
                for p, st, err, w, h, d, s in conn.execute(
                    "SELECT f.path, f.status, f.error, f.width, f.height, t.data, t.pixel_sum "
                    "FROM files f LEFT JOIN tensors t ON t.file_id = f.id")}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The library and its catalog made the local way (our own process pool)."""
    root = tmp_path_factory.mktemp("cluster")
    lib = _library(root)
    local = root / "local.sqlite"
    with Index.open(local) as idx:
        rep = idx.update([lib], processes=2)
    assert rep.files == 40 and rep.invalid == 1
    return lib, local


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed", reason="the cluster extra is not installed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       protocol="tcp://", host="127.0.0.1",
                                       dashboard_address=None, scheduler_port=0)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield cluster, client
    finally:
        client.close()
        cluster.close()


SEARCHES = [{"similarity": "duplicates"}, {"similarity": "similar"},
            {"similarity": 40, "same_dim": False}, {"similarity": "similar", "rotate": False},
            {"similarity": "similar", "in_folder": True}]


def test_dask_update_and_search_equal_local(lib, dask_cluster, tmp_path: Path) -> None:
    folder, local = lib
    _cluster, client = dask_cluster
    catalog = tmp_path / "dask.sqlite"
    with Index.open(catalog) as idx:
        rep = idx.update([folder], executor=client.get_executor())
        assert (rep.decoded, rep.files, rep.invalid) == (41, 40, 1)
        again = idx.update([folder], executor=client.get_executor())
        assert (again.decoded, again.reused) == (0, 41)  # incremental as ever
    assert _rows(catalog) == _rows(local)
    with Index.open(local) as ref, Index.open(catalog) as idx:
        for case in SEARCHES:
            dirs = [folder, folder / "sub"] if case.get("in_folder") else None
            want = ref.search(dirs, **case)
            got = idx.search(dirs, executor=client.get_executor(), max_band_rows=6, **case)
            assert got.groups == want.groups and got.result == want.result
            assert want.groups or case.get("in_folder")


def test_cli_scheduler_equals_local(lib, dask_cluster, tmp_path: Path) -> None:
    folder, local = lib
    cluster, _client = dask_cluster
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cat = tmp_path / "cli.sqlite"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "difpy_index", "--catalog", str(cat), *args],
                              capture_output=True, text=True, env=env, timeout=300)

    up = run("update", str(folder), "--scheduler", cluster.scheduler_address, "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["files"] == 40
    assert _rows(cat) == _rows(local)
    got = run("search", "-s", "similar", "--format", "json", "--scheduler", cluster.scheduler_address)
    want = run("search", "-s", "similar", "--format", "json")
    assert got.returncode == want.returncode == 0, got.stderr + want.stderr
    assert json.loads(got.stdout)["result"] == json.loads(want.stdout)["result"] != {}


def test_search_refresh_on_the_cluster(dask_cluster, tmp_path: Path) -> None:
    """search DIR --scheduler first brings DIR up to date (decoding on the cluster)."""
    cluster, _client = dask_cluster
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cat, folder = tmp_path / "c.sqlite", tmp_path / "pics"
    folder.mkdir()
    imf.synthetic(77, 64, 48).save(folder / "a.png")
    base = [sys.executable, "-m", "difpy_index", "--catalog", str(cat)]
    sched = ["--scheduler", cluster.scheduler_address]
    up = subprocess.run([*base, "update", str(folder), *sched], capture_output=True, text=True,
                        env=env, timeout=300)
    assert up.returncode == 0, up.stderr
    imf.synthetic(77, 64, 48).save(folder / "b.png")  # a copy arrives after the update
    res = subprocess.run([*base, "search", str(folder), "--format", "json", *sched],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)["result"]
    assert [len(v) for v in result.values()] == [1]


def test_scheduler_without_cluster_extra_is_one_line(tmp_path: Path) -> None:
    """Without dask installed: exit 2, one line naming the extra, no catalog created."""
    fake = tmp_path / "fake"
    (fake / "distributed").mkdir(parents=True)
    (fake / "distributed" / "__init__.py").write_text("raise ImportError('no dask here')\n")
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(fake), str(Path(__file__).resolve().parents[1])]))
    cat = tmp_path / "c.sqlite"
    for cmd in (["update", str(tmp_path)], ["search"]):
        res = subprocess.run([sys.executable, "-m", "difpy_index", "--catalog", str(cat), *cmd,
                              "--scheduler", "tcp://127.0.0.1:8786"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 2
        assert res.stderr.count("\n") == 1 and "cluster" in res.stderr
        assert not cat.exists()


def test_bad_and_unreachable_scheduler(tmp_path: Path) -> None:
    pytest.importorskip("distributed", reason="the cluster extra is not installed")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cat = tmp_path / "c.sqlite"
    bad = subprocess.run([sys.executable, "-m", "difpy_index", "--catalog", str(cat), "search",
                          "--scheduler", "localhost"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "tcp://" in bad.stderr and bad.stderr.count("\n") == 1
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gone = subprocess.run([sys.executable, "-m", "difpy_index", "--catalog", str(cat), "search",
                           "--scheduler", f"tcp://127.0.0.1:{port}"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert gone.returncode == 1 and "cannot reach" in gone.stderr
    assert gone.stderr.count("\n") == 1


def test_failing_task_isolates_the_file(lib, tmp_path: Path, monkeypatch) -> None:
    """A task that dies (here: raises whenever it holds one file) is retried file by file:
    only that file is recorded invalid; everything else equals the local catalog."""
    folder, local = lib
    victim = os.fsencode(os.path.realpath(folder / "o3.png"))
    real_task = pool.decode_task

    def flaky(paths, *args, **kwargs):
        if victim in paths:
            raise RuntimeError("worker lost")
        return real_task(paths, *args, **kwargs)

    monkeypatch.setattr(pool, "decode_task", flaky)
    catalog = tmp_path / "flaky.sqlite"
    with Index.open(catalog) as idx, ThreadPoolExecutor(2) as ex:
        rep = idx.update([folder], executor=ex)
    assert (rep.files, rep.invalid) == (39, 2)
    got, want = _rows(catalog), _rows(local)
    assert got.pop(victim)[:2] == ("invalid", "decoder crashed on this file (worker process died)")
    want.pop(victim)
    assert got == want


def test_broken_executor_falls_back_to_local_pool(lib, tmp_path: Path) -> None:
    folder, local = lib
    ex = ThreadPoolExecutor(1)
    ex.shutdown()
    catalog = tmp_path / "fallback.sqlite"
    with Index.open(catalog) as idx:
        rep = idx.update([folder], executor=ex, processes=1)
    assert (rep.files, rep.invalid) == (40, 1)
    assert _rows(catalog) == _rows(local)


@pytest.mark.parametrize("n", [0, 1, 3, 50, 511, 512, 513, 4000])
def test_executor_batches_taper_at_the_end(n: int) -> None:
    """Tasks on an outside executor: every path once, in order, full batches while many
    are left, then shrinking ones, so the last tasks are short."""
    items = list(range(n))
    batches = pool.tapered(items, 32, 16)
    assert [x for b in batches for x in b] == items
    sizes = [len(b) for b in batches]
    assert all(a >= b for a, b in itertools.pairwise(sizes))  # never grows
    assert all(1 <= s <= 32 for s in sizes)
    if n >= 4000:
        assert sizes[0] == 32 and sizes[-1] <= pool.EXECUTOR_TASK_MIN_FILES
        assert len(batches) < n // 32 + 70  # a few more tasks than fixed batches, not many


_PINNED_MALLOC = """
import json, os, resource, sys
from difpy_index import pool

paths = [os.fsencode(p) for p in sys.argv[1:]]

def run():  # on another thread, as a Dask worker runs its tasks (its own malloc arena)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as ex:
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        out = ex.submit(pool.decode_task, paths, (50,), None).result()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0, [d.tensors for d in out]

run()  # imports and first buffers
kept, a = run()
pool._glibc = lambda: None  # what a worker did before
fresh, b = run()
print(json.dumps({"kept": kept, "fresh": fresh, "same": a == b, "tasks": pool._heap_tasks}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_decode_task_keeps_large_buffers_under_a_pinned_malloc(tmp_path: Path) -> None:
    """Dask's nanny pins MALLOC_TRIM_THRESHOLD_, which makes every large image buffer a
    fresh mmap: a decode task lifts that while it runs (fewer page faults, same tensors)."""
    files = []
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(1800, 1200), (2400, 1600), (1500, 2000), (2000, 2000),
                                (1200, 900), (2600, 1700)]):  # photographs of several sizes
        arr = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        img = Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR)
        img.save(tmp_path / f"big{i}.jpg", quality=90)
        files.append(str(tmp_path / f"big{i}.jpg"))
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    res = subprocess.run([sys.executable, "-c", _PINNED_MALLOC, *files], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["same"] and got["tasks"] == 0
    assert got["kept"] * 2 < got["fresh"], got
