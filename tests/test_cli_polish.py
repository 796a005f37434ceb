"""Command-line polish: global options after the subcommand, --version, help that shows
flags as flags, one-line usage errors, a silent broken pipe, read-only commands that never
create a catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imagefactory as imf
import pytest

import difpy_index


@pytest.fixture
def indexed(tmp_path: Path, cli) -> Path:
    root = tmp_path / "pics"
    root.mkdir()
    imf.synthetic(1, 40, 30).save(root / "a.png")
    imf.synthetic(1, 40, 30).save(root / "b.png")
    assert cli("update", root).exit_code == 0
    return root


def test_global_options_after_the_subcommand(cli, indexed, tmp_path):
    res = cli("search", indexed, "--json", "-v", "--catalog", cli.catalog, catalog=False)
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["lower_quality"] == [os.path.realpath(indexed / "b.png")]
    res = cli("status", f"--catalog={cli.catalog}", "-q", "--json", catalog=False)
    assert res.exit_code == 0 and json.loads(res.stdout)["files"] == 2
    # -v after the command gives tracebacks-level logging: INFO lines appear
    imf.synthetic(2, 40, 30).save(indexed / "c.png")
    res = cli("search", indexed, "--json", "-v")  # -v: INFO lines (the refresh decoded c.png)
    assert res.exit_code == 0 and "INFO: brought up to date: 1 decoded" in res.stderr, res.stderr
    assert "INFO" not in cli("search", indexed, "--json").stderr
    # an option value that looks like a command is not taken for one
    res = cli("--catalog", tmp_path / "status", "status", catalog=False)
    assert res.exit_code == 2 and "no catalog at" in res.stderr


def test_version(cli):
    res = cli("--version", catalog=False)
    assert res.exit_code == 0 and res.stdout.strip() == f"difpy-index {difpy_index.__version__}"


def test_help_shows_flags_as_flags(cli):
    top = cli("--help", catalog=False).stdout
    sub = cli("search", "--help", catalog=False).stdout
    for text in (top, sub):
        assert "<bool>" not in text and "╭" not in text
    verbose = next(ln for ln in top.splitlines() if "--verbose" in ln)
    assert "-v, --verbose " in verbose and "<" not in verbose and "--version" in top
    assert "--rotate / --no-rotate" in sub and "--keep RULE,..." in sub and "--no-update" in sub


@pytest.mark.parametrize("argv", [
    ("search", "--nope"), ("nope",), ("search", "-s"), ("update", "--px-size", "x"),
    ("search", "--format", "yaml"),
])
def test_usage_errors_are_one_line(cli, argv):
    res = cli(*argv)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "--help" in lines[0]


def test_read_commands_never_create_a_catalog(cli, tmp_path, indexed):
    missing = tmp_path / "typo.sqlite"
    for argv in (("search",), ("status",), ("query", indexed / "a.png"), ("forget", indexed)):
        res = cli("--catalog", missing, *argv, catalog=False)
        assert res.exit_code == 2, argv
        assert res.stderr.strip() == f"error: no catalog at {missing}; run 'difpy-index update DIR' first"
        assert not missing.exists() and not missing.parent.joinpath("typo.sqlite-wal").exists()


def test_broken_pipe_is_silent(cli, indexed):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "difpy_index", "--catalog", str(cli.catalog), "search", str(indexed),
         "--no-update"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line (| head -0)
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert err == "", err
    assert proc.returncode in (0, 1)


def test_trash_sends_verified_members_to_the_trash(cli, indexed, tmp_path):
    """--trash: the member goes to the desktop trash (send2trash) after the same checks as
    --delete; the key stays; a dry run lists it and changes nothing; apply --trash too."""
    xdg = tmp_path / "xdg"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "XDG_DATA_HOME": str(xdg)}
    base = [sys.executable, "-m", "difpy_index", "--catalog", str(cli.catalog)]
    dry = subprocess.run([*base, "search", str(indexed), "--trash", "--dry-run"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert dry.returncode == 0, dry.stderr
    assert f"would delete  {os.path.realpath(indexed / 'b.png')}" in dry.stdout
    assert (indexed / "b.png").exists() and not xdg.exists()
    run = subprocess.run([*base, "search", str(indexed), "--trash", "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    acts = json.loads(run.stdout)["actions"]
    assert acts["action"] == "trash" and acts["deleted"] == [os.path.realpath(indexed / "b.png")]
    assert not (indexed / "b.png").exists() and (indexed / "a.png").exists()
    trashed = xdg / "Trash" / "files" / "b.png"
    assert trashed.exists() and (xdg / "Trash" / "info" / "b.png.trashinfo").exists()
    # a member edited since it was indexed is skipped, as for --delete
    imf.synthetic(1, 40, 30).save(indexed / "c.png")
    assert cli("update", indexed).exit_code == 0
    imf.synthetic(5, 40, 30).save(indexed / "c.png")
    res = cli("search", indexed, "--trash", "--no-update", "--json")
    assert res.exit_code == 1  # asked to act and every file was refused: say so (issue 13)
    assert json.loads(res.stdout)["actions"]["deleted"] == [] and (indexed / "c.png").exists()
    bad = cli("search", indexed, "--trash", "--delete")
    assert bad.exit_code == 2 and "mutually exclusive" in bad.stderr
