"""Checkpoints whose weights carry a precision change: FP8 (e4m3) rounding emulated where no FP8
kernels exist, and Gaussian weight noise for sensitivity checks of the golden gate.

Both touch the same tensors vLLM's ``quantization="fp8"`` quantizes: the 2-D weights of the
decoder layers' Linear modules. Embeddings, norms and ``lm_head`` stay as they are. The result is
an ordinary Hugging Face folder (same shard names, tokenizer and config copied), so the engine
loads it like any other checkpoint; a marker file says what was done to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import ConfigError, ModelNotFoundError

MARKER = "contractsum-derived.json"
# Bump when the transforms change, so checkpoints derived by an older rule are rebuilt.
DERIVE_VERSION = 1
# Largest finite float8_e4m3fn value; vLLM scales weights so their absolute max lands here.
FP8_E4M3_MAX = 448.0
Granularity = Literal["channel", "tensor"]


def is_quantized_weight(name: str, ndim: int) -> bool:
    """True for the weights vLLM's fp8 quantizes: 2-D Linear weights inside the decoder layers."""
    return ndim == 2 and name.endswith(".weight") and ".layers." in name and "embed" not in name and "norm" not in name


def fp8_roundtrip(weight, granularity: Granularity = "channel"):
    """``weight`` through float8_e4m3fn and back: scaled so each output channel's (or the whole
    tensor's) absolute max maps to 448, rounded to nearest-even, then rescaled. Returned in the
    input dtype, so the only change is FP8's rounding error."""
    import torch

    w = weight.float()
    if granularity == "channel":
        amax = w.abs().amax(dim=1, keepdim=True)
    elif granularity == "tensor":
        amax = w.abs().amax()
    else:
        raise ConfigError(f"unknown FP8 scale granularity {granularity!r} (channel or tensor)")
    # An all-zero channel keeps scale 1 so it round-trips to zeros instead of NaN.
    scale = torch.where(amax > 0, amax / FP8_E4M3_MAX, torch.ones_like(amax))
    q = (w / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    return (q.float() * scale).to(weight.dtype)


def add_noise(weight, scale: float, generator):
    """``weight`` plus Gaussian noise whose std is ``scale`` times the tensor's own std."""
    import torch

    w = weight.float()
    noise = torch.randn(w.shape, generator=generator, dtype=torch.float32) * (scale * float(w.std()))
    return (w + noise).to(weight.dtype)


@dataclass
class DeriveReport:
    """What a derived checkpoint is and how far its weights moved."""

    path: str
    source: str
    method: str  # "fp8-emulated" | "noise"
    params: dict[str, Any]
    tensors_changed: int = 0
    tensors_kept: int = 0
    # Relative error ||w' - w|| / ||w|| over all changed weights together.
    relative_error: float = 0.0
    max_abs_error: float = 0.0
    reused: bool = False
    changed_names: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("changed_names")
        return out


def emulate_fp8(
    source: Path, dest: Path | None = None, *, granularity: Granularity = "channel", models_dir: Path | None = None
) -> DeriveReport:
    """Write (or reuse) a checkpoint whose Linear weights went through FP8 e4m3 and back."""
    if granularity not in ("channel", "tensor"):
        raise ConfigError(f"unknown FP8 scale granularity {granularity!r} (channel or tensor)")
    source = _checkpoint(source)
    dest = dest or _default_dest(source, models_dir, f"fp8emu-{granularity}")
    return _derive(
        source, dest, "fp8-emulated", {"granularity": granularity}, lambda w, _g: fp8_roundtrip(w, granularity)
    )


def add_weight_noise(
    source: Path, scale: float, dest: Path | None = None, *, seed: int = 0, models_dir: Path | None = None
) -> DeriveReport:
    """Write (or reuse) a checkpoint whose Linear weights carry Gaussian noise of relative ``scale``."""
    if not scale > 0:
        raise ConfigError(f"noise scale must be positive, got {scale}")
    source = _checkpoint(source)
    dest = dest or _default_dest(source, models_dir, f"noise{scale:g}-s{seed}")
    return _derive(source, dest, "noise", {"scale": scale, "seed": seed}, lambda w, g: add_noise(w, scale, g))


def _checkpoint(path: Path) -> Path:
    path = Path(path).expanduser()
    if not (path / "config.json").is_file() or not list(path.glob("*.safetensors")):
        raise ModelNotFoundError(
            f"{path} is not a safetensors checkpoint folder (config.json + *.safetensors)",
            hint="point --model at a Hugging Face checkpoint folder",
        )
    return path


def _default_dest(source: Path, models_dir: Path | None, suffix: str) -> Path:
    return Path(models_dir or source.parent) / f"{source.name}-{suffix}"


def source_fingerprint(source: Path) -> str:
    """Identity of a checkpoint's weight files (name, size, mtime): a rebuilt source is noticed
    without hashing gigabytes."""
    h = hashlib.sha256()
    for f in sorted(source.glob("*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _derive(
    source: Path, dest: Path, method: str, params: dict[str, Any], transform: Callable[[Any, Any], Any]
) -> DeriveReport:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    dest = Path(dest).expanduser()
    marker = {
        "derive_version": DERIVE_VERSION,
        "method": method,
        "params": params,
        "source": str(source.resolve()),
        "source_fingerprint": source_fingerprint(source),
    }
    existing = _read_marker(dest)
    if existing is not None and all(existing.get(k) == v for k, v in marker.items()):
        return DeriveReport(**{**existing["report"], "reused": True})

    report = DeriveReport(path=str(dest), source=str(source), method=method, params=params)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        # Seeded once per checkpoint and walked in a fixed order: the same call writes the same bytes.
        generator = torch.Generator().manual_seed(int(params.get("seed", 0)))
        diff_sq = ref_sq = 0.0
        for shard in sorted(source.glob("*.safetensors")):
            tensors: dict[str, Any] = {}
            with safe_open(str(shard), framework="pt") as f:
                metadata = f.metadata() or {"format": "pt"}
                for name in sorted(f.keys()):
                    t = f.get_tensor(name)
                    if is_quantized_weight(name, t.ndim) and t.is_floating_point():
                        new = transform(t, generator)
                        d = new.float() - t.float()
                        diff_sq += float((d * d).sum())
                        ref_sq += float((t.float() ** 2).sum())
                        report.max_abs_error = max(report.max_abs_error, float(d.abs().max()))
                        report.tensors_changed += 1
                        report.changed_names.append(name)
                        t = new
                    else:
                        report.tensors_kept += 1
                    tensors[name] = t.contiguous()
            save_file(tensors, str(tmp / shard.name), metadata=metadata)
        if report.tensors_changed == 0:
            raise ModelNotFoundError(
                f"{source} has no decoder-layer Linear weights to change",
                hint="only Llama-style checkpoints (model.layers.N.*_proj.weight) are supported",
            )
        report.relative_error = (diff_sq / ref_sq) ** 0.5 if ref_sq else 0.0
        for f in source.iterdir():
            # Weights were rewritten above; the demo-model marker would claim this is the source.
            if f.is_file() and f.suffix != ".safetensors" and f.name not in (MARKER, "contractsum-model.json"):
                shutil.copy2(f, tmp / f.name)
        (tmp / MARKER).write_text(json.dumps({**marker, "report": report.as_dict()}, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "report" in data else None


def derived_from(path: Path) -> dict[str, Any] | None:
    """The marker of a derived checkpoint (method, params, source), or None for an ordinary one."""
    data = _read_marker(Path(path))
    if data is None:
        return None
    return {k: data[k] for k in ("method", "params", "source") if k in data}
