"""Engine tiers: settings, `config`, `plan --tier`, and `bench --tier` measuring and storing a tier
(one engine start: the tiny model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import REPO
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.engine.tiers import DEFAULT_WORK_POOL, fallback_after, next_deadline, tier, tiers_of
from pipeline.errors import ConfigError
from pipeline.settings import load_settings

runner = CliRunner()


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


TWO_TIERS = """
max_model_len = 4096
max_num_seqs = 12
[tiers.fallback]
max_model_len = 2048
max_num_seqs = 6
dtype = "float32"
work_pool = "cpu-small"
deployment = "contractsum-batch/fallback"
[tiers.primary]
tensor_parallel_size = 2
work_pool = "gpu-tp2"
"""


def test_tiers_come_primary_first_then_in_the_order_written(tmp_path):
    s, src = load_settings(config_file=_config(tmp_path, TWO_TIERS), environ={})
    order = tiers_of(s)
    assert [t.name for t in order] == ["primary", "fallback"]
    assert src["tiers"].startswith("file")
    fb = tier(s, "fallback")
    assert (fb.work_pool, fb.deployment, fb.overrides()) == (
        "cpu-small",
        "contractsum-batch/fallback",
        {"max_model_len": 2048, "max_num_seqs": 6, "dtype": "float32"},
    )
    assert fallback_after(s, "primary") == fb and fallback_after(s, "fallback") is None
    with pytest.raises(ConfigError, match="no tier named 'big'.*primary, fallback"):
        tier(s, "big")


def test_no_tiers_configured_is_one_primary_made_of_the_top_level_settings(tmp_path):
    s, _ = load_settings({"max_num_seqs": 5}, environ={})
    (only,) = tiers_of(s)
    assert (only.name, only.work_pool, only.deployment, only.overrides()) == ("primary", DEFAULT_WORK_POOL, None, {})
    assert only.settings(s).max_num_seqs == 5


def test_tiers_as_an_array_of_tables_or_json_in_the_environment(tmp_path):
    cfg = _config(
        tmp_path,
        '[[tiers]]\nname = "primary"\nwork_pool = "a"\n[[tiers]]\nname = "small"\nwork_pool = "b"\nseed = 3\n',
    )
    s, _ = load_settings(config_file=cfg, environ={})
    assert [(t.name, t.work_pool) for t in tiers_of(s)] == [("primary", "a"), ("small", "b")]
    env = {"CONTRACTSUM_TIERS": json.dumps({"primary": {"work_pool": "x"}, "tiny": {"work_pool": "y", "seed": 4}})}
    s, src = load_settings(environ=env)
    assert [t.name for t in tiers_of(s)] == ["primary", "tiny"] and tier(s, "tiny").seed == 4
    assert src["tiers"] == "env CONTRACTSUM_TIERS"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[tiers.primary]\nwork_pool = "a"\ntensr_parallel_size = 2\n', r"tier 'primary': tensr_parallel_size: Extra"),
        (
            '[tiers.primary]\nwork_pool = "a"\n[tiers.fb]\nwork_pool = "b"\nmax_num_seqs = 0\n',
            r"tier 'fb': max_num_seqs",
        ),
        ('[tiers.primary]\nwork_pool = "a"\n[tiers.fb]\ndtype = "int3"\nwork_pool = "b"\n', r"tier 'fb': dtype"),
        ("[tiers.fb]\ntensor_parallel_size = 2\n", r"tier 'fb': work_pool: Field required"),
        ('[tiers.fallback]\nwork_pool = "b"\n', r"no tier is named 'primary' \(configured: fallback\)"),
        (
            '[[tiers]]\nname = "primary"\nwork_pool = "a"\n[[tiers]]\nname = "primary"\nwork_pool = "b"\n',
            r"given more than once: primary",
        ),
        ('[[tiers]]\nwork_pool = "a"\n', r"tiers\[0\]: every tier needs a name"),
        ('[tiers.Primary]\nwork_pool = "a"\n', r"'Primary' is not a tier name"),
        ('nightly_deadline = "6:00"\n', r"nightly_deadline.*'6:00' is not a time of day as HH:MM"),
        ('nightly_deadline = "24:00"\n', r"nightly_deadline"),
        ('nightly_deadline = "06:00"\ntimezone = "Mars/Olympus"\n', r"unknown timezone 'Mars/Olympus'"),
        ("fallback_after_engine_deaths = 0\n", r"fallback_after_engine_deaths"),
    ],
    ids=[
        "unknown-field",
        "bad-limit",
        "bad-dtype",
        "no-work-pool",
        "no-primary",
        "two-primaries",
        "nameless",
        "bad-name",
        "deadline-format",
        "deadline-hour",
        "deadline-zone",
        "deaths",
    ],
)
def test_bad_tier_settings_are_config_errors_naming_the_tier_and_field(tmp_path, toml, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(config_file=_config(tmp_path, toml), environ={})


def test_the_next_deadline_is_today_before_it_and_tomorrow_after_it():
    berlin = ZoneInfo("Europe/Berlin")
    at_two = datetime(2026, 3, 28, 2, 0, tzinfo=berlin)
    assert next_deadline("06:00", "Europe/Berlin", at_two) == datetime(2026, 3, 28, 6, 0, tzinfo=berlin)
    at_seven = datetime(2026, 3, 28, 7, 0, tzinfo=berlin)
    # Across the spring DST change the wall clock still says 06:00.
    got = next_deadline("06:00", "Europe/Berlin", at_seven)
    assert (got.date().isoformat(), got.hour, got.minute) == ("2026-03-29", 6, 0)
    assert got.utcoffset().total_seconds() == 7200
    s, _ = load_settings({"nightly_deadline": "05:30", "timezone": "Europe/Berlin"}, environ={})
    assert s.nightly_deadline == "05:30"


def test_a_tiers_settings_run_the_existing_code_on_its_model(tmp_path, tiny_model):
    from pipeline.batch import Chunker

    cfg = _config(tmp_path, f'model = "{tiny_model}"\n' + TWO_TIERS)
    s, _ = load_settings(config_file=cfg, environ={"CONTRACTSUM_HOME": str(tmp_path)})
    fb = tier(s, "fallback")
    tiered = fb.settings(s)
    assert type(tiered) is type(s) and (tiered.max_model_len, tiered.max_num_seqs, tiered.dtype) == (
        2048,
        6,
        "float32",
    )
    assert (s.max_model_len, s.max_num_seqs) == (4096, 12)  # the top-level settings are untouched
    assert tiered.resolved_model() == tiny_model and tiered.tiers == s.tiers
    chunker = Chunker.for_model(tiered, tiered.resolved_model())
    wide = Chunker.for_model(s, s.resolved_model())
    assert 0 < chunker.budget < wide.budget  # the fallback's shorter context gives smaller chunks
    primary_cfg, fallback_cfg = tier(s, "primary").engine_config(s), fb.engine_config(s)
    assert fallback_cfg == tiered.engine_config() and fallback_cfg.max_model_len == 2048
    assert primary_cfg.tensor_parallel_size == 2 and primary_cfg.fingerprint() != fallback_cfg.fingerprint()
    other = tmp_path / "elsewhere"
    s2, _ = load_settings(
        config_file=_config(tmp_path, TWO_TIERS + f'model = "{other}"\n'),
        environ={"CONTRACTSUM_HOME": str(tmp_path)},
    )
    assert tier(s2, "primary").settings(s).model == other


def test_config_shows_every_tier_with_the_engine_it_runs(tmp_path):
    cfg = _config(tmp_path, TWO_TIERS)
    res = runner.invoke(app, ["--config", str(cfg), "config", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)["tiers"]
    assert shown["source"].startswith("file")
    by_name = {t["name"]: t for t in shown["value"]}
    assert [t["name"] for t in shown["value"]] == ["primary", "fallback"]
    assert (
        by_name["fallback"]["engine"]["max_model_len"] == 2048 and by_name["primary"]["engine"]["max_model_len"] == 4096
    )
    assert by_name["primary"]["engine"]["tensor_parallel_size"] == 2 and by_name["fallback"]["work_pool"] == "cpu-small"
    assert by_name["fallback"]["deployment"] == "contractsum-batch/fallback"
    res = runner.invoke(app, ["--config", str(cfg), "config"], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert res.exit_code == 0 and "engine tiers" in res.output
    assert "cpu-small" in res.output and "gpu-tp2" in res.output and "contractsum-batch/fallback" in res.output


def test_plan_sizes_each_tier_from_its_settings(tmp_path, tiny_model):
    cfg = _config(tmp_path, f'model = "{tiny_model}"\n' + TWO_TIERS)
    res = runner.invoke(
        app, ["--config", str(cfg), "plan", "--tier", "fallback", "--gpu-mem", "80", "--json"], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    one = json.loads(res.stdout)
    assert (one["tier"], one["context"], one["concurrency"], one["gpus"]) == ("fallback", 2048, 6, 1)
    res = runner.invoke(
        app, ["--config", str(cfg), "plan", "--all-tiers", "--gpu-mem", "80", "--json"], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    both = {p["tier"]: p for p in json.loads(res.stdout)["tiers"]}
    assert both["primary"]["context"] == 4096 and both["primary"]["concurrency"] == 12
    assert both["primary"]["gpus"] == 2 and [o["tp"] for o in both["primary"]["per_tp"]] == [1, 2]
    assert both["primary"]["kv_bytes_total"] == both["primary"]["kv_bytes_per_token"] * 4096 * 12
    assert both["fallback"]["kv_bytes_total"] == both["fallback"]["kv_bytes_per_token"] * 2048 * 6
    # A flag beside --tier wins over the tier's value.
    res = runner.invoke(
        app,
        ["--config", str(cfg), "plan", "--tier", "fallback", "--gpu-mem", "80", "--context", "512", "--json"],
        catch_exceptions=False,
    )
    assert json.loads(res.stdout)["context"] == 512
    res = runner.invoke(app, ["--config", str(cfg), "plan", "--tier", "nope", "--gpu-mem", "80"])
    assert res.exit_code == 2 and "no tier named 'nope'" in res.output
    res = runner.invoke(app, ["plan", "--gpus", "1", "--gpu-mem", "80"])
    assert res.exit_code == 2 and "--model" in res.output


BENCH_FIGURES = (
    "prefill_tokens_per_s",
    "decode_ms_per_token_batch1",
    "decode_ms_per_token_batch16",
    "cap_output_tokens_per_s",
    "peak_rss_bytes",
    "kv_cache_tokens",
    "startup_seconds",
)


def test_bench_tier_on_the_tiny_model_prints_and_stores_every_figure(tmp_path, tiny_model):
    home = tmp_path / "home"
    cfg = _config(
        tmp_path,
        f'model = "{tiny_model}"\ndtype = "float32"\nmax_model_len = 2048\ncpu_kvcache_space_gib = 1\n'
        '[tiers.primary]\nwork_pool = "cpu"\n[tiers.small]\nmax_num_seqs = 16\nwork_pool = "cpu"\n',
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACTSUM_")}
    env.update(
        CONTRACTSUM_HOME=str(home), PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200"
    )
    args = ["--config", str(cfg), "bench", "--tier", "small", "--prompt-tokens", "48", "--output-tokens", "12"]
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", *args, "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)  # stdout is the one JSON document, vLLM's logs went to stderr
    figures, estimate = doc["figures"], doc["estimate"]
    for name in BENCH_FIGURES:
        assert isinstance(figures[name], int | float) and figures[name] > 0, (name, figures[name])
    assert (figures["prompt_tokens"], figures["output_tokens"]) == (48, 12)
    assert (
        figures["cap_sequences"] == 16 == figures["decode_batch16_sequences"]
        and figures["decode_batch1_sequences"] == 1
    )
    # The engine's processes hold at least the weights and the KV cache vLLM allocated for them.
    assert figures["peak_rss_bytes"] > estimate["weights_bytes"]
    assert figures["kv_cache_tokens"] >= 2048 * 16
    assert estimate["weights_bytes"] == estimate["params"] * 4  # float32 on CPU
    assert estimate["kv_bytes_at_cap"] == estimate["kv_bytes_per_token"] * 2048 * 16 > 0
    assert doc["tier"] == "small" and doc["device"] == "cpu" and doc["engine"]["max_num_seqs"] == 16

    from storage import repo
    from storage.db import open_database

    factory = open_database(f"sqlite:///{home / 'contractsum.db'}")
    with factory() as s:
        (row,) = repo.latest_tier_benchmarks(s)
        assert (row.id, row.tier, row.device) == (doc["stored_id"], "small", "cpu")
        assert row.fingerprint == doc["fingerprint"] == doc["engine"]["fingerprint"]
        for name in BENCH_FIGURES:
            assert row.figures[name] == pytest.approx(figures[name]) and row.figures[name] > 0
        assert row.estimate == estimate and row.config["max_num_seqs"] == 16
    factory.kw["bind"].dispose()

    # status shows the last measurement of each tier; the table a person reads names every figure.
    res = runner.invoke(app, ["--home", str(home), "status", "--json"], catch_exceptions=False)
    (latest,) = json.loads(res.stdout)["tier_benchmarks"]
    assert latest["tier"] == "small" and latest["cap_output_tokens_per_s"] == pytest.approx(
        figures["cap_output_tokens_per_s"]
    )
    res = runner.invoke(app, ["--home", str(home), "status"], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert "tier benchmarks" in res.output and "small" in res.output
    # and the batch report artifact lists it (flows/batch.BatchOutcome)
    from flows.batch import BatchOutcome
    from pipeline.reports.report import tier_measurements
    from storage.db import open_database

    sizing = tier_measurements(open_database(f"sqlite:///{home / 'contractsum.db'}"))
    outcome = BatchOutcome("b", [], home / "r.html", None, None, tier_sizing=sizing)
    line = next(x for x in outcome.markdown().splitlines() if x.startswith("- Tier small last sized"))
    assert f"{figures['decode_ms_per_token_batch1']:.2f} ms/token at batch 1" in line or "ms/token at batch 1" in line

    from pipeline.cli._common import console
    from pipeline.cli.bench import _table

    with console.capture() as captured:
        console.print(_table(doc))
    text = captured.get()
    for label in ("prefill", "decode, batch 1", "decode, batch 16", "admission cap", "peak memory", "KV cache"):
        assert label in text, label
