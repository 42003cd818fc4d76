"""The golden-prompt gate: the set, the metrics, FP8 emulation and noise checkpoints, storage, the
report, and — with the real vLLM CPU engine on the tiny model — that an identical candidate passes
and growing weight noise degrades the metrics until the gate fails.

Engine starts are the cost here (~40-90 s each on a small CPU): the session engine is the
baseline, and the file starts three more engines in all (two noise levels, one fresh identical).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_settings

from pipeline.errors import ConfigError
from pipeline.quality import golden_metrics as GM
from pipeline.quality import golden_run as GR
from pipeline.quality import golden_set as GS
from pipeline.quality import golden_verdict as GV
from pipeline.quality import quantize as Q
from pipeline.quality.golden_metrics import SideOutput
from pipeline.quality.golden_set import GoldenCase, GoldenSentence
from pipeline.review.prompts import Renderer, load_template
from pipeline.review.schema import CLAUSE_TYPES
from pipeline.settings import REPO_ROOT

PROMPTS = REPO_ROOT / "prompts"
CORPUS = REPO_ROOT / "examples" / "contracts"


@pytest.fixture(scope="module")
def gset() -> GS.GoldenSet:
    return GS.load_golden_set(PROMPTS, "v1")


@pytest.fixture(scope="module")
def thresholds() -> GV.Thresholds:
    return GV.load_thresholds(GV.thresholds_path(PROMPTS, "v1"))


def side(case_id: str, tokens: list[int], lps: list[dict[int, float]] | None = None, text: str = "") -> SideOutput:
    if lps is None:
        lps = [{t: -0.1, 999: -3.0} for t in tokens]
    return SideOutput(case_id, text or " ".join(map(str, tokens)), tokens, lps, "stop")


# --- the set --------------------------------------------------------------------------------


def test_golden_set_v1_has_both_kinds_and_every_expectation_is_a_manifest_label(gset, manifest):
    labels = {c["id"]: c["clauses"] for c in manifest["contracts"]}
    assert len(gset.cases) >= 12
    assert {c.kind for c in gset.cases} == {"summarize", "find_clause"}
    # every clause type is asked for by at least one clause-finding case
    assert {c.clause_type for c in gset.cases if c.kind == "find_clause"} == set(CLAUSE_TYPES)
    for case in gset.cases:
        assert case.sentences and case.expected, case.id
        assert {s.page for s in case.sentences} == set(case.pages)
        assert sum(len(s.text) for s in case.sentences) <= gset.params["max_case_chars"]
        for clause_type, pages in case.expected.items():
            assert labels[case.contract][clause_type]["present"]
            assert set(pages) <= set(labels[case.contract][clause_type]["pages"]) & set(case.pages)
        for clause_type in case.absent:
            assert not labels[case.contract][clause_type]["present"]


def test_rebuilding_the_set_from_the_corpus_gives_the_committed_cases(gset, tmp_path):
    rebuilt = GS.build_golden_set(tmp_path / "v1", corpus_dir=CORPUS)
    assert [c.id for c in rebuilt.cases] == [c.id for c in gset.cases]
    for new, old in zip(rebuilt.cases, gset.cases, strict=True):
        assert new.expected == old.expected and new.pages == old.pages and new.max_tokens == old.max_tokens
        assert [(s.ordinal, s.page) for s in new.sentences] == [(s.ordinal, s.page) for s in old.sentences]
    GS.build_golden_set(tmp_path / "again", corpus_dir=CORPUS)
    first = sorted(p.relative_to(tmp_path / "v1") for p in (tmp_path / "v1").rglob("*.json"))
    assert first and first == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*.json"))
    for rel in first:
        assert (tmp_path / "v1" / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes()


def test_every_case_renders_inside_the_sets_context_with_a_citation_enum_of_its_own_sentences(gset, tiny_model):
    prompts = GS.case_prompts(gset, tiny_model, PROMPTS)
    assert len(prompts) == len(gset.cases)
    for case, p in zip(gset.cases, prompts, strict=True):
        assert len(p.token_ids) + p.max_tokens <= gset.max_model_len
        item = p.schema["properties"]["clauses"]["items"]["properties"]
        assert item["citations"]["items"]["enum"] == [f"S{s.ordinal}" for s in case.sentences]
        if case.kind == "find_clause":
            assert item["type"]["enum"] == [case.clause_type]
            assert p.schema["properties"]["clauses"]["minItems"] == 1 == p.schema["properties"]["clauses"]["maxItems"]


def test_missing_golden_set_is_a_config_error_that_says_how_to_build_one(tmp_path):
    with pytest.raises(ConfigError, match="rebuild-set"):
        GS.load_golden_set(tmp_path, "v1")


# --- metrics ----------------------------------------------------------------------------------


def test_first_divergence_is_the_first_differing_token_or_the_shorter_length():
    assert GM.first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert GM.first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert GM.first_divergence([1, 2, 3], [1, 2]) == 2
    assert GM.first_divergence([], [4]) == 0


def test_vllm_rule_tolerates_a_near_tie_flip_but_not_a_token_outside_the_other_top_n():
    base = side("c", [1, 2, 3], [{1: -0.1}, {2: -0.6, 7: -0.8}, {3: -0.1}])
    tie = side("c", [1, 7, 9], [{1: -0.1}, {7: -0.6, 2: -0.7}, {9: -0.1}])
    far = side("c", [1, 8, 9], [{1: -0.1}, {8: -0.5, 2: -0.9}, {9: -0.1}])
    assert GM.logprobs_close(base, tie)
    assert not GM.logprobs_close(base, far)  # 8 is not in the baseline's top-N at position 1
    assert GM.logprobs_close(base, base)


def test_top_n_agreement_counts_mutual_containment_over_the_longer_output():
    base = side("c", [1, 2, 3, 4], [{1: 0.0}, {2: 0.0, 7: -1.0}, {3: 0.0}, {4: 0.0}])
    cand = side("c", [1, 7, 5], [{1: 0.0}, {7: 0.0, 2: -1.0}, {5: 0.0}])
    # positions 0 and 1 agree (1 is a near-tie flip); 2 does not; 3 exists on one side only
    assert GM.top_n_agreement(base, cand) == pytest.approx(2 / 4)
    assert GM.top_n_agreement(base, base) == 1.0


def test_mean_abs_logprob_delta_covers_only_the_shared_prefix():
    base = side("c", [1, 2, 3], [{1: -0.5}, {2: -1.0}, {3: -2.0}])
    cand = side("c", [1, 2, 4], [{1: -0.7}, {2: -0.6}, {4: -9.0}])
    value, positions = GM.mean_abs_logprob_delta(base, cand)
    assert positions == 2
    assert value == pytest.approx((0.2 + 0.4) / 2)


def test_rouge_l_f_uses_the_longest_common_word_subsequence():
    assert GM.lcs_length("a b c d e".split(), "a c e x".split()) == 3
    # LCS 5 of 6 reference words, all 5 candidate words: P = 1, R = 5/6
    assert GM.rouge_l_f("the cat sat on the mat", "the cat on the mat") == pytest.approx(2 * (5 / 6) / (1 + 5 / 6))
    assert GM.rouge_l_f("", "") == 1.0
    assert GM.rouge_l_f("a b", "") == 0.0
    assert GM.rouge_l_f("a b", "c d") == 0.0
    # compact JSON still has words: its punctuation separates them
    assert GM.words('{"summary":"a b","ids":["S1","S2"]}') == ["summary", "a", "b", "ids", "S1", "S2"]
    assert GM.rouge_l_f('{"summary":"a b"}', '{"summary":"a c"}') == pytest.approx(2 / 3)


def test_answers_are_read_leniently_and_a_truncated_answer_cites_nothing():
    full = '{"summary":"x","parties":[],"dates":[],"clauses":[{"type":"termination","finding":"y","citations":["S3","S4"]}]}'
    answer = GM.read_answer(full)
    assert answer.valid and answer.clauses == {"termination": frozenset({3, 4})}
    cut = GM.read_answer(full[:60])
    assert not cut.valid and cut.citations == frozenset()
    assert GM.jaccard({3, 4}, {4, 5}) == pytest.approx(1 / 3)
    assert GM.jaccard(set(), set()) == 1.0


def test_clause_coverage_needs_a_citation_on_a_page_labelled_for_that_clause():
    case = GoldenCase(
        id="c",
        kind="summarize",
        contract="k",
        source="k.pdf",
        pages=[3, 4],
        sentences=[GoldenSentence(1, 3, "a"), GoldenSentence(2, 4, "b")],
        expected={"termination": [4], "governing_law": [3]},
        absent=["assignment"],
        max_tokens=10,
    )

    def answer(clauses: list[tuple[str, list[str]]]) -> GM.Answer:
        return GM.read_answer(json.dumps({"clauses": [{"type": t, "citations": c} for t, c in clauses]}))

    assert GM.found_clauses(case, answer([("termination", ["S2"]), ("governing_law", ["S2"])])) == {
        "governing_law": False,
        "termination": True,
    }
    base = SideOutput("c", json.dumps({"clauses": [{"type": "termination", "citations": ["S2"]}]}), [1], [{1: 0.0}])
    cand = SideOutput("c", json.dumps({"clauses": [{"type": "assignment", "citations": ["S1"]}]}), [2], [{2: 0.0}])
    m = GM.case_metrics(case, base, cand)
    assert (m["coverage_baseline"], m["coverage_candidate"]) == (0.5, 0.0)
    assert m["clause_flips"] == 1 and m["clause_expectations"] == 2
    assert m["false_alarms_candidate"] == 1 and m["false_alarms_baseline"] == 0


def test_identical_outputs_pass_with_every_agreement_metric_at_its_best(gset, thresholds):
    outs = [side(c.id, [10 + i, 20, 30]) for i, c in enumerate(gset.cases)]
    result = GV.compare(gset, outs, outs, thresholds)
    agg = result.aggregates
    assert result.verdict == "PASS"
    assert agg["exact_match_rate"] == agg["top_n_agreement"] == agg["logprobs_close_rate"] == 1.0
    assert agg["mean_abs_logprob_delta"] == 0.0 and agg["rouge_l_f"] == 1.0 and agg["clause_flip_rate"] == 0.0


def test_a_metric_that_could_not_be_measured_fails_its_check(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('version = "t"\n[checks.mean_abs_logprob_delta]\nmax = 0.1\n[checks.rouge_l_f]\nmin = 0.5\n')
    th = GV.load_thresholds(path)
    verdict, checks = GV.verdict({"mean_abs_logprob_delta": None, "rouge_l_f": 0.9}, th)
    assert verdict == "FAIL"
    assert [c["ok"] for c in checks] == [False, True]
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "t"\n[checks.rouge_l_f]\nmin = 0.5\nmax = 0.9\n')
    with pytest.raises(ConfigError, match="exactly one of min / max"):
        GV.load_thresholds(bad)


def test_the_committed_thresholds_only_name_metrics_the_runner_produces(gset, thresholds):
    outs = [side(c.id, [1, 2]) for c in gset.cases]
    produced = GV.compare(gset, outs, outs, thresholds).aggregates
    assert thresholds.checks
    assert {c.metric for c in thresholds.checks} <= set(produced)
    assert all(c.why for c in thresholds.checks)


# --- FP8 emulation and noise --------------------------------------------------------------------


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_fp8_emulation_puts_linear_weights_on_the_e4m3_grid_and_leaves_the_rest_untouched(tiny_model, tmp_path):
    import torch

    report = Q.emulate_fp8(tiny_model, tmp_path / "emu")
    src, out = _tensors(tiny_model), _tensors(tmp_path / "emu")
    assert set(src) == set(out)
    changed = sorted(n for n in src if Q.is_quantized_weight(n, src[n].ndim))
    assert changed and report.tensors_changed == len(changed)
    assert not any("embed" in n or "lm_head" in n or "norm" in n for n in changed)
    for name in src:
        if name not in changed:
            assert torch.equal(src[name], out[name]), name
            continue
        w, q = src[name].float(), out[name].float()
        scale = w.abs().amax(dim=1, keepdim=True) / Q.FP8_E4M3_MAX
        on_grid = q / scale
        # representable in e4m3 (up to float32 rounding of the rescale): a second round trip changes nothing
        assert torch.allclose(on_grid.to(torch.float8_e4m3fn).float(), on_grid, rtol=1e-5, atol=1e-6)
        # e4m3 keeps 3 mantissa bits: rounding moves a normal value by at most 2^-4 of itself,
        # a subnormal one by at most half its spacing (2^-10 of the scale)
        bound = torch.maximum(w.abs() * 2.0**-4, scale * 2.0**-10)
        assert bool(((q - w).abs() <= bound * 1.0001 + 1e-12).all()), name
        assert not torch.equal(w, q)
    assert 0.005 < report.relative_error < 0.06
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "emu" / f).read_bytes() == (tiny_model / f).read_bytes()
    assert Q.derived_from(tmp_path / "emu")["params"] == {"granularity": "channel"}
    assert Q.emulate_fp8(tiny_model, tmp_path / "emu").reused


def test_weight_noise_has_the_asked_relative_scale_and_is_reproducible_by_seed(tiny_model, tmp_path):
    a = Q.add_weight_noise(tiny_model, 0.1, tmp_path / "a", seed=3)
    b = Q.add_weight_noise(tiny_model, 0.1, tmp_path / "b", seed=3)
    c = Q.add_weight_noise(tiny_model, 0.1, tmp_path / "c", seed=4)
    assert a.relative_error == pytest.approx(0.1, rel=0.05)
    weights = sorted((tmp_path / "a").glob("*.safetensors"))
    assert weights
    for f in weights:
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()
        assert f.read_bytes() != (tmp_path / "c" / f.name).read_bytes()
    assert b.relative_error == a.relative_error
    assert c.tensors_changed == a.tensors_changed > 0


def test_quantize_emulate_command_writes_the_checkpoint_and_reports_json(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    out = tmp_path / "emu-tensor"
    result = CliRunner().invoke(
        app,
        [
            "--home",
            str(tmp_path / "home"),
            "quantize-emulate",
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--per-tensor",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["method"] == "fp8-emulated" and data["params"] == {"granularity": "tensor"}
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))


def test_unknown_config_is_a_usage_error_before_any_engine_starts(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    result = CliRunner().invoke(
        app, ["--home", str(tmp_path / "home"), "golden", "--model", str(tiny_model), "--candidate", "int3"]
    )
    assert result.exit_code == 2
    assert "unknown CONFIG 'int3'" in result.output


# --- storage and report (no engine) ------------------------------------------------------------


def _synthetic_outcome(gset, thresholds, tmp_path) -> tuple[GV.GoldenOutcome, dict]:
    base = [side(c.id, [5, 6, 7, 8]) for c in gset.cases]
    cand = [side(c.id, [5, 6, 9] if i % 2 else [5, 6, 7, 8]) for i, c in enumerate(gset.cases)]
    comparison = GV.compare(gset, base, cand, thresholds)
    cfg = {
        "spec": "bf16",
        "mode": "bf16",
        "model": "m",
        "engine": {"dtype": "bfloat16"},
        "derived": None,
        "snapshot": {},
    }
    outcome = GV.GoldenOutcome(
        comparison.verdict,
        "noise",
        gset.version,
        thresholds.version,
        cfg,
        {**cfg, "spec": "noise:0.1", "mode": "noise"},
        comparison,
        tmp_path,
    )
    return outcome, {"baseline": base, "candidate": cand}


def test_a_golden_run_is_stored_with_both_configs_and_every_case(factory, gset, thresholds, tmp_path):
    from storage import repo

    outcome, outputs = _synthetic_outcome(gset, thresholds, tmp_path)
    run_id = GR._store(factory, outcome, outputs)
    outcome.run_id = run_id
    GR._store_report_path(factory, outcome)
    with factory() as s:
        run = repo.golden_run(s, run_id)
        results = repo.golden_results(s, run_id)
        assert [r.id for r in repo.golden_runs(s)] == [run_id]
    assert run.mode == "noise" and run.verdict == outcome.verdict and run.golden_version == "v1"
    assert run.baseline["spec"] == "bf16" and run.candidate["spec"] == "noise:0.1"
    assert run.metrics["aggregates"]["cases"] == len(gset.cases)
    assert run.report_path == str(tmp_path / "report.md")
    assert [r.case_id for r in results] == [c.id for c in gset.cases]
    assert results[1].metrics["first_divergence"] == 2 and results[1].candidate_output == "5 6 9"


def test_the_report_has_the_gate_every_case_and_a_png_plot(gset, thresholds, tmp_path):
    outcome, outputs = _synthetic_outcome(gset, thresholds, tmp_path)
    GV.write_report(outcome, gset, thresholds, outputs)
    md = outcome.report_path.read_text()
    assert md.startswith(f"# Golden check: {outcome.verdict}")
    assert "Mode **noise**" in md
    assert all(f"| {c.id} |" in md for c in gset.cases)
    assert all(f"| {c.metric} |" in md for c in thresholds.checks)
    png = (tmp_path / "divergence.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 600 and height >= 300


# --- the real engine: identical passes, growing noise fails ------------------------------------

F32 = 'dtype = "float32"\n'


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTRACTSUM_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "--home", str(home), "golden", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def ladder(engine, tiny_model, tmp_path_factory) -> dict:
    """The gate at noise 0 (the session engine against itself), 0.001 and 0.1, each against the
    same saved baseline; the largest goes through the CLI, as an operator would run it."""
    from storage.db import open_database

    home = tmp_path_factory.mktemp("golden-home")
    settings = make_settings(home)
    f32 = home / "f32.toml"
    f32.write_text(F32)
    factory = open_database(settings.db_url)
    identical = GR.run_golden(
        settings, model=tiny_model, baseline=str(f32), candidate=str(f32), factory=factory, baseline_engine=engine
    )
    saved = identical.report_dir / "baseline-outputs.json"
    small = GR.run_golden(settings, model=tiny_model, baseline=str(saved), candidate="noise:0.001", factory=factory)
    large = _cli(home, "--model", str(tiny_model), "--baseline", str(saved), "--candidate", "noise:0.1", "--json")
    return {"home": home, "factory": factory, "saved": saved, "identical": identical, "small": small, "large": large}


@pytest.mark.engine
@pytest.mark.slow
def test_identical_candidate_passes_with_full_agreement(ladder):
    outcome = ladder["identical"]
    agg = outcome.comparison.aggregates
    assert outcome.verdict == "PASS" and outcome.mode == "identical"
    assert agg["exact_match_rate"] == agg["top_n_agreement"] == agg["logprobs_close_rate"] == 1.0
    assert agg["tokens_baseline"] > 0
    assert outcome.report_path.is_file() and (outcome.report_dir / "divergence.png").is_file()


@pytest.mark.engine
@pytest.mark.slow
def test_growing_weight_noise_worsens_agreement_and_fails_the_gate_with_exit_1(ladder):
    large = ladder["large"]
    assert large.returncode == 1, large.stderr[-3000:]
    data = json.loads(large.stdout)
    assert data["verdict"] == "FAIL" and data["mode"] == "noise"
    points = [ladder["identical"].comparison.aggregates, ladder["small"].comparison.aggregates, data["aggregates"]]
    for metric in ("top_n_agreement", "rouge_l_f", "exact_match_rate"):
        values = [p[metric] for p in points]
        assert values == sorted(values, reverse=True), (metric, values)
    assert points[1]["top_n_agreement"] > points[2]["top_n_agreement"]
    assert points[1]["rouge_l_f"] > points[2]["rouge_l_f"]
    assert ladder["small"].verdict == "PASS"
    failed = {c["metric"] for c in data["checks"] if not c["ok"]}
    assert "top_n_agreement" in failed


@pytest.mark.engine
@pytest.mark.slow
def test_cli_on_a_fresh_engine_reproduces_the_saved_baseline_and_stores_the_run(ladder, tiny_model):
    from storage import repo
    from storage.db import open_database

    home = ladder["home"]
    result = _cli(
        home,
        "--model",
        str(tiny_model),
        "--baseline",
        str(ladder["saved"]),
        "--candidate",
        str(home / "f32.toml"),
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data["verdict"] == "PASS" and data["mode"] == "config"
    assert data["aggregates"]["exact_match_rate"] == 1.0
    assert data["candidate"]["snapshot"]["enable_prefix_caching"] is False
    factory = open_database(make_settings(home).db_url)
    with factory() as s:
        runs = {r.id: r for r in repo.golden_runs(s)}
        run = runs[data["run_id"]]
        results = repo.golden_results(s, run.id)
    # the three runs of the ladder and this one, all in the same database
    assert len(runs) == 4
    assert run.verdict == "PASS" and run.baseline["mode"] == "saved" and run.candidate["engine"]["dtype"] == "float32"
    assert len(results) == data["aggregates"]["cases"] and all(r.baseline_output for r in results)
    assert Path(run.report_path).read_text().startswith("# Golden check: PASS")


# --- the flow and the GPU script ---------------------------------------------------------------


def test_the_flow_defaults_to_the_same_sides_as_the_cli():
    import inspect

    from flows.golden import FLOW_NAME, golden_check
    from pipeline.cli.golden import golden

    assert golden_check.name == FLOW_NAME == "golden-check"
    flow_params = inspect.signature(golden_check.fn).parameters
    cli_params = inspect.signature(golden).parameters
    for name in ("baseline", "candidate"):
        assert flow_params[name].default == cli_params[name].default.default


def _golden_flow(ladder, tiny_model, candidate: str):
    """``golden_check`` as Prefect runs it, on the ladder's saved baseline: its state and artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows._prefect import local_run
    from flows.golden import golden_check

    with local_run(make_settings(ladder["home"])):
        state = golden_check(
            baseline=str(ladder["saved"]), candidate=candidate, model=str(tiny_model), return_state=True
        )
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as c:
        run = c.read_flow_run(run_id)
        found = c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return state, run, {a.key: a for a in found}


@pytest.mark.engine
@pytest.mark.slow
def test_golden_flow_fails_the_run_on_fail_and_still_publishes_its_report(ladder, tiny_model, prefect_harness):
    state, run, artifacts = _golden_flow(ladder, tiny_model, "noise:0.1")
    assert state.is_failed() and run.state_type.value == "FAILED"
    assert "golden check FAIL (noise)" in state.message and "top_n_agreement=" in state.message, state.message
    report = artifacts["golden-report"]
    assert report.type == "markdown" and report.data.startswith("# Golden check: FAIL")
    assert report.description.startswith("golden check FAIL (noise)")


@pytest.mark.engine
@pytest.mark.slow
def test_golden_flow_completes_on_pass_and_publishes_its_report(ladder, tiny_model, prefect_harness):
    state, run, artifacts = _golden_flow(ladder, tiny_model, str(ladder["home"] / "f32.toml"))
    assert state.is_completed() and run.name.startswith("golden ") and run.state_type.value == "COMPLETED", (
        state.message
    )
    result = state.result()
    assert result["verdict"] == "PASS" and result["mode"] == "config"
    assert result["checks"] and all(c["ok"] for c in result["checks"])
    report = artifacts["golden-report"]
    assert report.type == "markdown" and report.data.startswith("# Golden check: PASS")


def test_gpu_script_compares_bf16_emulated_and_real_fp8_gemms_on_a_small_random_model(tmp_path):
    """The GPU check script, shrunk to run here (torch's CPU build has FP8 _scaled_mm too)."""
    result = subprocess.run(
        [
            sys.executable,
            "scripts/gpu/golden_gpu.py",
            "--shape",
            "tiny",
            "--layers",
            "2",
            "--cases",
            "2",
            "--max-new-tokens",
            "8",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "golden_gpu.json").read_text())
    assert set(data["comparisons"]) == {"bf16 -> emulated-fp8", "bf16 -> real-fp8", "emulated-fp8 -> real-fp8"}
    assert data["info"]["real-fp8_linear_changed"] == data["info"]["emulated-fp8_linear_changed"] == 14
    metrics = {c.metric for c in GV.load_thresholds(GV.thresholds_path(PROMPTS, "v1")).checks}
    for name, comparison in data["comparisons"].items():
        # The verdict is the one its checks give: every threshold checked, PASS only if all hold.
        checks = comparison["checks"]
        assert {c["metric"] for c in checks} == metrics, name
        assert comparison["verdict"] == ("PASS" if all(c["ok"] for c in checks) else "FAIL"), (name, checks)
        assert len(comparison["cases"]) == 2


def test_gpu_script_runs_the_golden_prompts_through_a_checkpoints_chat_template(tiny_model, tmp_path):
    """``golden.sh`` runs the script with ``--model`` (SmolLM2 there): the tokenizer path."""
    result = subprocess.run(
        [
            sys.executable,
            "scripts/gpu/golden_gpu.py",
            "--model",
            str(tiny_model),
            "--cases",
            "3",
            "--max-new-tokens",
            "6",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "golden_gpu.json").read_text())
    renderer = Renderer(tiny_model)
    gset = GS.load_golden_set(REPO_ROOT / "prompts", "v1")
    # The prompts are the ones the gate's engine sees: same chat template, same length.
    first = gset.cases[0]
    tpl = load_template(REPO_ROOT / "prompts", "summarize", gset.params["summarize_template"])
    assert first.kind == "summarize"
    assert data["info"]["prompt_tokens"][0] == len(renderer.token_ids(tpl, first.rendered()))
    assert len(data["comparisons"]) == 3
    assert [len(c["cases"]) for c in data["comparisons"].values()] == [3, 3, 3]


def test_the_gpu_baseline_config_is_bf16_eager_and_fp8_real_builds_on_it(tiny_model, tmp_path):
    settings = make_settings(tmp_path / "home")
    base = GR.resolve_config(
        str(REPO_ROOT / "scripts" / "gpu" / "golden-bf16.toml"), model=tiny_model, settings=settings
    )
    assert base.engine["dtype"] == "bfloat16" and base.engine["enforce_eager"] is True
    cand = GR.resolve_config("fp8:real", model=tiny_model, settings=settings, baseline=base)
    assert cand.mode == "real-fp8"
    assert cand.engine == {**base.engine, "quantization": "fp8"}
