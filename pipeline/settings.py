"""The one settings object, built once at the entry point and passed down.

Precedence (highest first): CLI flags, ``CONTRACTSUM_*`` environment variables, the TOML file
(``CONTRACTSUM_CONFIG`` or ``<home>/config.toml``), defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.engine.config import EngineConfig, EngineSettings, engine_config_from
from pipeline.engine.tiers import Tier, check_deadline, parse_tiers, zone
from pipeline.errors import ConfigError, read_toml

ENV_PREFIX = "CONTRACTSUM_"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_home() -> Path:
    return Path.home() / ".contractsum"


class _Where(BaseSettings):
    """The settings that come before the engine's in ``contractsum config``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    home: Path = Field(
        default_factory=_default_home, description="Data folder: database, models, reports, Prefect home."
    )
    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL; default is a SQLite file under home. Kept secret in all output."
    )
    model: Path | None = Field(
        default=None, description="Model checkpoint folder; default is the most recently built demo model."
    )


class Settings(EngineSettings, _Where):
    """Everything contractsum can be told; see ``contractsum config``. The engine's settings are
    ``EngineSettings``' fields (pipeline/engine/config.py), inherited under the same names."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    max_output_tokens: int = Field(default=1024, ge=16, description="Tokens reserved for each model answer.")
    chunk_budget: int | None = Field(
        default=None, ge=64, description="Cap on contract tokens per prompt (default: context - template - output)."
    )
    retry_token_growth: float = Field(
        default=2.0, ge=1.0, description="Output budget multiplier for each retry of a job."
    )
    summary_max_chars: int = Field(default=800, ge=16, description="Longest summary text the schema allows.")
    finding_max_chars: int = Field(default=300, ge=8, description="Longest clause finding the schema allows.")
    repetition_penalty: float = Field(
        default=1.0, gt=0, description="vLLM repetition penalty (1.0 = off); small models loop without ~1.2."
    )
    max_interruptions: int = Field(
        default=8,
        ge=1,
        description="A job whose engine dies or whose worker is killed this often while it runs ends failed.",
    )
    max_attempts: int = Field(default=3, ge=1, description="Tries per job before it ends failed.")
    reuse_completions: bool = Field(
        default=True,
        description="Answer a prompt from the stored answer when the same model was asked the exact same prompt with "
        "the same sampling before (a configuration change then re-asks only the prompts it changed).",
    )
    engine_stall_seconds: float = Field(
        default=EngineConfig.model_fields["stall_seconds"].default,
        gt=0,
        description="Watchdog: no progress this long is an error.",
    )
    lease_seconds: int = Field(
        default=3600, ge=10, description="How long a worker holds a job before others may take it."
    )
    max_wave_prompts: int = Field(default=1024, ge=1, description="Most prompts leased into one engine wave.")
    db_retry_seconds: float = Field(
        default=120.0, ge=0, description="How long to retry a unit of work while the database is unreachable."
    )
    strict_batches: bool = Field(
        default=False,
        description="A batch with failed documents (unreadable, needs OCR, output never validated) fails its flow run "
        "instead of completing with them listed (`submit --strict` for one run).",
    )
    fault_injection: str | None = Field(
        default=None, description="Test only: a named point where the process kills itself."
    )
    ingest_workers: int = Field(
        default=1,
        ge=1,
        description="Processes that extract PDF text in parallel (pypdf is the cost; ~1.6-2x on 2 cores).",
    )
    extract_timeout_seconds: float = Field(
        default=300.0,
        ge=0,
        description="A file whose text takes longer to extract is stopped and recorded as failed (0: no limit, read in-process).",
    )
    extract_memory_bytes: int = Field(
        default=4 * 1024**3, ge=0, description="Address-space cap of each text-extraction process (0: none)."
    )
    # -- OCR (pipeline/ingest/ocr.py) ------------------------------------------------------
    ocr: Literal["auto", "off", "force"] = Field(
        default="auto",
        description="OCR PDF pages with Tesseract: auto = pages without a text layer, force = every page, off = none "
        "(such files stay needs_ocr).",
    )
    ocr_languages: str = Field(
        default="eng",
        pattern=r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$",
        description="Tesseract languages, '+'-joined (e.g. eng+deu); each needs its tesseract-ocr-<lang> package.",
    )
    ocr_dpi: int = Field(default=300, ge=72, le=1200, description="Resolution pages are rendered at for OCR.")
    ocr_timeout_seconds_per_page: float = Field(
        default=120.0, ge=0, description="Added to extract_timeout_seconds for each page a file needs OCR'd."
    )
    ocr_low_confidence: float = Field(
        default=80.0,
        ge=0,
        le=100,
        description="OCR pages whose mean word confidence (0-100) is below this are flagged.",
    )
    max_pages: int = Field(default=2000, ge=1, description="Files with more pages are refused.")
    max_decompressed_bytes: int = Field(
        default=75_000_000, ge=1024, description="Largest size one compressed PDF stream may inflate to (bomb guard)."
    )
    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1, description="Files larger than this are refused.")
    max_clauses: int | None = Field(
        default=None, ge=1, description="Most clause findings per answer (default: the playbook's clause count)."
    )
    min_clauses: int = Field(default=0, ge=0, description="Fewest clause findings per answer (tests force citations).")
    prompt_version: str = Field(
        default="v1", description="Version of the prompts/summarize and prompts/reduce templates."
    )
    prompts_dir: Path = Field(default=REPO_ROOT / "prompts", description="Folder of prompt templates and golden sets.")
    # -- playbooks (issue 12) --
    playbook: str = Field(
        default="default",
        description="Clause playbook: a name (<home>/playbooks/NAME.toml, then prompts/playbooks/NAME.toml) or a .toml path.",
    )
    inbox: Path | None = Field(default=None, description="Folder the nightly flow picks new files up from.")
    timezone: str = Field(default="UTC", description="Timezone of the nightly schedule.")
    nightly_cron: str = Field(default="0 2 * * *", description="Cron of the nightly schedule.")
    # -- engine tiers (issue 14; pipeline/engine/tiers.py) --
    tiers: list[Tier] = Field(
        default_factory=list,
        description="Engine tiers in fallback order ([tiers.NAME] tables: model, engine settings, work_pool, "
        "deployment); exactly one is 'primary'. None: one primary of the top-level settings.",
    )
    fallback_after_engine_deaths: int = Field(
        default=2, ge=1, description="The primary engine dying this often in one run sends the rest to the next tier."
    )
    nightly_deadline: str | None = Field(
        default=None,
        description="HH:MM (in `timezone`) the nightly batch must be done by; work the primary cannot finish by "
        "then goes to the fallback tier.",
    )
    bench_prompt_tokens: int = Field(
        default=256, ge=8, description="`contractsum bench`: tokens of each measured prompt."
    )
    bench_output_tokens: int = Field(
        default=32, ge=2, description="`contractsum bench`: tokens each measured sequence decodes."
    )

    @field_validator("home", "model", "prompts_dir", "inbox", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    @field_validator("tiers", mode="before")
    @classmethod
    def _tiers(cls, v: Any) -> list[Tier]:
        return parse_tiers(v)

    @field_validator("nightly_deadline")
    @classmethod
    def _deadline(cls, v: str | None) -> str | None:
        return None if v is None else check_deadline(v)

    @model_validator(mode="after")
    def _deadline_zone(self) -> Settings:
        if self.nightly_deadline is not None:
            try:
                zone(self.timezone)
            except ConfigError as exc:
                raise ValueError(f"nightly_deadline is read in timezone {self.timezone!r}: {exc.args[0]}") from None
        return self

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

    def engine_config(self, model: Path | None = None, **overrides: Any) -> EngineConfig:
        """The engine these settings ask for (on ``model``, default :meth:`resolved_model`)."""
        return engine_config_from(self, model if model is not None else self.resolved_model(), **overrides)

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
        file_values = read_toml(path, what="config file")
        file_values = file_values.get("contractsum", file_values)
    known = set(Settings.model_fields)
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    env_keys = {k[len(ENV_PREFIX) :].lower() for k in env if k.upper().startswith(ENV_PREFIX)} & known

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
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
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
        elif name == "tiers":
            shown = "; ".join(t.label() for t in value) or "none (one primary tier: the top-level settings)"
        elif isinstance(value, SecretStr):
            shown = "**********"
        else:
            shown = "" if value is None else str(value)
        rows.append((name, shown, sources.get(name, "default")))
    return rows
