"""Shared CLI plumbing: settings from the context, errors to exit codes, JSON output."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

import typer
from rich.console import Console

from pipeline.engine.config import EngineSettings
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
    """Expected failures print one line and exit with their code; no tracebacks. The CLI applies
    it to every command when it registers them (``pipeline/cli/main.py``); applying it twice
    wraps once."""
    if getattr(fn, "handles_errors", False):
        return fn

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ContractsumError as exc:
            exit_with_error(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            exit_with_error("interrupted", 130)

    wrapper.handles_errors = True  # type: ignore[attr-defined]
    return wrapper


def engine_option(name: str) -> Any:
    """The CLI flag for the engine setting ``name``: its flag (``--`` + the name with dashes, or
    the field's own ``flag``) and help text come from ``EngineSettings``; unset means "from the
    settings"."""
    import typing

    field = EngineSettings.model_fields[name]
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = str(extra.get("flag") or "--" + name.replace("_", "-"))
    choices = [a for a in typing.get_args(field.annotation) if isinstance(a, str)]
    for arg in typing.get_args(field.annotation):  # Literal[...] | None
        choices += [c for c in typing.get_args(arg) if isinstance(c, str)]
    help_text = (field.description or "") + (f" One of: {', '.join(choices)}." if choices else "")
    return typer.Option(None, flag, help=help_text)


def print_json(obj: Any) -> None:
    write_json(obj)


def open_db(settings: Settings):
    """The session factory for the configured database (SQLite is migrated on first use)."""
    from storage.db import open_home_database

    return open_home_database(settings)
