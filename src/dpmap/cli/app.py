"""The ``dpmap`` command line: a thin layer over the Python API.

This module holds the Typer app, :func:`main` and the error handling; the commands live
in one module per group (:mod:`.release`: release and explain; :mod:`.maps`: plot;
:mod:`.tables`: table, aggregate, compare, around, series, trend; :mod:`.demo`; :mod:`.audit`;
:mod:`.publish`: the website; :mod:`.budget`), their shared options in :mod:`.options` (built from the parameter table,
:mod:`dpmap.parameters`) and :mod:`.outputs`.

A user mistake (any :class:`~dpmap.errors.DpmapError`, or a bad flag) prints one line
on stderr and exits with status 2, with no traceback and no output file left behind
(files are written to temporary names and renamed when complete).
"""

from __future__ import annotations

import re
import sys
import warnings
from typing import Annotated, Any

import typer

from dpmap._version import __version__
from dpmap.cli.audit import audit_cmd
from dpmap.cli.budget import budget_app
from dpmap.cli.demo import demo_cmd
from dpmap.cli.maps import plot_cmd
from dpmap.cli.publish import publish_cmd
from dpmap.cli.release import explain_cmd, release_cmd
from dpmap.cli.tables import (
    aggregate_cmd,
    around_cmd,
    compare_cmd,
    series_cmd,
    table_cmd,
    trend_cmd,
)
from dpmap.errors import DpmapError, DpmapWarning

__all__ = ["app", "as_command_line", "cli_options", "main"]

app = typer.Typer(
    name="dpmap",
    help=(
        "Publish differentially private H3 maps of sensitive point data.\n\n"
        "Example:\n\n"
        "  dpmap release debts.csv --region province.geojson --resolution 7 --epsilon 1 "
        "--person debtor_id --value amount --bounds 0 50000 --out map.geojson"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(budget_app, name="budget")
for _name, _command in (
    ("release", release_cmd),
    ("explain", explain_cmd),
    ("plot", plot_cmd),
    ("table", table_cmd),
    ("aggregate", aggregate_cmd),
    ("compare", compare_cmd),
    ("around", around_cmd),
    ("series", series_cmd),
    ("trend", trend_cmd),
    ("demo", demo_cmd),
    ("audit", audit_cmd),
    ("publish", publish_cmd),
):
    app.command(_name)(_command)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dpmap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """Publish differentially private H3 maps of sensitive point data."""


# -- errors in the words of the command line -----------------------------------------
# The Python API's messages name keywords ("pass person='<column>'", "max_cells must be
# ..."); on the command line they are translated to the flags ("--person <column>",
# "--max-cells"), using the CLI's own option list.

_VALUE = r"""'[^']*'|"[^"]*"|\([^()]*\)|\[[^\[\]]*\]|<[^<>]*>|\.\.\.|\w+\([^()]*\)|[-+\w.]+"""


def cli_options() -> dict[str, tuple[str, bool]]:
    """Python keyword → (long flag, is a boolean flag), from every command's options
    (``release`` first, so its flags win where commands share a keyword)."""
    root = typer.main.get_command(app)
    commands: list[Any] = []

    def visit(command: Any) -> None:
        commands.append(command)
        for sub in getattr(command, "commands", {}).values():
            visit(sub)

    visit(root)
    commands.sort(key=lambda c: c.name != "release")
    options: dict[str, tuple[str, bool]] = {}
    for command in commands:
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option" and param.name:
                flag = next((o for o in param.opts if o.startswith("--")), None)
                if flag is not None:
                    options.setdefault(param.name, (flag, bool(param.is_flag)))
    return options


def _flag_value(name: str, flag: str, is_flag: bool, value: str) -> str:
    if name == "suppress_below" and value == "False":
        return "--no-suppress"
    if name == "adaptive" and value.strip("'\"") in ("grid", "privtree"):
        return f"--adaptive --adaptive-method {value.strip(chr(39) + chr(34))}"
    if value == "True":
        return flag if is_flag else f"{flag} true"
    if value == "False":
        return f"no {flag}" if is_flag else f"{flag} false"
    if value == "None":
        return f"no {flag}"
    if value[:1] in "'\"" and value[-1:] == value[:1]:
        inner = value[1:-1]
        return (
            f"{flag} {inner}"
            if inner and not any(c.isspace() for c in inner)
            else f"{flag} {value}"
        )
    if value[:1] in "([":  # bounds=(lo, hi) → --bounds lo hi; resolution=[5, 6] → 5,6
        items = [v.strip().strip("'\"") for v in value[1:-1].split(",") if v.strip()]
        if not items:
            return f"{flag} ''"
        return f"{flag} " + (" ".join(items) if value[0] == "(" else ",".join(items))
    call = re.fullmatch(r"\w+\(([^()]*)\)", value)  # ledger=Ledger(path) → --ledger path
    if call:
        return f"{flag} {call.group(1)}"
    return f"{flag} {value}"


def as_command_line(message: str, options: dict[str, tuple[str, bool]] | None = None) -> str:
    """``message`` with Python keywords replaced by the command line's flags."""
    options = cli_options() if options is None else options
    names = "|".join(sorted((re.escape(n) for n in options), key=len, reverse=True))
    if not names:
        return message

    def keyword(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        flag, is_flag = options[name]
        return _flag_value(name, flag, is_flag, value)

    # not inside a word, a quoted name or a path ("out/max_cells.csv")
    before = r"(?<![\w\-.'\"/\\])"
    message = re.sub(rf"{before}({names})=({_VALUE})", keyword, message)
    # bare identifiers that can only be Python names ("max_cells must be ...")
    bare = "|".join(re.escape(n) for n in options if "_" in n)
    if bare:
        message = re.sub(
            rf"{before}({bare})(?![\w=/\\]|\.\w)", lambda m: options[m.group(1)][0], message
        )
    return message


_showwarning = warnings.showwarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """dpmap's own warnings as one line on stderr; others as Python prints them."""
    if issubclass(category, DpmapWarning):
        text = as_command_line(" ".join(str(message).split()))
        print(f"dpmap: warning: {text}", file=sys.stderr)
    else:
        _showwarning(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes → one line on stderr and exit status 2.

    Returns the exit status (the ``dpmap`` console script passes it to ``sys.exit``).
    """
    command = typer.main.get_command(app)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", DpmapWarning)  # every time, never as an error
            warnings.showwarning = _show_warning
            result = command.main(args=argv, prog_name="dpmap", standalone_mode=False)
    except DpmapError as exc:
        message = as_command_line(" ".join(str(exc).split()))
        print(f"dpmap: error: {message}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.TyperException as exc:  # usage errors (bad or missing flags)
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help(), err=True)
            return 2
        message = " ".join(exc.format_message().split())
        hint = f"see {ctx.command_path} --help" if ctx is not None else "see dpmap --help"
        print(f"dpmap: error: {message} ({hint})", file=sys.stderr)
        return 2
    except typer.Abort:
        print("dpmap: aborted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0
