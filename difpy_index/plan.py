"""``difpy-index apply PLAN.json``: perform a plan downloaded from a review page.

A plan is the reviewer's decision, not a new search: ``{"version": 1, "catalog": ...,
"threshold": ..., "rotate": ..., "same_dim": ..., "px_size": ..., "folders": [...],
"reference": [...], "keep": [...], "actions": [{"path": member, "key": key}, ...]}``
(``reference`` and ``keep`` are optional, so plans written before them still load). When
the reviewer picked "keep this one instead", the group's actions name that file as their
key and ``keep`` lists it: it is never acted on, nor is any file under a ``reference``
folder. It is turned into a ``SearchResult``
holding exactly those (key, member) pairs and handed to ``actions.move_to`` /
``actions.delete``, so a plan gets the very same checks as ``search --move-to/--delete``:
member and key exist and still match the catalog (re-decoded and re-compared when
changed), a file that is any action's key is never touched, a move never overwrites. A
hand-edited plan cannot remove a file that does not duplicate its key within the
plan's threshold.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .actions import ActionReport
    from .index import Index
    from .results import SearchResult

PLAN_VERSION = 1


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[tuple[str, str], ...]  # (member, key), in the plan's order
    threshold: float
    rotate: bool
    same_dim: bool
    px_size: int
    catalog: str | None = None
    folders: tuple[str, ...] = field(default_factory=tuple)
    reference: tuple[str, ...] = field(default_factory=tuple)
    keep: tuple[str, ...] = field(default_factory=tuple)  # never acted on


def plan_dict(result: SearchResult, actions: list[dict[str, str]]) -> dict[str, Any]:
    """The plan a review page offers for download (``parse_plan`` reads it back)."""
    idx = result._index
    return {
        "version": PLAN_VERSION,
        "catalog": str(idx.path) if idx is not None else None,
        "threshold": result.threshold,
        "rotate": result.rotate,
        "same_dim": result.same_dim,
        "px_size": result.px_size,
        "folders": list(result.folders),
        "reference": list(result.reference),
        "keep": [],  # files the reviewer chose to keep instead of their group's key
        "actions": actions,
    }


def parse_plan(obj: Any, source: str = "plan") -> Plan:
    """Validate a decoded plan; every problem is a ``UsageError`` naming the field."""
    from .params import check_px_size

    def bad(msg: str) -> UsageError:
        return UsageError(f"{source}: {msg}")

    if not isinstance(obj, dict):
        raise bad("not a plan (expected a JSON object)")
    if obj.get("version") != PLAN_VERSION:
        raise bad(f"unsupported plan version {obj.get('version')!r} (this difpy-index reads {PLAN_VERSION})")
    thr = obj.get("threshold")
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr) or thr < 0:
        raise bad(f"invalid threshold {thr!r}: must be a number >= 0")
    flags = {}
    for name, default in (("rotate", None), ("same_dim", True)):
        val = obj.get(name, default)
        if not isinstance(val, bool):
            raise bad(f"invalid {name} {val!r}: must be true or false")
        flags[name] = val
    px = obj.get("px_size")
    if isinstance(px, bool) or not isinstance(px, int):
        raise bad(f"invalid px_size {px!r}")
    try:
        px = check_px_size(px)
    except UsageError as exc:
        raise bad(str(exc)) from None
    catalog = obj.get("catalog")
    if catalog is not None and not isinstance(catalog, str):
        raise bad(f"invalid catalog {catalog!r}")
    folders = obj.get("folders", [])
    if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
        raise bad("invalid folders: must be a list of paths")
    extra: dict[str, tuple[str, ...]] = {}
    for name in ("reference", "keep"):
        val = obj.get(name, [])
        if not isinstance(val, list) or not all(isinstance(v, str) and os.path.isabs(v) for v in val):
            raise bad(f"invalid {name}: must be a list of absolute paths")
        extra[name] = tuple(val)
    acts = obj.get("actions")
    if not isinstance(acts, list):
        raise bad("missing actions list")
    pairs: list[tuple[str, str]] = []
    for i, a in enumerate(acts):
        if not isinstance(a, dict) or not isinstance(a.get("path"), str) or not isinstance(a.get("key"), str):
            raise bad(f"action {i} must be {{\"path\": ..., \"key\": ...}}")
        path, key = a["path"], a["key"]
        if not os.path.isabs(path) or not os.path.isabs(key):
            raise bad(f"action {i}: paths must be absolute")
        if path == key:
            raise bad(f"action {i}: a file cannot be its own key: {path}")
        if (path, key) not in pairs:
            pairs.append((path, key))
    return Plan(tuple(pairs), float(thr), flags["rotate"], flags["same_dim"], px, catalog,
                tuple(folders), extra["reference"], extra["keep"])


def load_plan(path: str | os.PathLike[str]) -> Plan:
    p = Path(os.fspath(path))
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"plan file not found: {p}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{p}: not a JSON plan (not UTF-8)") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{p}: not a JSON plan ({exc.msg} at line {exc.lineno})") from None
    return parse_plan(obj, str(p))


def same_catalog(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))


def plan_result(plan: Plan, index: Index) -> SearchResult:
    """A ``SearchResult`` holding exactly the plan's pairs, attached to ``index``."""
    from .results import GroupInfo, MemberInfo, SearchResult

    by_key: dict[str, list[str]] = {}
    keep = set(plan.keep)
    for member, key in plan.actions:
        if member not in keep:
            by_key.setdefault(key, []).append(member)
    groups = [GroupInfo(k, tuple(MemberInfo(m, 0.0, 0) for m in ms)) for k, ms in by_key.items()]
    folders = list(plan.folders) or index.roots()
    return SearchResult(
        result={k: [[m, 0.0] for m in ms] for k, ms in by_key.items()},
        lower_quality=sorted({m for ms in by_key.values() for m in ms}),
        stats={}, groups=groups, threshold=plan.threshold, rotate=plan.rotate,
        same_dim=plan.same_dim, px_size=plan.px_size, folders=folders,
        reference=list(plan.reference), _index=index,
    )


def apply_plan(index: Index, plan: Plan, *, move_to: str | os.PathLike[str] | None = None,
               delete: bool = False, yes: bool = False, dry_run: bool = False,
               trash: bool = False) -> ActionReport:
    """Move, delete or trash exactly the plan's files, verified by ``actions`` like a search's."""
    from . import actions

    if (move_to is not None) + delete + trash != 1:
        raise UsageError("give exactly one of --move-to DEST, --delete or --trash")
    if plan.catalog is not None and not same_catalog(plan.catalog, index.path):
        raise UsageError(
            f"the plan was made from catalog {plan.catalog}, not {index.path}; "
            f"pass --catalog {plan.catalog}"
        )
    result = plan_result(plan, index)
    if move_to is not None:
        report = actions.move_to(result, move_to, dry_run=dry_run)
    else:
        report = actions.delete(result, silent_del=yes, dry_run=dry_run, trash=trash)
    kept = sorted({m for m, _ in plan.actions if m in set(plan.keep)})
    report.skipped.extend(actions.Skip(m, "the reviewer chose to keep it") for m in kept)
    return report
