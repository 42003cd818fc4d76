"""Connecting and migrating: one SQLAlchemy engine per database URL, Alembic for the schema."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import StorageError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    # WAL lets readers work beside the one writer; busy_timeout turns lock contention into waiting.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their folder (owner-only) and safe pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).expanduser().resolve().parent
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    heads = ScriptDirectory.from_config(cfg).get_heads()
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent)."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(engine), revision)
    except OperationalError as exc:
        raise StorageError(f"cannot migrate the database: {exc.orig}") from None
    if engine.dialect.name == "sqlite":
        db = engine.url.database
        if db and db != ":memory:" and os.path.exists(db):
            os.chmod(db, 0o600)  # it holds contract text


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(_alembic_config(engine), revision)


def open_database(url: str, *, migrate: bool | None = None) -> sessionmaker[Session]:
    """A session factory for ``url``, the schema checked (SQLite is migrated on first use)."""
    engine = make_engine(url)
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        raise StorageError(
            f"cannot reach the database: {type(exc.orig).__name__}",
            hint="check database_url / CONTRACTSUM_DATABASE_URL and that the server is running",
        ) from None
    if migrate is None:
        migrate = engine.dialect.name == "sqlite"
    if current != head_revision():
        if migrate:
            upgrade(engine)
        elif current is None and not inspect(engine).get_table_names():
            raise StorageError("the database has no contractsum tables", hint="run `contractsum db upgrade`")
        else:
            raise StorageError(
                f"the database schema is at {current}, not {head_revision()}", hint="run `contractsum db upgrade`"
            )
    return sessionmaker(engine, expire_on_commit=False)


def ensure_home(home: Path) -> Path:
    """The data folder, made private (0700) if it is new."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def open_home_database(settings: Any) -> sessionmaker[Session]:
    """The session factory for a ``Settings``' database, its data folder made first (the SQLite
    file lives there) and the schema checked as :func:`open_database` does."""
    ensure_home(settings.home)
    return open_database(settings.db_url)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    with factory() as session, session.begin():
        yield session


def _transient(exc: BaseException) -> bool:
    """Faults worth retrying: the server went away or refused us, not a bad statement."""
    from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError

    if isinstance(exc, (DisconnectionError, InterfaceError)):
        return True
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def in_transaction(factory: sessionmaker[Session], fn, *, retry_seconds: float = 120.0, on_retry=None):
    """Run ``fn(session)`` as one transaction; if the database drops out, roll back and run the
    whole unit again (tenacity, exponential back-off) for up to ``retry_seconds``."""
    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

    for attempt in Retrying(
        retry=retry_if_exception(_transient),
        wait=wait_exponential(multiplier=0.5, max=5),
        stop=stop_after_delay(retry_seconds),
        reraise=True,
        before_sleep=(lambda rs: on_retry(rs.outcome and rs.outcome.exception(), rs.attempt_number))
        if on_retry
        else None,
    ):
        with attempt:
            with transaction(factory) as session:
                return fn(session)
