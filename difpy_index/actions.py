"""``move_to`` and ``delete``: act on lower-quality files without ever losing the last copy.

Every action runs in three steps:

1. **choose** (pure, ``steps_for``): which member goes where, and which key(s) it
   duplicates. Only members are ever touched; a path that is the key of *any* group
   (possible with overlapping ``in_folder`` arguments) is never moved or deleted.
2. **verify**, right before touching each member: the member and its key both exist and
   still match their catalog rows (size, mtime_ns) *and* their tensors still match within
   the search's threshold. A file whose row is stale (edited, replaced) is not trusted: it
   is decoded again and the exact MSE is recomputed. A member and key that are the same
   inode (hard link, bind mount) are skipped: removing one name frees nothing and, on a
   bind mount, would remove the key itself. Each failure is a reported skip, never an
   exception; the rest proceeds.
3. **I/O**, one file at a time, each followed at once by its catalog update.

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
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ActionError
from .fileops import candidates, move_file
from .match import mse_exact
from .paths import folder_name, is_within, owning_root, rel_below

if TYPE_CHECKING:
    import numpy as np

    from .index import Index, KnownFile  # the façade hands out the store's rows
    from .results import SearchResult

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


# -- verification ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Seen:
    """A file as verified: its stat identity, and its tensor and dimensions."""

    size: int
    mtime_ns: int
    dev: int
    ino: int
    tensor: np.ndarray
    width: int
    height: int


class Verifier:
    """Checks that a member still duplicates a key, trusting the catalog only when fresh."""

    def __init__(self, result: SearchResult, rows: dict[bytes, KnownFile]) -> None:
        from .decode import init_worker

        self.result = result
        self.index = result._index
        self.rows = rows
        self._keys: dict[str, Seen | str] = {}
        init_worker(self.index.max_pixels if self.index is not None else None)

    def look(self, path: str, role: str) -> Seen | str:
        """The file's current identity and tensor, or the reason it cannot be used."""
        import numpy as np

        from .decode import decode_file

        p = os.fsencode(path)
        px = self.result.px_size
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return f"{role} no longer exists"
        except OSError as exc:
            return f"{role} cannot be read: {exc.strerror or exc}"
        if not stat.S_ISREG(st.st_mode):
            return f"{role} is no longer a regular file"
        row = self.rows.get(p)
        if (
            row is not None and row.status == "ok" and self.index is not None
            and (row.size, row.mtime_ns) == (st.st_size, st.st_mtime_ns)
            and row.width is not None and row.height is not None
        ):
            cached = self.index.tensor(path, px)
            if cached is not None:
                return Seen(st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, cached,
                            row.width, row.height)
        # stale (or unknown) row: decode the file as it is now
        d = decode_file(p, (px,))
        if d.gone:
            return f"{role} vanished or kept changing while being checked"
        if d.error:
            return f"{role} changed since indexed and can no longer be decoded: {d.error}"
        tensor = np.frombuffer(d.tensors[px], dtype=np.uint8).reshape(px, px, 3)
        return Seen(d.size, d.mtime_ns, st.st_dev, d.inode, tensor, d.width, d.height)

    def key(self, path: str) -> Seen | str:
        if path not in self._keys:
            self._keys[path] = self.look(path, "key")
        return self._keys[path]

    def check(self, step: Step) -> tuple[Seen, str] | str:
        """(the member as verified, the key it matches) or why it must be skipped."""
        member = self.look(step.member, "file")
        if isinstance(member, str):
            return member
        reasons = []
        for key_path in step.keys:
            key = self.key(key_path)
            if isinstance(key, str):
                reasons.append(f"key {key_path} {_strip_role(key)}")
                continue
            # a key re-read after a move/delete of this run is re-checked via stat below
            if (key.dev, key.ino) == (member.dev, member.ino):
                reasons.append(f"is the same file as its key {key_path} (hard link or bind mount)")
                continue
            if not _still_there(key_path, key):
                self._keys.pop(key_path, None)
                reasons.append(f"key {key_path} changed during the action")
                continue
            if self.result.same_dim and sorted((key.width, key.height)) != sorted(
                (member.width, member.height)
            ):
                reasons.append(f"changed since indexed and no longer matches its key {key_path} "
                               "(dimensions differ)")
                continue
            mse, _deg = mse_exact(key.tensor, member.tensor, self.result.rotate)
            if mse <= self.result.threshold:
                return member, key_path
            reasons.append(
                f"changed since indexed and no longer matches its key {key_path} "
                f"(mse {mse:g} > {self.result.threshold:g})"
            )
        return "; ".join(reasons) or "has no key"


def _strip_role(reason: str) -> str:
    return reason[len("key ") :] if reason.startswith("key ") else reason


def _still_there(path: str, seen: Seen) -> bool:
    try:
        st = os.stat(os.fsencode(path))
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns, st.st_ino) == (seen.size, seen.mtime_ns, seen.ino)


# -- the actions -------------------------------------------------------------------------
def _index_of(result: SearchResult) -> Any:
    if result._index is None:
        raise ActionError("this result is not attached to a catalog; search again with Index.search")
    return result._index


def _rows(result: SearchResult, steps: Sequence[Step]) -> dict[bytes, KnownFile]:
    paths = {os.fsencode(s.member) for s in steps} | {os.fsencode(k) for s in steps for k in s.keys}
    return _index_of(result).file_rows(sorted(paths))



def _check_or_skip(
    verifier: Verifier, step: Step, report: ActionReport, index: Index, dry_run: bool
) -> Any:
    """The verified (member, key) of a step, or None after recording why it is skipped."""
    checked = verifier.check(step)
    if not isinstance(checked, str):
        return checked
    report.skipped.append(Skip(step.member, checked))
    if not dry_run and checked == "file no longer exists":
        # e.g. an earlier run killed between its unlink/rename and its catalog write:
        # the catalog follows the disk instead of keeping a dead row
        index.forget([os.fsencode(step.member)])
    return None


def move_to(result: SearchResult, destination: str | os.PathLike[str], dry_run: bool = False) -> ActionReport:
    """Move every verified lower-quality file under ``destination`` (see module docstring)."""
    if not isinstance(destination, (str, os.PathLike)) or not os.fspath(destination):
        raise ActionRefused(f"invalid destination {destination!r}: must be a folder path")
    index = _index_of(result)
    dest = os.path.realpath(os.fsencode(os.path.expanduser(os.fspath(destination))))
    report = ActionReport("move", dry_run=dry_run, destination=os.fsdecode(dest))
    searched = [os.path.realpath(os.fsencode(f)) for f in result.folders]
    for f in searched:
        if is_within(dest, f):
            raise ActionRefused(
                f"refusing to move into {os.fsdecode(dest)}: it is inside the searched folder "
                f"{os.fsdecode(f)}"
            )
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise ActionRefused(f"destination {os.fsdecode(dest)} exists and is not a folder")
    steps, skips = steps_for(result)
    report.skipped.extend(skips)
    rows = _rows(result, steps)
    root_by_id = index.roots_by_id()
    roots = sorted(root_by_id.values())
    root_of = {p: root_by_id[k.root_id] for p, k in rows.items() if k.root_id in root_by_id}
    steps = move_targets(steps, dest, roots, root_of)
    for s in steps:
        t = os.fsencode(s.target or "")
        for f in searched:
            if is_within(t, f):
                raise ActionRefused(
                    f"refusing to move into {os.fsdecode(dest)}: {s.member} would land inside "
                    f"the searched folder {os.fsdecode(f)}"
                )
    if not steps:
        return report
    verifier = Verifier(result, rows)
    taken: set[bytes] = set()
    if not dry_run:
        os.makedirs(dest, exist_ok=True)
    for s in steps:
        checked = _check_or_skip(verifier, s, report, index, dry_run)
        if checked is None:
            continue
        member, _key = checked
        src, target = os.fsencode(s.member), os.fsencode(s.target or "")
        if dry_run:
            free = next(c for c in candidates(target) if c not in taken and not os.path.lexists(c))
            taken.add(free)
            report.moved.append((s.member, os.fsdecode(free)))
            continue
        if not _still_there(s.member, member):
            report.skipped.append(Skip(s.member, "changed during the action"))
            continue
        try:
            arrived = move_file(src, target)
        except OSError as exc:
            report.skipped.append(Skip(s.member, f"could not move: {exc.strerror or exc}"))
            continue
        index.forget([src])
        report.moved.append((s.member, os.fsdecode(arrived)))
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
    verification; it does not ask, since the trash can give the files back.
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
    rows = _rows(result, steps)
    verifier = Verifier(result, rows)
    for s in steps:
        checked = _check_or_skip(verifier, s, report, index, dry_run)
        if checked is None:
            continue
        member, _key = checked
        if dry_run:
            report.deleted.append(s.member)
            continue
        if not _still_there(s.member, member):
            report.skipped.append(Skip(s.member, "changed during the action"))
            continue
        try:
            if to_trash is not None:
                to_trash(s.member)
            else:
                os.unlink(os.fsencode(s.member))
        except OSError as exc:
            verb = "move to the trash" if to_trash is not None else "delete"
            report.skipped.append(Skip(s.member, f"could not {verb}: {exc.strerror or exc}"))
            continue
        index.forget([os.fsencode(s.member)])
        report.deleted.append(s.member)
    return report


__all__ = ["ActionRefused", "ActionReport", "Skip", "Step", "delete", "move_to", "steps_for"]
