"""Shared CLI plumbing: settings from the context, errors to exit codes, JSON output."""

from __future__ import annotations

from functools import wraps
from typing import Any, Callable

import typer
from rich.console import Console

from pipeline.errors import ContractsumError
from pipeline.output import write_json
from pipeline.settings import Settings, load_settings

console = Console()
err_console = Console(stderr=True)


def settings_from(ctx: typer.Context, **overrides: Any) -> Settings:
    """The settings built once at the entry point, with this command's flags applied on top."""
    state = ctx.find_root().obj or {}
    base_overrides = dict(state.get("overrides", {}))
    base_overrides.update({k: v for k, v in overrides.items() if v is not None})
    settings, sources = load_settings(base_overrides, config_file=state.get("config_file"))
    ctx.find_root().obj = {**state, "settings": settings, "sources": sources}
    return settings


def sources_from(ctx: typer.Context) -> dict[str, str]:
    return (ctx.find_root().obj or {}).get("sources", {})


def exit_with_error(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Expected failures print one line and exit with their code; no tracebacks."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ContractsumError as exc:
            exit_with_error(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            exit_with_error("interrupted", 130)

    return wrapper


def print_json(obj: Any) -> None:
    write_json(obj)


def open_db(settings: Settings):
    """The session factory for the configured database (SQLite is migrated on first use)."""
    from storage.db import open_database

    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return open_database(settings.db_url)
