"""Shared fixtures: isolation of every path and env var, both databases, the corpus."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "examples" / "contracts"
PG_ADMIN_URL = os.environ.get("CONTRACTSUM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """Every test gets its own home; nothing leaks from the developer's environment."""
    home = tmp_path_factory.mktemp("home")
    for key in list(os.environ):
        if key.startswith("CONTRACTSUM_") and key != "CONTRACTSUM_TEST_PG":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CONTRACTSUM_HOME", str(home))
    monkeypatch.setenv("PREFECT_HOME", str(home / "prefect"))
    yield home


@pytest.fixture(scope="session")
def manifest() -> dict:
    return json.loads((CORPUS / "manifest.json").read_text())


@pytest.fixture(scope="session")
def corpus_pdfs(manifest) -> list[Path]:
    paths = [CORPUS / c["pdf_file"] for c in manifest["contracts"]]
    assert paths, "the corpus must not be empty"
    return paths


def _pg_available() -> bool:
    from sqlalchemy import create_engine, text

    try:
        with create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3}).connect() as c:
            c.execute(text("select 1"))
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_admin():
    """The PostgreSQL server; CI starts it, so its absence is a failure, not a skip."""
    from sqlalchemy import create_engine

    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} (./scripts/test.sh starts it: scripts/services.sh)")
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    yield engine
    engine.dispose()


def make_pg_database(pg_admin) -> str:
    from sqlalchemy import text

    name = f"cs_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(pg_admin, url: str) -> None:
    from sqlalchemy import text

    name = url.rsplit("/", 1)[1]
    with pg_admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    admin = request.getfixturevalue("pg_admin")
    url = make_pg_database(admin)
    try:
        yield url
    finally:
        from sqlalchemy.orm import close_all_sessions

        close_all_sessions()
        drop_pg_database(admin, url)


@pytest.fixture
def factory(db_url):
    """A migrated database of each kind."""
    from storage.db import make_engine, open_database, upgrade

    upgrade(make_engine(db_url))
    f = open_database(db_url)
    yield f
    f.kw["bind"].dispose()


# --- models and the one shared engine ------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny random-weight Llama (fast, meaningless text), built once per test run."""
    from pipeline.demo_models import build_tiny

    return build_tiny(tmp_path_factory.mktemp("models"), seed=0)


# Output limits that keep the random model's answers short; min_clauses forces citations so
# "every citation resolves" is checked over a non-empty set.
TINY_OVERRIDES = dict(min_clauses=2, summary_max_chars=60, finding_max_chars=40, max_output_tokens=512)


def make_settings(home: Path, **overrides):
    from pipeline.settings import load_settings

    settings, _ = load_settings({"home": home, **overrides}, environ={"CONTRACTSUM_HOME": str(home)})
    return settings


@pytest.fixture(scope="session")
def engine(tiny_model):
    """One vLLM CPU engine (TP=1, float32) for the whole test run."""
    from pipeline.engine.engine import Engine

    eng = Engine(
        tiny_model, max_model_len=32768, dtype="float32", max_num_seqs=64, stall_seconds=120, cpu_kvcache_space_gib=2
    )
    yield eng
    eng.shutdown()


# --- Prefect -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect API (its own SQLite database) for every flow test of the run: it
    takes 10-30 s to start. Prefect reads its settings when first imported, so its home and the
    offline switches are set before that import."""
    from flows._prefect import OFFLINE_DEFAULTS

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
        for key, value in OFFLINE_DEFAULTS.items():
            mp.setenv(key, value)
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=180):
            yield


def result_config(playbook=None, *, prompt_version: str = "v1", **changes):
    """A result configuration for tests that store results without running a model (``changes``:
    ResultConfig fields, e.g. another model_fingerprint or tier)."""
    from pipeline.review.configuration import ResultConfig, review_mode_of

    fields = dict(
        prompt_version=prompt_version,
        playbook=playbook.name if playbook is not None else "default",
        playbook_version=playbook.version if playbook is not None else "1",
        review_mode=review_mode_of(playbook) if playbook is not None else "whole",
        review_key=playbook.review_key(prompt_version) if playbook is not None else prompt_version,
        model="test-model",
        model_fingerprint="0" * 32,
        dtype="float32",
        max_model_len=2048,
        plan="test-plan",
        sampling={"seed": 0},
        limits={},
    )
    return ResultConfig(**{**fields, **changes})


def ingested(tmp_path: Path, model: Path, files, *, db_url: str | None = None, batch: str = "b1", **overrides):
    """Settings (the tiny model's output limits, ``overrides`` on top), a migrated database (SQLite
    under home, or ``db_url``) and ``files`` ingested into ``batch`` with ``model``'s chunker; every
    file must end ok. Returns (settings, factory, chunker)."""
    from pipeline.batch import Chunker, ingest_paths
    from storage.db import make_engine, open_database, upgrade

    kw = {**TINY_OVERRIDES, "model": model, **overrides}
    if db_url:
        kw["database_url"] = db_url
    settings = make_settings(tmp_path / "home", **kw)
    if db_url and not db_url.startswith("sqlite"):
        upgrade(make_engine(db_url))
    factory = open_database(settings.db_url)
    chunker = Chunker.for_model(settings, model)
    report = ingest_paths(factory, settings, list(files), batch_name=batch, chunker=chunker)
    assert len(report.files) == len(files) and all(f.status == "ok" for f in report.files), [
        (f.source, f.reason) for f in [*report.files, *report.problems]
    ]
    return settings, factory, chunker


def start_session(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
    """Start ``cmd`` in its own session (so teardown can stop it together with the processes it
    started), stdout and stderr to ``log``."""
    import subprocess

    return subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_session(proc) -> None:
    """SIGTERM ``proc``'s session, SIGKILL it after 30 s."""
    import signal
    import subprocess

    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
