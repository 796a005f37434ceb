"""An installed wheel (not the source tree) ships its migrations and can create a catalog."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(REPO)],
        capture_output=True, text=True, timeout=120,
    )
    if res.returncode != 0:
        pytest.fail(f"wheel build failed:\n{res.stdout}\n{res.stderr}")
    (whl,) = out.glob("difpy_index-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_contains_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "difpy_index/migrations/env.py" in names
    versions = [n for n in names if n.startswith("difpy_index/migrations/versions/") and n.endswith(".py")]
    assert versions
    assert "difpy_index/py.typed" in names
    assert not any(n.startswith("tests/") for n in names)


@pytest.mark.slow
def test_installed_wheel_creates_catalog(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
         str(target), str(wheel)],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    catalog = outside / "cat.sqlite"
    code = (
        "import sys, difpy_index, difpy_index.store.migrate as m\n"
        f"assert difpy_index.__file__.startswith({str(target)!r}), difpy_index.__file__\n"
        f"assert str(m.migrations_dir()).startswith({str(target)!r}), m.migrations_dir()\n"
        "from difpy_index import Index\n"
        f"with Index.open({str(catalog)!r}) as idx:\n"
        "    print(idx.status()['schema'])\n"
    )
    # the target dir first; the venv's site-packages for the dependencies, but no editable
    # install and no source tree: '-I' drops cwd and PYTHONPATH, -S drops site (and the
    # editable .pth); the dependencies come back via an explicit path list.
    import sysconfig

    site = sysconfig.get_paths()["purelib"]
    platsite = sysconfig.get_paths()["platlib"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    boot = (
        f"import sys; sys.path[:0] = [{str(target)!r}]; "
        f"sys.path += [{site!r}, {platsite!r}]; "
        f"exec({code!r})"
    )
    res = subprocess.run([sys.executable, "-I", "-S", "-c", boot], cwd=outside,
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    from difpy_index.store.migrate import HEAD

    assert res.stdout.strip() == HEAD
    assert catalog.is_file()
    assert str(REPO) not in res.stderr
