"""`contractsum demo-model`: build a local demo checkpoint and make it the default model."""

from __future__ import annotations

from enum import StrEnum

import typer

from pipeline.cli._common import console, print_json, settings_from
from pipeline.errors import ConfigError


class DemoModel(StrEnum):
    tiny = "tiny"
    smollm2 = "smollm2"


DESCRIPTIONS = {
    DemoModel.tiny: "tiny random-weight Llama: fast, meaningless text, for tests",
    DemoModel.smollm2: "SmolLM2-135M-Instruct: a real small model, 8K context, for the demo",
}


def register(app: typer.Typer) -> None:
    app.command("demo-model")(demo_model)


def demo_model(
    ctx: typer.Context,
    which: DemoModel = typer.Argument(..., help="tiny (random weights, seconds) or smollm2 (real, ~540 MB)."),
    seed: int | None = typer.Option(
        None, "--seed", help="Weight seed of the tiny model (same seed, same bytes; default 0)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print {model, kind} as JSON."),
) -> None:
    """Build a demo model under <home>/models and make it the default model."""
    from pipeline import demo_models

    settings = settings_from(ctx)
    if which is DemoModel.tiny:
        path = demo_models.build_tiny(settings.models_dir, seed=seed or 0)
    elif seed is not None:
        raise ConfigError("--seed applies to the tiny model only", hint="drop --seed for smollm2")
    else:
        path = demo_models.build_smollm2(settings.models_dir)
    demo_models.set_latest(settings.models_dir, path)
    if as_json:
        print_json({"model": str(path), "kind": which.value})
        return
    console.print(str(path), highlight=False, soft_wrap=True)
    console.print(f"{DESCRIPTIONS[which]}; now the default model", style="dim", highlight=False, soft_wrap=True)
