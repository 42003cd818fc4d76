"""`contractsum golden` (the FP8-vs-BF16 quality gate) and `contractsum quantize-emulate`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from pipeline.cli._common import console, engine_option, err_console, open_db, print_json, settings_from


def register(app: typer.Typer) -> None:
    app.command("golden")(golden)
    app.command("quantize-emulate")(quantize_emulate)


def golden(
    ctx: typer.Context,
    baseline: str = typer.Option(
        "bf16",
        "--baseline",
        help="CONFIG of the reference: bf16, fp8[:real|:emulated], noise:SCALE[:SEED], a .toml of engine settings, or a saved *-outputs.json.",
    ),
    candidate: str = typer.Option(
        "fp8",
        "--candidate",
        help="CONFIG of the deployment under test (same forms; fp8 = real FP8 kernels on a GPU, the emulated checkpoint elsewhere).",
    ),
    model: Path | None = typer.Option(
        None, "--model", help="Checkpoint folder (default: settings / latest demo model)."
    ),
    tensor_parallel_size: int | None = engine_option("tensor_parallel_size"),
    set_version: str = typer.Option("v1", "--set-version", help="Golden set under prompts/golden/."),
    thresholds: Path | None = typer.Option(
        None, "--thresholds", help="Thresholds TOML (default prompts/golden/thresholds-v1.toml)."
    ),
    report_dir: Path | None = typer.Option(
        None, "--report-dir", help="Folder for the report (default <home>/reports/golden)."
    ),
    rebuild_set: bool = typer.Option(
        False, "--rebuild-set", help="Rewrite the golden set from examples/contracts, then exit."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object (verdict, mode, aggregates, checks, cases)."
    ),
) -> None:
    """Run the golden prompts on a baseline and a candidate engine and judge the drift.

    Greedy, top-5 logprobs, one engine at a time; the run, every case and a report (Markdown + PNG) are kept.

    Exit 0 on PASS, 1 on FAIL, 2 for usage errors.
    """
    from pipeline.quality.golden_run import GoldenEvent, run_golden
    from pipeline.quality.golden_set import build_golden_set, golden_dir

    settings = settings_from(ctx, model=model, tensor_parallel_size=tensor_parallel_size)
    if rebuild_set:
        gset = build_golden_set(golden_dir(settings.prompts_dir, set_version), version=set_version)
        if as_json:
            print_json({"version": gset.version, "directory": str(gset.directory), "cases": [c.id for c in gset.cases]})
        else:
            console.print(
                f"golden set {gset.version}: {len(gset.cases)} cases written to {gset.directory}", highlight=False
            )
        return
    factory = open_db(settings)

    def on_event(ev: GoldenEvent) -> None:
        if not as_json and ev.kind in ("engine_start", "generate"):
            err_console.print(ev.describe(), highlight=False)

    outcome = run_golden(
        settings,
        model=model,
        baseline=baseline,
        candidate=candidate,
        factory=factory,
        golden_version=set_version,
        thresholds_file=thresholds,
        report_root=report_dir,
        on_event=on_event,
    )
    if as_json:
        print_json(outcome.as_dict())
    else:
        _print_outcome(outcome)
    raise typer.Exit(0 if outcome.verdict == "PASS" else 1)


def _print_outcome(outcome) -> None:
    from rich.table import Table

    style = "green" if outcome.verdict == "PASS" else "red"
    console.print(
        f"[bold {style}]{outcome.verdict}[/] · mode {outcome.mode} · golden set {outcome.golden_version} · run {outcome.run_id}",
        highlight=False,
    )
    table = Table("check", "value", "threshold", "")
    for r in outcome.comparison.checks:
        value = "–" if r["value"] is None else f"{r['value']:.4f}"
        table.add_row(r["metric"], value, f"{r['op']} {r['limit']:g}", "ok" if r["ok"] else "[red]FAIL[/]")
    console.print(table)
    console.print(f"report: {outcome.report_path}", highlight=False, soft_wrap=True)


def quantize_emulate(
    ctx: typer.Context,
    model: Path | None = typer.Option(
        None, "--model", help="Source checkpoint folder (default: settings / latest demo model)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Destination folder (default: <home>/models/<name>-fp8emu-<granularity>)."
    ),
    per_tensor: bool = typer.Option(
        False, "--per-tensor", help="One scale per weight tensor (vLLM's online fp8) instead of one per output channel."
    ),
    noise: float | None = typer.Option(
        None, "--noise", help="Instead of FP8 rounding, add Gaussian noise of this scale x each tensor's std."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Write a checkpoint whose Linear weights went through FP8 (e4m3) and back.

    Where no FP8 kernels exist, the golden check's fp8 candidate runs on it: the weights carry exactly FP8's rounding error.

    Embeddings, norms and lm_head are copied unchanged, as vLLM's fp8 leaves them; activations stay in the engine's dtype.
    """
    from pipeline.quality import quantize

    settings = settings_from(ctx, model=model)
    source = settings.resolved_model()
    if noise is not None:
        report = quantize.add_weight_noise(source, noise, out, seed=seed, models_dir=settings.models_dir)
    else:
        granularity: Literal["channel", "tensor"] = "tensor" if per_tensor else "channel"
        report = quantize.emulate_fp8(source, out, granularity=granularity, models_dir=settings.models_dir)
    if as_json:
        print_json(report.as_dict())
        return
    verb = "reused" if report.reused else "wrote"
    console.print(
        f"{verb} {report.path} ({report.method} {report.params}): {report.tensors_changed} weight tensors changed, "
        f"{report.tensors_kept} kept; relative weight error {report.relative_error:.4f}",
        highlight=False,
    )
