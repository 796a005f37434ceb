"""Decode files in worker processes: spawn/forkserver, bounded in-flight work, crash-proof.

Workers never touch the catalog; they return values. A worker that dies (a decoder crash
on hostile input) breaks the pool: the files of the lost tasks are retried one by one in a
fresh pool, so only the file that kills a decoder is recorded invalid.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from .decode import Decoded, decode_batch, init_worker

TASK_FILES = 8  # files per task: amortises pickling, keeps the tail short
INLINE_BELOW = 8  # fewer files than this are decoded in-process: no pool start-up cost


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


def decode_all(
    paths: Sequence[bytes],
    px_sizes: tuple[int, ...],
    processes: int,
    max_pixels: int | None,
    on_result: Callable[[list[Decoded]], None],
) -> None:
    """Decode every path, handing results to ``on_result`` in completion order."""
    if not paths:
        return
    if processes <= 1 or len(paths) < INLINE_BELOW:
        init_worker(max_pixels)
        for i in range(0, len(paths), TASK_FILES):
            on_result(decode_batch(list(paths[i : i + TASK_FILES]), px_sizes))
        return
    tasks = [list(paths[i : i + TASK_FILES]) for i in range(0, len(paths), TASK_FILES)]
    suspects = _run_pool(tasks, px_sizes, processes, max_pixels, on_result)
    while suspects:
        # one file per task; a file that still kills its worker is recorded as invalid
        single = [[p] for p in suspects]
        crashed = _run_pool(single, px_sizes, 1, max_pixels, on_result, stop_at_first_crash=True)
        if crashed:
            bad = crashed[0]
            on_result([_crash_result(bad)])
            suspects = crashed[1:]
        else:
            suspects = []


def _worker_init(max_pixels: int | None, parent: int) -> None:
    """Workers ignore Ctrl-C (the main process decides, commits what is done, and stops
    them) and exit by themselves when the main process is killed: their queue pipes would
    otherwise keep them waiting forever."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init_worker(max_pixels)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


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
    tasks: list[list[bytes]],
    px_sizes: tuple[int, ...],
    processes: int,
    max_pixels: int | None,
    on_result: Callable[[list[Decoded]], None],
    stop_at_first_crash: bool = False,
) -> list[bytes]:
    """Run tasks with at most 4 per worker in flight; returns the paths of lost tasks."""
    window = 1 if stop_at_first_crash else processes * 4  # one in flight: culprit is known
    pending: deque[list[bytes]] = deque(tasks)
    lost: list[bytes] = []
    with _main_not_reimported():
        executor = ProcessPoolExecutor(
            max_workers=processes, mp_context=_context(),
            initializer=_worker_init, initargs=(max_pixels, os.getpid()),
        )
        inflight: dict[Future[list[Decoded]], list[bytes]] = {}
        try:
            while pending or inflight:
                while pending and len(inflight) < window:
                    task = pending.popleft()
                    try:
                        inflight[executor.submit(decode_batch, task, px_sizes)] = task
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
                    raise BrokenProcessPool("a decode worker died")
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
