"""Secrets stay secret; files holding contract text are owner-only; servers bind to loopback."""

from __future__ import annotations

import logging
import stat

from conftest import CORPUS
from typer.testing import CliRunner

from pipeline.cli.main import app

PASSWORD = "Hunter2-never-print-me"


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
        for args in (
            ["ingest", str(CORPUS / "commonpaper-mutual-nda-v1.pdf"), "--model", str(tiny_model), "--batch", "s"],
            ["ingest", str(CORPUS / "commonpaper-mutual-nda-v1.pdf"), "--json"],
            ["status"], ["status", "--json"], ["config"], ["config", "--json"], ["db", "upgrade"], ["db", "current"],
            ["show", "commonpaper-mutual-nda-v1.pdf"], ["export", "--batch", "s", "--format", "html", "--out", str(out)],
        ):
            res = runner.invoke(app, ["--database-url", url, *args])
            assert res.exit_code in (0, 1), (args, res.output)
            outputs.append(res.output)
        bad = runner.invoke(app, ["--database-url", url.replace("5432", "1"), "status"])
        outputs.append(bad.output)
        assert bad.exit_code == 1 and "cannot reach the database" in bad.output
        everything = "\n".join(outputs) + caplog.text + out.read_text()
        assert "***" in "\n".join(outputs)  # the masked form is what config shows
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
