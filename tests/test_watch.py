"""The watcher with real observers and real files: events are hints, the catalog follows."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import catalog_rows, write_image
from hypothesis import given
from hypothesis import strategies as st

from difpy_index import Index
from difpy_index.watch import Debouncer, PathFilter, Pending, WatchEvent, note_event

pytestmark = pytest.mark.watch

FAST = {"debounce": 0.2, "stable": 0.2, "interval": 0.1, "max_delay": 2.0, "processes": 1}


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, step: float = 0.02) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s: {predicate}")


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    """Every observer, emitter and worker thread a test starts is joined by its end."""
    before = set(threading.enumerate())
    yield
    end = time.monotonic() + 5
    while time.monotonic() < end and set(threading.enumerate()) - before:
        time.sleep(0.02)
    leaked = set(threading.enumerate()) - before
    assert not leaked, f"leaked threads: {leaked}"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "pics"
    d.mkdir()
    return Path(os.path.realpath(d))


def rows(catalog: Path) -> dict[bytes, tuple[int, int, str]]:
    """The catalog's rows; empty while the catalog is still being created."""
    try:
        return catalog_rows(catalog) if catalog.exists() else {}
    except sqlite3.OperationalError:
        return {}


def b(p: Path | str) -> bytes:
    return os.fsencode(str(p))


# -- pure pieces ----------------------------------------------------------------------------
FLT = PathFilter((b"/w/a", b"/w/b"), b"/w/a/catalog.sqlite", frozenset({"png", "jpg"}))


@pytest.mark.parametrize(
    ("kind", "is_dir", "src", "dest", "files", "dirs"),
    [
        ("created", False, b"/w/a/x.png", None, {b"/w/a/x.png"}, set()),
        ("modified", False, b"/w/a/x.PNG", None, {b"/w/a/x.PNG"}, set()),
        ("closed", False, b"/w/a/x.png", None, {b"/w/a/x.png"}, set()),
        ("opened", False, b"/w/a/x.png", None, set(), set()),
        ("created", False, b"/w/a/notes.txt", None, set(), set()),
        ("created", False, b"/w/a/.hidden/x.png", None, set(), set()),
        ("created", False, b"/elsewhere/x.png", None, set(), set()),
        ("moved", False, b"/w/a/x.png", b"/w/b/y.jpg", {b"/w/a/x.png", b"/w/b/y.jpg"}, set()),
        ("moved", False, b"/w/a/x.tmp", b"/w/a/x.png", {b"/w/a/x.png"}, set()),  # atomic save
        ("moved", True, b"/w/a/d", b"/w/a/e", set(), {b"/w/a/d", b"/w/a/e"}),
        ("modified", True, b"/w/a/d", None, set(), set()),
        ("deleted", True, b"/w/a/d", None, set(), {b"/w/a/d"}),
        ("modified", False, b"/w/a/catalog.sqlite-wal", None, set(), set()),
    ],
)
def test_note_event(kind: str, is_dir: bool, src: bytes, dest: bytes | None,
                    files: set[bytes], dirs: set[bytes]) -> None:
    p = Pending()
    hit = note_event(p, kind, is_dir, src, dest, FLT)
    assert (p.files, p.dirs) == (files, dirs)
    assert hit == bool(files or dirs)


@given(st.sampled_from(["", "-wal", "-shm", "-journal", ".bak", ".1.png", "-backup.png"]),
       st.sampled_from(["created", "modified", "deleted", "closed"]))
def test_catalog_files_never_dirty(suffix: str, kind: str) -> None:
    flt = PathFilter((b"/w",), b"/w/catalog.png", None)  # even with every extension allowed
    p = Pending()
    assert not note_event(p, kind, False, b"/w/catalog.png" + suffix.encode(), None, flt)
    assert not p


def test_debouncer_waits_for_quiet_and_caps_a_stream() -> None:
    d = Debouncer(quiet=0.15, max_delay=0.6)
    t0 = time.monotonic()
    d.add(lambda p: note_event(p, "created", False, b"/w/a/1.png", None, FLT))
    got = d.take(5)
    assert got is not None and got.files == {b"/w/a/1.png"}
    assert time.monotonic() - t0 >= 0.15
    # a steady stream (an event every 50 ms) is still handed out after max_delay
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            d.add(lambda p, i=i: note_event(p, "created", False, b"/w/a/%d.png" % i, None, FLT))
            time.sleep(0.05)

    t = threading.Thread(target=stream)
    t.start()
    try:
        t0 = time.monotonic()
        got = d.take(5)
        assert got is not None and len(got.files) > 3
        assert 0.5 <= time.monotonic() - t0 < 2.0
    finally:
        stop.set()
        t.join()
    d.take(0.3)  # the stream's tail
    d.put_back(Pending(files={b"/w/a/later.png"}), 0.3)
    assert d.take(0.05) is None  # not due yet
    got = d.take(2)
    assert got is not None and b"/w/a/later.png" in got.files


# -- a real observer ------------------------------------------------------------------------
def test_create_modify_delete_move(tmp_path: Path, root: Path) -> None:
    cat = tmp_path / "cat.sqlite"
    outside = tmp_path / "outside"
    outside.mkdir()
    write_image(root / "old.png", 1)
    (root / "sub").mkdir()  # exists before: the move below is one event, not a folder scan
    events: list[WatchEvent] = []
    with Index.open(cat) as idx, idx.watch([root], polling=True, on_event=events.append, **FAST) as w:
        assert w.ready.wait(10)
        assert b(root / "old.png") in rows(cat)  # the start-up reconcile

        write_image(root / "new.png", 2)
        wait_until(lambda: b(root / "new.png") in rows(cat))
        before = rows(cat)[b(root / "new.png")]
        t_new = idx.tensor(root / "new.png").copy()

        write_image(root / "new.png", 3, size=(40, 30))  # modified
        wait_until(lambda: rows(cat).get(b(root / "new.png")) != before)
        assert not np.array_equal(idx.tensor(root / "new.png"), t_new)

        os.rename(root / "new.png", root / "sub" / "moved.png")  # move within
        wait_until(lambda: b(root / "sub" / "moved.png") in rows(cat) and b(root / "new.png") not in rows(cat))
        # the batch's event is sent after its catalog commit: wait for it too, not just the rows

        def moves() -> list[WatchEvent]:
            return [e for e in events if e.kind == "batch" and e.report and e.report.renamed]

        wait_until(moves)
        assert moves()[-1].report.decoded == 0  # the row followed, no decode

        os.rename(root / "old.png", outside / "old.png")  # move out of the watched folder
        wait_until(lambda: b(root / "old.png") not in rows(cat))
        assert b(outside / "old.png") not in rows(cat)

        os.remove(root / "sub" / "moved.png")
        wait_until(lambda: rows(cat) == {})
        assert w.alive


def test_native_observer_and_folder_removed_and_recreated(tmp_path: Path, root: Path) -> None:
    cat = tmp_path / "cat.sqlite"
    with Index.open(cat) as idx, idx.watch([root], **FAST) as w:
        assert w.ready.wait(10) and not w.polling
        write_image(root / "d" / "a.png", 1)
        wait_until(lambda: b(root / "d" / "a.png") in rows(cat))
        import shutil

        shutil.rmtree(root / "d")
        wait_until(lambda: rows(cat) == {})
        write_image(root / "d" / "b.png", 2)  # the same folder name again
        wait_until(lambda: set(rows(cat)) == {b(root / "d" / "b.png")})
        os.rename(root / "d", root / "e")  # a folder move: rows follow
        wait_until(lambda: set(rows(cat)) == {b(root / "e" / "b.png")})


def test_burst_is_a_few_batches(tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from difpy_index.store.catalog import Catalog

    cat = tmp_path / "cat.sqlite"
    records = []
    real_record = Catalog.record
    monkeypatch.setattr(Catalog, "record", lambda self, res, *a: (records.append(len(res)), real_record(self, res, *a))[1])
    with Index.open(cat) as idx:
        calls: list[int] = []
        real = idx.update_paths

        def counting(paths, *a, **k):  # type: ignore[no-untyped-def]
            paths = list(paths)
            calls.append(len(paths))
            return real(paths, *a, **k)

        idx.update_paths = counting  # type: ignore[method-assign]
        with idx.watch([root], polling=True, **FAST) as w:
            assert w.ready.wait(10)
            for i in range(500):
                write_image(root / f"burst_{i:03d}.png", 1000 + i, size=(8, 8))
            wait_until(lambda: len(rows(cat)) == 500, timeout=90)
    assert sum(calls) >= 500 and len(calls) <= 15, calls
    assert sum(records) == 500 and len(records) <= 15, records


def test_file_written_slowly_is_decoded_once_complete(tmp_path: Path, root: Path) -> None:
    from difpy_index.decode import decode_file

    cat = tmp_path / "cat.sqlite"
    src = tmp_path / "full.png"
    write_image(src, 7, size=(300, 200))
    data = src.read_bytes()
    chunks = [data[i : i + len(data) // 8 + 1] for i in range(0, len(data), len(data) // 8 + 1)]
    seen: list[tuple[int, int, str] | None] = []
    with Index.open(cat) as idx, idx.watch([root], polling=True, **FAST) as w:
        assert w.ready.wait(10)
        target = root / "slow.png"
        with open(target, "wb") as fh:
            for c in chunks:
                fh.write(c)
                fh.flush()
                seen.append(rows(cat).get(b(target)))
                time.sleep(0.12)  # a slow copy: never quiet for the stable period
        wait_until(lambda: rows(cat).get(b(target), (0,))[0] == len(data))
        got = idx.tensor(target)
    assert all(s is None for s in seen), seen  # nothing recorded while it was growing
    expected = decode_file(os.fsencode(src), (50,))
    assert rows(cat)[b(target)][2] == "ok"
    assert np.array_equal(got, np.frombuffer(expected.tensors[50], np.uint8).reshape(50, 50, 3))


def test_bad_file_locked_catalog_and_vanishing_root(tmp_path: Path, root: Path) -> None:
    cat = tmp_path / "cat.sqlite"
    events: list[WatchEvent] = []
    write_image(root / "keep.png", 1)
    with Index.open(cat) as idx, idx.watch([root], polling=True, on_event=events.append, **FAST) as w:
        assert w.ready.wait(10)
        (root / "bad.png").write_bytes(b"not a png at all")
        wait_until(lambda: rows(cat).get(b(root / "bad.png"), (0, 0, ""))[2] == "invalid")

        # another process holds the write lock for a moment
        other = sqlite3.connect(cat, timeout=5)
        other.execute("BEGIN IMMEDIATE")
        write_image(root / "during_lock.png", 2)
        time.sleep(0.8)  # the lock is held across at least one debounce period
        other.rollback()
        other.close()
        wait_until(lambda: b(root / "during_lock.png") in rows(cat))

        # the root disappears (an unmount) and comes back with a new file
        away = tmp_path / "away"
        os.rename(root, away)
        wait_until(lambda: any(e.kind == "root-missing" for e in events))
        assert b(root / "keep.png") in rows(cat)  # rows kept while it is gone
        write_image(away / "while_away.png", 3)
        os.rename(away, root)
        wait_until(lambda: b(root / "while_away.png") in rows(cat))
        assert any(e.kind == "root-back" for e in events)
        write_image(root / "after.png", 4)  # the observer was rescheduled
        wait_until(lambda: b(root / "after.png") in rows(cat))
        assert w.alive


def _cli(catalog: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "difpy_index", "--catalog", str(catalog), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,  # type: ignore[call-overload]
    )


def test_concurrent_update_and_reads_from_other_processes(tmp_path: Path, root: Path) -> None:
    cat = tmp_path / "cat.sqlite"
    other = tmp_path / "other"
    for i in range(40):
        write_image(other / f"o{i}.png", 500 + i)
    with Index.open(cat) as idx, idx.watch([root], polling=True, **FAST) as w:
        assert w.ready.wait(10)
        procs = [_cli(cat, "update", "--processes", "1", str(other))]
        for i in range(120):
            write_image(root / f"w{i}.png", i, size=(16, 16))
            if i % 40 == 0:
                procs.append(_cli(cat, "status", "--json"))
                procs.append(_cli(cat, "query", str(other / "o1.png")))
                procs.append(_cli(cat, "search", "--json"))
        outs = [(p.args, *p.communicate(timeout=60), p.returncode) for p in procs]
        wait_until(lambda: len(rows(cat)) == 160, timeout=60)
    for args, _out, err, rc in outs:
        assert "locked" not in err, (args, err)
        assert rc == 0, (args, err)


def test_retries_when_the_catalog_stays_locked(tmp_path: Path, root: Path) -> None:
    cat = tmp_path / "cat.sqlite"
    events: list[WatchEvent] = []
    with Index.open(cat) as idx:
        real = idx.update_paths
        fails = [sqlite3.OperationalError("database is locked")]

        def flaky(*a, **k):  # type: ignore[no-untyped-def]
            if fails:
                raise fails.pop()
            return real(*a, **k)

        idx.update_paths = flaky  # type: ignore[method-assign]
        with idx.watch([root], polling=True, on_event=events.append, **FAST) as w:
            assert w.ready.wait(10)
            write_image(root / "a.png", 1)
            wait_until(lambda: b(root / "a.png") in rows(cat))
            assert w.alive
    retries = [e.message for e in events if e.kind == "retry"]
    assert len(retries) == 1 and "database is locked" in retries[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_daemon_with_exit_0(tmp_path: Path, root: Path, sig: int) -> None:
    cat = tmp_path / "cat.sqlite"
    write_image(root / "a.png", 1)
    proc = _cli(cat, "watch", "--polling", "--processes", "1", str(root))
    try:
        wait_until(lambda: b(root / "a.png") in rows(cat), timeout=60)
        write_image(root / "b.png", 2)
        wait_until(lambda: b(root / "b.png") in rows(cat), timeout=30)
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert took < 15, took  # promptly: not after a debounce backlog (generous: shared CI)
    assert f"received {signal.Signals(sig).name}" in err
    # every log line starts with a timestamp
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and all(ln[:4].isdigit() and ln[4] == "-" for ln in lines), lines


def test_arriving_duplicate_is_reported(tmp_path: Path, root: Path) -> None:
    cat = tmp_path / "cat.sqlite"
    write_image(root / "orig.png", 5)
    events: list[WatchEvent] = []
    with Index.open(cat) as idx, idx.watch([root], polling=True, report_duplicates=True,
                                           on_event=events.append, **FAST) as w:
        assert w.ready.wait(10)
        (root / "copy.png").write_bytes((root / "orig.png").read_bytes())
        write_image(root / "unrelated.png", 6)
        wait_until(lambda: any(e.kind == "duplicate" for e in events))
        wait_until(lambda: len(rows(cat)) == 3)
    dups = [e for e in events if e.kind == "duplicate"]
    assert [e.paths for e in dups] == [(str(root / "copy.png"), str(root / "orig.png"))]
