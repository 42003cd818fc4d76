"""The CLI registers its commands from an explicit module list: a missing module is an ImportError
naming it, and every command, however it was written, turns expected errors into one line and an
exit code."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import COMMAND_MODULES, app, build_app

runner = CliRunner()


def _commands(typer_app, prefix: str = "") -> dict[str, object]:
    found = {prefix + (c.name or c.callback.__name__): c.callback for c in typer_app.registered_commands}
    for g in typer_app.registered_groups:
        found.update(_commands(g.typer_instance, prefix + g.name + " "))
    return found


def test_a_missing_command_module_fails_loudly_naming_it():
    with pytest.raises(ImportError, match=r"pipeline\.cli\.no_such_commands") as info:
        build_app([*COMMAND_MODULES, "no_such_commands"])
    assert info.value.name == "pipeline.cli.no_such_commands"


def test_a_module_without_register_fails_loudly_naming_it():
    with pytest.raises(ImportError, match=r"pipeline\.cli\._common has no register"):
        build_app(["_common"])


def test_every_listed_module_adds_its_commands():
    names = set(_commands(app))
    assert {
        "ingest",
        "status",
        "config",
        "db upgrade",
        "db current",
        "demo-model",
        "summarize",
        "show",
        "export",
        "plan",
        "golden",
        "quantize-emulate",
        "serve",
        "submit",
        "deploy",
    } <= names


def test_every_registered_command_handles_errors():
    commands = _commands(app)
    assert commands
    unwrapped = [name for name, cb in commands.items() if not getattr(cb, "handles_errors", False)]
    assert not unwrapped


def test_registration_adds_error_handling_to_commands_written_without_it(tmp_path):
    import cli_probe

    probe_app = build_app(["config", cli_probe])
    for args, code, message in (
        (["probe"], 2, "the probe's setting is wrong (set it right)"),
        (["probes", "deep"], 1, "the probe's database is away"),
    ):
        res = runner.invoke(probe_app, ["--home", str(tmp_path), *args])
        assert res.exit_code == code, res.output
        assert message in res.output and "Traceback" not in res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)


def test_engine_flags_take_their_names_and_help_from_the_engine_settings():
    from pipeline.engine.config import EngineSettings

    res = runner.invoke(app, ["summarize", "--help"], env={"COLUMNS": "300"})
    assert res.exit_code == 0
    for flag, name in (
        ("--tp", "tensor_parallel_size"),
        ("--dtype", "dtype"),
        ("--max-model-len", "max_model_len"),
        ("--quantization", "quantization"),
    ):
        assert flag in res.output and EngineSettings.model_fields[name].description in res.output
    res = runner.invoke(app, ["golden", "--help"], env={"COLUMNS": "300"})
    assert "--tp" in res.output
