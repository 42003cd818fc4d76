"""`contractsum db ...`: schema migrations."""

from __future__ import annotations

import typer

from pipeline.cli._common import console, settings_from
from pipeline.settings import mask_url

db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(ctx: typer.Context, revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create or migrate the tables (idempotent)."""
    from storage.db import current_revision, ensure_home, make_engine
    from storage.db import upgrade as do_upgrade

    settings = settings_from(ctx)
    ensure_home(settings.home)
    engine = make_engine(settings.db_url)
    before = _safe_revision(engine)
    do_upgrade(engine, revision)
    console.print(f"{mask_url(settings.db_url)}: {before or 'empty'} -> {current_revision(engine)}", highlight=False)


@db_app.command("current")
def current(ctx: typer.Context) -> None:
    """Print the schema revision of the database."""
    from storage.db import head_revision, make_engine

    settings = settings_from(ctx)
    rev = _safe_revision(make_engine(settings.db_url))
    console.print(f"{rev or 'empty'} (head {head_revision()})")


def _safe_revision(engine):
    from sqlalchemy.exc import OperationalError

    from pipeline.errors import StorageError
    from storage.db import current_revision

    try:
        return current_revision(engine)
    except OperationalError as exc:
        raise StorageError(f"cannot reach the database: {type(exc.orig).__name__}") from None
