"""Engine tiers: named engines a batch may run on, in fallback order, one of them ``primary``.

A tier is the top-level engine settings with some of them replaced (its own model, TP size,
quantization, context ...), plus where its work runs: a Prefect work pool and, optionally, a
deployment. In the TOML file::

    [tiers.primary]                  # the top-level model and engine settings, on its own pool
    work_pool = "gpu-tp4"
    tensor_parallel_size = 4

    [tiers.fallback]                 # tried next, in the order written
    model = "/models/llama-13b"
    tensor_parallel_size = 1
    max_model_len = 16384
    work_pool = "gpu-single"
    deployment = "summarize-tier/fallback"   # the hand-over's (flows/handover.py); the default

or the same as an array of tables (``[[tiers]]`` with ``name = ...``), or as JSON in
``CONTRACTSUM_TIERS``. No tiers configured = one implicit ``primary`` made of the top-level
settings, so configs written before tiers existed keep working.

The override fields are made from ``EngineSettings`` (pipeline/engine/config.py): a new engine
setting is a tier override too, with the same limits and help text.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic.fields import FieldInfo

from pipeline.engine.config import ENGINE_SETTING_NAMES, EngineConfig, EngineSettings, engine_config_from
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.settings import Settings

PRIMARY = "primary"
# The work pool of the implicit primary tier (no tiers configured): `contractsum deploy --pool`'s
# usual name in docs/operations.md.
DEFAULT_WORK_POOL = "contractsum"
TIER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DEADLINE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _override(name: str) -> tuple[Any, FieldInfo]:
    """An EngineSettings field as an optional override: same limits and help, default unset."""
    field = EngineSettings.model_fields[name]
    return Optional[field.annotation], FieldInfo.merge_field_infos(field, default=None)  # noqa: UP045 (a runtime type)


_EngineOverrides: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "_EngineOverrides",
    __config__=ConfigDict(extra="forbid", frozen=True),
    **{name: _override(name) for name in ENGINE_SETTING_NAMES},
)


class Tier(_EngineOverrides):
    """One engine tier: a name, the engine settings it changes, and where its work runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The tier's name; exactly one tier is 'primary'.")
    model: Path | None = Field(default=None, description="Checkpoint folder; default: the top-level model.")
    work_pool: str = Field(min_length=1, description="Prefect work pool this tier's flow runs go to.")
    deployment: str | None = Field(
        default=None, min_length=1, description="Prefect deployment ('flow/deployment') of this tier's flow runs."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not TIER_NAME.match(v):
            raise ValueError(f"{v!r} is not a tier name (lowercase letters, digits, '-' and '_', at most 64)")
        return v

    @field_validator("model", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    @property
    def is_primary(self) -> bool:
        return self.name == PRIMARY

    def overrides(self) -> dict[str, Any]:
        """The engine settings this tier sets itself (the others are the top-level ones)."""
        return {name: getattr(self, name) for name in ENGINE_SETTING_NAMES if name in self.model_fields_set}

    def settings(self, settings: Settings) -> Settings:
        """``settings`` with this tier's model and engine settings in place: what the existing
        summarize code runs this tier with. The values were validated when the tier was."""
        update: dict[str, Any] = dict(self.overrides())
        if self.model is not None:
            update["model"] = self.model
        return settings.model_copy(update=update)

    def engine_config(self, settings: Settings) -> EngineConfig:
        """The engine this tier runs (context clamped to its model's own)."""
        tiered = self.settings(settings)
        return engine_config_from(tiered, tiered.resolved_model())

    def effective(self, settings: Settings) -> dict[str, Any]:
        """What ``contractsum config`` shows: every engine setting as this tier runs it, without
        touching the model folder."""
        tiered = self.settings(settings)
        return {
            "name": self.name,
            "primary": self.is_primary,
            "model": str(tiered.model) if tiered.model is not None else None,
            "work_pool": self.work_pool,
            "deployment": self.deployment,
            "overrides": sorted(self.overrides()) + (["model"] if self.model is not None else []),
            "engine": {name: getattr(tiered, name) for name in ENGINE_SETTING_NAMES},
        }

    def label(self) -> str:
        """A one-line description: the name, and what differs from the top-level settings."""
        parts = [f"model={self.model}"] if self.model is not None else []
        parts += [f"{k}={v}" for k, v in self.overrides().items()]
        parts.append(f"pool={self.work_pool}")
        if self.deployment:
            parts.append(f"deployment={self.deployment}")
        return f"{self.name} ({', '.join(parts)})"


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'tier'}: {e['msg']}" for e in exc.errors())


def parse_tiers(value: Any) -> list[Tier]:
    """The ``tiers`` setting as written (a table of tables keyed by name, or an array of tables
    with ``name``) -> validated tiers in the order written. Errors name the tier and the field."""
    if value is None:
        return []
    if isinstance(value, dict):
        entries: list[tuple[str, Any]] = []
        for name, body in value.items():
            if not isinstance(body, dict | Tier):
                raise ValueError(f"tier {name!r}: expected a table of settings, got {type(body).__name__}")
            if isinstance(body, Tier):
                body = body.model_dump(exclude_unset=True)
            if "name" in body and body["name"] != name:
                raise ValueError(f"tier {name!r}: its name field says {body['name']!r}; drop it or make them equal")
            entries.append((str(name), {**body, "name": name}))
    elif isinstance(value, list | tuple):
        entries = []
        for i, body in enumerate(value):
            if isinstance(body, Tier):
                body = body.model_dump(exclude_unset=True)
            if not isinstance(body, dict):
                raise ValueError(f"tiers[{i}]: expected a table of settings, got {type(body).__name__}")
            if "name" not in body:
                raise ValueError(f"tiers[{i}]: every tier needs a name")
            entries.append((str(body["name"]), body))
    else:
        raise ValueError(f"expected [tiers.NAME] tables or an array of tables, got {type(value).__name__}")
    tiers: list[Tier] = []
    for name, body in entries:
        try:
            tiers.append(Tier.model_validate(body))
        except ValidationError as exc:
            raise ValueError(f"tier {name!r}: {_problems(exc)}") from None
    names = [t.name for t in tiers]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"tier name(s) given more than once: {', '.join(twice)}")
    if tiers and PRIMARY not in names:
        raise ValueError(
            f"no tier is named {PRIMARY!r} (configured: {', '.join(names)}); name one tier {PRIMARY!r}, "
            "or configure no tiers to run everything on the top-level engine settings"
        )
    return tiers


def tiers_of(settings: Settings) -> list[Tier]:
    """Every tier in fallback order: ``primary`` first, then the others as written. No tiers
    configured = one implicit ``primary`` of the top-level settings on DEFAULT_WORK_POOL."""
    configured: list[Tier] = list(settings.tiers)
    if not configured:
        return [Tier(name=PRIMARY, work_pool=DEFAULT_WORK_POOL)]
    return [t for t in configured if t.is_primary] + [t for t in configured if not t.is_primary]


def tier(settings: Settings, name: str) -> Tier:
    """The tier called ``name``; an unknown name is a ConfigError listing the known ones."""
    known = tiers_of(settings)
    for t in known:
        if t.name == name:
            return t
    raise ConfigError(
        f"no tier named {name!r}; configured tiers: {', '.join(t.name for t in known)}",
        hint="tiers are [tiers.NAME] tables in the config file (see `contractsum config`)",
    )


def fallback_after(settings: Settings, name: str) -> Tier | None:
    """The tier work goes to when ``name`` cannot do it: the next in fallback order, or None."""
    order = tiers_of(settings)
    names = [t.name for t in order]
    position = names.index(tier(settings, name).name)
    return order[position + 1] if position + 1 < len(order) else None


# -- deadlines ------------------------------------------------------------------------------


def check_deadline(text: str) -> str:
    """``HH:MM`` (24-hour) or ValueError saying what is wrong."""
    if not DEADLINE.match(text):
        raise ValueError(f"{text!r} is not a time of day as HH:MM (24-hour, e.g. 06:00)")
    return text


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown timezone {name!r}", hint="use an IANA name such as Europe/Berlin") from None


def next_deadline(text: str, timezone: str, now: datetime | None = None) -> datetime:
    """The first moment after ``now`` (default: now) at which the clock in ``timezone`` shows
    ``text`` (``HH:MM``), as an aware datetime in that zone. A run started at 02:00 with deadline
    06:00 gets today's 06:00; one started at 07:00 gets tomorrow's."""
    try:
        hh, mm = (int(x) for x in check_deadline(text).split(":"))
    except ValueError as exc:
        raise ConfigError(f"deadline: {exc}") from None
    tz = zone(timezone)
    local_now = (now or datetime.now(tz)).astimezone(tz)
    candidate = local_now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    if candidate <= local_now:
        # Re-resolve the wall time on the next day (a DST change in between keeps HH:MM).
        candidate = (candidate + timedelta(days=1)).replace(hour=hh, minute=mm, tzinfo=tz)
    return candidate


def parse_deadline(text: str, timezone: str, now: datetime | None = None) -> datetime:
    """A batch's deadline as written: ``HH:MM`` (the next such time in ``timezone``, see
    :func:`next_deadline`) or an ISO date-time (without a zone: in ``timezone``). Anything else
    is a ConfigError saying what is wrong."""
    text = text.strip()
    if DEADLINE.match(text):
        return next_deadline(text, timezone, now)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"deadline {text!r} is neither HH:MM (24-hour) nor an ISO date-time",
            hint="e.g. 06:00, or 2026-12-03T06:00+01:00",
        ) from None
    if len(text) <= 10:  # a bare date would mean its midnight: too easy to get wrong
        raise ConfigError(f"deadline {text!r} is a date without a time", hint="e.g. 2026-12-03T06:00")
    return moment if moment.tzinfo else moment.replace(tzinfo=zone(timezone))


# -- sizing ---------------------------------------------------------------------------------


def plan_inputs(settings: Settings, t: Tier, *, model: str | Path | None = None) -> dict[str, Any]:
    """``planner.plan``'s arguments for the engine tier ``t`` runs: its model (or ``model``), its
    context as the engine clamps it, its admission cap as the concurrency, its TP and dtypes."""
    tiered = t.settings(settings)
    if model is None:
        cfg = t.engine_config(settings)
        model, context = cfg.model, cfg.max_model_len
    else:
        context = tiered.max_model_len
    return {
        "model": str(model),
        "context": context,
        "concurrency": tiered.max_num_seqs,
        "tp": tiered.tensor_parallel_size,
        "dtype": "fp8" if tiered.quantization == "fp8" else "bf16",
        "kv_dtype": "fp8" if tiered.kv_cache_dtype.startswith("fp8") else "bf16",
    }
