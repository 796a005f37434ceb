"""difPy 4.x's ``build`` and ``search`` classes over the catalog (``import difpy_index as difPy``).

Parameter checks run in difPy's order with difPy's wording, but raise ``UsageError`` (a
``ValueError``). ``build`` is an ``Index.update`` of the default catalog (or ``catalog=``),
so building the same folders twice decodes nothing the second time; ``search`` is an
``Index.search`` restricted to the build's folders. Deliberate differences from difPy are
listed in docs/semantics.md.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .decode import DEFAULT_PX_SIZE, MAX_PX_SIZE, MIN_PX_SIZE
from .errors import UsageError
from .params import processes_fault
from .paths import directly_in, is_below

if TYPE_CHECKING:
    import numpy as np

    from .results import SearchResult

_LAZY_RENAMED = (
    'parameter "lazy" was renamed to "same_dim" in difPy 4.2; difpy-index accepts both '
    "(pass only one)"
)


class DirectoryNotFoundError(UsageError, FileNotFoundError):
    """A directory argument that does not exist: a usage error that difPy scripts
    catching ``FileNotFoundError`` still catch."""


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f'Invalid value for "{name}" parameter: must be of type BOOL.')
    return value


def _check_processes(value: object) -> int | None:
    """None (all cores) or an int >= 1; more than the cores is capped, not refused."""
    fault = processes_fault(value)
    if fault is not None:
        need = "of type INT" if fault == "type" else ">= 1"
        raise UsageError(f'Invalid value for "processes" parameter: must be {need}.')
    return value if isinstance(value, int) else None


def _flatten_dirs(directory: tuple[Any, ...]) -> list[str]:
    """Strings, path-likes or lists/tuples of them (flattened), as difPy accepts."""
    if not directory:
        raise UsageError("Invalid directory parameter: no directory provided.")
    out: list[str] = []
    for arg in directory:
        items: Iterable[Any] = arg if isinstance(arg, (list, tuple)) else (arg,)
        for d in items:
            if isinstance(d, (str, os.PathLike)):
                out.append(os.fspath(d))
            else:
                raise UsageError(
                    "Invalid directory parameter: directories must be of type LIST or STRING."
                )
    if not out:
        raise UsageError("Invalid directory parameter: no directory provided.")
    if len(set(out)) != len(out):
        raise UsageError(
            "Invalid directory parameters: invalid attempt to compare a directory with itself."
        )
    for d in out:
        if not os.path.isdir(os.path.expanduser(d)):
            raise DirectoryNotFoundError(f'Directory "{d}" does not exist')
    return out


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).isoformat()


class _DifpyProgress:
    """difPy's one-line ``<label>: [NN%]`` progress on stdout, rewritten with ``\\r``."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self.total = 0
        self.done = 0
        self._shown = -1

    def _show(self, pct: int) -> None:
        if self.enabled and pct != self._shown:
            self._shown = pct
            sys.stdout.write(f"\r{self.label}: [{pct}%]")
            sys.stdout.flush()

    def start(self, total: int, label: str) -> None:
        self.total, self.done = total, 0
        self._show(0 if total else 100)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.total:
            self._show(min(100, int(100 * self.done / self.total)))

    def finish(self) -> None:
        self._show(100)

    def end(self) -> None:
        if self.enabled:
            self._show(100)
            sys.stdout.write("\n")
            sys.stdout.flush()


def check_search_args(
    similarity: object,
    rotate: object = True,
    same_dim: object = None,
    show_progress: object = True,
    processes: object = None,
    chunksize: object = None,
    lazy: object = None,
) -> float:
    """``search``'s parameter checks in difPy's order and wording; returns the threshold.

    Separate from ``Search`` so the command line can refuse a bad value before building.
    """
    from .params import parse_similarity

    if isinstance(similarity, str) and similarity.strip().lower() in ("low", "normal", "high"):
        raise UsageError(
            'Since difPy v3.0.8, "similarity" parameter only accepts "duplicates" and '
            '"similar" as input options.'
        )
    try:
        threshold = parse_similarity(similarity)
    except UsageError:
        raise UsageError(
            'Invalid value for "similarity" parameter: must be "duplicates", "similar", '
            '"near" or of type INT or FLOAT (>= 0).'
        ) from None
    _check_bool("rotate", rotate)
    if same_dim is not None:
        _check_bool("same_dim", same_dim)
    if lazy is not None:
        _check_bool("lazy", lazy)
        if same_dim is not None and same_dim != lazy:
            raise UsageError(_LAZY_RENAMED)
    _check_bool("show_progress", show_progress)
    _check_processes(processes)
    if chunksize is not None:
        if isinstance(chunksize, bool) or not isinstance(chunksize, int):
            raise UsageError('Invalid value for "chunksize" parameter: must be of type INT or None.')
        if chunksize < 1:
            raise UsageError('Invalid value for "chunksize" parameter: must be >= 1.')
    return threshold


class Build:
    """difPy's ``build``: index the folders in the catalog and expose difPy's attributes.

    ``stats`` has difPy's shape plus ``decoded`` / ``reused`` / ``removed`` / ``skipped``
    (in ``stats["process"]["build"]``). The ``_tensor_dictionary`` family is loaded from
    the catalog on first access (ids are 0..n-1 in path order).
    """

    def __init__(
        self,
        *directory: Any,
        recursive: bool = True,
        in_folder: bool = False,
        limit_extensions: bool = True,
        px_size: int = DEFAULT_PX_SIZE,
        show_progress: bool = True,
        processes: int | None = None,
        catalog: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        from .index import Index

        t0 = time.time()
        self.directory = _flatten_dirs(directory)
        self.recursive = _check_bool("recursive", recursive)
        self.in_folder = _check_bool("in_folder", in_folder)
        self.limit_extensions = _check_bool("limit_extensions", limit_extensions)
        if isinstance(px_size, bool) or not isinstance(px_size, int):
            raise UsageError('Invalid value for "px_size" parameter: must be of type INT.')
        if not MIN_PX_SIZE <= px_size <= MAX_PX_SIZE:
            raise UsageError(
                f'Invalid value for "px_size" parameter: must be between {MIN_PX_SIZE} and '
                f"{MAX_PX_SIZE}."
            )
        self.px_size = px_size
        self.show_progress = _check_bool("show_progress", show_progress)
        self.processes = _check_processes(processes)
        # difPy 4.1's ``lazy`` (now ``same_dim``): remembered as the search default
        self.lazy: bool | None = None
        if "lazy" in kwargs:
            self.lazy = _check_bool("lazy", kwargs.pop("lazy"))
        self.catalog_path = catalog

        progress = _DifpyProgress("difPy preparing files", self.show_progress)
        with Index.open(catalog) as idx:
            self.catalog_path = idx.path
            report = idx.update(
                self.directory, px_size=px_size, recursive=self.recursive,
                limit_extensions=self.limit_extensions, processes=self.processes,
                progress=progress, fast=False,  # difPy's tensors, bit for bit
            )
            self._real_dirs: list[bytes] = [os.fsencode(r) for r in report.roots]
            invalid = idx.invalid_files(self._real_dirs)
            if not self.recursive:
                invalid = {p: r for p, r in invalid.items()
                           if directly_in(p, set(self._real_dirs))}
        progress.end()
        t1 = time.time()
        self.report = report
        self._invalid_files: dict[str, str] = {os.fsdecode(p): r for p, r in invalid.items()}
        self._loaded: tuple[dict[int, Any], dict[int, str], dict[int, tuple[int, int, int]]] | None = None
        self.stats: dict[str, Any] = {
            "directory": sorted(self.directory),
            "process": {
                "build": {
                    "duration": {"start": _iso(t0), "end": _iso(t1),
                                 "seconds_elapsed": round(t1 - t0, 4)},
                    "parameters": {
                        "recursive": self.recursive, "in_folder": self.in_folder,
                        "limit_extensions": self.limit_extensions, "px_size": self.px_size,
                        "processes": self.processes,
                    },
                    "total_files": {"count": report.files + len(self._invalid_files)},
                    "invalid_files": {"count": len(self._invalid_files),
                                      "logs": dict(self._invalid_files)},
                    "decoded": report.decoded,
                    "reused": report.reused,
                    "removed": report.removed,
                    "skipped": report.skipped,
                    "catalog": str(self.catalog_path),
                },
            },
        }

    # -- difPy's dictionaries, loaded lazily from the catalog ---------------------------
    def _load(self) -> tuple[dict[int, Any], dict[int, str], dict[int, tuple[int, int, int]]]:
        if self._loaded is None:
            from .index import Index

            with Index.open(self.catalog_path) as idx:
                data = idx.search_input(self.px_size, self._real_dirs)
            tops = set(self._real_dirs)
            tensors: dict[int, np.ndarray] = {}
            names: dict[int, str] = {}
            shapes: dict[int, tuple[int, int, int]] = {}
            n = 0
            for i, path in enumerate(data.paths):
                if not self.recursive and not directly_in(path, tops):
                    continue
                tensors[n] = data.tensors[i]
                names[n] = os.fsdecode(path)
                shapes[n] = (int(data.heights[i]), int(data.widths[i]), 3)
                n += 1
            self._loaded = (tensors, names, shapes)
        return self._loaded

    @property
    def _tensor_dictionary(self) -> dict[int, np.ndarray]:
        return self._load()[0]

    @property
    def _filename_dictionary(self) -> dict[int, str]:
        return self._load()[1]

    @property
    def _id_to_shape_dictionary(self) -> dict[int, tuple[int, int, int]]:
        return self._load()[2]

    @property
    def _group_to_id_dictionary(self) -> dict[str, list[int]]:
        """With ``in_folder``: ``group_<j>`` (the j-th directory) -> its image ids."""
        if not self.in_folder:
            return {}
        out: dict[str, list[int]] = {}
        for j, d in enumerate(self._real_dirs):
            out[f"group_{j}"] = [
                i for i, p in self._filename_dictionary.items() if is_below(os.fsencode(p), d)
            ]
        return out

    @property
    def _id_to_group_dictionary(self) -> dict[int, str]:
        return {i: g for g, ids in self._group_to_id_dictionary.items() for i in ids}

    def __repr__(self) -> str:
        return f"<difpy_index build of {self.directory!r} in {self.catalog_path}>"


class Search:
    """difPy's ``search``: ``result``, ``lower_quality``, ``stats``, ``move_to``, ``delete``.

    ``stats`` is this search's own copy (difPy writes into the build's dict). Paths are
    absolute real paths; groups are keyed by the best image (SEMANTICS.md section 4).
    """

    def __init__(
        self,
        difpy_obj: Build,
        similarity: str | int | float = "duplicates",
        rotate: bool = True,
        same_dim: bool | None = None,
        show_progress: bool = True,
        processes: int | None = None,
        chunksize: int | None = None,
        **kwargs: Any,
    ) -> None:
        from .index import Index

        if not isinstance(difpy_obj, Build):
            raise UsageError(
                'Invalid value for "difpy_obj" parameter: must be the object returned by '
                "difpy_index.build(...)."
            )
        self._build = difpy_obj
        lazy = kwargs.pop("lazy", None)
        self.similarity_mse = check_search_args(
            similarity, rotate=rotate, same_dim=same_dim, show_progress=show_progress,
            processes=processes, chunksize=chunksize, lazy=lazy,
        )
        self.similarity = similarity
        self.rotate = rotate
        if same_dim is None:
            same_dim = lazy if lazy is not None else difpy_obj.lazy
        self.show_progress = show_progress
        self.processes = _check_processes(processes)
        self.chunksize = chunksize

        progress = _DifpyProgress("difPy searching files", self.show_progress)
        progress.start(1, "search")
        index = Index.open(difpy_obj.catalog_path)
        try:
            found = index.search(
                difpy_obj._real_dirs, similarity=similarity, rotate=self.rotate,
                same_dim=same_dim, in_folder=difpy_obj.in_folder, px_size=difpy_obj.px_size,
                processes=self.processes, recursive=difpy_obj.recursive,
                keep="difpy",  # the drop-in ranks keys exactly as difPy does
            )
        finally:
            index.close()  # SQLAlchemy's engine reconnects on demand (move_to / delete use it)
        progress.end()
        self._found: SearchResult = found
        self.same_dim = found.same_dim
        self.result: dict[str, Any] = found.result
        self.lower_quality: list[str] = list(found.lower_quality)
        search_stats = copy.deepcopy(found.stats["process"]["search"])
        search_stats["parameters"]["chunksize"] = chunksize
        self.stats: dict[str, Any] = copy.deepcopy(difpy_obj.stats)
        self.stats["process"]["search"] = search_stats

    @property
    def groups(self) -> Any:
        """The groups with each member's MSE and matching rotation (``GroupInfo``)."""
        return self._found.groups

    def check_move_to(self, destination_path: str | os.PathLike[str]) -> None:
        """Refuse (exit 2) a destination ``move_to`` would refuse, before anything is written."""
        self._found.check_move_to(_destination(destination_path))

    def move_to(self, destination_path: str | os.PathLike[str]) -> Any:
        """Move the lower-quality files into ``destination_path``, never overwriting a file;
        each file is checked against the catalog first. Returns the ``ActionReport``."""
        report = self._found.move_to(_destination(destination_path))
        info = report.to_dict()
        moved = [to for _src, to in info.get("moved", [])]
        print(f'Moved {len(moved)} file(s) to "{os.fspath(destination_path)}"')
        self.lower_quality = moved
        return report

    def delete(self, silent_del: bool = False) -> Any:
        """Delete the lower-quality files (asks first unless ``silent_del``); each is checked
        against the catalog first, and nothing to delete is a message, not a crash."""
        _check_bool("silent_del", silent_del)
        if not self.lower_quality:
            print("Deleted 0 file(s)")
            return None
        report = self._found.delete(silent_del=silent_del)
        if report.canceled:
            print("Deletion canceled.")
            return report
        info = report.to_dict()
        print(f"Deleted {len(info.get('deleted', []))} file(s)")
        return report

    def __repr__(self) -> str:
        return f"<difpy_index search: {len(self.result)} groups, {len(self.lower_quality)} lower quality>"


def _destination(destination_path: Any) -> str:
    """difPy's check of ``move_to``'s argument (exit 2 on anything but a path)."""
    if not isinstance(destination_path, (str, os.PathLike)):
        raise UsageError('Invalid value for "destination_path" parameter: must be of type STR.')
    return os.fspath(destination_path)


def build(*directory: Any, **kwargs: Any) -> Build:
    """``difPy.build(...)``: an incremental update of the default catalog (or ``catalog=``)."""
    return Build(*directory, **kwargs)


def search(difpy_obj: Any, **kwargs: Any) -> Search:
    """``difPy.search(build, ...)``: difPy's search over the build's folders."""
    return Search(difpy_obj, **kwargs)
