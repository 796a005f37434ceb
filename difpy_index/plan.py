"""``difpy-index apply PLAN.json``: perform a plan downloaded from a review page.

A plan is a request, not an authority: ``{"version": 1, "catalog": ..., "threshold": ...,
"rotate": ..., "same_dim": ..., "px_size": ..., "folders": [...], "reference": [...],
"keep": [...], "actions": [{"path": member, "key": key}, ...]}`` (``reference`` and ``keep``
are optional, so plans written before them still load). It may choose which files to act on
and, among files that match, which one to keep (when the reviewer picked "keep this one
instead", the group's actions name that file as their key and ``keep`` lists it: it is never
acted on, nor is any file under a ``reference`` folder); it can never widen what counts as a
duplicate:

* its similarity is honoured only when it is a named preset with that preset's own
  settings (``duplicates`` 0 and ``similar`` 5 with ``same_dim``, ``near`` with or without
  it; ``px_size`` 50; ``rotate`` either way). Anything else must be repeated on the command
  line (``-s``, ``--no-same-dim``, ``--px-size``), and the command line always wins;
* every path is an absolute, normalised path (no ``.``, ``..``, ``//``, NUL byte or
  unencodable surrogate), and every member and key a catalogued file (a member also under
  an indexed root); a file that is gone is skipped, a file never indexed refuses the plan;
* the pairs then get exactly the checks of ``search --move-to/--delete`` (``verify``), and
  a member is never removed for a key with fewer pixels (a swapped plan keeps the original).

Any failure of the first two refuses the whole plan (exit 2) before a file is touched.
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
DEFAULT_PX = 50  # the px_size a plan may carry without it being repeated


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


def check_plan_path(p: str, where: str) -> bytes:
    """A plan path as OS bytes: absolute, normalised, encodable. Raises UsageError."""
    if "\x00" in p:
        raise UsageError(f"{where}: a path holds a NUL byte")
    try:
        raw = os.fsencode(p)
    except UnicodeEncodeError:
        raise UsageError(f"{where}: a path holds characters no file name can (a lone surrogate)") from None
    if not p.startswith("/") or not os.path.isabs(p):
        raise UsageError(f"{where}: paths must be absolute")
    if p.startswith("//") or os.path.normpath(p) != p:
        raise UsageError(f"{where}: path {p!r} is not normalised (no '.', '..', '//' or trailing '/')")
    return raw


def parse_plan(obj: Any, source: str = "plan") -> Plan:
    """Validate a decoded plan; every problem is a ``UsageError`` naming the field.
    Linear in the number of actions (a dict keeps them unique and in order)."""
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
    for name, default in (("rotate", True), ("same_dim", True)):
        val = obj.get(name, default)
        if not isinstance(val, bool):
            raise bad(f"invalid {name} {val!r}: must be true or false")
        flags[name] = val
    px = obj.get("px_size", DEFAULT_PX)
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
    pairs: dict[tuple[str, str], None] = {}
    for i, a in enumerate(acts):
        if not isinstance(a, dict) or not isinstance(a.get("path"), str) or not isinstance(a.get("key"), str):
            raise bad(f"action {i} must be {{\"path\": ..., \"key\": ...}}")
        path, key = a["path"], a["key"]
        check_plan_path(path, f"{source}: action {i}")
        check_plan_path(key, f"{source}: action {i}")
        if path == key:
            raise bad(f"action {i}: a file cannot be its own key: {path}")
        pairs[(path, key)] = None
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
    except OSError as exc:  # a folder, no permission
        raise UsageError(f"cannot read the plan {p}: {exc.strerror or exc}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{p}: not a JSON plan ({exc.msg} at line {exc.lineno})") from None
    return parse_plan(obj, str(p))


def same_catalog(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))


@dataclass(frozen=True, slots=True)
class Settings:
    """What counts as a duplicate when a plan is applied."""

    threshold: float
    rotate: bool
    same_dim: bool
    px_size: int


def settings_for(plan: Plan, *, similarity: str | float | None = None, rotate: bool | None = None,
                 same_dim: bool | None = None, px_size: int | None = None) -> Settings:
    """The command line's settings, else the plan's where they are a named preset's own;
    anything wider in the plan alone is refused (UsageError) with what to repeat."""
    from .params import NEAR_THRESHOLD, SIMILARITY_PRESETS, check_px_size, is_near, parse_similarity

    if similarity is not None:
        threshold = parse_similarity(similarity)
        same_dim_default = not is_near(similarity)
    else:
        presets = {**SIMILARITY_PRESETS, "near": NEAR_THRESHOLD}
        name = next((n for n, v in presets.items() if v == plan.threshold), None)
        if name is None:
            raise UsageError(
                f"the plan asks for similarity {plan.threshold:g}, which is not a named preset; "
                f"a plan cannot widen what counts as a duplicate: repeat it on the command line "
                f"(-s {plan.threshold:g}) to apply it"
            )
        threshold = plan.threshold
        same_dim_default = name != "near"
    if same_dim is None:
        if same_dim_default and not plan.same_dim:
            raise UsageError(
                "the plan turns same_dim off (images of other dimensions match); repeat "
                "--no-same-dim on the command line to apply it"
            )
        same_dim = plan.same_dim
    if px_size is None:
        if plan.px_size != DEFAULT_PX:
            raise UsageError(
                f"the plan compares at px_size {plan.px_size}; repeat --px-size {plan.px_size} "
                "on the command line to apply it"
            )
        px_size = plan.px_size
    for name_, val in (("rotate", rotate), ("same_dim", same_dim)):
        if val is not None and not isinstance(val, bool):
            raise UsageError(f"invalid {name_} {val!r}: must be True or False")
    return Settings(threshold, plan.rotate if rotate is None else rotate, same_dim, check_px_size(px_size))


def check_against_catalog(plan: Plan, index: Index) -> None:
    """Every member and key is a catalogued file (a member also under an indexed root). A
    path that no longer exists is left for the action to skip ("no longer exists"); a file
    that exists but was never indexed, or a member outside every root, refuses the plan."""
    from .paths import owning_root

    roots = index.root_paths()
    paths = dict.fromkeys(os.fsencode(p) for pair in plan.actions for p in pair)
    rows = index.file_rows(list(paths))
    members = {m for m, _k in plan.actions}
    for p in paths:
        text = os.fsdecode(p)
        role = "file" if text in members else "key"
        if role == "file" and owning_root(p, roots) is None:
            raise UsageError(f"the plan names {text}, outside every indexed folder; a plan acts only on indexed files")
        if p not in rows and os.path.lexists(p):
            if owning_root(p, roots) is None:
                raise UsageError(f"the plan names the {role} {text}, outside every indexed folder")
            raise UsageError(f"the plan names the {role} {text}, which is not in the catalog (run update first)")


def plan_result(plan: Plan, index: Index, settings: Settings | None = None) -> SearchResult:
    """A ``SearchResult`` holding exactly the plan's pairs, attached to ``index``."""
    from .results import GroupInfo, MemberInfo, SearchResult

    st = settings or settings_for(plan)
    by_key: dict[str, list[str]] = {}
    keep = set(plan.keep)
    for member, key in plan.actions:
        if member not in keep:
            by_key.setdefault(key, []).append(member)
    groups = [GroupInfo(k, tuple(MemberInfo(m, 0.0, 0) for m in ms)) for k, ms in by_key.items()]
    return SearchResult(
        result={k: [[m, 0.0] for m in ms] for k, ms in by_key.items()},
        lower_quality=sorted({m for ms in by_key.values() for m in ms}),
        stats={}, groups=groups, threshold=st.threshold, rotate=st.rotate,
        same_dim=st.same_dim, px_size=st.px_size, folders=index.roots(),
        reference=list(plan.reference), _index=index, from_plan=True,
    )


def apply_plan(index: Index, plan: Plan, *, move_to: str | os.PathLike[str] | None = None,
               delete: bool = False, yes: bool = False, dry_run: bool = False,
               trash: bool = False, similarity: str | float | None = None,
               rotate: bool | None = None, same_dim: bool | None = None,
               px_size: int | None = None) -> ActionReport:
    """Move, delete or trash exactly the plan's files, verified by ``actions`` like a
    search's. The settings come from the arguments, else from the plan where they are a
    named preset's own."""
    from . import actions

    if (move_to is not None) + delete + trash != 1:
        raise UsageError("give exactly one of --move-to DEST, --delete or --trash")
    if plan.catalog is not None and not same_catalog(plan.catalog, index.path):
        raise UsageError(
            f"the plan was made from catalog {plan.catalog}, not {index.path}; "
            f"pass --catalog {plan.catalog}"
        )
    settings = settings_for(plan, similarity=similarity, rotate=rotate, same_dim=same_dim, px_size=px_size)
    check_against_catalog(plan, index)
    result = plan_result(plan, index, settings)
    if move_to is not None:
        report = actions.move_to(result, move_to, dry_run=dry_run)
    else:
        report = actions.delete(result, silent_del=yes, dry_run=dry_run, trash=trash)
    kept = sorted({m for m, _ in plan.actions if m in set(plan.keep)})
    report.skipped.extend(actions.Skip(m, "the reviewer chose to keep it") for m in kept)
    return report
