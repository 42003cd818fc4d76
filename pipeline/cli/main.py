"""contractsum's entry point: global options, then one command group per module."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli._common import exit_with_error
from pipeline.errors import ContractsumError
from pipeline.output import json_requested, quiet_libraries, reserve_stdout

app = typer.Typer(
    name="contractsum",
    help="Summarize legal contracts in batches with vLLM, citing pages and sentences.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module exposes register(app); a module that is missing simply adds nothing.
COMMAND_MODULES = ["ingest", "config", "db", "demo", "summarize", "export", "plan", "golden", "flows"]


@app.callback()
def _root(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help="TOML settings file (default: CONTRACTSUM_CONFIG or <home>/config.toml)."),
    home: Optional[Path] = typer.Option(None, "--home", help="Data folder (default ~/.contractsum)."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help="SQLAlchemy URL (default: SQLite under home)."),
) -> None:
    overrides = {"home": home, "database_url": database_url}
    ctx.obj = {"config_file": config, "overrides": {k: v for k, v in overrides.items() if v is not None}}


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"pipeline.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pipeline.cli.{name}":
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    quiet_libraries()  # vLLM logs to stdout by default: send it to stderr
    if json_requested(sys.argv[1:]):
        reserve_stdout()  # one JSON document on stdout, whatever vLLM, Prefect or pypdf write
    try:
        app()
    except ContractsumError as exc:  # errors raised outside a command body (settings parsing)
        exit_with_error(str(exc), exc.exit_code)


if __name__ == "__main__":
    main()
