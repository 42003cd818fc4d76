"""Secrets stay secret; files holding contract text are owner-only; servers bind to loopback."""

from __future__ import annotations

import logging
import stat

from conftest import CORPUS
from typer.testing import CliRunner

from pipeline.cli.main import app

PASSWORD = "Hunter2-never-print-me"


def _exception_texts(exc: BaseException | None) -> list[str]:
    """Message and repr of an exception and everything chained to it."""
    texts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts += [str(exc), repr(exc), *map(str, getattr(exc, "args", ()))]
        exc = exc.__cause__ or exc.__context__
    return texts


def test_database_password_never_reaches_cli_output_logs_or_reports(tmp_path, pg_admin, tiny_model, caplog):
    from conftest import drop_pg_database, make_pg_database

    from storage.db import make_engine, upgrade

    plain = make_pg_database(pg_admin)
    # trust authentication ignores the password, so the URL works and carries a secret
    url = plain.replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:{PASSWORD}@")
    try:
        upgrade(make_engine(url))
        caplog.set_level(logging.DEBUG)
        runner = CliRunner()
        out = tmp_path / "report.html"
        outputs = []
        nda = str(CORPUS / "commonpaper-mutual-nda-v1.pdf")
        unreachable = url.replace("5432", "1")
        for db, args, code in (
            (url, ["ingest", nda, "--model", str(tiny_model), "--batch", "s"], 0),
            (url, ["ingest", nda, "--json"], 0),
            (url, ["status"], 0),
            (url, ["status", "--json"], 0),
            (url, ["config"], 0),
            (url, ["config", "--json"], 0),
            (url, ["db", "upgrade"], 0),
            (url, ["db", "current"], 0),
            (url, ["show", "commonpaper-mutual-nda-v1.pdf"], 0),
            (url, ["export", "--batch", "s", "--format", "html", "--out", str(out)], 0),
            (unreachable, ["status"], 1),
        ):
            # Exceptions propagate (a crash fails here); an error the CLI turned into an exit code
            # still hangs off the SystemExit, and its whole chain is searched with the output.
            res = runner.invoke(app, ["--database-url", db, *args], catch_exceptions=False)
            assert res.exit_code == code, (args, res.output)
            outputs += [res.stdout, res.stderr, *_exception_texts(res.exception)]
        assert "cannot reach the database" in res.stderr
        assert any("OperationalError" in t for t in _exception_texts(res.exception))  # the chain was read
        everything = "\n".join(outputs) + caplog.text + out.read_text()
        assert "***" in everything  # the masked form is what config shows
        assert PASSWORD not in everything
    finally:
        drop_pg_database(pg_admin, plain)


def test_files_with_contract_text_are_owner_only(tmp_path, tiny_model):
    home = tmp_path / "home"
    runner = CliRunner()
    env = {"CONTRACTSUM_HOME": str(home)}
    assert runner.invoke(app, ["ingest", str(CORPUS / "commonpaper-mutual-nda-v1.pdf")], env=env).exit_code == 0
    report = home / "reports" / "all.md"
    assert runner.invoke(app, ["export", "--format", "md"], env=env).exit_code == 0
    for path in (home, home / "contractsum.db", report):  # owner-only: nothing for group or others
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"


def test_prefect_servers_contractsum_starts_bind_to_loopback_unless_told_otherwise(tmp_path):
    from flows._prefect import prefect_environment

    env = prefect_environment(tmp_path, environ={})
    hosts = {k: v for k, v in env.items() if k.endswith("_HOST")}
    assert len(hosts) >= 3 and set(hosts.values()) == {"127.0.0.1"}
    told = prefect_environment(tmp_path, environ={"PREFECT_SERVER_API_HOST": "0.0.0.0"})
    assert "PREFECT_SERVER_API_HOST" not in told  # an operator's explicit choice wins
