"""What produced a result: its *configuration*, and the identity that decides whether a rerun has work.

A summary (and its clause rows) is stored once per ``(document, configuration)``. The configuration
is everything that can change an answer: the prompts (version), the playbook (name, version, review
mode), the model (a fingerprint of its config and weights, never its path), dtype, quantization,
KV-cache dtype, context length, the chunk plan (tokenizer + token budget), sampling and output
limits, and the engine tier that ran it. :func:`current_config` builds it from settings, without an
engine; its :attr:`ResultConfig.id` is what jobs and summaries are keyed on.

:func:`request_key` is the finer identity used to reuse work below a whole result: one prompt sent
to one model with the same sampling gets the same answer back, so a configuration change that
leaves a prompt unchanged (a new reduce template, a new clause type next to the old ones) re-asks
only the prompts that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

# Sampling the summarizer uses, besides settings: the first try greedy, retries sampled a little.
FIRST_TEMPERATURE = 0.0
RETRY_TEMPERATURE = 0.3

# Fields shown but not part of the identity: the model's folder may move without changing it.
_NOT_IDENTITY = frozenset({"model"})

# Checkpoint files whose bytes are the weights.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# config.json keys that name where or by what a checkpoint was written, not what it computes.
_VOLATILE_CONFIG_KEYS = frozenset({"_name_or_path", "transformers_version", "_commit_hash"})
# Files up to this size are hashed whole; larger ones by their header and evenly spaced samples.
_WHOLE_FILE_BYTES = 16 * 1024 * 1024
_HEAD_BYTES = 1024 * 1024
_SAMPLE_BYTES = 64 * 1024
_SAMPLES = 32


class ResultConfig(BaseModel):
    """The configuration a result was (or will be) made under."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_version: str
    playbook: str
    playbook_version: str
    review_mode: str  # whole | candidates k=N [gated]
    review_key: str  # the playbook's namespace (Playbook.review_key), shown in reports
    # A digest of each template's text as used (summarize with the playbook's clause list, reduce,
    # candidates): editing a template without a new version number still makes a new configuration.
    templates: dict[str, str] = {}
    model: str  # the folder's name, for people; not part of the identity
    model_fingerprint: str
    dtype: str
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    max_model_len: int
    plan: str  # chunking: rules version, tokenizer, token budget
    sampling: dict[str, Any]
    limits: dict[str, Any]
    tier: str = "primary"
    # Made before configurations were recorded: what the engine-run record did not keep is "unrecorded".
    legacy: bool = False

    @property
    def id(self) -> str:
        """16 hex digits of the sha256 of the identity fields, canonical JSON."""
        fields = self.model_dump(mode="json", exclude=set(_NOT_IDENTITY))
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def engine_identity(self) -> dict[str, Any]:
        """What decides the model's answer to one exact prompt (see :func:`request_key`)."""
        return {
            "model_fingerprint": self.model_fingerprint,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "kv_cache_dtype": self.kv_cache_dtype,
        }

    def label(self) -> str:
        """One line for people: review, model, numerics, tier."""
        quant = f"/{self.quantization}" if self.quantization else ""
        kv = f" kv {self.kv_cache_dtype}" if self.kv_cache_dtype != "auto" else ""
        legacy = " (legacy record)" if self.legacy else ""
        return (
            f"{self.review_key} · {self.model} [{self.model_fingerprint[:8]}] {self.dtype}{quant}{kv}"
            f" · {self.tier}{legacy}"
        )

    def differences(self, other: ResultConfig) -> dict[str, tuple[Any, Any]]:
        """{field: (mine, theirs)} for each field that differs (sampling/limits per key)."""
        out: dict[str, tuple[Any, Any]] = {}
        a, b = self.model_dump(mode="json"), other.model_dump(mode="json")
        for name in a:
            if isinstance(a[name], dict) and isinstance(b[name], dict):
                for key in sorted(set(a[name]) | set(b[name])):
                    if a[name].get(key) != b[name].get(key):
                        out[f"{name}.{key}"] = (a[name].get(key), b[name].get(key))
            elif a[name] != b[name]:
                out[name] = (a[name], b[name])
        return out


def review_mode_of(playbook: Any) -> str:
    if playbook.review_mode != "candidates":
        return "whole"
    return f"candidates k={playbook.candidates_k}" + (" gated" if playbook.rule_gate else "")


def current_config(
    settings: Any, model_dir: Path, playbook: Any, *, plan: str, max_model_len: int, tier: str = "primary"
) -> ResultConfig:
    """The configuration ``settings`` ask for on ``model_dir`` with ``playbook`` (a Playbook) and
    chunk ``plan``. Decided without starting an engine: 'auto' dtype as the engine will decide it
    on this machine."""
    from pipeline.engine.config import engine_config_from

    engine = engine_config_from(settings, model_dir).for_device(likely_cpu())
    return ResultConfig(
        templates=template_digests(settings, playbook),
        prompt_version=settings.prompt_version,
        playbook=playbook.name,
        playbook_version=playbook.version,
        review_mode=review_mode_of(playbook),
        review_key=playbook.review_key(settings.prompt_version),
        model=model_dir.name,
        model_fingerprint=model_fingerprint(model_dir),
        dtype=engine.dtype,
        quantization=engine.quantization,
        kv_cache_dtype=engine.kv_cache_dtype,
        max_model_len=max_model_len,
        plan=plan,
        sampling={
            "seed": settings.seed,
            "temperature": FIRST_TEMPERATURE,
            "retry_temperature": RETRY_TEMPERATURE,
            "repetition_penalty": settings.repetition_penalty,
            "max_output_tokens": settings.max_output_tokens,
            "retry_token_growth": settings.retry_token_growth,
        },
        limits={
            "summary_max_chars": settings.summary_max_chars,
            "finding_max_chars": settings.finding_max_chars,
            "min_clauses": settings.min_clauses,
            "max_clauses": settings.max_clauses,
        },
        tier=tier,
    )


def template_digests(settings: Any, playbook: Any) -> dict[str, str]:
    """sha256 (16 hex) of each template the review uses, as rendered for ``playbook``."""
    from pipeline.review.prompts import Kind, load_template

    kinds: list[Kind] = ["summarize", "reduce"]
    if playbook.review_mode == "candidates":
        kinds.append("candidates")
    out: dict[str, str] = {}
    for kind in kinds:
        tpl = load_template(settings.prompts_dir, kind, settings.prompt_version, playbook=playbook)
        out[kind] = hashlib.sha256(tpl.model_dump_json().encode()).hexdigest()[:16]
    return out


def likely_cpu() -> bool:
    """Whether an engine started here will run on the CPU: no NVIDIA device is visible. (The
    engine itself asks vLLM; this answers the same without importing it.)"""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return True
    return not (Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir())


# --- the model's fingerprint ----------------------------------------------------------------

_FINGERPRINTS: dict[tuple, str] = {}


def model_fingerprint(model_dir: Path) -> str:
    """A hash of what a checkpoint computes, not where it lives: its config.json (less the keys
    that record the writer), the weight index, and each weight file's name, size and content —
    whole for files up to 16 MiB, else the first MiB (the safetensors header) and 32 evenly spaced
    64 KiB samples, so a retrained or re-quantized checkpoint changes it while hashing a 140 GB
    one reads ~3 MiB per shard. Memoized per process on (name, size, mtime) of the files."""
    model_dir = Path(model_dir)
    files = sorted((p for p in model_dir.iterdir() if p.is_file()), key=lambda p: p.name)
    stamp = (str(model_dir.resolve()), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stamp in _FINGERPRINTS:
        return _FINGERPRINTS[stamp]
    h = hashlib.sha256()
    config = json.loads((model_dir / "config.json").read_text())
    config = {k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS}
    h.update(b"config\0" + json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    for index in (p for p in files if p.name.endswith(".index.json")):
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        h.update(b"index\0" + json.dumps(weight_map, sort_keys=True, separators=(",", ":")).encode())
    for p in files:
        if p.suffix in _WEIGHT_SUFFIXES:
            h.update(f"weights\0{p.name}\0{p.stat().st_size}\0".encode() + _content_digest(p))
    digest = h.hexdigest()[:32]
    _FINGERPRINTS[stamp] = digest
    return digest


def _content_digest(path: Path) -> bytes:
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= _WHOLE_FILE_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return h.digest()
        h.update(f.read(_HEAD_BYTES))
        for i in range(_SAMPLES):
            f.seek(_HEAD_BYTES + (size - _HEAD_BYTES - _SAMPLE_BYTES) * i // (_SAMPLES - 1))
            h.update(f.read(_SAMPLE_BYTES))
    return h.digest()


# --- one prompt's identity -------------------------------------------------------------------


def request_key(engine_identity: dict[str, Any], request: Any) -> str:
    """The identity of one prompt to one model: the model and numerics, the exact token ids, the
    output budget, schema and sampling. Equal keys get the stored answer back instead of a prompt."""
    blob = json.dumps(
        {
            "engine": engine_identity,
            "ids": request.prompt_token_ids,
            "max_tokens": request.max_tokens,
            "schema": request.json_schema,
            "temperature": request.temperature,
            "seed": request.seed,
            "repetition_penalty": request.repetition_penalty,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()
