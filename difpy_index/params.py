"""Parameter parsing shared by the API, the CLI and the difPy layer (one set of messages)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .decode import DEFAULT_PX_SIZE, MAX_PX_SIZE, MIN_PX_SIZE
from .errors import UsageError

SIMILARITY_PRESETS = {"duplicates": 0.0, "similar": 5.0}
#: The 'near' preset: calibrated on ground-truth corpora (docs/quality.md,
#: tests/benchmarks/bench_quality.py); it also turns same_dim off unless given.
NEAR_THRESHOLD = 31.0


def parse_similarity(value: object) -> float:
    """'duplicates' -> 0, 'similar' -> 5, 'near' -> the calibrated preset, or a number >= 0."""
    if isinstance(value, str):
        key = value.strip().lower()
        if key in SIMILARITY_PRESETS:
            return SIMILARITY_PRESETS[key]
        if key == "near":
            return NEAR_THRESHOLD
    if isinstance(value, bool):
        raise UsageError(_SIM_MSG.format(value=value))
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(_SIM_MSG.format(value=value)) from None
    if not math.isfinite(number) or number < 0:
        raise UsageError(_SIM_MSG.format(value=value))
    return number


_SIM_MSG = (
    'invalid similarity {value!r}: use "duplicates", "similar", "near" or a number >= 0 '
    "(the largest mean squared error that still counts as a match)"
)


def is_near(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() == "near"


def check_px_size(px: object) -> int:
    if isinstance(px, bool) or not isinstance(px, int):
        raise UsageError(f"invalid px_size {px!r}: must be an integer")
    if not MIN_PX_SIZE <= px <= MAX_PX_SIZE:
        raise UsageError(f"invalid px_size {px}: must be between {MIN_PX_SIZE} and {MAX_PX_SIZE}")
    return px


def processes_fault(value: object) -> str | None:
    """What makes ``value`` no worker count: ``"type"`` (not an int) or ``"range"`` (below
    1); None when it is one (None itself means every core). Callers word the message."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return "type"
    return "range" if value < 1 else None


def check_processes(processes: object) -> int | None:
    """A worker count (None: every core), capped at 4 per core."""
    fault = processes_fault(processes)
    if fault == "type":
        raise UsageError(f"invalid processes {processes!r}: must be an integer")
    if fault == "range":
        raise UsageError(f"invalid processes {processes}: must be >= 1")
    if not isinstance(processes, int):
        return None
    return min(processes, 4 * (os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class SearchParams:
    """What decides which files match: one bundle from the caller's words to the search."""

    threshold: float
    rotate: bool = True
    same_dim: bool = True
    px_size: int = DEFAULT_PX_SIZE
    in_folder: bool = False

    @classmethod
    def parse(cls, similarity: object = "duplicates", *, rotate: object = True,
              same_dim: object = None, lazy: object = None, in_folder: object = False,
              px_size: object = DEFAULT_PX_SIZE) -> SearchParams:
        """Validate the API's arguments; ``same_dim`` defaults to difPy 4.1's ``lazy``,
        else on unless the similarity is 'near'."""
        threshold = parse_similarity(similarity)
        if same_dim is None:
            same_dim = lazy if lazy is not None else not is_near(similarity)
        for name, val in (("rotate", rotate), ("same_dim", same_dim), ("in_folder", in_folder)):
            if not isinstance(val, bool):
                raise UsageError(f"invalid {name} {val!r}: must be True or False")
        return cls(threshold, bool(rotate), bool(same_dim), check_px_size(px_size),
                   bool(in_folder))
