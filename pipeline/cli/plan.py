"""`contractsum plan`: how many GPUs one engine needs (tensor-parallel sizing)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer
from rich.table import Table

from pipeline.cli._common import console, print_json, settings_from
from pipeline.engine import planner
from pipeline.engine.planner import GB, GiB
from pipeline.engine.tiers import plan_inputs, tier, tiers_of
from pipeline.errors import ConfigError


class DtypeChoice(StrEnum):
    bf16 = "bf16"
    fp8 = "fp8"


def _gib(n: int | float) -> str:
    return f"{n / GiB:,.1f}"


def _render(p: planner.Plan) -> None:
    console.print(
        f"[bold]{p.model}[/]  {p.params / 1e9:.2f}B params  weights {p.dtype}: "
        f"{p.weights_bytes / GB:.2f} GB ({p.weights_bytes / GiB:.2f} GiB)",
        highlight=False,
    )
    console.print(
        f"KV cache {p.kv_dtype}: {p.kv_bytes_per_token:,} B/token; {p.concurrency} seqs x {p.context:,} tokens = "
        f"{p.kv_bytes_total / GB:.1f} GB ({p.kv_bytes_total / GiB:.1f} GiB)",
        highlight=False,
    )
    console.print(
        f"Budget per GPU: {p.gpu_mem_gib:g} GiB x (1 - {p.headroom:g} headroom) = {_gib(p.budget_per_gpu_bytes)} GiB; "
        f"overhead allowance {p.overhead_gib:g} GiB/GPU",
        highlight=False,
    )
    table = Table(title=f"Per-GPU memory on {p.gpus} GPU(s) (GiB)")
    for col in ("TP", "replicas", "weights", "KV", "overhead", "total", "fits", f"max seqs @ {p.context:,}", "notes"):
        table.add_column(col, justify="left" if col in ("fits", "notes") else "right")
    for o in p.per_tp:
        notes = []
        if not o.divides_gpus:
            notes.append("does not divide GPUs")
        if o.crosses_nodes:
            notes.append("crosses nodes")
        if not o.vllm_accepts:
            notes.append("uneven head split")
        elif o.kv_replicated:
            notes.append("KV heads replicated")
        if o.tp == p.recommended_tp:
            notes.append("recommended")
        table.add_row(
            str(o.tp),
            str(o.replicas),
            _gib(o.weights_per_gpu_bytes),
            _gib(o.kv_per_gpu_bytes),
            _gib(o.overhead_bytes),
            _gib(o.per_gpu_bytes),
            "[green]yes[/]" if o.fits else "[red]no[/]",
            str(o.max_sequences_at_context),
            ", ".join(notes),
        )
    console.print(table)
    if p.recommended_tp is not None:
        console.print(f"[bold green]Recommended TP: {p.recommended_tp}[/] (smallest that fits)", highlight=False)
    else:
        console.print("[bold red]No TP fits[/] these GPUs at this context and concurrency.", highlight=False)
    for w in p.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    for n in p.notes:
        console.print(f"[dim]note: {n}[/]", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_command(
        ctx: typer.Context,
        model: str | None = typer.Option(
            None,
            "--model",
            help="Checkpoint folder, config.json, or llama-3.1-8b / llama-3.1-70b (default with --tier: the tier's).",
        ),
        gpus: int | None = typer.Option(None, "--gpus", help="GPUs available (default with --tier: its TP size)."),
        gpu_mem: float = typer.Option(
            ..., "--gpu-mem", help="Memory per GPU in GiB, as nvidia-smi totals (H100 80GB ~79.6, H200 ~140.4)."
        ),
        dtype: DtypeChoice | None = typer.Option(
            None, "--dtype", help="Weight dtype (default bf16; with --tier: fp8 when it is quantized)."
        ),
        kv_dtype: DtypeChoice | None = typer.Option(
            None, "--kv-dtype", help="KV cache dtype (default bf16; with --tier: its kv_cache_dtype)."
        ),
        context: int | None = typer.Option(
            None, "--context", help="Tokens per sequence, prompt + output (default 32768; with --tier: its context)."
        ),
        concurrency: int | None = typer.Option(
            None, "--concurrency", help="Sequences at full context at once (default 24; with --tier: max_num_seqs)."
        ),
        headroom: float = typer.Option(
            planner.DEFAULT_HEADROOM, "--headroom", help="Share of GPU memory left free (0.10-0.15)."
        ),
        gpus_per_node: int = typer.Option(
            planner.DEFAULT_GPUS_PER_NODE, "--gpus-per-node", help="GPUs per node; larger TP crosses nodes."
        ),
        overhead_gib: float = typer.Option(
            planner.DEFAULT_OVERHEAD_GIB, "--overhead-gib", help="CUDA context, activations and graphs per GPU (GiB)."
        ),
        tp: int | None = typer.Option(None, "--tp", help="Also check this TP and warn about it (with --tier: its TP)."),
        tier_name: str | None = typer.Option(
            None, "--tier", help="Size this engine tier as configured (`contractsum config` lists them)."
        ),
        all_tiers: bool = typer.Option(False, "--all-tiers", help="Size every configured tier, one section each."),
        as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    ) -> None:
        """Size tensor parallelism: weights, KV cache and per-GPU memory at each TP that divides --gpus.

        With --tier NAME (or --all-tiers) the model, context, concurrency (max_num_seqs), TP and
        dtypes come from the tier's settings; flags given as well win.
        Exits 0 when some TP fits (every tier, with --all-tiers), 1 when none does, 2 on bad input.
        """
        explicit: dict[str, Any] = {
            "model": model,
            "context": context,
            "concurrency": concurrency,
            "tp": tp,
            "dtype": dtype.value if dtype else None,
            "kv_dtype": kv_dtype.value if kv_dtype else None,
        }
        common: dict[str, Any] = dict(
            headroom=headroom, gpus_per_node=gpus_per_node, overhead_gib=overhead_gib, gpu_mem_gib=gpu_mem
        )
        if tier_name is None and not all_tiers:
            if model is None:
                raise ConfigError("plan needs --model (or --tier NAME / --all-tiers to size configured tiers)")
            if gpus is None:
                raise ConfigError("plan needs --gpus (or --tier NAME / --all-tiers: the tier's TP size)")
            defaults = {"context": 32768, "concurrency": 24, "dtype": "bf16", "kv_dtype": "bf16"}
            inputs: dict[str, Any] = {**defaults, **{k: v for k, v in explicit.items() if v is not None}}
            result = planner.plan(planner.load_shape(inputs.pop("model")), gpus=gpus, **inputs, **common)
            if as_json:
                print_json(result.model_dump())
            else:
                _render(result)
            if result.recommended_tp is None:
                raise typer.Exit(1)
            return
        settings = settings_from(ctx)
        chosen = tiers_of(settings) if all_tiers else [tier(settings, tier_name or "")]
        plans: list[tuple[str, planner.Plan]] = []
        for t in chosen:
            tier_inputs: dict[str, Any] = {
                **plan_inputs(settings, t, model=model),
                **{k: v for k, v in explicit.items() if v is not None},
            }
            shape = planner.load_shape(tier_inputs.pop("model"))
            plans.append((t.name, planner.plan(shape, gpus=gpus or int(tier_inputs["tp"]), **tier_inputs, **common)))
        if as_json:
            docs = [{"tier": name, **p.model_dump()} for name, p in plans]
            print_json(docs[0] if tier_name is not None and not all_tiers else {"tiers": docs})
        else:
            for name, p in plans:
                console.rule(f"tier {name}")
                _render(p)
        if any(p.recommended_tp is None for _, p in plans):
            raise typer.Exit(1)
