"""Entry point of the ``soi`` console script."""

from __future__ import annotations

import sys

import typer

from soi.cli import analyze as _analyze
from soi.cli import cartography as _cartography
from soi.cli import compare as _compare
from soi.cli import demo as _demo
from soi.cli import report as _report
from soi.cli import run as _run
from soi.cli import select as _select
from soi.errors import SoiError, os_error_message

app = typer.Typer(
    name="soi",
    help="Per-example training dynamics, dataset cartography and Subsets of Interest (SOI).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
import_app = typer.Typer(help="Import training dynamics from other tools' formats.", no_args_is_help=True)
export_app = typer.Typer(help="Export a soi run to other tools' formats.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        from soi import __version__

        print(f"soi {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the soi version and exit.")) -> None:
    """Per-example training dynamics, dataset cartography and Subsets of Interest (SOI)."""


app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")

app.command("analyze")(_analyze.analyze)
app.command("compare")(_compare.compare)
app.command("select")(_select.select)
app.command("demo")(_demo.demo)
app.command("run")(_run.run)
app.command("report")(_report.report)
import_app.command("cartography")(_cartography.import_cartography)
export_app.command("cartography")(_cartography.export_cartography)


def main() -> None:
    """Run the CLI; user errors and OS errors (full disk, read-only folder, ...) print one line on stderr and
    exit with status 2 (the contract is in docs/errors.md)."""
    try:
        app()
    except SoiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
