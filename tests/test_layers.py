"""The layers of docs/architecture.md, enforced: read every module's imports with ``ast``
(imports under ``TYPE_CHECKING`` and inside functions count too) and check who may import
whom. A module that is renamed or moved makes this fail rather than pass vacuously."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "difpy_index"

#: the database drivers: only store/ may import them
DATABASE = {"sqlite3", "sqlalchemy", "alembic", "psycopg"}
#: pure modules: they compute on values and never import a layer above them
CORE = {"decode", "scan", "match", "pool", "paths", "fileops", "params", "errors", "progress",
        "keep", "partition", "cluster"}
#: everything above the core: storage, the façade, the work modules and the shells
ABOVE_CORE = {"index", "results", "plan", "update", "actions", "report", "cli", "watch",
              "difpy_compat", "dif", "store"}
#: the only modules outside store/ that may use it
STORE_USERS = {"index", "update"}
#: what ``import difpy_index`` must not load (each costs start-up time)
HEAVY = ("numpy", "PIL", "sqlalchemy", "watchdog", "rich", "alembic")


def _name(path: Path) -> str:
    """``difpy_index.store.catalog`` for difpy_index/store/catalog.py."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (``from X import y`` gives X and
    X.y, since y may be a submodule)."""
    name = _name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    return out


def _unit(module: str) -> str | None:
    """The layer unit of a package module: ``store`` for anything in store/, else the
    module's own name; None for modules outside the package."""
    parts = module.split(".")
    if parts[0] != "difpy_index" or len(parts) < 2:
        return None
    return parts[1]


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {m: _imports(p) for m, p in MODULES.items()}


def test_the_scan_is_not_vacuous() -> None:
    assert len(MODULES) >= 20, sorted(MODULES)
    internal = [(m, t) for m, ts in IMPORTS.items() for t in ts if _unit(t) is not None]
    assert len(internal) >= 50, internal
    units = {_unit(m) for m in MODULES} - {None}
    # every name the rules mention is a real module: a rename must update the rules
    assert CORE | ABOVE_CORE <= units, sorted((CORE | ABOVE_CORE) - units)
    assert {"difpy_index.store.catalog", "difpy_index.store.db"} <= set(MODULES)
    # and the rules below do see imports of each kind they forbid elsewhere
    assert "sqlite3" in IMPORTS["difpy_index.store.db"]
    assert any(_unit(t) == "store" for t in IMPORTS["difpy_index.index"])


def test_only_store_imports_the_database() -> None:
    bad = sorted(
        (m, t) for m, ts in IMPORTS.items() if _unit(m) != "store"
        for t in ts if t.split(".")[0] in DATABASE
    )
    assert not bad, f"outside difpy_index/store/: {bad}"


def test_core_never_imports_upward() -> None:
    bad = sorted(
        (m, t) for m, ts in IMPORTS.items() if _unit(m) in CORE
        for t in ts if _unit(t) in ABOVE_CORE
    )
    assert not bad, f"a core module imports a layer above it: {bad}"


def test_only_the_facade_and_update_use_the_store() -> None:
    bad = sorted(
        (m, t) for m, ts in IMPORTS.items() if _unit(m) not in STORE_USERS | {"store"}
        for t in ts if _unit(t) == "store"
    )
    assert not bad, f"only index.py and update.py may import difpy_index.store: {bad}"


@pytest.mark.parametrize("module", ["difpy_index", "difpy_index.index"])
def test_import_stays_light(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(len([m for m in sys.modules if m.startswith('difpy_index')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "", f"import {module} loads {out[0]}"
    assert int(out[1]) >= 3  # it did import the package (not an empty stub)
