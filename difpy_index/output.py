"""difPy's output files: ``difPy_<timestamp>_{results,lower_quality,stats}.json``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def write_difpy_files(payload: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d%H%M%S")
    parts = {
        "results": payload["result"],
        "lower_quality": payload["lower_quality"],
        "stats": {**payload["stats"], **({"actions": payload["actions"]} if "actions" in payload else {})},
    }
    for name, obj in parts.items():
        target = out_dir / f"difPy_{stamp}_{name}.json"
        tmp = target.with_suffix(".json.tmp")
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as fh:
            json.dump(obj, fh, ensure_ascii=True, indent=1)
        os.replace(tmp, target)
    return out_dir.resolve()
