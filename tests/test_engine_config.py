"""EngineConfig: the one definition of the engine's settings, and the shared engine's key.

The key tests need no engine: the fingerprint is a pure function of the config. The last test uses
the session's engine and starts none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import make_settings

from pipeline.engine.config import ENGINE_SETTING_NAMES, EngineConfig, EngineSettings, engine_config_from
from pipeline.errors import ConfigError
from pipeline.settings import Settings

# A value different from the default for every EngineConfig field (the test below fails when a
# field is added without one, so a new setting cannot slip out of the key).
OTHER_VALUE = {
    "model": "/elsewhere/model",
    "tensor_parallel_size": 2,
    "max_model_len": 4096,
    "dtype": "bfloat16",
    "quantization": "fp8",
    "kv_cache_dtype": "fp8",
    "max_num_seqs": 8,
    "max_num_batched_tokens": 2048,
    "gpu_memory_utilization": 0.5,
    "enable_prefix_caching": False,
    "enable_chunked_prefill": False,
    "enforce_eager": True,
    "seed": 1,
    "cpu_kvcache_space_gib": 2,
    "stall_seconds": 60.0,
    "load_format": "dummy",
    "extra": {"async_scheduling": True},
}
# Settings names that differ from the EngineConfig field they set.
SETTING_NAME = {"stall_seconds": "engine_stall_seconds"}


def test_every_field_has_a_different_value_to_try():
    assert set(OTHER_VALUE) == set(EngineConfig.model_fields)


@pytest.mark.parametrize("field", sorted(EngineConfig.model_fields))
def test_any_field_changes_the_fingerprint(field):
    base = EngineConfig.build("/models/tiny")
    other = base.replace(**{field: OTHER_VALUE[field]})
    assert getattr(other, field) != getattr(base, field)
    assert other.fingerprint() != base.fingerprint()
    assert other.replace(**{field: getattr(base, field)}).fingerprint() == base.fingerprint()


def test_fingerprint_is_stable_across_processes_and_argument_order():
    a = EngineConfig.build("/m", seed=3, dtype="float32", extra={"b": 1, "a": 2})
    b = EngineConfig.build("/m", extra={"a": 2, "b": 1}, dtype="float32", seed=3)
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
    assert a == b and len({a, b, a.replace(seed=4)}) == 2  # usable as a key (tiers, result caches)
    code = (
        "from pipeline.engine.config import EngineConfig;"
        "print(EngineConfig.build('/m', seed=3, dtype='float32', extra={'b': 1, 'a': 2}).fingerprint())"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == a.fingerprint()


def test_bad_engine_values_are_config_errors_naming_the_setting():
    with pytest.raises(ConfigError, match="tensor_parallel_size"):
        EngineConfig.build("/m", tensor_parallel_size=0)
    with pytest.raises(ConfigError, match="no_such_setting"):
        EngineConfig.build("/m", no_such_setting=1)


def test_settings_carry_every_engine_setting_under_its_own_name():
    # The user-visible names stay; each has the same default, limits and help text as the model.
    for name in ENGINE_SETTING_NAMES:
        mine, theirs = Settings.model_fields[name], EngineSettings.model_fields[name]
        assert (mine.annotation, mine.default, mine.metadata, mine.description) == (
            theirs.annotation,
            theirs.default,
            theirs.metadata,
            theirs.description,
        )
    assert Settings.model_fields["engine_stall_seconds"].default == EngineConfig.model_fields["stall_seconds"].default


def test_env_vars_reach_the_engine_config(tmp_path, tiny_model):
    from pipeline.settings import load_settings

    env = {
        "CONTRACTSUM_HOME": str(tmp_path),
        "CONTRACTSUM_SEED": "7",
        "CONTRACTSUM_ENABLE_PREFIX_CACHING": "false",
        "CONTRACTSUM_ENGINE_STALL_SECONDS": "42",
    }
    settings, sources = load_settings(environ=env)
    cfg = settings.engine_config(tiny_model)
    assert (cfg.seed, cfg.enable_prefix_caching, cfg.stall_seconds, cfg.model) == (7, False, 42.0, str(tiny_model))
    assert sources["seed"] == "env CONTRACTSUM_SEED"


@pytest.mark.parametrize(
    "field", [f for f in sorted(EngineConfig.model_fields) if f not in ("model", "load_format", "extra")]
)
def test_settings_that_differ_in_any_engine_setting_ask_for_another_engine(tmp_path, tiny_model, field):
    """The bug: the key left out seed, prefix caching, gpu_memory_utilization and
    max_num_batched_tokens, so the shared engine served requests it was not built for."""
    from pipeline.engine.engine import engine_key

    a = make_settings(tmp_path / "home")
    b = make_settings(tmp_path / "home", **{SETTING_NAME.get(field, field): OTHER_VALUE[field]})
    assert engine_key(engine_config_from(a, tiny_model)) != engine_key(engine_config_from(b, tiny_model))
    assert engine_key(engine_config_from(a, tiny_model)) == engine_key(
        engine_config_from(make_settings(tmp_path / "x"), tiny_model)
    )


def test_golden_toml_keys_are_the_engine_settings(tmp_path, tiny_model):
    from pipeline.quality.golden_run import ENGINE_KEYS, resolve_config

    assert ENGINE_KEYS == frozenset(EngineSettings.model_fields)
    settings = make_settings(tmp_path / "home")
    every = tmp_path / "every.toml"
    every.write_text("\n".join(f"{k} = {json.dumps(OTHER_VALUE[k])}" for k in ENGINE_SETTING_NAMES) + "\n")
    side = resolve_config(str(every), model=tiny_model, settings=settings)
    assert side.engine == {k: OTHER_VALUE[k] for k in ENGINE_SETTING_NAMES}
    for text, named in (("stall_seconds = 5\n", "unknown key"), ("max_num_seqs = 0\n", "max_num_seqs")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=named) as info:
            resolve_config(str(bad), model=tiny_model, settings=settings)
        assert str(bad) in str(info.value)


@pytest.mark.engine
def test_shared_engine_is_reused_only_for_exactly_its_config(engine, tiny_model, tmp_path, monkeypatch):
    """The session engine, adopted as the shared one: the same settings get it back without a
    start; a change to any one engine setting would not (it is not served)."""
    import pipeline.engine.engine as E

    monkeypatch.setattr(E, "_shared", None)
    settings = make_settings(tmp_path / "home", dtype="float32")
    E.adopt_engine(engine, settings, tiny_model)
    assert E.shared_engine(settings, tiny_model) is engine
    asked = engine_config_from(settings, tiny_model)
    assert E.serves(engine, asked)
    for field in ENGINE_SETTING_NAMES + ("stall_seconds",):
        assert not E.serves(engine, asked.replace(**{field: OTHER_VALUE[field]})), field
    # The record of the run keeps the whole config as run, and the fingerprint of what was asked.
    snap = engine.snapshot()
    assert snap["fingerprint"] == engine.requested.fingerprint()
    assert set(EngineConfig.model_fields) <= set(snap) and snap["dtype"] == "float32"
    json.dumps(snap)
