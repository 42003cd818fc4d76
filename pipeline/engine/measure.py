"""Sizing a tier by measuring it: one engine started from an ``EngineConfig``, a few fixed loads,
and the planner's estimate for the same config beside what was measured.

The loads are random token ids (no tokenizer round trip, no shared prefix, so the prefix cache
hits nothing) decoded with ``ignore_eos``, so every run does exactly the work it names:

- prefill tokens/s: up to 8 prompts of ``prompt_tokens``, one output token each;
- decode ms/token at batch 1 and 16: a wave decoding ``output_tokens`` more than a wave of the
  same shape decoding one, divided by ``output_tokens`` (per step, so per token of each sequence);
- output tokens/s at the admission cap: ``max_num_seqs`` sequences at once, ``output_tokens`` each;
- peak memory: CPU, the summed RSS of the engine's process tree (sampled every 50 ms from before
  the start); GPU, the rise of used device memory over its level before the start (NVML).

``contractsum bench --tier`` runs it and stores the figures; ``bench/`` reuses the samplers.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from typing import Any

from pipeline.engine.config import EngineConfig

# Bytes per weight and KV element of the dtypes an engine runs (after for_device decided 'auto').
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1}
PREFILL_PROMPTS = 8
DECODE_BATCHES = (1, 16)
DECODE_ROUNDS = 3  # the median of three pairs: one pair's difference is noisy on a shared box


def process_tree_rss(roots: list[Any]) -> int:
    """Summed resident memory of ``roots`` (psutil.Process) and all their descendants; shared
    pages (libraries) count once per process, so this is an upper bound."""
    import psutil

    seen: set[int] = set()
    total = 0
    for root in roots:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    return total


def _gpu_used() -> list[int] | None:
    """Used memory per visible GPU in bytes (NVML, else nvidia-smi), or None without GPUs."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return [
            int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used)
            for i in range(pynvml.nvmlDeviceGetCount())
        ]
    except Exception:
        pass
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return [int(float(x)) * 2**20 for x in out.split()] or None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


class MemorySampler:
    """Peak memory while it runs, sampled in a thread: the RSS of this process's children (the
    engine's processes once :meth:`watch` names them) and, where there are GPUs, used device
    memory above its level at the start."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self.interval = interval
        self.me = psutil.Process(os.getpid())
        self.roots: list[Any] | None = None  # None: every child of this process
        self.peak_rss = 0
        self.gpu_base = _gpu_used()
        self.peak_gpu = 0
        self.peak_gpu_each: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="contractsum-memory", daemon=True)

    def watch(self, processes: list[Any]) -> None:
        """From now on only these processes' trees count (the engine's, not helpers beside it)."""
        self.roots = list(processes) or None

    def sample(self) -> None:
        roots = self.roots if self.roots is not None else self.me.children()
        self.peak_rss = max(self.peak_rss, process_tree_rss(roots))
        if self.gpu_base is not None:
            used = _gpu_used() or []
            rise = [max(0, u - b) for u, b in zip(used, self.gpu_base, strict=False)]
            self.peak_gpu = max(self.peak_gpu, sum(rise))
            self.peak_gpu_each = [max(a, b) for a, b in zip(self.peak_gpu_each or [0] * len(rise), rise, strict=False)]

    def _run(self) -> None:
        while not self._stop.wait(self.interval if self.gpu_base is None else max(self.interval, 0.2)):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()


def _prompts(rng: random.Random, n: int, length: int, vocab: int) -> list[list[int]]:
    low = min(100, vocab // 4)  # past the special tokens every tokenizer puts first
    return [[rng.randrange(low, vocab) for _ in range(length)] for _ in range(n)]


def _wave(engine: Any, prompts: list[list[int]], max_tokens: int) -> tuple[float, int, int]:
    """(seconds, prompt tokens, output tokens) of one wave through ``Engine.generate``."""
    from pipeline.engine.engine import Request

    requests = [Request(prompt_token_ids=p, max_tokens=max_tokens, ignore_eos=True) for p in prompts]
    _, stats = engine.generate(requests)
    return stats.seconds, stats.tokens_in, stats.tokens_out


def _kv_capacity_tokens(engine: Any) -> int | None:
    """KV cache tokens vLLM allocated (blocks x block size), where its config reports them."""
    try:
        cache = engine.llm.llm_engine.vllm_config.cache_config
        blocks = cache.num_gpu_blocks
        return int(blocks) * int(cache.block_size) if blocks else None
    except Exception:
        return None


def measure(engine: Any, *, prompt_tokens: int, output_tokens: int, seed: int = 0) -> dict[str, Any]:
    """The measured figures of a started engine (see the module docstring). Prompts are shortened
    to fit the engine's context; the figures say what was run."""
    cfg = engine.config
    vocab = len(engine.llm.get_tokenizer())
    length = max(1, min(prompt_tokens, cfg.max_model_len - output_tokens - 1))
    cap = cfg.max_num_seqs
    rng = random.Random(seed)
    _wave(engine, _prompts(rng, 1, min(16, length), vocab), 2)  # warm-up: kernels, allocator

    n_prefill = min(PREFILL_PROMPTS, cap)
    seconds, tokens_in, _ = _wave(engine, _prompts(rng, n_prefill, length, vocab), 1)
    figures: dict[str, Any] = {
        "prompt_tokens": length,
        "output_tokens": output_tokens,
        "max_num_seqs": cap,
        "prefill_prompts": n_prefill,
        "prefill_tokens_per_s": tokens_in / seconds,
    }
    for batch in DECODE_BATCHES:
        b = min(batch, cap)
        per_step = []
        for _ in range(DECODE_ROUNDS):
            one, _, _ = _wave(engine, _prompts(rng, b, length, vocab), 1)
            many, _, out = _wave(engine, _prompts(rng, b, length, vocab), 1 + output_tokens)
            per_step.append((many - one) / (out / b - 1) * 1000)
        figures[f"decode_ms_per_token_batch{batch}"] = statistics.median(per_step)
        figures[f"decode_batch{batch}_sequences"] = b
    seconds, tokens_in, out = _wave(engine, _prompts(rng, cap, length, vocab), output_tokens)
    figures["cap_output_tokens_per_s"] = out / seconds
    figures["cap_seconds"] = seconds
    figures["cap_sequences"] = cap
    figures["kv_cache_tokens"] = _kv_capacity_tokens(engine)
    return figures


def estimate(config: EngineConfig, *, device: str, device_mem_bytes: int) -> dict[str, Any]:
    """``plan``'s figures for this config (``pipeline.engine.planner``), plus its weights and KV
    per token at the dtype the engine actually runs (the planner knows bf16 and fp8 only)."""
    from pipeline.engine import planner

    shape = planner.load_shape(config.model)
    run_dtype = "fp8" if config.quantization == "fp8" else config.dtype
    wbytes = DTYPE_BYTES.get(run_dtype, 2)
    kv_dtype = "fp8" if config.kv_cache_dtype.startswith("fp8") else config.dtype
    kvbytes = DTYPE_BYTES.get(kv_dtype, 2)
    counts = planner.param_counts(shape)
    tp = config.tensor_parallel_size
    p = planner.plan(
        shape,
        gpus=tp,
        gpu_mem_gib=device_mem_bytes / planner.GiB,
        dtype="fp8" if run_dtype == "fp8" else "bf16",
        kv_dtype="fp8" if kv_dtype == "fp8" else "bf16",
        context=config.max_model_len,
        concurrency=config.max_num_seqs,
        tp=tp,
    )
    at_tp = next(o for o in p.per_tp if o.tp == tp)
    overhead = round(planner.DEFAULT_OVERHEAD_GIB * planner.GiB)
    # Embeddings and norms stay 16-bit under fp8 (planner.FP8_NOTE); at float32 everything is 4 bytes.
    weights = counts.linear * wbytes + (counts.embeddings + counts.norms) * max(wbytes, 2)
    kv_token = 2 * shape.num_hidden_layers * shape.num_key_value_heads * shape.head_dim * kvbytes
    return {
        "device": device,
        "params": counts.total,
        "weights_bytes": weights,
        "kv_bytes_per_token": kv_token,
        "kv_bytes_at_cap": kv_token * config.max_model_len * config.max_num_seqs,
        # plan's per-GPU sum at the run dtype (KV replication past the KV heads ignored): weights and
        # KV at the cap shared over TP, plus its overhead allowance.
        "per_gpu_bytes_at_run_dtype": (weights + kv_token * config.max_model_len * config.max_num_seqs) // tp
        + overhead,
        "overhead_bytes": overhead,
        "plan_dtype": p.dtype,
        "plan_per_gpu_bytes": at_tp.per_gpu_bytes,
        "plan_fits": at_tp.fits,
        "plan_recommended_tp": p.recommended_tp,
        "plan_max_sequences_at_context": at_tp.max_sequences_at_context,
    }


def device_memory_bytes(device: str) -> int:
    """Memory of one device: a GPU's total (NVML), else the machine's RAM."""
    if device != "cpu":
        try:
            import pynvml

            pynvml.nvmlInit()
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).total)
        except Exception:
            pass
    import psutil

    return int(psutil.virtual_memory().total)


def bench_engine(config: EngineConfig, *, prompt_tokens: int, output_tokens: int) -> dict[str, Any]:
    """Start an engine on ``config``, measure it, stop it: ``{"figures", "estimate", "engine"}``.
    ``figures`` are the measurements (peak memory and start-up time included)."""
    from pipeline.engine.engine import Engine

    with MemorySampler() as memory:
        t0 = time.perf_counter()
        engine = Engine.from_config(config)
        memory.watch(engine.processes)
        try:
            figures = measure(engine, prompt_tokens=prompt_tokens, output_tokens=output_tokens, seed=config.seed)
            snapshot = engine.snapshot()
        finally:
            engine.shutdown()
    figures["startup_seconds"] = engine.startup_seconds
    figures["total_seconds"] = time.perf_counter() - t0
    figures["peak_rss_bytes"] = memory.peak_rss
    if memory.gpu_base is not None and engine.device != "cpu":
        figures["peak_gpu_bytes"] = memory.peak_gpu
        figures["peak_gpu_bytes_per_device"] = memory.peak_gpu_each
    est = estimate(engine.config, device=engine.device, device_mem_bytes=device_memory_bytes(engine.device))
    return {"figures": figures, "estimate": est, "engine": snapshot}
