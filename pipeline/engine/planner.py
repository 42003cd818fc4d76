"""Tensor-parallel sizing: how many GPUs one engine needs for a model, a context and a concurrency.

Pure arithmetic over a Hugging Face ``config.json`` (dense Llama-style decoders): nothing is loaded
and no GPU is touched. Units: ``*_bytes`` are bytes; GB = 1e9 bytes, GiB = 2**30 bytes.

The plan is a worst case: every one of ``concurrency`` sequences holds a full ``context`` of KV
cache at once. vLLM's paged KV cache and prefix caching usually need less, never more.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pipeline.errors import ConfigError
from pipeline.settings import REPO_ROOT

GB = 10**9
GiB = 2**30

Dtype = Literal["bf16", "fp8"]
DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp8": 1}

CONFIGS_DIR = REPO_ROOT / "configs"

DEFAULT_HEADROOM = 0.12
HEADROOM_RANGE = (0.10, 0.15)
DEFAULT_GPUS_PER_NODE = 8
# Per-GPU memory that is neither weights nor KV cache. vLLM's start-up memory profile splits it
# into the CUDA context and other non-torch memory (NCCL buffers under TP; ~0.5-1 GiB), the peak
# activations of one max_num_batched_tokens forward pass plus sampler logits (~1-2 GiB for 8B-70B
# at vLLM's defaults) and CUDA graph capture (~0.5-1 GiB). 3 GiB is a typical total from those log
# lines, not a measurement of any particular GPU: measure yours and pass --overhead-gib.
DEFAULT_OVERHEAD_GIB = 3.0

FP8_NOTE = (
    "fp8 weights: the decoder's linear layers (q/k/v/o, gate/up/down) take 1 byte per parameter; "
    "embeddings, lm_head and norms stay bf16 (2 bytes) as in real FP8 checkpoints and vLLM's "
    "online fp8; per-channel/per-tensor scales (<0.1%) are not counted"
)


class ModelShape(BaseModel):
    """The config.json fields the arithmetic needs."""

    model_config = ConfigDict(frozen=True)

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: int | None = None


class ParamCounts(BaseModel):
    """Parameters by how they are stored under fp8 and how they shard under TP."""

    embeddings: int  # embed_tokens, plus lm_head unless tied; kept bf16 under fp8
    norms: int  # RMSNorm weights; kept bf16 under fp8, replicated under TP (negligible)
    linear_kv: int  # k_proj and v_proj (with biases): replicated when TP > KV heads
    linear_other: int  # q_proj, o_proj, gate/up/down_proj (with biases)

    @property
    def linear(self) -> int:
        return self.linear_kv + self.linear_other

    @property
    def total(self) -> int:
        return self.embeddings + self.norms + self.linear


class TPOption(BaseModel):
    """Per-GPU memory at one tensor-parallel degree."""

    tp: int
    replicas: int  # engines (data-parallel copies) the GPUs hold at this TP
    divides_gpus: bool
    crosses_nodes: bool
    vllm_accepts: bool  # vLLM refuses TP that splits attention or KV heads unevenly
    kv_heads_per_gpu: int
    kv_replicated: bool
    weights_per_gpu_bytes: int
    kv_per_gpu_bytes: int
    overhead_bytes: int
    per_gpu_bytes: int
    fits: bool
    max_sequences_at_context: int  # full-context sequences that fit beside the weights


class Plan(BaseModel):
    """Everything ``contractsum plan`` prints; ``--json`` dumps it as is."""

    model: str
    dtype: Dtype
    kv_dtype: Dtype
    gpus: int
    gpu_mem_gib: float
    gpus_per_node: int
    headroom: float
    context: int
    concurrency: int
    overhead_gib: float
    params: int
    weights_bytes: int
    kv_bytes_per_token: int
    kv_bytes_total: int
    budget_per_gpu_bytes: int
    per_tp: list[TPOption]
    recommended_tp: int | None
    warnings: list[str]
    notes: list[str]


# -- config ----------------------------------------------------------------------------------


def resolve_config_path(model: str | Path) -> Path:
    """A config.json from a shipped name (``llama-3.1-8b``), a checkpoint folder or a file path."""
    text = str(model)
    path = Path(text).expanduser()
    shipped = CONFIGS_DIR / f"{text}.json"
    # A folder or file of that name wins over a shipped config.
    if not path.exists() and "/" not in text and shipped.is_file():
        return shipped
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.json"))) or "none"
        raise ConfigError(
            f"no model config at {path}",
            hint=f"pass a checkpoint folder, a config.json, or a shipped name ({names})",
        )
    return path


def load_shape(model: str | Path) -> ModelShape:
    """Read a config.json into a ModelShape; ConfigError when it is not a dense decoder config."""
    path = resolve_config_path(model)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a readable JSON config: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a JSON object")
    name = path.parent.name if path.name == "config.json" else path.stem
    return shape_from_config(raw, name=name)


def shape_from_config(raw: dict[str, Any], *, name: str = "model") -> ModelShape:
    # Multimodal wrappers keep the decoder under text_config.
    text_config = raw.get("text_config")
    cfg: dict[str, Any] = text_config if isinstance(text_config, dict) else raw
    if any(cfg.get(k) for k in ("num_local_experts", "num_experts", "n_routed_experts")):
        raise ConfigError(f"{name}: mixture-of-experts configs are not supported by the planner")

    def positive_int(key: str, default: int | None = None) -> int:
        value = cfg.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: config field {key!r} must be a positive integer, got {value!r}")
        return value

    hidden = positive_int("hidden_size")
    heads = positive_int("num_attention_heads")
    kv_heads = positive_int("num_key_value_heads", heads)
    if cfg.get("head_dim") is None:
        if hidden % heads:
            raise ConfigError(f"{name}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
        head_dim = hidden // heads
    else:
        head_dim = positive_int("head_dim")
    if heads % kv_heads:
        raise ConfigError(f"{name}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    max_pos = cfg.get("max_position_embeddings")
    return ModelShape(
        name=name,
        hidden_size=hidden,
        num_hidden_layers=positive_int("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=positive_int("intermediate_size"),
        vocab_size=positive_int("vocab_size"),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", raw.get("tie_word_embeddings", False))),
        attention_bias=bool(cfg.get("attention_bias", False)),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        max_position_embeddings=max_pos if isinstance(max_pos, int) and max_pos > 0 else None,
    )


# -- arithmetic ------------------------------------------------------------------------------


def param_counts(shape: ModelShape) -> ParamCounts:
    """Parameters of a Llama-style decoder, counted tensor by tensor."""
    h, inter = shape.hidden_size, shape.intermediate_size
    q_out = shape.num_attention_heads * shape.head_dim
    kv_out = shape.num_key_value_heads * shape.head_dim
    attn_b = int(shape.attention_bias)
    mlp_b = int(shape.mlp_bias)
    layers = shape.num_hidden_layers

    k_and_v = 2 * (h * kv_out + kv_out * attn_b)
    q_and_o = h * q_out + q_out * attn_b + q_out * h + h * attn_b
    mlp = 2 * (h * inter + inter * mlp_b) + inter * h + h * mlp_b  # gate, up, down
    embeddings = shape.vocab_size * h * (1 if shape.tie_word_embeddings else 2)
    # input_layernorm + post_attention_layernorm per layer, then the final norm.
    norms = layers * 2 * h + h
    return ParamCounts(
        embeddings=embeddings, norms=norms, linear_kv=layers * k_and_v, linear_other=layers * (q_and_o + mlp)
    )


def weight_bytes(counts: ParamCounts, dtype: Dtype) -> int:
    """Checkpoint bytes; under fp8 only the linear layers shrink (see FP8_NOTE)."""
    return counts.linear * DTYPE_BYTES[dtype] + (counts.embeddings + counts.norms) * DTYPE_BYTES["bf16"]


def kv_bytes_per_token(shape: ModelShape, kv_dtype: Dtype = "bf16") -> int:
    """K and V, for every layer and KV head: 2 x layers x kv_heads x head_dim x bytes."""
    return 2 * shape.num_hidden_layers * shape.num_key_value_heads * shape.head_dim * DTYPE_BYTES[kv_dtype]


def kv_heads_per_gpu(shape: ModelShape, tp: int) -> int:
    # Past kv_heads ranks, vLLM gives every rank a copy of one KV head instead of splitting it.
    return max(1, math.ceil(shape.num_key_value_heads / tp))


def vllm_accepts_tp(shape: ModelShape, tp: int) -> bool:
    """vLLM needs attention heads divisible by TP, and KV heads divisible by TP or TP by KV heads."""
    kv = shape.num_key_value_heads
    return shape.num_attention_heads % tp == 0 and (kv % tp == 0 or tp % kv == 0)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def tp_option(
    shape: ModelShape,
    counts: ParamCounts,
    tp: int,
    *,
    dtype: Dtype,
    kv_dtype: Dtype,
    context: int,
    concurrency: int,
    gpus: int,
    gpus_per_node: int,
    overhead_bytes: int,
    budget_bytes: int,
) -> TPOption:
    per_layer_kv_share = kv_heads_per_gpu(shape, tp) / shape.num_key_value_heads
    linear_b = DTYPE_BYTES[dtype]
    # Everything shards 1/tp (vocab-parallel embeddings and lm_head included) except k/v_proj past
    # kv_heads ranks, which replicate with their heads; norms replicate too but are ~0.01%.
    weights = (
        counts.linear_other * linear_b + (counts.embeddings + counts.norms) * DTYPE_BYTES["bf16"]
    ) / tp + counts.linear_kv * linear_b * per_layer_kv_share
    kv_token_gpu = kv_bytes_per_token(shape, kv_dtype) * per_layer_kv_share
    kv = context * concurrency * kv_token_gpu
    per_gpu = math.ceil(weights + kv) + overhead_bytes
    spare = budget_bytes - overhead_bytes - weights
    return TPOption(
        tp=tp,
        replicas=gpus // tp,
        divides_gpus=gpus % tp == 0,
        crosses_nodes=tp > gpus_per_node,
        vllm_accepts=vllm_accepts_tp(shape, tp),
        kv_heads_per_gpu=kv_heads_per_gpu(shape, tp),
        kv_replicated=tp > shape.num_key_value_heads,
        weights_per_gpu_bytes=math.ceil(weights),
        kv_per_gpu_bytes=math.ceil(kv),
        overhead_bytes=overhead_bytes,
        per_gpu_bytes=per_gpu,
        fits=per_gpu <= budget_bytes,
        max_sequences_at_context=max(0, math.floor(spare / (context * kv_token_gpu))),
    )


def plan(
    shape: ModelShape,
    *,
    gpus: int,
    gpu_mem_gib: float,
    dtype: Dtype = "bf16",
    kv_dtype: Dtype = "bf16",
    context: int = 32768,
    concurrency: int = 24,
    headroom: float = DEFAULT_HEADROOM,
    gpus_per_node: int = DEFAULT_GPUS_PER_NODE,
    overhead_gib: float = DEFAULT_OVERHEAD_GIB,
    tp: int | None = None,
) -> Plan:
    """Per-GPU memory at every TP that divides ``gpus`` (plus ``tp`` if forced), and the smallest that fits.

    Fits means weights/TP + KV/TP + overhead <= gpu_mem x (1 - headroom). Raises ConfigError on
    impossible input.
    """
    _check_inputs(
        gpus=gpus,
        gpu_mem_gib=gpu_mem_gib,
        dtype=dtype,
        kv_dtype=kv_dtype,
        context=context,
        concurrency=concurrency,
        headroom=headroom,
        gpus_per_node=gpus_per_node,
        overhead_gib=overhead_gib,
        tp=tp,
    )
    counts = param_counts(shape)
    budget = math.floor(gpu_mem_gib * GiB * (1 - headroom))
    overhead = round(overhead_gib * GiB)
    degrees = sorted(set(divisors(gpus)) | ({tp} if tp is not None else set()))
    options = [
        tp_option(
            shape,
            counts,
            t,
            dtype=dtype,
            kv_dtype=kv_dtype,
            context=context,
            concurrency=concurrency,
            gpus=gpus,
            gpus_per_node=gpus_per_node,
            overhead_bytes=overhead,
            budget_bytes=budget,
        )
        for t in degrees
    ]
    candidates = [o for o in options if o.fits and o.divides_gpus and o.vllm_accepts]
    recommended = candidates[0].tp if candidates else None
    by_tp = {o.tp: o for o in options}
    warnings = _warnings(
        shape,
        by_tp,
        recommended,
        tp=tp,
        gpus=gpus,
        gpus_per_node=gpus_per_node,
        context=context,
        concurrency=concurrency,
        budget=budget,
    )
    notes = [FP8_NOTE] if dtype == "fp8" else []
    kv_token = kv_bytes_per_token(shape, kv_dtype)
    return Plan(
        model=shape.name,
        dtype=dtype,
        kv_dtype=kv_dtype,
        gpus=gpus,
        gpu_mem_gib=gpu_mem_gib,
        gpus_per_node=gpus_per_node,
        headroom=headroom,
        context=context,
        concurrency=concurrency,
        overhead_gib=overhead_gib,
        params=counts.total,
        weights_bytes=weight_bytes(counts, dtype),
        kv_bytes_per_token=kv_token,
        kv_bytes_total=kv_token * context * concurrency,
        budget_per_gpu_bytes=budget,
        per_tp=options,
        recommended_tp=recommended,
        warnings=warnings,
        notes=notes,
    )


def _check_inputs(
    *,
    gpus: int,
    gpu_mem_gib: float,
    dtype: str,
    kv_dtype: str,
    context: int,
    concurrency: int,
    headroom: float,
    gpus_per_node: int,
    overhead_gib: float,
    tp: int | None,
) -> None:
    problems = []
    if gpus < 1:
        problems.append(f"--gpus must be at least 1, got {gpus}")
    if not gpu_mem_gib > 0:
        problems.append(f"--gpu-mem must be positive GiB, got {gpu_mem_gib}")
    for flag, value in (("--dtype", dtype), ("--kv-dtype", kv_dtype)):
        if value not in DTYPE_BYTES:
            problems.append(f"{flag} must be one of {', '.join(DTYPE_BYTES)}, got {value!r}")
    if context < 1:
        problems.append(f"--context must be at least 1 token, got {context}")
    if concurrency < 1:
        problems.append(f"--concurrency must be at least 1, got {concurrency}")
    low, high = HEADROOM_RANGE
    if not low <= headroom <= high:
        problems.append(f"--headroom must be between {low} and {high}, got {headroom}")
    if gpus_per_node < 1:
        problems.append(f"--gpus-per-node must be at least 1, got {gpus_per_node}")
    if overhead_gib < 0:
        problems.append(f"--overhead-gib must not be negative, got {overhead_gib}")
    if tp is not None and not 1 <= tp <= max(gpus, 1):
        problems.append(f"--tp must be between 1 and --gpus ({gpus}), got {tp}")
    if problems:
        raise ConfigError("; ".join(problems))


def _warnings(
    shape: ModelShape,
    by_tp: dict[int, TPOption],
    recommended: int | None,
    *,
    tp: int | None,
    gpus: int,
    gpus_per_node: int,
    context: int,
    concurrency: int,
    budget: int,
) -> list[str]:
    out: list[str] = []
    if shape.max_position_embeddings and context > shape.max_position_embeddings:
        out.append(f"--context {context} exceeds the model's max_position_embeddings {shape.max_position_embeddings}")
    if recommended is None:
        best = max(by_tp.values(), key=lambda o: (o.max_sequences_at_context, -o.per_gpu_bytes))
        leanest = min(by_tp.values(), key=lambda o: o.weights_per_gpu_bytes)
        if leanest.weights_per_gpu_bytes + leanest.overhead_bytes > budget:
            out.append(
                f"no TP fits on {gpus} GPU(s): the weights alone need {leanest.weights_per_gpu_bytes / GiB:.1f} GiB "
                f"per GPU at TP {leanest.tp} (+ {leanest.overhead_bytes / GiB:.1f} GiB overhead), over the "
                f"{budget / GiB:.1f} GiB budget"
            )
        elif best.max_sequences_at_context > 0:
            out.append(
                f"no TP fits {concurrency} sequences x {context} tokens on {gpus} GPU(s); TP {best.tp} fits at most "
                f"{best.max_sequences_at_context} sequence(s) at that context"
            )
        else:
            out.append(
                f"no TP fits on {gpus} GPU(s): even one sequence of {context} tokens does not fit beside the weights"
            )
    elif by_tp[recommended].crosses_nodes:
        out.append(
            f"the smallest TP that fits ({recommended}) is more than --gpus-per-node {gpus_per_node}: "
            "its all-reduces cross nodes every layer; prefer pipeline parallelism across nodes"
        )
    if tp is None:
        return out
    chosen = by_tp[tp]
    if not chosen.divides_gpus:
        out.append(f"TP {tp} does not divide {gpus} GPUs: {gpus % tp} GPU(s) would sit idle")
    if chosen.crosses_nodes:
        out.append(
            f"TP {tp} is more than --gpus-per-node {gpus_per_node}: tensor-parallel all-reduces would cross nodes"
        )
    if not chosen.vllm_accepts:
        out.append(
            f"TP {tp} does not split {shape.num_attention_heads} attention / {shape.num_key_value_heads} KV heads "
            "evenly; vLLM refuses it"
        )
    elif chosen.kv_replicated:
        out.append(
            f"TP {tp} exceeds the {shape.num_key_value_heads} KV heads: each GPU keeps a replicated KV head, so "
            "KV memory per GPU stops shrinking past TP "
            f"{shape.num_key_value_heads}"
        )
    if not chosen.fits:
        out.append(
            f"TP {tp} does not fit: {chosen.per_gpu_bytes / GiB:.1f} GiB per GPU needed, {budget / GiB:.1f} GiB allowed"
        )
    elif recommended is not None and tp > recommended:
        single = "the model fits on one GPU" if recommended == 1 else f"TP {recommended} already fits"
        out.append(
            f"over-sharding: {single}; TP {tp} adds an all-reduce per layer. Run {gpus // recommended} "
            f"replica(s) at TP {recommended} (data parallel) for more throughput"
        )
    return out
