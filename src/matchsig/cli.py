"""The `matchsig` command line.

Every command turns a :class:`~matchsig.errors.MatchsigError` into one line on stderr and exit code 2,
so bad input never ends in a traceback.
"""

from __future__ import annotations

import sys

import typer

from .errors import MatchsigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Open up neural IR cross-encoders: attention-direction ablations and matching-head analysis.",
)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except MatchsigError as exc:
        typer.secho(f"matchsig: error: {exc}", err=True, fg="red")
        sys.exit(2)


# ---- commands are added below, one section per module they front -------------------------------
