"""Regenerate docs/cli.md from the typer app (the same source ``--help`` prints from).

Run ``python docs/gen_cli.py`` after changing a command or an option;
tests/test_docs.py fails while a command or option is missing from docs/cli.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

HEADER = """\
# Command-line reference

Generated from the command definitions (the text `--help` prints) by `python docs/gen_cli.py`;
`tests/test_docs.py` checks that every command and option appears here.

The global options go before the command's name or after it:
`difpy-index --catalog my.sqlite -q search ~/Pictures` and
`difpy-index search ~/Pictures -q --catalog my.sqlite` are the same. `--version` prints the
version. A broken pipe (`difpy-index status | head -1`) ends the command silently.
Exit codes: `0` success (also when nothing was found), `1` the operation failed, `2` bad usage or
bad input, `130` interrupted by Ctrl-C (`watch` ends normally, with `0`, on Ctrl-C or SIGTERM).
Errors are one line on stderr; `-v` adds the traceback.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _type(param: Any, ctx: typer.Context) -> str:
    """The value type as ``--help`` shows it (typer's own API, then click's)."""
    shown = getattr(param, "display_type", None)
    text = shown(ctx) if callable(shown) else getattr(getattr(param, "type", None), "name", "")
    return str(text or "value").strip("<>").lower()


def _row(param: Any, ctx: typer.Context) -> str:
    if param.param_type_name == "option":
        names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
        kind = "flag" if param.is_flag and not param.count else _type(param, ctx)
        help_text = param.help or ""
        default = param.get_default(ctx, call=False)
        if param.envvar:
            help_text += f" (env var `{param.envvar}`)"
        show = default not in (None, False, ()) and not param.is_flag
        if param.is_flag and param.secondary_opts and default is not None:
            show = True
            default = param.opts[0] if default else param.secondary_opts[0]
        if param.count:
            show = False
        if show:
            help_text += f" Default: `{default}`."
    else:
        names = f"`{str(param.name).upper()}`"
        kind = _type(param, ctx) + " argument" + (", several" if param.nargs == -1 else "")
        kind += ", required" if param.required else ", optional"
        help_text = getattr(param, "help", None) or ""
    return f"| {names} | {kind} | {_cell(help_text)} |"


def _section(name: str, cmd: Any, parent: typer.Context | None, level: str) -> list[str]:
    ctx = typer.Context(cmd, info_name=name, parent=parent)
    usage = " ".join([ctx.command_path, *cmd.collect_usage_pieces(ctx)])
    lines = [f"{level} `{name}`", "", (cmd.help or "").strip(), "", "```text", usage, "```", ""]
    params = [p for p in cmd.get_params(ctx) if p.name != "help"]
    if params:
        lines += ["| option | kind | meaning |", "| --- | --- | --- |"]
        lines += [_row(p, ctx) for p in params]
        lines.append("")
    return lines


def render() -> str:
    from difpy_index.cli import app

    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="difpy-index")
    lines = [*HEADER.splitlines(), ""]
    lines += _section("difpy-index", root, None, "##")
    for name, cmd in root.commands.items():
        lines += _section(name, cmd, ctx, "##")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    target = Path(__file__).with_name("cli.md")
    target.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {target}\n")


if __name__ == "__main__":
    main()
