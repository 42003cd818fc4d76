"""`contractsum bench --tier NAME`: start a tier's engine, measure it, store the figures."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from pipeline.cli._common import console, open_db, print_json, settings_from
from pipeline.engine.planner import GiB
from pipeline.engine.tiers import PRIMARY, tier


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    ctx: typer.Context,
    tier_name: str = typer.Option(PRIMARY, "--tier", help="The engine tier to measure (`contractsum config`)."),
    prompt_tokens: int | None = typer.Option(
        None, "--prompt-tokens", help="Tokens per measured prompt (default: bench_prompt_tokens)."
    ),
    output_tokens: int | None = typer.Option(
        None, "--output-tokens", help="Tokens each measured sequence decodes (default: bench_output_tokens)."
    ),
    store: bool = typer.Option(
        True, "--store/--no-store", help="Keep the figures in the database (status shows them)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Size a tier before trusting it: start its engine and measure prefill tokens/s, decode
    ms/token at batch 1 and 16, output tokens/s at its admission cap (max_num_seqs) and peak
    memory, beside `plan`'s estimate for the same engine. Re-run after a model or context change."""
    from pipeline.engine.measure import bench_engine
    from storage import repo
    from storage.db import transaction

    settings = settings_from(ctx, bench_prompt_tokens=prompt_tokens, bench_output_tokens=output_tokens)
    chosen = tier(settings, tier_name)
    config = chosen.engine_config(settings)
    result = bench_engine(
        config, prompt_tokens=settings.bench_prompt_tokens, output_tokens=settings.bench_output_tokens
    )
    doc: dict[str, Any] = {
        "tier": chosen.name,
        "fingerprint": config.fingerprint(),
        "model": config.model,
        "device": result["engine"]["device"],
        "vllm_version": result["engine"]["vllm_version"],
        **result,
        "stored_id": None,
    }
    if store:
        with transaction(open_db(settings)) as s:
            doc["stored_id"] = repo.add_tier_benchmark(
                s,
                tier=chosen.name,
                fingerprint=doc["fingerprint"],
                model=config.model,
                device=doc["device"],
                vllm_version=doc["vllm_version"],
                config=result["engine"],
                figures=result["figures"],
                estimate=result["estimate"],
            ).id
    if as_json:
        print_json(doc)
        return
    console.print(_table(doc))
    if doc["stored_id"] is not None:
        console.print(f"stored as tier benchmark {doc['stored_id']}; `contractsum status` shows the latest per tier")


def _gib(n: float | None) -> str:
    return "-" if n is None else f"{n / GiB:,.2f} GiB"


def _num(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    return (f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}") + (f" {unit}" if unit else "")


def _table(doc: dict[str, Any]) -> Table:
    f, e = doc["figures"], doc["estimate"]
    eng = doc["engine"]
    table = Table(
        title=f"tier {doc['tier']}: {doc['model']} on {doc['device']} (TP {eng['tensor_parallel_size']}, "
        f"{eng['dtype']}, context {eng['max_model_len']:,}, max_num_seqs {eng['max_num_seqs']})",
        title_justify="left",
    )
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("plan estimate", justify="right")
    table.add_column("load", style="dim")
    table.add_row(
        "prefill",
        _num(f["prefill_tokens_per_s"], "tokens/s"),
        "-",
        f"{f['prefill_prompts']} x {f['prompt_tokens']} tokens",
    )
    for b in (1, 16):
        table.add_row(
            f"decode, batch {b}",
            _num(f[f"decode_ms_per_token_batch{b}"], "ms/token"),
            "-",
            f"{f[f'decode_batch{b}_sequences']} seqs x {f['output_tokens']} tokens",
        )
    table.add_row(
        "output at the admission cap",
        _num(f["cap_output_tokens_per_s"], "tokens/s"),
        "-",
        f"{f['cap_sequences']} seqs x {f['output_tokens']} tokens",
    )
    parts = (
        f"weights {_gib(e['weights_bytes'])} + KV at cap {_gib(e['kv_bytes_at_cap'])}, over TP, + overhead "
        f"{_gib(e['overhead_bytes'])}; plan ({e['plan_dtype']}): {_gib(e['plan_per_gpu_bytes'])}, fits: {e['plan_fits']}"
    )
    if doc["device"] != "cpu":
        table.add_row(
            "peak GPU memory (rise, all GPUs)",
            _gib(f.get("peak_gpu_bytes")),
            f"{_gib(e['per_gpu_bytes_at_run_dtype'] * eng['tensor_parallel_size'])}",
            parts,
        )
    table.add_row(
        "peak memory (RSS of the engine's processes)",
        _gib(f["peak_rss_bytes"]),
        f"{_gib(e['per_gpu_bytes_at_run_dtype'])} per GPU"
        if doc["device"] != "cpu"
        else _gib(e["per_gpu_bytes_at_run_dtype"]),
        parts if doc["device"] == "cpu" else "host memory",
    )
    kv_needed = eng["max_model_len"] * eng["max_num_seqs"]
    table.add_row(
        "KV cache allocated", _num(f["kv_cache_tokens"], "tokens"), _num(kv_needed, "tokens"), "context x max_num_seqs"
    )
    table.add_row("engine start", _num(f["startup_seconds"], "s"), "-", "")
    return table


def measurements_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="tier benchmarks (latest per tier)", title_justify="left")
    for col in ("tier", "measured", "device", "prefill tok/s", "decode ms/tok b1", "b16", "out tok/s @cap", "peak mem"):
        table.add_column(col, justify="left" if col in ("tier", "measured", "device") else "right")
    for r in rows:
        table.add_row(
            r["tier"],
            r["created_at"][:19],
            r["device"],
            _num(r["prefill_tokens_per_s"]),
            _num(r["decode_ms_per_token_batch1"]),
            _num(r["decode_ms_per_token_batch16"]),
            _num(r["cap_output_tokens_per_s"]),
            _gib(r["peak_memory_bytes"]),
        )
    return table
