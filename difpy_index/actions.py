"""``move_to`` and ``delete``: act on lower-quality files without ever losing the last copy.

Every action runs in four steps:

1. **choose** (pure, ``steps_for``): which member goes where, and which key(s) it
   duplicates. Only members are ever touched; a path that is the key of *any* group
   (possible with overlapping ``in_folder`` arguments) is never moved or deleted.
2. **validate everything** before the first file is touched: the destination (not inside
   any indexed root or searched folder, symlinks resolved; no symbolic link inside it on
   the way to a target), and that the catalog can be written. A refusal is exit 2.
3. **prove**, right before touching each member (``verify``): it is unchanged since it
   was catalogued and lies under an indexed root; it and its key, both read and decoded
   now, still match; and the key is another file, shown by moving the member aside and
   reading the key back. Each failure is a reported skip, never an exception.
4. **I/O**, one file at a time, each followed at once by its catalog update. If anything
   fails mid-way, the exception carries the report so far (``exc.action_report``), so a
   caller can still say what was done.

Crash safety: a move never overwrites and leaves the file in exactly one place
(``fileops.move_file``: an atomic no-replace rename, else link + unlink, else an fsynced
copy). Its catalog row is dropped right after; a crash between the two leaves a row whose
file is gone, which the next ``update`` removes (or, if the target lies in an indexed
root, recognises as a rename). A power loss between ``link`` and ``unlink`` can leave
two copies, never zero.

``SearchResult`` is left unchanged by an action (unlike difPy, which rewrites
``lower_quality`` to the new paths): the ``ActionReport`` carries the new paths, and running the
action again is harmless because moved files then fail verification ("no longer exists").
"""

from __future__ import annotations

import builtins
import logging
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ActionError
from .fileops import candidates, clean_partial_moves, move_file, recover_aside
from .paths import folder_name, is_within, owning_root, rel_below
from .verify import Aside, Picture, Prover, after_aside

if TYPE_CHECKING:
    from .index import Index, KnownFile  # the façade hands out the store's rows
    from .results import SearchResult

log = logging.getLogger(__name__)

QUESTION = (
    "Are you sure you want to delete all lower quality matched images? \n"
    "! This cannot be undone. (y/n)"
)


class ActionRefused(ActionError):
    """The action cannot start because of the caller's input (bad destination, no answer)."""

    exit_code = 2


# -- what an action did ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Skip:
    path: str
    reason: str


@dataclass(slots=True)
class ActionReport:
    """What an action did (or, with ``dry_run``, would do). Paths are absolute real paths."""

    action: str  # "move", "delete" or "trash" (trashed files are listed in ``deleted``)
    dry_run: bool = False
    destination: str | None = None
    moved: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    canceled: bool = False
    error: str | None = None  # set when the action stopped mid-way (what failed)

    @property
    def failed(self) -> bool:
        """Asked to act and did nothing, for reasons other than "already gone" (exit 1)."""
        if self.dry_run or self.canceled or self.moved or self.deleted:
            return self.error is not None
        return self.error is not None or any(s.reason != "file no longer exists" for s in self.skipped)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "dry_run": self.dry_run,
            "moved": [[a, b] for a, b in self.moved],
            "deleted": list(self.deleted),
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
        }
        if self.destination is not None:
            out["destination"] = self.destination
        if self.canceled:
            out["canceled"] = True
        if self.error is not None:
            out["error"] = self.error
        return out

    def summary(self) -> str:
        """One human line, worded like difPy's (minus its "files(s)" typo)."""
        skipped = f"; {len(self.skipped)} skipped" if self.skipped else ""
        if self.canceled:
            return "Deletion canceled."
        if self.action == "move":
            n = len(self.moved)
            if n == 0 and not self.skipped:
                return "Nothing to move: no lower-quality files."
            verb = "Would move" if self.dry_run else "Moved"
            return f'{verb} {n} file(s) to "{self.destination}"{skipped}'
        n = len(self.deleted)
        if n == 0 and not self.skipped:
            return "Nothing to delete: no lower-quality files."
        if self.action == "trash":
            verb = "Would move to the trash" if self.dry_run else "Moved to the trash"
        else:
            verb = "Would delete" if self.dry_run else "Deleted"
        return f"{verb} {n} file(s){skipped}"


# -- steps (pure) ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Step:
    member: str
    keys: tuple[str, ...]  # every key the member was grouped under, in result order
    target: str | None = None  # preferred move target (a unique name is picked at I/O time)


def steps_for(result: SearchResult) -> tuple[list[Step], list[Skip]]:
    """Members to act on and the keys they duplicate; keys of any group are never touched."""
    keys = {g.key for g in result.groups}
    refs = tuple(r.rstrip("/") + "/" for r in result.reference)
    order: list[str] = []
    by_member: dict[str, list[str]] = {}
    skips: list[Skip] = []
    for g in result.groups:
        for m in g.members:
            if refs and m.path.startswith(refs):
                if all(s.path != m.path for s in skips):
                    skips.append(Skip(m.path, "is in a reference folder; reference files are never touched"))
                continue
            if m.path in keys:
                if m.path != g.key and all(s.path != m.path for s in skips):
                    skips.append(Skip(m.path, "is the key of another group; keys are never touched"))
                continue
            if m.path not in by_member:
                order.append(m.path)
                by_member[m.path] = []
            if g.key not in by_member[m.path]:
                by_member[m.path].append(g.key)
    return [Step(p, tuple(by_member[p])) for p in order], skips


def move_targets(
    steps: Sequence[Step], dest: bytes, roots: Sequence[bytes], root_of: dict[bytes, bytes]
) -> list[Step]:
    """``dest/<root basename>/<path relative to its root>`` for every step (pure)."""
    out = []
    for s in steps:
        p = os.fsencode(s.member)
        root = root_of.get(p) or owning_root(p, roots)
        if root is not None and (rel := rel_below(p, root)) is not None:
            base = folder_name(root) or b"root"
            target = os.path.join(dest, base, rel)
        else:  # outside every root (reached through a symlink): keep the name only
            base = folder_name(root) if root else b""
            target = os.path.join(dest, base or b"other", os.path.basename(p))
        out.append(Step(s.member, s.keys, os.fsdecode(target)))
    return out


# -- the actions -------------------------------------------------------------------------
#: The one skip that is not a refusal: the file is already gone (an earlier run did it).
GONE = "file no longer exists"


def _index_of(result: SearchResult) -> Any:
    if result._index is None:
        raise ActionError("this result is not attached to a catalog; search again with Index.search")
    return result._index


def _rows(index: Index, steps: Sequence[Step]) -> dict[bytes, KnownFile]:
    paths = {os.fsencode(s.member) for s in steps} | {os.fsencode(k) for s in steps for k in s.keys}
    return index.file_rows(sorted(paths))


def _prover(result: SearchResult, index: Index, rows: dict[bytes, KnownFile]) -> Prover:
    from .decode import init_worker

    init_worker(index.max_pixels)
    return Prover(rows, index.root_paths(), px=result.px_size, threshold=result.threshold,
                  rotate=result.rotate, same_dim=result.same_dim, from_plan=result.from_plan)


def _skip(report: ActionReport, index: Index, step: Step, reason: str, dry_run: bool) -> None:
    report.skipped.append(Skip(step.member, reason))
    if not dry_run and reason == GONE:
        # e.g. an earlier run killed between its unlink/rename and its catalog write:
        # the catalog follows the disk instead of keeping a dead row
        index.forget([os.fsencode(step.member)])


def _proven(steps: Sequence[Step], prover: Prover, report: ActionReport, index: Index,
            dry_run: bool) -> Iterator[tuple[Step, Picture, Picture]]:
    """Each step with its member and key as proven right now (move_to and delete share
    this); a step that cannot be proven is skipped with its reason."""
    for s in steps:
        checked = prover.check(os.fsencode(s.member), tuple(os.fsencode(k) for k in s.keys))
        if isinstance(checked, str):
            _skip(report, index, s, checked, dry_run)
            continue
        yield s, *checked


def _recover(steps: Sequence[Step], index: Index) -> bool:
    """Files an interrupted earlier run left aside in these folders go back first (and
    their rows note the ctime the renames moved). True when anything was found."""
    found = False
    for folder in dict.fromkeys(os.path.dirname(os.fsencode(s.member)) for s in steps):
        for path, what in recover_aside(folder):
            found = True
            log.warning("%s: %s", os.fsdecode(path), what)
            index.note_put_back(path)
    return found


def _prove_aside(aside: Aside, prover: Prover, report: ActionReport, index: Index, step: Step,
                 member: Picture, key: Picture) -> bytes | None:
    """Move the member aside and re-check its key; the parked path, or None (skipped)."""
    src = os.fsencode(step.member)
    try:
        parked = aside.put(src)
    except BaseException as exc:
        _note(index, step)  # still in place, but a link + unlink may have moved its ctime
        if not isinstance(exc, OSError):
            raise
        report.skipped.append(Skip(step.member, f"could not be moved aside to be checked: {exc.strerror or exc}"))
        return None
    why = after_aside(parked, member, key)
    if why is None:
        return parked
    prover.forget_key(key.path)
    report.skipped.append(Skip(step.member, why + _put_back(aside, parked, step, index)))
    return None


def _put_back(aside: Aside, parked: bytes, step: Step, index: Index) -> str:
    """Return a parked member to its place; "" when done, else where it stays and why."""
    src = os.fsencode(step.member)
    stuck = aside.back(parked, src)
    if stuck:
        return f"; {stuck}"
    _note(index, step)
    return ""


def _note(index: Index, step: Step) -> None:
    try:
        index.note_put_back(os.fsencode(step.member))
    except Exception as exc:  # the file is in place; only its row's ctime is stale (update fixes it)
        log.warning("%s: in place, but the catalog could not note it: %s", step.member, exc)


def _attach(exc: BaseException, report: ActionReport) -> None:
    """A failure mid-way: the exception carries what was done so far."""
    report.error = f"{exc.strerror or exc}" if isinstance(exc, OSError) else (str(exc) or type(exc).__name__)
    try:
        exc.action_report = report  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - exceptions with __slots__
        pass


def _folder_holding(path: bytes, roots: Sequence[bytes], searched: Sequence[bytes]) -> str | None:
    """"the searched folder F" / "the indexed folder R" that holds ``path``, else None."""
    for f in searched:
        if is_within(path, f):
            return f"the searched folder {os.fsdecode(f)}"
    for r in roots:
        if is_within(path, r):
            return f"the indexed folder {os.fsdecode(r)}"
    return None


def check_destination(dest: bytes, roots: Sequence[bytes], searched: Sequence[bytes]) -> None:
    """DEST may not lie inside a searched folder or any indexed root (symlinks resolved),
    and must be a folder or creatable. Raises ActionRefused / UsageError (exit 2)."""
    from .outputs import check_folder

    inside = _folder_holding(dest, roots, searched)
    if inside is not None:
        raise ActionRefused(f"refusing to move into {os.fsdecode(dest)}: it is inside {inside}")
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise ActionRefused(f"destination {os.fsdecode(dest)} exists and is not a folder")
    check_folder(dest, "the moved files")


def check_targets(steps: Sequence[Step], dest: bytes, roots: Sequence[bytes], searched: Sequence[bytes]) -> None:
    """Every target lies inside DEST, outside every root, with no symbolic link (or file)
    on its way below DEST. Raises ActionRefused (exit 2) before anything moves."""
    seen: set[bytes] = set()
    for s in steps:
        t = os.fsencode(s.target or "")
        inside = _folder_holding(t, roots, searched)
        if inside is not None:
            raise ActionRefused(f"refusing to move into {os.fsdecode(dest)}: {s.member} would land inside {inside}")
        problem = target_path_problem(t, dest, seen)
        if problem is not None:
            raise ActionRefused(f"refusing to move into {os.fsdecode(dest)}: {problem}")


def target_path_problem(target: bytes, dest: bytes, seen: set[bytes] | None = None) -> str | None:
    """Why the folders between DEST and ``target`` would lead outside DEST, or None.
    ``seen`` caches folders already found plain (each is checked once per run)."""
    rel = rel_below(target, dest)
    if rel is None:
        return f"{os.fsdecode(target)} is not inside it"
    folder = dest
    for part in rel.split(b"/")[:-1]:
        folder = os.path.join(folder, part)
        if seen is not None and folder in seen:
            continue
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            return None  # the rest is created by the move
        except OSError as exc:
            return f"{os.fsdecode(folder)}: {exc.strerror or exc}"
        if stat.S_ISLNK(st.st_mode):
            return f"{os.fsdecode(folder)} is a symbolic link (moves stay inside the destination)"
        if not stat.S_ISDIR(st.st_mode):
            return f"{os.fsdecode(folder)} is not a folder"
        if seen is not None:
            seen.add(folder)
    return None


def check_move_to(result: SearchResult, destination: str | os.PathLike[str]
                  ) -> tuple[bytes, dict[int, bytes], list[bytes]]:
    """Refuse a bad DEST for ``result`` (ActionRefused / UsageError, exit 2) before anything
    is written: (DEST resolved, the indexed roots by id, the searched folders)."""
    if not isinstance(destination, (str, os.PathLike)) or not os.fspath(destination):
        raise ActionRefused(f"invalid destination {destination!r}: must be a folder path")
    dest = os.path.realpath(os.fsencode(os.path.expanduser(os.fspath(destination))))
    root_by_id = _index_of(result).roots_by_id()
    searched = [os.path.realpath(os.fsencode(f)) for f in result.folders]
    check_destination(dest, sorted(root_by_id.values()), searched)
    return dest, root_by_id, searched


def move_to(result: SearchResult, destination: str | os.PathLike[str], dry_run: bool = False) -> ActionReport:
    """Move every verified lower-quality file under ``destination`` (see module docstring)."""
    dest, root_by_id, searched = check_move_to(result, destination)
    roots = sorted(root_by_id.values())
    index = _index_of(result)
    report = ActionReport("move", dry_run=dry_run, destination=os.fsdecode(dest))
    steps, skips = steps_for(result)
    report.skipped.extend(skips)
    if steps and not dry_run:
        index.check_writable()
    rows = _rows(index, steps)
    root_of = {p: root_by_id[k.root_id] for p, k in rows.items() if k.root_id in root_by_id}
    steps = move_targets(steps, dest, roots, root_of)
    check_targets(steps, dest, roots, searched)
    if not steps:
        return report
    taken: set[bytes] = set()
    if not dry_run:  # validated: now leftovers of an interrupted run are tidied first
        os.makedirs(dest, exist_ok=True)
        clean_partial_moves(dest)
        if _recover(steps, index):
            rows = _rows(index, steps)
    prover = _prover(result, index, rows)
    aside = Aside()
    try:
        for s, member, key in _proven(steps, prover, report, index, dry_run):
            src, target = os.fsencode(s.member), os.fsencode(s.target or "")
            if dry_run:
                free = next(c for c in candidates(target) if c not in taken and not os.path.lexists(c))
                taken.add(free)
                report.moved.append((s.member, os.fsdecode(free)))
                continue
            problem = target_path_problem(target, dest)
            if problem is not None:
                report.skipped.append(Skip(s.member, f"not moved: {problem}"))
                continue
            parked = _prove_aside(aside, prover, report, index, s, member, key)
            if parked is None:
                continue
            try:
                arrived = move_file(parked, target)
            except OSError as exc:
                report.skipped.append(Skip(s.member, f"could not move: {exc.strerror or exc}{_put_back(aside, parked, s, index)}"))
                continue
            except BaseException:
                _put_back(aside, parked, s, index)
                raise
            report.moved.append((s.member, os.fsdecode(arrived)))
            index.forget([src])
    except BaseException as exc:
        _attach(exc, report)
        raise
    finally:
        aside.close()
    return report


def _can_ask() -> bool:
    """A terminal on stdin, or an ``input`` provided by a notebook kernel (or a test)."""
    if getattr(builtins.input, "__module__", "builtins") != "builtins":
        return True
    stdin = sys.stdin
    try:
        return stdin is not None and stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _question(steps: Sequence[Step]) -> str:
    """difPy's question, preceded by how many files and bytes are at stake."""
    from .results import human_size

    total = 0
    for s in steps:
        try:
            total += os.stat(os.fsencode(s.member)).st_size
        except OSError:
            pass
    return f"{len(steps)} lower-quality file(s), {human_size(total)} in all.\n{QUESTION}"


def _send_to_trash() -> Any:
    """send2trash's function, imported only when a trash action runs."""
    try:
        from send2trash import send2trash
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        raise ActionRefused("--trash needs the send2trash package: pip install send2trash") from None
    return send2trash


def delete(result: SearchResult, silent_del: bool = False, dry_run: bool = False,
           trash: bool = False) -> ActionReport:
    """Delete every verified lower-quality file, after difPy's question unless ``silent_del``.

    ``trash=True`` sends each file to the desktop trash (send2trash) instead, after the same
    verification; it does not ask, since the trash can give the files back. (A file is
    proven while set aside, then put back and trashed from its own name, so the trash can
    restore it there.)
    """
    if not isinstance(silent_del, bool):
        raise ActionRefused(f"invalid silent_del {silent_del!r}: must be True or False")
    index = _index_of(result)
    report = ActionReport("trash" if trash else "delete", dry_run=dry_run)
    steps, skips = steps_for(result)
    report.skipped.extend(skips)
    if not steps:
        return report
    to_trash = _send_to_trash() if trash else None
    if not dry_run:
        index.check_writable()
    if not silent_del and not dry_run and not trash:
        if not _can_ask():
            raise ActionRefused(
                "refusing to delete without confirmation: no terminal to ask "
                "(pass --yes, or silent_del=True)"
            )
        try:
            answer = input(_question(steps))
        except EOFError:
            raise ActionRefused("refusing to delete: no answer to the confirmation question") from None
        if answer.strip() not in ("y", "Y"):
            report.canceled = True
            return report
    if not dry_run:
        _recover(steps, index)
    prover = _prover(result, index, _rows(index, steps))
    aside = Aside()
    verb = "move to the trash" if to_trash is not None else "delete"
    try:
        for s, member, key in _proven(steps, prover, report, index, dry_run):
            src = os.fsencode(s.member)
            if dry_run:
                report.deleted.append(s.member)
                continue
            parked = _prove_aside(aside, prover, report, index, s, member, key)
            if parked is None:
                continue
            if to_trash is not None:  # proven: back to its name, then to the trash from there
                stuck = _put_back(aside, parked, s, index)
                if stuck:
                    report.skipped.append(Skip(s.member, f"could not {verb}{stuck}"))
                    continue
            try:
                if to_trash is not None:
                    to_trash(s.member)
                else:
                    os.unlink(parked)
            except OSError as exc:
                back = _put_back(aside, parked, s, index) if to_trash is None else ""
                report.skipped.append(Skip(s.member, f"could not {verb}: {exc.strerror or exc}{back}"))
                continue
            report.deleted.append(s.member)
            index.forget([src])
    except BaseException as exc:
        _attach(exc, report)
        raise
    finally:
        aside.close()
    return report


__all__ = ["ActionRefused", "ActionReport", "Skip", "Step", "check_destination", "check_move_to", "delete",
           "move_to", "steps_for"]
