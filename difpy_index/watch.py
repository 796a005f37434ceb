"""Keep the catalog current while files arrive, change, move and disappear (STYLE.md D11).

Events are hints, not truth: the observer's events only mark paths dirty; a debouncer
gathers them into batches, and each batch runs the ordinary incremental update
restricted to those paths (``Index.update_paths``), which re-stats every file, decodes
only what changed and lets a moved row follow its file. Start-up, and a watched root that
comes back, run a full ``Index.update`` (reconcile), so missed events cost nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .decode import DEFAULT_PX_SIZE
from .errors import UsageError
from .paths import has_hidden_part, owning_root, rel_below

if TYPE_CHECKING:
    from .index import Index, PathLike
    from .update import UpdateReport

log = logging.getLogger(__name__)

#: at most this many dirty files are still applied when stopping; the rest wait for the
#: reconcile of the next start
FLUSH_MAX = 256
#: seconds of work a stop request still allows before the current batch is cut short
STOP_GRACE = 2.0


# -- pure pieces: event -> dirty set --------------------------------------------------------
@dataclass(slots=True)
class Pending:
    """Dirty paths gathered from events: files to re-stat, folders to rescan."""

    files: set[bytes] = field(default_factory=set)
    dirs: set[bytes] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.files or self.dirs)

    def __len__(self) -> int:
        return len(self.files) + len(self.dirs)

    def merge(self, other: Pending) -> None:
        self.files |= other.files
        self.dirs |= other.dirs


@dataclass(frozen=True, slots=True)
class PathFilter:
    """Which event paths matter: below a root, not hidden (unless asked), an image
    extension (the rule ``scan`` uses), and never the catalog's own files."""

    roots: tuple[bytes, ...]
    catalog: bytes
    extensions: frozenset[str] | None
    include_hidden: bool = False

    def _rel(self, path: bytes) -> bytes | None:
        for r in self.roots:
            rel = rel_below(path, r)
            if rel is not None:
                return rel
            if path == r:
                return b""
        return None

    def is_catalog_file(self, path: bytes) -> bool:
        c = self.catalog
        return path == c or path.startswith(c + b"-") or path.startswith(c + b".")

    def wants_dir(self, path: bytes) -> bool:
        rel = self._rel(path)
        if rel is None:
            return False
        return self.include_hidden or not has_hidden_part(rel)

    def wants_file(self, path: bytes) -> bool:
        from .scan import extension_of

        if self.is_catalog_file(path) or not self.wants_dir(path) or self._rel(path) == b"":
            return False
        return self.extensions is None or extension_of(path) in self.extensions


def note_event(pending: Pending, kind: str, is_dir: bool, src: bytes, dest: bytes | None,
               flt: PathFilter) -> bool:
    """Fold one watchdog event into ``pending``. A move is "src gone + dest dirty"; the
    update then lets the row follow (same size, mtime and inode) without a decode."""
    hit = False
    if kind in ("opened", "closed_no_write"):
        return hit
    if is_dir:
        if kind == "modified":
            return hit  # a folder's mtime changes with every entry; its files have own events
        for p in (src, dest) if kind == "moved" else (src,):
            if p and flt.wants_dir(p):
                pending.dirs.add(p)
                hit = True
        return hit
    for p in (src, dest) if kind == "moved" else (src,):
        if p and flt.wants_file(p):
            pending.files.add(p)
            hit = True
    return hit


# -- the debouncer ---------------------------------------------------------------------------
class Debouncer:
    """Gathers dirty paths; ``take`` hands out a batch after ``quiet`` seconds without new
    events (or ``max_delay`` after the first one, so a steady stream still gets applied).
    Paths can be put back with a delay (a file still growing, a locked catalog)."""

    def __init__(self, quiet: float, max_delay: float) -> None:
        self.quiet = quiet
        self.max_delay = max(max_delay, quiet)
        self._cond = threading.Condition()
        self._pending = Pending()
        self._first = 0.0
        self._last = 0.0
        self._later: list[tuple[float, Pending]] = []
        self._closed = False

    def add(self, change: Callable[[Pending], bool]) -> None:
        """Apply ``change`` to the pending set; if it mattered, restart the quiet period."""
        with self._cond:
            empty = not self._pending
            if change(self._pending):
                now = time.monotonic()
                if empty:
                    self._first = now
                self._last = now
                self._cond.notify_all()

    def put_back(self, pending: Pending, delay: float) -> None:
        if not pending:
            return
        with self._cond:
            self._later.append((time.monotonic() + delay, pending))
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def size(self) -> int:
        with self._cond:
            return len(self._pending) + sum(len(p) for _, p in self._later)

    def take(self, timeout: float, *, now_anyway: bool = False) -> Pending | None:
        """Wait up to ``timeout`` for a ready batch (None if none); ``now_anyway`` skips
        the quiet period and the delays (used when stopping)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                out = Pending()
                due = [p for t, p in self._later if now_anyway or t <= now]
                if self._pending and (
                    now_anyway or now - self._last >= self.quiet or now - self._first >= self.max_delay
                ):
                    out.merge(self._pending)
                    self._pending = Pending()
                if due:
                    self._later = [(t, p) for t, p in self._later if not (now_anyway or t <= now)]
                    for p in due:
                        out.merge(p)
                if out or now_anyway:
                    return out or None
                if self._closed or now >= deadline:
                    return None
                wake = [deadline]
                if self._pending:
                    wake.append(min(self._last + self.quiet, self._first + self.max_delay))
                wake.extend(t for t, _ in self._later)
                self._cond.wait(max(0.005, min(wake) - now))


# -- the watcher -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WatchEvent:
    """What the watcher did, for ``on_event`` callbacks: kind is one of ``reconciled``,
    ``batch``, ``root-missing``, ``root-back``, ``retry``, ``error``, ``duplicate``."""

    kind: str
    message: str
    report: UpdateReport | None = None
    paths: tuple[str, ...] = ()


class _Stopped(Exception):
    """Raised from the progress hook to cut work short once a stop's grace has passed."""


class _StopCheck:
    """A Progress that lets a running update end early (its finished batch is committed)."""

    def __init__(self, watcher: Watcher) -> None:
        self._w = watcher

    def start(self, total: int, label: str) -> None:
        self._check()

    def advance(self, n: int = 1) -> None:
        self._check()

    def finish(self) -> None:
        pass

    def _check(self) -> None:
        w = self._w
        if w._stopping.is_set() and time.monotonic() >= w._stop_deadline:
            raise _Stopped


class Watcher:
    """Follow ``dirs`` with a watchdog observer and keep the catalog of ``index`` current.

    Use as a context manager (or ``start()``/``stop()``). ``debounce`` is the quiet time
    that closes a batch; ``stable`` how long a file's size and mtime must stay put before
    it is decoded; ``interval`` the polling period and root health-check period.
    """

    def __init__(
        self,
        index: Index,
        dirs: Sequence[PathLike],
        *,
        polling: bool = False,
        px_size: int | Sequence[int] = DEFAULT_PX_SIZE,
        processes: int | None = None,
        debounce: float = 1.0,
        max_delay: float = 5.0,
        stable: float = 1.0,
        interval: float = 1.0,
        include_hidden: bool = False,
        limit_extensions: bool = True,
        report_duplicates: bool = False,
        on_event: Callable[[WatchEvent], None] | None = None,
    ) -> None:
        from .decode import image_extensions
        from .scan import check_dirs

        if not dirs:
            raise UsageError("watch needs at least one folder")
        self.index = index
        self.roots: list[bytes] = check_dirs(dirs)
        self.polling = polling
        self.px_size = px_size
        self.processes = processes
        self.stable = stable
        self.interval = interval
        self.include_hidden = include_hidden
        self.limit_extensions = limit_extensions
        self.report_duplicates = report_duplicates
        self.on_event = on_event
        self.filter = PathFilter(
            tuple(self.roots), os.path.realpath(os.fsencode(str(index.path))),
            image_extensions() if limit_extensions else None, include_hidden,
        )
        self.debouncer = Debouncer(debounce, max_delay)
        self.ready = threading.Event()  # set after the first reconcile
        self.batches = 0
        self._stopping = threading.Event()
        self._stop_deadline = 0.0
        self._observer: Any = None
        self._thread: threading.Thread | None = None
        self._idents: dict[bytes, tuple[int, int] | None] = {}
        self._seen: dict[bytes, tuple[int, int]] = {}
        self._progress = _StopCheck(self)
        self._retry_delay = 0.0
        self._to_reconcile: list[bytes] = []

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the observer and the worker; the reconcile runs in the worker."""
        if self._thread is not None:
            return
        known = {os.fsencode(r) for r in self.index.roots()}
        for r in self.roots:
            if not os.path.isdir(r) and r not in known:
                raise UsageError(f"folder does not exist: {os.fsdecode(r)}")
        self._idents = {r: _ident(r) for r in self.roots}
        self._start_observer()
        self._thread = threading.Thread(target=self._run, name="difpy-index-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop observing, apply what is already pending (briefly), join every thread."""
        if self._thread is None:
            return
        self._stop_deadline = time.monotonic() + STOP_GRACE
        self._stopping.set()
        self._stop_observer()
        self.debouncer.close()
        self._thread.join(timeout)
        self._thread = None
        self._stop_observer()  # in case the worker restarted it while we were stopping

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_idle(self, timeout: float) -> bool:
        """True once reconciled and nothing is pending (for tests and scripts)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ready.is_set() and self.debouncer.size() == 0 and not self._busy:
                return True
            time.sleep(0.02)
        return False

    _busy = False

    # -- observer -------------------------------------------------------------------------
    def _start_observer(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler

        flt = self.filter
        deb = self.debouncer

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                src = os.fsencode(event.src_path)
                dest = os.fsencode(event.dest_path) if getattr(event, "dest_path", "") else None
                deb.add(lambda p: note_event(p, event.event_type, event.is_directory, src, dest, flt))

        up = [r for r in self.roots if self._idents.get(r) is not None]
        observer = self._make_observer(self.polling)
        try:
            for r in up:
                observer.schedule(Handler(), os.fsdecode(r), recursive=True)
            observer.start()
        except OSError as exc:
            _stop_join(observer)
            if self.polling:
                raise
            self._say("error", logging.WARNING,
                      f"native file events unavailable ({exc.strerror or exc}); polling instead")
            self.polling = True
            observer = self._make_observer(True)
            for r in up:
                observer.schedule(Handler(), os.fsdecode(r), recursive=True)
            observer.start()
        self._observer = observer

    def _make_observer(self, polling: bool) -> Any:
        if polling:
            from watchdog.observers.polling import PollingObserver

            return PollingObserver(timeout=self.interval)
        from watchdog.observers import Observer

        return Observer(timeout=min(self.interval, 1.0))

    def _stop_observer(self) -> None:
        obs, self._observer = self._observer, None
        if obs is not None:
            _stop_join(obs)

    # -- worker ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._reconcile([r for r in self.roots if self._idents[r] is not None], "start")
            self.ready.set()
            while not self._stopping.is_set():
                try:
                    self._check_roots()
                    batch = self.debouncer.take(self.interval)
                    if batch and not self._stopping.is_set():
                        self._apply(batch)
                except _Stopped:
                    raise
                except Exception as exc:  # one bad moment must not end a weeks-long run
                    delay = self._backoff()
                    self._say("error", logging.WARNING,
                              f"watcher error ({_one_line(exc)}); continuing in {delay:.0f} s")
                    self._stopping.wait(delay)
            batch = self.debouncer.take(0, now_anyway=True)
            if batch:
                n = len(batch.files) + len(batch.dirs)
                if n <= FLUSH_MAX:
                    self._apply(batch, final=True)
                else:
                    self._say("error", logging.WARNING,
                              f"stopping with {n} changes pending; the next start reconciles them")
        except (_Stopped, KeyboardInterrupt):
            # KeyboardInterrupt: Ctrl-C reached the decode workers too (same process group)
            self._say("error", logging.WARNING, "stopped in the middle of a batch; finished files are saved")
        except Exception as exc:  # the worker must never die silently
            log.exception("watcher failed: %s", exc)
        finally:
            self.ready.set()

    def _reconcile(self, roots: list[bytes], why: str) -> None:
        if not roots:
            return
        while True:
            try:
                self._busy = True
                report = self.index.update(
                    roots, px_size=self.px_size, processes=self.processes,
                    include_hidden=self.include_hidden, limit_extensions=self.limit_extensions,
                    progress=self._progress,
                )
                break
            except _Stopped:
                raise
            except Exception as exc:
                if self._stopping.is_set():
                    raise _Stopped from exc
                delay = self._backoff()
                self._say("retry", logging.WARNING,
                          f"reconcile failed ({_one_line(exc)}); retrying in {delay:.0f} s")
                self._stopping.wait(delay)
            finally:
                self._busy = False
        self._retry_delay = 0.0
        self._say("reconciled", logging.INFO,
                  f"reconciled ({why}) {', '.join(os.fsdecode(r) for r in roots)}: {_summary(report)}",
                  report=report)

    def _check_roots(self) -> None:
        """A root that disappears (unmount) keeps its rows; one that comes back, or is a new
        folder in the same place, restarts the observer and is reconciled."""
        changed: list[bytes] = []
        back: list[bytes] = []
        for r in self.roots:
            now = _ident(r)
            was = self._idents.get(r)
            if now == was:
                continue
            self._idents[r] = now
            changed.append(r)
            if now is None:
                self._say("root-missing", logging.WARNING,
                          f"root {os.fsdecode(r)} disappeared (unmounted?); its catalog rows are "
                          f"kept until it comes back")
            else:
                self._say("root-back", logging.WARNING,
                          f"root {os.fsdecode(r)} is {'back' if was is None else 'a new folder'}; "
                          f"restarting the observer and reconciling")
                back.append(r)
        self._to_reconcile.extend(r for r in back if r not in self._to_reconcile)
        if (changed or self._observer is None) and not self._stopping.is_set():
            self._stop_observer()
            self._start_observer()  # on failure: retried on the next check (no observer)
        if self._to_reconcile:
            self._reconcile(list(self._to_reconcile), "root back")
            self._to_reconcile.clear()

    def _root_usable(self, root: bytes) -> bool:
        """Still the folder we scheduled: an unmount (even onto an empty mount point, which
        has another device) must not turn into deletions; the health check handles it."""
        ident = _ident(root)
        return ident is not None and ident == self._idents.get(root)

    def _apply(self, batch: Pending, final: bool = False) -> None:
        from .scan import ScanOptions, scan

        usable = {r for r in self.roots if self._root_usable(r)}
        files: set[bytes] = set()
        for p in batch.files:
            if owning_root(p, self.roots) in usable:
                files.add(p)
        options = ScanOptions(recursive=True, include_hidden=self.include_hidden,
                              extensions=self.filter.extensions)
        try:
            for d in batch.dirs:
                if d in self.roots or owning_root(d, self.roots) not in usable:
                    continue  # a root itself going or coming is the health check's business
                files.update(self.index.paths_below(d))
                if os.path.isdir(d):
                    files.update(f.path for f in scan([d], options).files)
        except Exception as exc:
            return self._retry(batch, exc)
        files = {p for p in files if self.filter.wants_file(p)}
        ready, later = self._split_stable(files, final)
        if later:
            self.debouncer.put_back(Pending(files=later), self.stable)
        if not ready:
            return
        try:
            self._busy = True
            report = self.index.update_paths(
                sorted(ready), [r for r in self.roots if r in usable], px_size=self.px_size,
                processes=self.processes, include_hidden=self.include_hidden,
                limit_extensions=self.limit_extensions, progress=self._progress,
            )
        except _Stopped:
            raise
        except Exception as exc:
            return self._retry(Pending(files=ready), exc)
        finally:
            self._busy = False
        self._retry_delay = 0.0
        self.batches += 1
        if report.deferred_paths:
            self.debouncer.put_back(Pending(files=set(report.deferred_paths)), self.stable)
        for path, reason in report.problems:
            self._say("error", logging.WARNING, f"{path}: {reason}")
        self._say("batch", logging.INFO, f"{len(ready)} changed paths: {_summary(report)}", report=report)
        if report.invalid and report.decoded:
            log.info("%d file(s) could not be decoded and are recorded invalid", report.invalid)
        if self.report_duplicates and report.decoded:
            self._duplicates(sorted(ready))

    def _split_stable(self, files: set[bytes], final: bool) -> tuple[set[bytes], set[bytes]]:
        """A file is ready when its last write is ``stable`` seconds old, or when its size
        and mtime equal those of the previous look (robust to clocks that disagree)."""
        ready: set[bytes] = set()
        later: set[bytes] = set()
        now = time.time_ns()
        for p in files:
            try:
                st = os.stat(p)
            except OSError:
                ready.add(p)  # gone: the update drops its row
                self._seen.pop(p, None)
                continue
            sig = (st.st_size, st.st_mtime_ns)
            if final or now - st.st_mtime_ns >= self.stable * 1e9 or self._seen.get(p) == sig:
                ready.add(p)
                self._seen.pop(p, None)
            else:
                self._seen[p] = sig
                later.add(p)
        return ready, later

    def _retry(self, batch: Pending, exc: Exception) -> None:
        delay = self._backoff()
        self._say("retry", logging.WARNING,
                  f"could not apply {len(batch)} changes ({_one_line(exc)}); retrying in {delay:.0f} s")
        self.debouncer.put_back(batch, delay)

    def _backoff(self) -> float:
        self._retry_delay = min(60.0, max(1.0, self._retry_delay * 2))
        return self._retry_delay

    def _duplicates(self, paths: list[bytes]) -> None:
        """Tell the user when an arriving file duplicates something already catalogued."""
        try:
            present = [p for p in paths if os.path.isfile(p)]
            for q in self.index.query(present):
                if q.matches:
                    others = ", ".join(m.path for m in q.matches[:3])
                    self._say("duplicate", logging.WARNING,
                              f"{q.query} duplicates {others}"
                              + (f" (+{len(q.matches) - 3} more)" if len(q.matches) > 3 else ""),
                              paths=(q.query, *(m.path for m in q.matches)))
        except Exception as exc:
            log.debug("duplicate check skipped: %s", _one_line(exc))

    def _say(self, kind: str, level: int, message: str, *, report: UpdateReport | None = None,
             paths: tuple[str, ...] = ()) -> None:
        log.log(level, "%s", message)
        if self.on_event is not None:
            try:
                self.on_event(WatchEvent(kind, message, report, paths))
            except Exception:
                log.exception("on_event callback failed")


def _ident(root: bytes) -> tuple[int, int] | None:
    try:
        st = os.stat(root)
    except OSError:
        return None
    import stat as stat_mod

    return (st.st_dev, st.st_ino) if stat_mod.S_ISDIR(st.st_mode) else None


def _stop_join(observer: Any) -> None:
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(10)
    except Exception as exc:  # a broken emitter must not block shutdown
        log.debug("observer stop: %s", _one_line(exc))


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _summary(report: UpdateReport) -> str:
    return (f"{report.decoded} decoded, {report.reused} reused, {report.renamed} moved, "
            f"{report.removed} removed, {report.invalid} invalid, {report.deferred} deferred "
            f"in {report.seconds:.2f} s")


def run_forever(
    index: Index,
    dirs: Iterable[PathLike],
    *,
    polling: bool = False,
    px_size: int = DEFAULT_PX_SIZE,
    processes: int | None = None,
    **kwargs: Any,
) -> None:
    """The ``watch`` command: watch until SIGINT or SIGTERM, then stop cleanly (exit 0)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.warning("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    saved = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Watcher(index, list(dirs), polling=polling, px_size=px_size, processes=processes,
                     **kwargs) as w:
            log.info("watching %s (%s observer); catalog %s",
                     ", ".join(os.fsdecode(r) for r in w.roots),
                     "polling" if w.polling else "native", index.path)
            while not stop.wait(1.0):
                if not w.alive:
                    raise RuntimeError("the watcher thread stopped unexpectedly")
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    log.info("stopped")
