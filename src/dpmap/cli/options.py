"""Options shared by the commands, built from the parameter table (:mod:`dpmap.parameters`).

The options of ``dpmap release``, ``dpmap explain`` and ``dpmap audit`` that stand for
release parameters are not written out here: :func:`table_options` makes them from the
table (flag, type, default, help), and :func:`table_values` turns what Typer read (or a
``--config`` file held) into the keywords of the Python functions, with the table's
conversions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from dpmap import parameters
from dpmap.errors import SpecError

__all__ = [
    "CTX",
    "adaptive_arg",
    "option",
    "table_options",
    "table_values",
    "with_signature",
]

#: the Typer context, first parameter of a command whose signature is built here
CTX = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)


def option(default: Any, annotation: Any, *names: str, help: str, **kw: Any) -> inspect.Parameter:
    """A keyword-only Typer option named after its first flag (``--max-cells`` → max_cells)."""
    name = names[0].lstrip("-").replace("-", "_")
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, typer.Option(*names, help=help, **kw)],
    )


def with_signature(params: list[inspect.Parameter]) -> Callable[[Any], Any]:
    """Give a ``**kw`` command the signature Typer reads its options from."""

    def decorate(func: Any) -> Any:
        func.__signature__ = inspect.Signature(params)
        return func

    return decorate


def table_options(command: str) -> list[inspect.Parameter]:
    """The options (and argument) of ``dpmap <command>`` from the parameter table.

    A parameter without a default is a required flag, unless the command reads a
    ``--config`` file, which may hold it: then the flag defaults to None and its help says
    "Required (here or in --config)" (the command checks it after reading the file).
    """
    rows = parameters.for_entry_point(f"cli {command}")
    has_config = any(p.name == "config" for p in rows)
    out = []
    for p in rows:
        annotation, default, text = p.option_type, p.option_default, p.help
        if default is parameters.REQUIRED and has_config:
            annotation, default = annotation | None, None
            text += " Required (here or in --config)."
        if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD:
            spec: Any = typer.Argument(help=text, metavar=p.metavar)
        else:
            spec = typer.Option(p.flag, *p.aliases, help=text, metavar=p.metavar)
        out.append(
            inspect.Parameter(
                p.name, p.kind, default=default, annotation=Annotated[annotation, spec]
            )
        )
    return out


def table_values(kw: dict[str, Any], command: str) -> dict[str, Any]:
    """The Python keywords of what ``dpmap <command>`` read for the table's flags.

    Each value goes through its row's conversion; a flag left unset whose Python default
    is not None gets that default; ``--no-suppress`` becomes ``suppress_below=False`` and
    ``--adaptive-method grid`` ``adaptive="grid"``. Other keys are left as they are.
    """
    out = dict(kw)
    for p in parameters.for_entry_point(f"cli {command}"):
        if p.name not in out or p.type is None:
            continue
        value = p.from_cli(out[p.name])
        if value is None and p.default not in (None, parameters.REQUIRED):
            value = p.default
        out[p.name] = value
    out["adaptive"] = adaptive_arg(bool(out.get("adaptive")), out.pop("adaptive_method", None))
    if out.pop("no_suppress", False):
        if out.get("suppress_below") is not None:
            raise SpecError(
                "--suppress-below and --no-suppress contradict each other; pass one of them"
            )
        out["suppress_below"] = False
    return out


def adaptive_arg(adaptive: bool, method: str | None) -> bool | str:
    """--adaptive and --adaptive-method as the ``adaptive=`` argument of a release."""
    method = method or "privtree"
    if method not in ("privtree", "grid"):
        raise SpecError(f"--adaptive-method must be privtree or grid, got {method!r}")
    if method == "grid" and not adaptive:
        raise SpecError("--adaptive-method applies to adaptive releases; add --adaptive")
    return "grid" if method == "grid" else adaptive
