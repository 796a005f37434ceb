"""Result dataclasses shared by the API, the CLI and the difPy layer."""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actions import ActionReport
    from .index import Index


def human_size(n: int) -> str:
    """Bytes for a person: 950 B, 2.2 kB, 4.1 MB (powers of 1000, as file managers show)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


@dataclass(frozen=True, slots=True)
class MemberInfo:
    path: str
    mse: float
    rotation: int  # degrees the member is turned (np.rot90 k*90) to match its key
    # ``near`` only: mirrored left-right before the rotation, and the rule that matched
    # ("mse" or "correlation") with its value
    mirror: bool = False
    measure: str | None = None
    value: float | None = None
    orientation: int | None = None  # its EXIF orientation tag (1-8), never applied
    # ``near`` only: the group's member this one matched (``measure``/``value`` are then
    # to it, not to the key), None when it matched the key
    via: str | None = None

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "mse": self.mse, "rotation": self.rotation,
                               "orientation": self.orientation}
        if self.measure is not None:
            out |= {"mirror": self.mirror, "measure": self.measure, "value": self.value}
            if self.via is not None:
                out["via"] = self.via
        return out


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What a person needs to judge a file of a group (and what the keep rules read)."""

    width: int
    height: int
    size: int  # bytes
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class GroupInfo:
    key: str
    members: tuple[MemberInfo, ...]
    folder: str | None = None  # the in_folder argument the group belongs to
    key_orientation: int | None = None  # the key's EXIF orientation tag (1-8)


@dataclass(slots=True)
class SearchResult:
    """difPy's ``result``, ``lower_quality`` and ``stats``, plus the detail behind them."""

    result: dict[str, Any]
    lower_quality: list[str]
    stats: dict[str, Any]
    groups: list[GroupInfo]
    threshold: float
    rotate: bool
    same_dim: bool
    px_size: int
    folders: list[str] = field(default_factory=list)  # the searched folders (real paths)
    keep: str = "pixels,larger,path"  # the keep rule that chose the keys (keep.describe)
    reference: list[str] = field(default_factory=list)  # reference folders: never touched
    facts: dict[str, FileFacts] = field(default_factory=dict)  # every key and member
    unreachable: list[str] = field(default_factory=list)  # roots left out (unmounted?)
    #: a plan (a request from outside): a member never goes for a key with fewer pixels
    from_plan: bool = False
    recipe: str = ""  # the tensor recipe tag the search read (actions verify with it)
    _index: Index | None = field(default=None, repr=False)

    def details(self) -> list[dict[str, Any]]:
        """Why each member matched: its MSE to the key and the rotation that matched, with
        each file's EXIF orientation tag (None: no tag; recorded, never applied)."""
        return [
            {
                "key": g.key,
                "key_orientation": g.key_orientation,
                **({"folder": g.folder} if g.folder is not None else {}),
                "members": [m.detail() for m in g.members],
            }
            for g in self.groups
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "lower_quality": self.lower_quality,
            "stats": self.stats,
            "details": self.details(),
        }

    def move_to(self, destination: str | Any, dry_run: bool = False) -> ActionReport:
        """Move every lower-quality file to ``destination``, verified first, never overwriting."""
        from .actions import move_to

        return move_to(self, destination, dry_run=dry_run)

    def check_move_to(self, destination: str | Any) -> None:
        """Refuse a destination ``move_to`` would refuse (exit 2), before any output is written."""
        from .actions import check_move_to

        check_move_to(self, destination)

    def delete(self, silent_del: bool = False, dry_run: bool = False) -> ActionReport:
        """Delete every lower-quality file after verification (asks unless ``silent_del``)."""
        from .actions import delete

        return delete(self, silent_del=silent_del, dry_run=dry_run)

    def trash(self, dry_run: bool = False) -> ActionReport:
        """Send every lower-quality file to the desktop trash, verified as for ``delete``."""
        from .actions import delete

        return delete(self, silent_del=True, dry_run=dry_run, trash=True)

    def report(self, path: str | Any) -> Any:
        """Write a self-contained HTML review page of the groups (``report.write_report``)."""
        from .report import write_report

        return write_report(self, path)


@dataclass(frozen=True, slots=True)
class QueryMatch:
    query: str
    indexed: bool  # the query file itself is in the catalog
    matches: tuple[MemberInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "indexed": self.indexed,
            "matches": [[m.path, m.mse] for m in self.matches],
            "details": [m.detail() for m in self.matches],
        }

#: difPy files of one second tried before giving up (``difPy_<stamp>-2`` ... ``-N``).
MAX_STEMS = 10_000


def write_difpy_files(
    payload: dict[str, Any], out_dir: str | os.PathLike[str], stamp: str | None = None
) -> list[Path]:
    """Write difPy's three files ``difPy_<stamp>_{results,lower_quality,stats}.json`` in
    ``out_dir`` (created if missing) and return their absolute paths in that order.

    Never overwrites: each file is created exclusively (``O_EXCL``), and when any of the
    three names is taken (two runs in the same second, or a file already there) the whole
    set moves to the next stem ``difPy_<stamp>-2``, ``-3``..., so one run's files share
    one stem. ``stamp`` defaults to the local time (difPy's ``%Y%m%d%H%M%S``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    stamp = stamp or time.strftime("%Y%m%d%H%M%S")
    parts = {
        "results": payload["result"],
        "lower_quality": payload["lower_quality"],
        "stats": {**payload["stats"], **({"actions": payload["actions"]} if "actions" in payload else {})},
    }
    # serialised first: a payload that cannot be written leaves no file behind
    texts = {name: json.dumps(obj, ensure_ascii=True, indent=1) for name, obj in parts.items()}
    for n in range(1, MAX_STEMS + 1):  # bounded: a folder full of our files is an error
        stem = f"difPy_{stamp}" if n == 1 else f"difPy_{stamp}-{n}"
        paths = [out / f"{stem}_{name}.json" for name in texts]
        created: list[Path] = []
        try:
            for path, text in zip(paths, texts.values(), strict=True):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                created.append(path)
                with os.fdopen(fd, "w", encoding="ascii") as fh:
                    fh.write(text)
        except FileExistsError:
            _unlink_all(created)  # only the files this attempt created
            continue
        except BaseException:
            _unlink_all(created)
            raise
        return paths
    raise OSError(errno.EEXIST, f"no free name after {MAX_STEMS} tries", str(out / f"difPy_{stamp}"))


def _unlink_all(paths: list[Path]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass
