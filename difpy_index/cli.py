"""The ``difpy-index`` command line: a thin typer shell over ``Index``.

Each command parses options, opens the catalog, calls one method and formats the result.
Errors become one line on stderr and an exit code (0 ok, 1 failure, 2 bad input, 130 Ctrl-C).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from .decode import MAX_PX_SIZE, MIN_PX_SIZE
from .errors import DifpyIndexError
from .results import human_size

#: Global options, also accepted after the subcommand: (names, takes a value).
_GLOBAL_FLAGS = {"-v", "--verbose", "-q", "--quiet"}
_GLOBAL_VALUED = {"--catalog"}


def _hoist_globals(args: list[str], commands: Any) -> list[str]:
    """Move global options that follow the subcommand in front of it, so that
    ``search DIR -v --catalog X`` means ``-v --catalog X search DIR``."""
    i = 0
    while i < len(args):  # find the subcommand
        a = args[i]
        if a in _GLOBAL_VALUED:
            i += 2
            continue
        if not a.startswith("-"):
            break
        i += 1
    if i >= len(args) or args[i] not in commands:
        return args
    head, cmd, rest = args[:i], args[i], args[i + 1 :]
    moved: list[str] = []
    kept: list[str] = []
    j = 0
    while j < len(rest):
        a = rest[j]
        if a == "--":
            kept.extend(rest[j:])
            break
        if a in _GLOBAL_FLAGS or (a.startswith("-v") and set(a[1:]) == {"v"}):
            moved.append(a)
        elif a in _GLOBAL_VALUED and j + 1 < len(rest):
            moved.extend(rest[j : j + 2])
            j += 1
        elif a.split("=", 1)[0] in _GLOBAL_VALUED:
            moved.append(a)
        else:
            kept.append(a)
        j += 1
    return [*head, *moved, cmd, *kept]


def _click_exception() -> type[Exception]:
    """typer's (vendored) ClickException, found from the public ``typer.BadParameter``."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _Group(TyperGroup):
    """Global options after the subcommand too, and usage errors as one line on stderr."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _hoist_globals(list(args), self.commands))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **kwargs: Any) -> Any:
        call = {"args": args, "prog_name": prog_name, "complete_var": complete_var,
                "windows_expand_args": windows_expand_args, **kwargs}
        if not standalone_mode:
            return super().main(standalone_mode=False, **call)
        try:
            rv = super().main(standalone_mode=False, **call)
        except _click_exception() as exc:
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
                typer.echo(ctx.get_help(), err=True)
            else:
                path = ctx.command_path if ctx is not None else (prog_name or "difpy-index")
                where = f" (see '{path} --help')"
                err(f"error: {exc.format_message()}{where}")  # type: ignore[attr-defined]
            sys.exit(getattr(exc, "exit_code", 2))
        except typer.Abort:
            err("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


if TYPE_CHECKING:
    from concurrent.futures import Executor


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    help="Find duplicate and similar images, difPy-compatible, over a persistent catalog.",
)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    catalog: str | None = None  # a file path, or a postgresql+psycopg:// URL
    verbose: int = 0
    quiet: bool = False
    opened: Path | str | None = None  # the catalog a command opened (errors name this one)


def _state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, State) else State()


def _escape_char(c: str) -> str:
    if "\udc80" <= c <= "\udcff":  # a non-UTF-8 byte of a file name (surrogateescape)
        return f"\\x{ord(c) - 0xDC00:02x}"
    return c if c.isprintable() else repr(c)[1:-1]


class RichProgress:
    """A rich progress bar on stderr behind the library's Progress protocol."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )
        self._task: Any = None

    def start(self, total: int, label: str) -> None:
        if total <= 0:
            return
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)

    def finish(self) -> None:
        if self._task is not None:
            self._progress.stop()
            self._task = None


def err(message: str) -> None:
    """One line on stderr, always: a file name holding a newline or a control character
    (or a non-UTF-8 byte) is shown escaped, so each message stays one line for the user."""
    text = message.rstrip("\n")
    if not text.isprintable():
        text = "".join(_escape_char(c) for c in text)
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def handle_errors(fn: F) -> F:
    """The one place where exceptions become messages and exit codes. With ``-v`` the
    traceback comes first; the one-line message and the exit code stay the same."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx: Any = kwargs.get("ctx")
        # typer hands over its own Context subclass or click's: test for the method
        state = _state(ctx) if hasattr(ctx, "find_root") else State()
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BrokenPipeError:
            raise  # the reader went away (| head): silent, as typer handles it
        except KeyboardInterrupt:
            err("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if state.verbose:
                import traceback

                traceback.print_exc(file=sys.stderr)
            message, code = _describe(exc, state)
            err(f"error: {message}")
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


def _describe(exc: Exception, state: State) -> tuple[str, int]:
    """An exception as one line and an exit code (2: bad input, 1: the operation failed)."""
    if isinstance(exc, DifpyIndexError):
        return str(exc), exc.exit_code
    from .index import catalog_failure

    db = catalog_failure(exc, state.opened or state.catalog)
    if db is not None:
        return db
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}", 1
    return f"{type(exc).__name__}: {exc} (run with -v for details)", 1


@contextlib.contextmanager
def _reporting(state: State, json_out: bool, payload: Callable[[Any], dict[str, Any]]) -> Iterator[None]:
    """If an action fails mid-way, say what it did before the error line: its skips, and
    the JSON payload or the human list and summary (the exit code is then the error's)."""
    try:
        yield
    except BaseException as exc:
        report = getattr(exc, "action_report", None)
        if report is not None:
            for skip in report.skipped:
                err(f"skipped: {skip.path}: {skip.reason}")
            if json_out:
                _print_json(payload(report))
            else:
                _print_actions(report.to_dict())
                typer.echo(report.summary())
        raise


@contextlib.contextmanager
def _executor(scheduler: str | None) -> Iterator[Executor | None]:
    """A Dask cluster's executor for ``--scheduler``, else None (work stays local)."""
    if scheduler is None:
        yield None
        return
    from .cluster import dask_executor

    with dask_executor(scheduler) as ex:
        yield ex


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"difpy-index {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    catalog: Annotated[
        str | None,
        typer.Option("--catalog", envvar="DIFPY_INDEX_CATALOG", metavar="PATH|URL",
                     help="Catalog file (SQLite), or postgresql+psycopg://USER:PW@HOST:PORT/DB "
                          "(needs the cluster extra); also after the command."),
    ] = None,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, show_default=False, help="More log output; tracebacks (also after the command).")] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors on stderr; no progress (also after the command).")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_show_version, help="Print the version and exit.")] = False,
) -> None:
    """Find duplicate and similar images, difPy-compatible, over a persistent catalog."""
    ctx.obj = State(catalog=catalog, verbose=verbose, quiet=quiet)
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("difpy_index")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _open(state: State, create: bool = True) -> Any:
    """The catalog; the commands that only read pass ``create=False`` (never create one)."""
    from .index import Index

    idx = Index.open(state.catalog, create=create)
    state.opened = idx.path
    return idx


def _progress(state: State, json_out: bool) -> Any:
    from .progress import NullProgress

    if state.quiet or json_out or not sys.stderr.isatty():
        return NullProgress()
    return RichProgress()


def _print_json(obj: Any) -> None:
    from .paths import printable

    typer.echo(printable(json.dumps(obj, ensure_ascii=False, indent=None, default=str)))


Dirs = Annotated[list[Path], typer.Argument(metavar="DIR", help="Folders to index.", show_default=False)]
PxSize = Annotated[int, typer.Option("--px-size", metavar="N", help=f"Tensor size in pixels ({MIN_PX_SIZE}..{MAX_PX_SIZE}).")]
Processes = Annotated[int | None, typer.Option("--processes", metavar="N", help="Worker processes (default: all cores).")]
Scheduler = Annotated[str | None, typer.Option(
    "--scheduler", metavar="ADDRESS",
    help="Run on a Dask cluster (tcp://host:8786); its workers must see the same paths "
         "(needs the cluster extra).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


@app.command()
@handle_errors
def update(
    ctx: typer.Context,
    dirs: Annotated[list[Path] | None, typer.Argument(
        metavar="DIR", help="Folders to index (default: refresh every folder already indexed).", show_default=False)] = None,
    px_size: PxSize = 50,
    processes: Processes = None,
    no_recursive: Annotated[bool, typer.Option("--no-recursive", help="Only the folders themselves, not their subfolders.")] = False,
    include_hidden: Annotated[bool, typer.Option("--include-hidden", help="Also index names starting with '.'.")] = False,
    all_extensions: Annotated[bool, typer.Option("--all-extensions", help="Try every file, not only image extensions.")] = False,
    fast: Annotated[bool | None, typer.Option("--fast/--exact", help="Decode with the fast recipe (reduced JPEG decoding: about half the work per JPEG; tensors typically within MSE 0.2 of exact, 99% within 1.4) or the exact, difPy-identical one. Default: the recipe the folders already have, exact for new ones.", show_default=False)] = None,
    thumbnails: Annotated[bool, typer.Option("--thumbnails", help="Also make the review page's thumbnails now (kept beside the catalog).")] = False,
    json_out: JsonOut = False,
    scheduler: Scheduler = None,
) -> None:
    """Index folders: decode new and changed files, drop deleted ones (no DIR: every root)."""
    from .decode import EXTRA_LABELS

    state = _state(ctx)
    with _executor(scheduler) as executor, _open(state) as idx:
        if not dirs and not idx.root_paths():
            raise_usage("no folder given and none indexed yet: run 'difpy-index update DIR'")
        report = idx.update(
            [str(d) for d in dirs] if dirs else None, px_size=px_size, recursive=not no_recursive,
            include_hidden=include_hidden, limit_extensions=not all_extensions,
            processes=processes, progress=_progress(state, json_out), executor=executor,
            fast=fast, thumbnails=thumbnails,
        )
    for path, reason in report.problems:
        if not state.quiet:
            err(f"warning: {path}: {reason}")
    for extra, paths in sorted(report.needs_extra.items()):
        if not state.quiet:
            err(f"warning: {len(paths)} {EXTRA_LABELS.get(extra, extra)} file(s) skipped: their "
                f"plugin is not installed (pip install 'difpy-index[{extra}]')")
    # a missing root was logged once by update itself
    if state.verbose and not json_out:
        for p, reason in sorted(report.invalid_files.items()):
            err(f"invalid: {os.fsdecode(p)}: {reason}")
        from .update import skip_reason

        for p in sorted(report.skipped_paths):
            err(f"skipped: {os.fsdecode(p)}: {skip_reason(p)}")
    if json_out:
        _print_json(report.to_dict())
    elif not state.quiet:
        err(
            f"{report.files} images ({report.decoded} decoded, {report.reused} reused, "
            f"{report.removed} removed, {report.invalid} invalid, {report.skipped} skipped) "
            f"in {report.seconds:.2f} s{', fast recipe' if report.recipe == 'fast' else ''}"
        )


@app.command()
@handle_errors
def forget(
    ctx: typer.Context,
    roots: Annotated[list[Path], typer.Argument(metavar="ROOT", help="Indexed folders to drop (as 'status' lists them).", show_default=False)],
    json_out: JsonOut = False,
) -> None:
    """Drop indexed folders and all their rows from the catalog (the files are not touched)."""
    state = _state(ctx)
    with _open(state, create=False) as idx:
        dropped = idx.forget_roots([str(r) for r in roots])
    if json_out:
        _print_json({"forgotten": dropped})
    elif not state.quiet:
        for root, n in dropped.items():
            err(f"forgot {escape(root)} ({_n(n, 'file')})")


@app.command()
@handle_errors
def status(ctx: typer.Context, json_out: JsonOut = False) -> None:
    """Summarise the catalog: roots, files, invalid files, sizes, schema revision."""
    state = _state(ctx)
    with _open(state, create=False) as idx:
        info = idx.status()
    if json_out:
        _print_json(info)
        return
    typer.echo(f"catalog  {escape(info['catalog'])} (schema {info['schema']}, {info['bytes']:,} bytes)")
    typer.echo(f"files    {info['files']} images, {info['invalid']} invalid")
    typer.echo(f"px sizes {', '.join(map(str, info['px_sizes'])) or '-'}")
    for r in info["roots"]:
        typer.echo(f"root     {escape(r)}")


NoUpdate = Annotated[bool, typer.Option(
    "--no-update", help="Read the catalog as it is; do not bring the searched folders up to date first.")]


def _refresh(idx: Any, state: State, dirs: list[str] | None, px_size: int,
             processes: int | None, json_out: bool, executor: Executor | None = None) -> set[str]:
    """The incremental update ``search``/``query`` run first (near-free when nothing
    changed; decoded on the cluster with ``--scheduler``); returns the missing roots it has
    already warned about."""
    report = idx.refresh(dirs, px_size=px_size, processes=processes,
                         progress=_progress(state, json_out), executor=executor)
    if report is None:
        return set()
    if report.decoded or report.removed:
        logging.getLogger("difpy_index").info(
            "brought up to date: %d decoded, %d removed", report.decoded, report.removed)
    return set(report.missing_roots)


class OutFormat(StrEnum):
    text = "text"
    json = "json"
    csv = "csv"


Similarity = Annotated[
    str, typer.Option("-s", "--similarity", metavar="duplicates|similar|near|N", help="'duplicates' (0), 'similar' (5), 'near', or a number >= 0.")
]
Rotate = Annotated[bool, typer.Option("--rotate/--no-rotate", help="Also match 90/180/270-degree rotations.")]
SameDim = Annotated[
    bool | None,
    typer.Option("--same-dim/--no-same-dim", "--lazy/--no-lazy", help="Compare only images of equal dimensions (default on; off for 'near')."),
]


@app.command()
@handle_errors
def search(
    ctx: typer.Context,
    dirs: Annotated[list[Path] | None, typer.Argument(metavar="DIR", help="Folders to search (default: the whole catalog).", show_default=False)] = None,
    similarity: Similarity = "duplicates",
    rotate: Rotate = True,
    same_dim: SameDim = None,
    in_folder: Annotated[bool, typer.Option("--in-folder", help="Search each folder on its own.")] = False,
    px_size: PxSize = 50,
    processes: Processes = None,
    keep: Annotated[list[str] | None, typer.Option(
        "--keep", metavar="RULE,...",
        help="Which file of a group to keep: criteria in order, e.g. 'pixels,oldest' or "
             "'path:roll*/,pixels'; 'difpy' = difPy's rule (default: "
             "pixels,format,oldest,shallow,path; see docs/semantics.md).")] = None,
    reference: Annotated[list[Path] | None, typer.Option(
        "--reference", metavar="DIR",
        help="A reference folder (repeatable): searched too, its files kept first and never moved or deleted.")] = None,
    output_format: Annotated[OutFormat, typer.Option(
        "--format", help="stdout: the groups for a person (text), one JSON object, or CSV (one row per member).")] = OutFormat.text,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    output_dir: Annotated[Path | None, typer.Option(
        "-Z", "--output-dir", metavar="DIR",
        help="Also write difPy's three difPy_<time>_*.json files into DIR (never overwriting).")] = None,
    move_to: Annotated[Path | None, typer.Option("--move-to", metavar="DEST", help="Move lower-quality files into this folder.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Delete lower-quality files (asks first).")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before deleting.")] = False,
    trash: Annotated[bool, typer.Option("--trash", help="Send lower-quality files to the desktop trash (verified as for --delete).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what --move-to/--delete/--trash would do; change nothing.")] = False,
    report: Annotated[Path | None, typer.Option("--report", metavar="PAGE.html", help="Write an HTML review page of the groups.")] = None,
    no_update: NoUpdate = False,
    max_band_rows: Annotated[int | None, typer.Option(
        "--max-band-rows", metavar="N", min=2,
        help="Tensors one search task may hold; more images are searched band by band "
             "(the same result, bounded memory; default 100000).")] = None,
    scheduler: Scheduler = None,
) -> None:
    """Find duplicate and similar images among the cached tensors."""
    state = _state(ctx)
    if (move_to is not None) + delete + trash > 1:
        raise_usage("--move-to, --delete and --trash are mutually exclusive")
    if json_out:
        if output_format not in (OutFormat.text, OutFormat.json):
            raise_usage(f"--json and --format {output_format.value} contradict each other")
        output_format = OutFormat.json
    if dry_run and move_to is None and not delete and not trash:
        raise_usage("--dry-run needs --move-to DEST, --delete or --trash")
    # every output is checked before anything is searched, moved or deleted
    from .outputs import check_folder, check_report

    if output_dir is not None:
        check_folder(output_dir, "difPy's files")
    if report is not None:
        check_report(report)
    acting = (move_to is not None or delete or trash) and not dry_run
    with _executor(scheduler) as executor, _open(state, create=False) as idx:
        if acting:
            idx.check_writable()
        warned = set()
        if not no_update:
            scope = [str(d) for d in [*(dirs or []), *(reference or [])]] if dirs else None
            warned = _refresh(idx, state, scope, px_size, processes,
                              output_format is OutFormat.json, executor)
        found = idx.search(
            [str(d) for d in dirs] if dirs else None, similarity=similarity, rotate=rotate,
            same_dim=same_dim, in_folder=in_folder, px_size=px_size, processes=processes,
            keep=keep, reference=[str(r) for r in reference] if reference else None,
            max_band_rows=max_band_rows, executor=executor,
        )
        for r in found.unreachable:
            if r not in warned:
                err(f"warning: {r} is missing or empty (unmounted?); its files are left out")
        payload: dict[str, Any] = found.to_dict()
        actions = None
        if report is not None:
            found.report(report)
            if not state.quiet:
                err(f"report written to {report}")
        with _reporting(state, output_format is OutFormat.json,
                        lambda rep: {**payload, "actions": rep.to_dict()}):
            if move_to is not None:
                actions = found.move_to(str(move_to), dry_run=dry_run)
            elif delete:  # without --yes and a terminal, actions refuses (exit 2), unless nothing to do
                actions = found.delete(silent_del=yes, dry_run=dry_run)
            elif trash:
                actions = found.trash(dry_run=dry_run)
        if actions is not None:
            payload["actions"] = actions.to_dict()
            for skip in actions.skipped:
                err(f"skipped: {skip.path}: {skip.reason}")
    if output_format is OutFormat.json:
        _print_json(payload)
    else:
        if output_format is OutFormat.csv:
            _print_csv(found)
        else:
            _print_groups(found)
        if actions is not None:
            _print_actions(actions.to_dict(), to_err=output_format is OutFormat.csv)
        if not state.quiet:
            stats = found.stats["process"]["search"]
            typer.echo(
                f"{stats['files_searched']} images searched: {_n(len(found.groups), 'group')}, "
                f"{len(found.lower_quality)} lower-quality files (keep: {found.keep})",
                err=output_format is OutFormat.csv,
            )
            if actions is not None:
                typer.echo(actions.summary(), err=output_format is OutFormat.csv)
    if output_dir is not None:  # after stdout: a failure here still leaves the summary
        from .results import write_difpy_files

        written = write_difpy_files(payload, output_dir)
        if not state.quiet:
            err(f"saved {', '.join(p.name for p in written)} in '{written[0].parent}'")
    if actions is not None and actions.failed:
        raise typer.Exit(1)  # asked to act and did nothing (every file refused): say so


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def escape(text: str) -> str:
    """A path shown on one line: control characters and non-UTF-8 bytes escaped (as err)."""
    return text if text.isprintable() else "".join(_escape_char(c) for c in text)


def _print_groups(found: Any) -> None:
    """Each group: the kept file first, then its members with MSE, rotation, size (and,
    under ``near``, why: ``_why``)."""
    folder = None
    for g in found.groups:
        if g.folder is not None and g.folder != folder:
            folder = g.folder
            typer.echo(f"in {escape(folder)}:")
        typer.echo(f"keep {_facts(found, g.key)}  {'':<19}  {escape(g.key)}")
        for m in g.members:
            typer.echo(f"  -  {_facts(found, m.path)}  mse {m.mse:<7.3g} rot {m.rotation:>3}  "
                       f"{escape(m.path)}{_why(m)}")
        typer.echo("")


def _why(m: Any) -> str:
    """Under ``near``, after the path: the rule other than the MSE that matched, a mirror,
    and the member a picture matched through (the JSON details say the same)."""
    why = [f"{m.measure} {m.value:.3f}"] if m.measure not in (None, "mse") else []
    why += ["mirrored"] if m.mirror else []
    why += [f"via {escape(m.via)}"] if m.via else []
    return f"  ({', '.join(why)})" if why else ""


def _facts(found: Any, path: str) -> str:
    f = found.facts.get(path)
    if f is None:
        return f"{'?':>11}  {'?':>8}"
    return f"{f'{f.width}x{f.height}':>11}  {human_size(f.size):>8}"


CSV_COLUMNS = ("group", "folder", "key", "path", "mse", "rotation", "width", "height", "size",
               "key_width", "key_height", "key_size")


def _print_csv(found: Any) -> None:
    """One row per member (its key, MSE, rotation, dimensions and size)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for n, g in enumerate(found.groups, 1):
        kf = found.facts.get(g.key)
        for m in g.members:
            mf = found.facts.get(m.path)
            w.writerow([
                n, escape(g.folder or ""), escape(g.key), escape(m.path), m.mse, m.rotation,
                *(("", "", "") if mf is None else (mf.width, mf.height, mf.size)),
                *(("", "", "") if kf is None else (kf.width, kf.height, kf.size)),
            ])
    typer.echo(buf.getvalue(), nl=False)


def _print_actions(acts: dict[str, Any], to_err: bool = False) -> None:
    """Every file an action moved or deleted (or, in a dry run, would), and where to."""
    dry = acts.get("dry_run", False)
    for src, dst in acts.get("moved", []):
        typer.echo(f"{'would move' if dry else 'moved'}  {escape(src)}  ->  {escape(dst)}", err=to_err)
    for path in acts.get("deleted", []):
        typer.echo(f"{'would delete' if dry else 'deleted'}  {escape(path)}", err=to_err)


def raise_usage(message: str) -> None:
    from .errors import UsageError

    raise UsageError(message)


@app.command()
@handle_errors
def query(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="Images to look up (indexed or not).", show_default=False)],
    similarity: Similarity = "duplicates",
    rotate: Rotate = True,
    same_dim: SameDim = None,
    px_size: PxSize = 50,
    json_out: JsonOut = False,
    no_update: NoUpdate = False,
) -> None:
    """Find the catalog files that match the given images."""
    state = _state(ctx)
    with _open(state, create=False) as idx:
        warned = set() if no_update else _refresh(idx, state, None, px_size, None, json_out)
        for r in idx.unreachable_roots():
            if os.fsdecode(r) not in warned:
                err(f"warning: {os.fsdecode(r)} is missing or empty (unmounted?); its files are left out")
        found = idx.query(
            [str(i) for i in images], similarity=similarity, rotate=rotate, same_dim=same_dim,
            px_size=px_size,
        )
    if json_out:
        _print_json({"queries": [q.to_dict() for q in found]})
        return
    for q in found:
        typer.echo(f"{escape(q.query)}: {len(q.matches)} match(es)")
        for m in q.matches:
            typer.echo(f"  {escape(m.path)}  mse={m.mse:g}  rotation={m.rotation}{_why(m)}")


@app.command()
@handle_errors
def watch(
    ctx: typer.Context,
    dirs: Annotated[list[Path], typer.Argument(metavar="DIR", help="Folders to keep indexed.", show_default=False)],
    polling: Annotated[bool, typer.Option("--polling", help="Poll instead of OS events (network shares).")] = False,
    px_size: PxSize = 50,
    processes: Processes = None,
    duplicates: Annotated[bool, typer.Option("--duplicates", help="Log each arriving file that duplicates a catalogued one.")] = False,
) -> None:
    """Keep the catalog current while files arrive, change, move and disappear."""
    state = _state(ctx)
    # a daemon's log: every line timestamped; batches (INFO) shown unless --quiet
    root = logging.getLogger("difpy_index")
    for h in root.handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
    if not state.quiet and not state.verbose:
        root.setLevel(logging.INFO)
    with _open(state) as idx:
        from .watch import run_forever

        run_forever(idx, [str(d) for d in dirs], polling=polling, px_size=px_size, processes=processes,
                    report_duplicates=duplicates)


@app.command()
@handle_errors
def apply(
    ctx: typer.Context,
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN.json", help="A plan downloaded from a --report page.", show_default=False)],
    move_to: Annotated[Path | None, typer.Option("--move-to", metavar="DEST", help="Move the plan's files into this folder.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Delete the plan's files (asks first).")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before deleting.")] = False,
    trash: Annotated[bool, typer.Option("--trash", help="Send the plan's files to the desktop trash.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")] = False,
    similarity: Annotated[str | None, typer.Option(
        "-s", "--similarity",
        help="What counts as a duplicate (default: the plan's, if it is a named preset with its own settings).")] = None,
    rotate: Annotated[bool | None, typer.Option(
        "--rotate/--no-rotate", help="Also match 90/180/270-degree rotations (default: the plan's).")] = None,
    same_dim: Annotated[bool | None, typer.Option(
        "--same-dim/--no-same-dim", help="Compare only images of equal dimensions (a plan cannot turn this off alone).")] = None,
    px_size: Annotated[int | None, typer.Option(
        "--px-size", help="Tensor size to compare at (a plan's other than 50 must be repeated).")] = None,
    json_out: JsonOut = False,
) -> None:
    """Move, delete or trash exactly the files of a review plan, verified like search's actions.

    A plan is a request: it picks files, never what counts as a duplicate. Its similarity is
    used only when it is a named preset with that preset's settings; anything wider must be
    repeated here (-s, --no-same-dim, --px-size)."""
    from .index import Index
    from .plan import apply_plan, load_plan

    state = _state(ctx)
    if (move_to is not None) + delete + trash != 1:
        raise_usage("give exactly one of --move-to DEST, --delete or --trash")
    plan = load_plan(plan_file)
    # without --yes and a terminal, actions refuses (exit 2), as for search --delete
    with Index.open(state.catalog if state.catalog is not None else plan.catalog, create=False) as idx:
        state.opened = idx.path
        with _reporting(state, json_out, lambda rep: {"actions": rep.to_dict()}):
            actions = apply_plan(idx, plan, move_to=move_to, delete=delete, yes=yes, dry_run=dry_run,
                                 trash=trash, similarity=similarity, rotate=rotate,
                                 same_dim=same_dim, px_size=px_size)
    for skip in actions.skipped:
        err(f"skipped: {skip.path}: {skip.reason}")
    if json_out:
        _print_json({"actions": actions.to_dict()})
    else:
        _print_actions(actions.to_dict())
        if not state.quiet:
            typer.echo(actions.summary())
    if actions.failed:
        raise typer.Exit(1)  # asked to act and did nothing (every file refused): say so


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err("interrupted")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
