"""The docs stay true: Sphinx builds them without a warning, and the CLI reference names every
command and option the real CLI has (regenerate with ``python docs/gen_cli.py``)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from difpy_index.cli import app

DOCS = Path(__file__).resolve().parent.parent / "docs"
REGEN = "run 'python docs/gen_cli.py' to regenerate docs/cli.md"


def _cli_surface() -> dict[str, list[str]]:
    """{command name: every option spelling}, the root's options under 'difpy-index'."""
    root = typer.main.get_command(app)
    out = {"difpy-index": _opts(root)}
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        out[name] = _opts(cmd)
    return out


def _opts(cmd: object) -> list[str]:
    names: list[str] = []
    for p in cmd.params:  # type: ignore[attr-defined]
        if p.param_type_name == "option":
            names += [*p.opts, *p.secondary_opts]
    return [n for n in names if n != "--help"]


def test_cli_surface_is_collected() -> None:
    surface = _cli_surface()
    # the INTERFACE's commands and a few of their options, so the collector is not vacuous
    assert {"update", "search", "query", "watch", "status"} <= set(surface)
    assert "--catalog" in surface["difpy-index"]
    assert {"-s", "--similarity", "--no-rotate", "--lazy", "--in-folder", "-Z", "--move-to",
            "--delete", "--yes", "--dry-run", "--json"} <= set(surface["search"])


def test_every_command_and_option_is_in_the_cli_reference() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^## `([^`]+)`", text, flags=re.M))
    documented = set(re.findall(r"`(-{1,2}[\w-]+)`", text))
    missing: list[str] = []
    for command, options in _cli_surface().items():
        if command not in headings:
            missing.append(f"command {command}")
        missing += [f"{command} {o}" for o in options if o not in documented]
    assert not missing, f"docs/cli.md lacks {missing}; {REGEN}"


def test_cli_reference_names_no_removed_option() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    surface = _cli_surface()
    known = {o for opts in surface.values() for o in opts} | {"--help"}
    headings = set(re.findall(r"^## `([^`]+)`", text, flags=re.M))
    stale_commands = headings - set(surface)
    table_opts = set(re.findall(r"^\| `(-{1,2}[\w-]+)`", text, flags=re.M))
    assert not stale_commands and table_opts <= known, REGEN


def test_readme_commands_are_documented() -> None:
    """Every command the README's overview lists has a section in the reference."""
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^  (\w+) ", readme, flags=re.M))
    assert listed and listed <= set(_cli_surface())


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("sphinx") is None or importlib.util.find_spec("myst_parser") is None,
    reason="sphinx and myst-parser are in the [test] extra",
)
def test_sphinx_builds_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr or proc.stdout
    index = (out / "index.html").read_text(encoding="utf-8")
    for page in ("getting-started", "migrating", "semantics", "cli", "api", "architecture",
                 "performance"):
        assert f'href="{page}.html"' in index, page
    # autodoc really ran: the API page documents Index and the difPy layer from docstrings
    api = (out / "api.html").read_text(encoding="utf-8")
    assert 'id="difpy_index.Index.update"' in api and 'id="difpy_index.difpy_compat.Build"' in api
    # the differences section is reachable by its anchor
    assert 'id="differences-from-difpy"' in (out / "semantics.html").read_text(encoding="utf-8")
