"""difPy 4.x's own command line (``python dif.py -D A B -s similar``) over the catalog.

``python -m difpy_index.dif`` / ``difpy-index-dif`` take difPy's flags with difPy's
spellings and value parsing, and follow its flow: build, search, the three
``difPy_<timestamp>_*.json`` files, then move or delete. It is a thin shell over
``difpy_compat`` (itself over ``Index``), so a second run over the same folders decodes
nothing. Where difPy prints a traceback this prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .errors import DifpyIndexError, UsageError

_TRUE = ("yes", "true", "t", "y", "1")
_FALSE = ("no", "false", "f", "n", "0")

MUTUALLY_EXCLUSIVE = (
    '"move_to" and "delete" parameter are mutually exclusive. Please select one of them.'
)


def str_to_bool(value: str) -> bool:
    """difPy's ``_strtobool``: yes/true/t/y/1 and no/false/f/n/0, any case."""
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise argparse.ArgumentTypeError(
        f"Boolean value expected, got {value!r} (use True/False, yes/no, 1/0)"
    )


def int_or_str(value: str) -> int | str:
    """difPy's ``_convert_str_to_int``: an int when ``int()`` parses, else the string
    (``-s similar``, ``-s 5.5``); the build/search checks then judge it."""
    try:
        return int(value)
    except ValueError:
        return value


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (no usage block) and a ``UsageError``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="difpy-index-dif",
        description="Find duplicate or similar images, difPy's command line over the "
        "difpy-index catalog ($DIFPY_INDEX_CATALOG or the user data directory).",
    )
    add = p.add_argument

    def flag(short: str, name: str, default: bool | None, text: str) -> None:
        """difPy's True/False option (its words, not ``store_true``)."""
        add(short, name, type=str_to_bool, default=default, metavar="{True,False}", help=text)

    add("-D", "--directory", type=str, nargs="+", default=None,
        help="Directories to search. Default: the working directory.")
    add("-Z", "--output_directory", type=str, default=None,
        help="Where the difPy_*.json files go (created if missing). Default: the working "
        "directory.")
    flag("-r", "--recursive", True, "Search the subfolders too (default True).")
    flag("-i", "--in_folder", False, "Search each directory on its own (default False).")
    flag("-le", "--limit_extensions", True, "Only files with image extensions (default True).")
    add("-px", "--px_size", type=int, default=50, help="Tensor size in pixels (default 50).")
    add("-s", "--similarity", type=int_or_str, default="duplicates",
        help="'duplicates' (0), 'similar' (5), 'near', or an MSE threshold.")
    flag("-ro", "--rotate", True, "Also match rotated copies (default True).")
    flag("-dim", "--same_dim", None,
         "Only compare images of the same dimensions (default True; False for 'near').")
    flag("-la", "--lazy", None, "difPy 4.1's name for -dim (accepted).")
    add("-mv", "--move_to", type=str, default=None,
        help="Move the lower-quality files into this folder.")
    flag("-d", "--delete", False, "Delete the lower-quality files (asks first unless -sd True).")
    flag("-sd", "--silent_del", False, "Delete without asking (default False).")
    flag("-p", "--show_progress", True, "Show difPy's progress lines (default True).")
    add("-proc", "--processes", type=int_or_str, default=None,
        help="Worker processes (default: all cores).")
    add("-ch", "--chunksize", type=int_or_str, default=None,
        help="Accepted for difPy compatibility; the search has no pair chunks.")
    return p


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run difPy's flow; returns the exit code (errors raise)."""
    from . import difpy_compat
    from .results import write_difpy_files

    args = build_parser().parse_args(argv)
    if args.move_to is not None and args.delete:
        raise UsageError(MUTUALLY_EXCLUSIVE)
    out_dir = args.output_directory if args.output_directory is not None else os.getcwd()
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f'output directory "{out_dir}" is not a directory')
    directories = args.directory if args.directory is not None else [os.getcwd()]
    # the search's values are checked before the (possibly long) build, not after it
    difpy_compat.check_search_args(
        args.similarity, rotate=args.rotate, same_dim=args.same_dim,
        show_progress=args.show_progress, processes=args.processes,
        chunksize=args.chunksize, lazy=args.lazy,
    )
    os.makedirs(out_dir, exist_ok=True)

    dif = difpy_compat.build(
        directories, recursive=args.recursive, in_folder=args.in_folder,
        limit_extensions=args.limit_extensions, px_size=args.px_size,
        show_progress=args.show_progress, processes=args.processes,
    )
    extra: dict[str, Any] = {} if args.lazy is None else {"lazy": args.lazy}
    se = difpy_compat.search(
        dif, similarity=args.similarity, rotate=args.rotate, same_dim=args.same_dim,
        show_progress=args.show_progress, processes=args.processes,
        chunksize=args.chunksize, **extra,
    )
    if args.delete and not args.silent_del and se.lower_quality and not _can_ask():
        raise UsageError(
            "refusing to delete without confirmation: no terminal to ask (pass -sd True)"
        )
    if args.move_to is not None:
        se.check_move_to(args.move_to)  # a DEST inside a searched folder: exit 2, nothing written
    written = write_difpy_files(
        {"result": se.result, "lower_quality": se.lower_quality, "stats": se.stats}, out_dir
    )
    report = None
    if args.move_to is not None:
        report = se.move_to(args.move_to)
    elif args.delete:
        report = se.delete(silent_del=args.silent_del)
    if report is not None:
        for skip in report.skipped:
            _err(f"skipped: {skip.path}: {skip.reason}")
    names = "\n".join(p.name for p in written)
    print(f"\n{names}\n\nsaved in '{written[0].parent}'.")
    return 0


def _can_ask() -> bool:
    from .actions import _can_ask as can_ask

    return can_ask()


def _err(message: str) -> None:
    from .cli import err

    err(message)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point: one line on stderr for every error, never a traceback."""
    code: int
    try:
        code = run(argv)
    except KeyboardInterrupt:
        _err("interrupted")
        code = 130
    except DifpyIndexError as exc:
        _err(f"error: {exc}")
        code = exc.exit_code
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _err(f"error: {exc.strerror or exc}{where}")
        code = 1
    except Exception as exc:  # the one boundary: a message, not a traceback
        from .index import catalog_failure

        db = catalog_failure(exc, None)
        if db is not None:
            _err(f"error: {db[0]}")
            code = db[1]
        else:
            _err(f"error: {type(exc).__name__}: {exc}")
            code = 1
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
