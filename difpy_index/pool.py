"""The one worker pool (decoding and thumbnails): spawn/forkserver, bounded in-flight
work, crash-proof.

Workers never touch the catalog; they return values. A worker that dies (a decoder crash
on hostile input) breaks the pool: ``map_batches`` stops and hands back the items of the
lost tasks. ``decode_all`` retries those one by one in a fresh pool, so only the file that
kills a decoder is recorded invalid.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any, TypeVar

from .decode import Decoded, decode_batch, init_worker

TASK_FILES = 8  # files per task: amortises pickling, keeps the tail short
INLINE_BELOW = 8  # fewer files than this are decoded in-process: no pool start-up cost

T = TypeVar("T")
R = TypeVar("R")


def default_processes() -> int:
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Workers import only difpy_index, never the caller's script: so scripts need no
    ``if __name__ == "__main__"`` guard (difPy issues #85, #97) on any start method."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    for k in saved:
        setattr(main, k, None) if k == "__spec__" else delattr(main, k)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def map_batches(
    fn: Callable[[list[T]], list[R]],
    items: Sequence[T],
    on_result: Callable[[list[R]], None],
    *,
    processes: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...] = (),
    batch: int = TASK_FILES,
    inline_below: int = INLINE_BELOW,
    window: int | None = None,
    isolate: bool = False,
) -> list[T]:
    """Run ``fn`` over ``items`` in batches of ``batch``, handing each batch's results to
    ``on_result`` in completion order; returns the items of batches lost to a dead worker.

    ``fn`` and ``initializer`` must be picklable (module-level functions, ``partial``).
    Few items, or one process, run in this process (after ``initializer``): no pool
    start-up cost; ``isolate`` always uses a worker (an item that kills it must not take
    the caller down). Otherwise at most ``window`` batches (default 4 per worker) are in
    flight, so memory stays bounded however many items there are.
    """
    tasks = [list(items[i : i + batch]) for i in range(0, len(items), batch)]
    if not isolate and (processes <= 1 or len(items) < inline_below):
        initializer(*initargs)
        for task in tasks:
            on_result(fn(task))
        return []
    return _run_pool(fn, tasks, processes, partial(initializer, *initargs), on_result,
                     window or processes * 4)


def decode_all(
    paths: Sequence[bytes],
    px_sizes: tuple[int, ...],
    processes: int,
    max_pixels: int | None,
    on_result: Callable[[list[Decoded]], None],
    executor: Executor | None = None,
    fast: bool = False,
) -> None:
    """Decode every path, handing results to ``on_result`` in completion order.

    ``executor``: decode there instead of in a pool of our own (see ``decode_on``);
    ``fast``: the fast recipe (decode.py)."""
    if executor is not None and paths:
        decode_on(executor, paths, px_sizes, max_pixels, on_result, processes=processes,
                  fast=fast)
        return
    fn = partial(decode_batch, px_sizes=px_sizes, fast=fast)
    suspects = map_batches(fn, paths, on_result, processes=processes,
                           initializer=init_worker, initargs=(max_pixels,))
    while suspects:
        # one file per task, one in flight (the culprit is known); a file that still kills
        # its worker is recorded as invalid
        crashed = map_batches(fn, suspects, on_result, processes=1, initializer=init_worker,
                              initargs=(max_pixels,), batch=1, window=1, isolate=True)
        if crashed:
            on_result([_crash_result(crashed[0])])
            suspects = crashed[1:]
        else:
            suspects = []


#: files per task on an outside executor (a Dask cluster): a network round trip per task
EXECUTOR_TASK_FILES = 32
#: the smallest task the batches shrink to at the end of an update (see ``tapered``)
EXECUTOR_TASK_MIN_FILES = 4


def tapered(items: Sequence[T], batch: int, window: int,
            smallest: int = EXECUTOR_TASK_MIN_FILES) -> list[list[T]]:
    """``items`` in consecutive batches of ``batch`` that shrink once fewer than ``window``
    full batches are left (each takes ``remaining / window``, at least ``smallest``): the
    last tasks are short, so no worker waits long for another's last big batch."""
    out: list[list[T]] = []
    at, n = 0, len(items)
    while at < n:
        size = max(smallest, min(batch, -(-(n - at) // window)))
        out.append(list(items[at : at + size]))
        at += size
    return out


def decode_task(paths: list[bytes], px_sizes: tuple[int, ...], max_pixels: int | None,
                fast: bool = False) -> list[Decoded]:
    """One executor task: paths in, tensors out (workers need the same file paths, never
    the catalog). Sets the worker's bomb limit first: it may be a fresh process or thread."""
    init_worker(max_pixels)
    with _heap_reused():
        return decode_batch(paths, px_sizes, fast)


#: glibc's mallopt parameters, and their values while a worker decodes (our own pool's
#: workers for good, ``_keep_freed_memory``; a task elsewhere while it runs, ``_heap_reused``)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TASK_MMAP_THRESHOLD = 64 << 20
_TASK_TRIM_THRESHOLD = 256 << 20
_GLIBC_DEFAULT_THRESHOLD = 128 << 10
_heap_lock = threading.Lock()
_heap_tasks = 0


@contextlib.contextmanager
def _heap_reused() -> Iterator[None]:
    """Keep the decoder's large buffers on the heap while a task runs, then give the memory
    back. Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also
    freezes glibc's mmap threshold at 128 KiB: every full-size image buffer is then a fresh
    ``mmap`` and ``munmap``, 7x the page faults and 4-8x the system time of a decode in our
    own pool (measured on the benchmark corpus). Only done where that variable is set (the
    process's malloc was pinned already) and glibc is there; the pinned values come back
    when the last running task ends, followed by ``malloc_trim``."""
    global _heap_tasks
    pinned = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    libc = _glibc() if pinned is not None else None
    if libc is None:
        yield
        return
    with _heap_lock:
        _heap_tasks += 1
        if _heap_tasks == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, _TASK_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _TASK_TRIM_THRESHOLD)
    try:
        yield
    finally:
        with _heap_lock:
            _heap_tasks -= 1
            if _heap_tasks == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _env_int("MALLOC_MMAP_THRESHOLD_"))
                libc.mallopt(_M_TRIM_THRESHOLD, _env_int("MALLOC_TRIM_THRESHOLD_"))
                libc.malloc_trim(0)


def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return _GLIBC_DEFAULT_THRESHOLD


_libc: Any = None


def _glibc() -> Any:
    """glibc through ctypes (None elsewhere: musl, macOS, Windows)."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL("libc.so.6")
                if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") and \
                        hasattr(lib, "gnu_get_libc_version"):
                    _libc = lib
            except OSError:
                pass
    return _libc or None


def decode_on(
    executor: Executor,
    paths: Sequence[bytes],
    px_sizes: tuple[int, ...],
    max_pixels: int | None,
    on_result: Callable[[list[Decoded]], None],
    *,
    batch: int = EXECUTOR_TASK_FILES,
    window: int = 16,
    processes: int = 1,
    fast: bool = False,
) -> None:
    """Decode on any ``concurrent.futures`` executor (``distributed.Client.get_executor()``,
    a thread or process pool): batches of paths (``tapered``: up to ``batch``, smaller at
    the end), at most ``window`` tasks in flight.

    A task that fails (its worker died: Dask reports ``KilledWorker`` after its retries) is
    retried one file per task; a file that fails alone is recorded as invalid. If the
    executor itself breaks, the rest is decoded here, in our own crash-proof pool.
    """
    from concurrent.futures import BrokenExecutor

    fn = partial(decode_task, px_sizes=px_sizes, max_pixels=max_pixels, fast=fast)
    tasks = tapered(paths, batch, window)
    try:
        lost = _run_executor(executor, fn, tasks, on_result, window)
        if lost:
            for bad in _run_executor(executor, fn, [[p] for p in lost], on_result, window):
                on_result([_crash_result(bad)])
    except BrokenExecutor as exc:
        done = set(exc.args[1]) if len(exc.args) > 1 else set()
        rest = [p for p in paths if p not in done]
        decode_all(rest, px_sizes, processes, max_pixels, on_result, fast=fast)


def _run_executor(
    executor: Executor, fn: Callable[[list[T]], list[R]], tasks: list[list[T]],
    on_result: Callable[[list[R]], None], window: int,
) -> list[T]:
    """Tasks on an outside executor, bounded in flight; the items of failed tasks back.

    Raises ``BrokenExecutor(msg, handled_items)`` when the executor stops taking work."""
    from concurrent.futures import BrokenExecutor

    pending: deque[list[T]] = deque(tasks)
    inflight: dict[Future[list[R]], list[T]] = {}
    lost: list[T] = []
    handled: list[T] = []
    while pending or inflight:
        while pending and len(inflight) < window:
            task = pending.popleft()
            try:
                inflight[executor.submit(fn, task)] = task
            except (BrokenExecutor, RuntimeError) as exc:  # shut down or broken
                raise BrokenExecutor(str(exc), handled) from exc
        done, _ = wait(inflight, return_when=FIRST_COMPLETED)
        for fut in done:
            task = inflight.pop(fut)
            try:
                results = fut.result()
            except BrokenExecutor as exc:
                raise BrokenExecutor(str(exc), handled) from exc
            except Exception:  # the task's worker died or the task raised: retry smaller
                lost.extend(task)
                continue
            on_result(results)
            handled.extend(task)
    return lost


def _worker_init(init: Callable[[], None], parent: int) -> None:
    """Workers ignore Ctrl-C (the main process decides, commits what is done, and stops
    them) and exit by themselves when the main process is killed: their queue pipes would
    otherwise keep them waiting forever."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _keep_freed_memory()
    init()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _keep_freed_memory() -> None:
    """glibc: let a worker reuse the memory of the last decoded image for the next one
    instead of mapping fresh, zero-filled pages from the kernel for every image (about 5%
    of a cold update's CPU, docs/performance.md). Elsewhere a no-op. (A task on an outside
    executor does the same while it runs: ``_heap_reused``.)"""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _TASK_MMAP_THRESHOLD)  # big buffers from the heap
        libc.mallopt(_M_TRIM_THRESHOLD, _TASK_TRIM_THRESHOLD)  # keep this much freed memory


def _exit_with_parent(parent: int) -> None:
    import time

    while True:
        time.sleep(1.0)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass


def _crash_result(path: bytes) -> Decoded:
    try:
        st = os.stat(path)
    except OSError:
        return Decoded(path, gone=True)
    return Decoded(path, st.st_size, st.st_mtime_ns, st.st_ino,
                   error="decoder crashed on this file (worker process died)")


def _run_pool(
    fn: Callable[[list[T]], list[R]],
    tasks: list[list[T]],
    processes: int,
    init: Callable[[], None],
    on_result: Callable[[list[R]], None],
    window: int,
) -> list[T]:
    """Run tasks with at most ``window`` in flight; returns the items of lost tasks."""
    pending: deque[list[T]] = deque(tasks)
    lost: list[T] = []
    with _main_not_reimported():
        executor = ProcessPoolExecutor(
            max_workers=processes, mp_context=_context(),
            initializer=_worker_init, initargs=(init, os.getpid()),
        )
        inflight: dict[Future[list[R]], list[T]] = {}
        try:
            while pending or inflight:
                while pending and len(inflight) < window:
                    task = pending.popleft()
                    try:
                        inflight[executor.submit(fn, task)] = task
                    except BrokenProcessPool:
                        pending.appendleft(task)
                        raise
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = inflight.pop(fut)
                    try:
                        results = fut.result()
                    except BrokenProcessPool:
                        lost.extend(task)
                        continue
                    on_result(results)
                if lost:
                    raise BrokenProcessPool("a worker died")
        except BrokenProcessPool:
            for task in inflight.values():
                lost.extend(task)
            for t in pending:
                lost.extend(t)
            inflight.clear()
            pending.clear()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    return lost
