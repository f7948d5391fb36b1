"""``dpmap budget``: create and inspect privacy-budget ledgers from the command line.

Mounted by the main CLI as ``app.add_typer(budget_app, name="budget")``. Commands raise
:class:`~dpmap.errors.DpmapError` subclasses; the main entry point turns them into one
line on stderr and exit code 2.

Privacy
-------
Displays round *spent* amounts up and *remaining* amounts down (to 6 significant
digits), so a rounded table never shows more budget left than there is. The ledger
itself is exact; ``history --json`` prints the exact stored values.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dpmap.ledger import Ledger, LedgerEntry, format_amount

__all__ = ["budget_app"]

budget_app = typer.Typer(
    help=(
        "Privacy-budget ledgers: set a dataset's total privacy-loss cap (epsilon, delta) "
        "once, then see what each release spent and what is left."
    ),
    no_args_is_help=True,
)

LedgerArg = Annotated[
    str,
    typer.Argument(
        metavar="LEDGER",
        help=(
            "The ledger: a file (SQLite), e.g. budget.db, or a PostgreSQL URL, e.g. "
            "postgresql://analyst@db.example.org/dpmap (needs dpmap[postgres])."
        ),
        show_default=False,
    ),
]


def _console() -> Console:
    return Console(highlight=False)


@budget_app.command("init")
def init(
    ledger: LedgerArg,
    dataset: Annotated[
        str, typer.Option("--dataset", help="Name of the dataset, e.g. hebei-debt-2026.")
    ],
    epsilon: Annotated[
        str, typer.Option("--epsilon", help="Total epsilon all releases may spend (> 0).")
    ],
    delta: Annotated[
        str, typer.Option("--delta", help="Total delta (0 <= delta < 1); 0 = pure DP only.")
    ] = "0",
) -> None:
    """Create the ledger file if needed and register DATASET with its cap (never changed later)."""
    book = Ledger(ledger, create=True)  # the only command that creates a ledger
    # Amounts are passed on as the text typed, so "0.1" is exactly one tenth.
    cap = book.create(dataset, epsilon=epsilon, delta=delta)
    _console().print(f"Dataset {dataset!r} created in {book.location} with cap {cap}.")


@budget_app.command("show")
def show(
    ledger: LedgerArg,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Show only this dataset.", show_default=False)
    ] = None,
) -> None:
    """Show each dataset's cap, what it has spent (rounded up) and what is left (rounded down)."""
    book = Ledger(ledger)  # opens; never creates (a typo is an error)
    names = [dataset] if dataset is not None else book.datasets()
    console = _console()
    if not names:
        console.print(
            f"Ledger {book.location} has no datasets yet; add one with: "
            f"dpmap budget init {book.location} --dataset NAME --epsilon E"
        )
        return
    table = Table(title=f"Privacy budget — {book.location}")
    for col in (
        "Dataset",
        "Cap ε",
        "Cap δ",
        "Spent ε",
        "Spent δ",
        "Remaining ε",
        "Remaining δ",
        "ρ (zCDP)",
        "Releases",
        "Latest release",
    ):
        flush_left = col in ("Dataset", "Latest release")
        table.add_column(col, justify="left" if flush_left else "right", no_wrap=True)
    for name in names:
        cap = book.cap(name)
        spent = book.spent(name)
        left = book.remaining(name)
        entries = book.history(name)
        counted = sum(1 for e in entries if e.counts)
        pending = sum(1 for e in entries if e.status == "reserved")
        releases = str(counted) + (f" ({pending} unfinished)" if pending else "")
        latest = next((e for e in reversed(entries) if e.counts), None)
        table.add_row(
            name,
            format_amount(cap.epsilon, "down"),
            format_amount(cap.delta, "down"),
            format_amount(spent.epsilon, "up"),
            format_amount(spent.delta, "up"),
            format_amount(left.epsilon, "down"),
            format_amount(left.delta, "down"),
            "—" if spent.rho is None else format_amount(spent.rho, "up"),
            releases,
            "—" if latest is None else f"{_label(latest)} ({latest.time[:10]})",
        )
    _print_wide(console, table)
    console.print(
        "Spent is rounded up and remaining rounded down; accounting: sequential composition of "
        "each release's (ε, δ). Unfinished releases (status 'reserved') count as spent."
    )


@budget_app.command("history")
def history(
    ledger: LedgerArg,
    dataset: Annotated[str, typer.Option("--dataset", help="The dataset whose releases to list.")],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print every field as JSON (exact amounts) instead of a table."
        ),
    ] = False,
) -> None:
    """List every release charged to DATASET, including cancelled ones."""
    book = Ledger(ledger)  # opens; never creates (a typo is an error)
    entries = book.history(dataset)
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2, ensure_ascii=False))
        return
    console = _console()
    if not entries:
        console.print(f"No releases recorded for dataset {dataset!r} in {book.location}.")
        return
    table = Table(title=f"Releases of {dataset!r} — {book.location}")
    for col in (
        "#",
        "Label",
        "Time (UTC)",
        "Status",
        "Accounting",
        "ε",
        "δ",
        "ρ",
        "Mechanism",
        "Statistics",
        "Res",
        "Fingerprint",
        "dpmap",
    ):
        table.add_column(
            col, justify="right" if col in {"#", "ε", "δ", "ρ", "Res"} else "left", no_wrap=True
        )
    claims = any(e.claim is not None for e in entries)  # e.g. continuations of a release
    if claims:
        table.add_column("Claim", no_wrap=True)
    for e in entries:
        table.add_row(
            str(e.id),
            _label(e),
            e.time,
            _status(e),
            e.accounting,
            format_amount(e.epsilon, "up"),
            format_amount(e.delta, "up"),
            "—" if e.rho is None else format_amount(e.rho, "up"),
            e.mechanism,
            ", ".join(e.statistics),
            "—" if e.resolution is None else str(e.resolution),
            _short(e.fingerprint),
            e.dpmap_version,
            *([e.claim or "—"] if claims else []),
        )
    _print_wide(console, table)
    console.print(
        "Status: spent = noise drawn; reserved = unfinished (counts as spent); cancelled = given "
        "back before any noise (does not count). Amounts rounded up; --json shows exact values."
    )


def _label(entry: LedgerEntry) -> str:
    return entry.label if entry.label is not None else f"#{entry.id} (no label)"


def _print_wide(console: Console, table: Table) -> None:
    """Print a table at its natural width: rich would otherwise cut cells ("hebei-de…",
    "0.33…") to fit a narrow terminal or an 80-column pipe. Names and amounts are never
    cut; a narrow terminal wraps the lines instead."""
    needed = console.measure(table, options=console.options.update(max_width=100_000)).maximum
    if needed > console.width:
        console = Console(highlight=False, width=needed)
    console.print(table)


def _status(entry: LedgerEntry) -> str:
    return {"spent": "spent", "reserved": "reserved (counts)", "cancelled": "cancelled"}[
        entry.status
    ]


def _short(fingerprint: str | None, keep: int = 20) -> str:
    if fingerprint is None:
        return "—"
    return fingerprint if len(fingerprint) <= keep else fingerprint[:keep] + "…"
