"""Settings: precedence, sources, validation, secrets."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError, ModelNotFoundError
from pipeline.settings import describe, load_settings


def test_cli_beats_env_beats_file_beats_default(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_num_seqs = 3\ndtype = 'bfloat16'\nseed = 9\n")
    env = {"CONTRACTSUM_HOME": str(tmp_path), "CONTRACTSUM_DTYPE": "float32", "CONTRACTSUM_SEED": "5"}
    s, src = load_settings({"seed": 7}, config_file=cfg, environ=env)
    assert (s.max_num_seqs, s.dtype, s.seed, s.max_model_len) == (3, "float32", 7, 32768)
    assert src["max_num_seqs"].startswith("file") and src["dtype"] == "env CONTRACTSUM_DTYPE"
    assert src["seed"] == "cli" and src["max_model_len"] == "default"


def test_default_database_is_sqlite_under_home_and_passwords_are_masked(tmp_path):
    s, src = load_settings(environ={"CONTRACTSUM_HOME": str(tmp_path)})
    assert s.db_url == f"sqlite:///{tmp_path / 'contractsum.db'}"
    s, src = load_settings({"database_url": "postgresql+psycopg://app:pa55word@db/x"}, environ={})
    rows = {name: (value, source) for name, value, source in describe(s, src)}
    assert "pa55word" not in repr(s) and "pa55word" not in str(rows)
    assert rows["database_url"][0] == "postgresql+psycopg://app:***@db/x"


def test_invalid_values_are_config_errors_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match="tensor_parallel_size"):
        load_settings({"tensor_parallel_size": 0}, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "missing.toml", environ={})


def test_no_model_and_no_demo_model_tells_the_user_what_to_run(tmp_path):
    s, _ = load_settings(environ={"CONTRACTSUM_HOME": str(tmp_path)})
    with pytest.raises(ModelNotFoundError, match="no model configured") as exc:
        s.resolved_model()
    assert "demo-model" in str(exc.value)


def test_latest_demo_model_is_the_default(tmp_path, tiny_model):
    from pipeline.demo_models import set_latest

    s, _ = load_settings(environ={"CONTRACTSUM_HOME": str(tmp_path)})
    set_latest(s.models_dir, tiny_model)
    assert s.resolved_model() == tiny_model
