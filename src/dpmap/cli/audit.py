"""``dpmap audit``: the empirical privacy audit (:func:`dpmap.audit`) of a release
configuration, on SYNTHETIC data. Its release options come from the parameter table."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

from dpmap import parameters
from dpmap.cli.options import option, table_options, table_values, with_signature

__all__ = ["audit_cmd"]

#: the audit's own options (after the release parameters it audits, from the table)
_AUDIT_OPTIONS = [
    option(
        False,
        bool,
        "--discovery",
        help="Audit a release without a region (needs --delta > 0).",
    ),
    option(
        False,
        bool,
        "--zones",
        help="Audit a zone release: the seven cells become seven public zones, one row each "
        "(no --resolution).",
    ),
    option(400, int, "--runs", help="Runs on each dataset."),
    option(1e-6, float, "--alpha", help="Chance that a correct release is flagged."),
    option(
        "release",
        str,
        "--level",
        help="release (whole releases, every mode) or mechanism (only the noise step of a "
        "flat release: many more runs per second).",
    ),
    option(False, bool, "--json", help="Print the report as JSON."),
]


@with_signature([*table_options("audit"), *_AUDIT_OPTIONS])
def audit_cmd(**kw: Any) -> None:
    """Audit the privacy of a release configuration empirically, on SYNTHETIC data.

    Builds a tiny public region (an H3 cell and its six neighbours near 39.1 N, 116.15 E), a dataset D (ten persons with two records in six of the cells) and D′ = D plus one adversarial person (200 records, all but one in max-cells cells and one in one more cell, at random positions among D's rows, extreme values), and runs the release --runs times on each.

    The best separating events (count, sum, suppression, published cells, a pooled likelihood-ratio score) are chosen on a fifth of the runs and measured on the rest; the result is a (1 − alpha)-confidence lower bound on ε, printed beside the claimed ε and beside the most the runs could ever certify (with a warning when that is not above the claim).

    Exit status 1 if the bound exceeds the claim (the release leaks more than it says), 0 otherwise.

    Example: dpmap audit --resolution 7 --epsilon 1 --runs 400

    A zone release: dpmap audit --zones --epsilon 1 --runs 400
    """
    import json

    from dpmap.auditing import audit

    own = {key: kw.pop(key) for key in ("discovery", "zones", "runs", "alpha", "level")}
    as_json = kw.pop("json")
    values = table_values(kw, "audit")
    params = {
        k: v
        for k, v in values.items()
        if k in parameters.AUDIT_PARAMETERS
        and not (k == "bounds" and v is None)
        and not (k == "resolution" and v is None and own["zones"])
    }
    console = Console(stderr=True, highlight=False, quiet=as_json)
    with console.status("auditing…") as status:

        def progress(done: int, total: int) -> None:
            status.update(f"auditing… {done}/{total} runs on each dataset")

        report = audit(progress=progress, **own, **params)
    typer.echo(
        json.dumps(report.as_dict(), indent=2, ensure_ascii=False) if as_json else str(report)
    )
    if not report.passed:
        raise typer.Exit(code=1)
