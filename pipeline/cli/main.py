"""contractsum's entry point: global options, then the commands of an explicit list of modules."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import typer

from pipeline.cli._common import exit_with_error, handle_errors
from pipeline.errors import ContractsumError
from pipeline.output import json_requested, quiet_libraries, reserve_stdout

# The command modules, each with ``register(app)``. A module listed here that cannot be imported
# stops the CLI with an ImportError naming it: a renamed module must not silently drop commands.
COMMAND_MODULES = [
    "ingest",
    "config",
    "db",
    "demo",
    "summarize",
    "export",
    "matrix",
    "compare",
    "eval",
    "plan",
    "golden",
    "flows",
    "bench",
]


def _root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", help="TOML settings file (default: CONTRACTSUM_CONFIG or <home>/config.toml)."
    ),
    home: Path | None = typer.Option(None, "--home", help="Data folder (default ~/.contractsum)."),
    database_url: str | None = typer.Option(
        None, "--database-url", help="SQLAlchemy URL (default: SQLite under home)."
    ),
) -> None:
    overrides = {"home": home, "database_url": database_url}
    ctx.obj = {"config_file": config, "overrides": {k: v for k, v in overrides.items() if v is not None}}


def build_app(modules: Sequence[str | ModuleType] = COMMAND_MODULES) -> typer.Typer:
    """The CLI: global options, then every command of ``modules`` (names under ``pipeline.cli``,
    or modules), each wrapped in :func:`handle_errors` here so none can miss it."""
    app = typer.Typer(
        name="contractsum",
        help="Summarize legal contracts in batches with vLLM, citing pages and sentences.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(_root)
    for name in modules:
        if isinstance(name, ModuleType):
            name.register(app)
            continue
        dotted = f"pipeline.cli.{name}"
        try:
            module = importlib.import_module(dotted)
        except ModuleNotFoundError as exc:
            if exc.name != dotted:
                raise  # the module exists; something it imports does not
            raise ImportError(
                f"contractsum CLI: command module {dotted} is missing (listed in COMMAND_MODULES)", name=dotted
            ) from exc
        register = getattr(module, "register", None)
        if not callable(register):
            raise ImportError(f"contractsum CLI: command module {dotted} has no register(app)", name=dotted)
        register(app)
    _handle_errors_everywhere(app)
    return app


def _handle_errors_everywhere(app: typer.Typer) -> None:
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = handle_errors(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _handle_errors_everywhere(group.typer_instance)


app = build_app()


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
