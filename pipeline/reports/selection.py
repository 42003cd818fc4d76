"""Which stored result a report shows: the current configuration's, or the one a user picked.

Every reader (export, ``show``, the matrix, the batch report) goes through :class:`Selection`, so
"a stale result is never shown as current" holds in one place: a result's state is ``current``
exactly when it was made under the current configuration; anything else shown is ``stale`` and is
marked so by each renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from pipeline.errors import ConfigError
from storage import repo


@dataclass(frozen=True)
class Selection:
    """``current``: the current configuration's id (None when it cannot be known here, e.g. no
    model is configured: then nothing is called current). ``review_key``: the review (prompt
    version + playbook) a stale result must share to stand in for a missing current one.
    ``config_id`` / ``as_of``: show that configuration's results / the newest made by then."""

    current: str | None
    review_key: str
    config_id: str | None = None
    as_of: datetime | None = None
    # The current configurations of the fallback tiers (id -> tier): their results are the night's
    # work for documents the primary handed over, shown as "fallback", neither current nor stale.
    fallbacks: tuple[tuple[str, str], ...] = ()

    def pick(self, s: Session, document_id: int) -> tuple[Any, str]:
        """(summary or None, "current" | "fallback" | "stale" | "none")."""
        summary, state = repo.select_summary(
            s,
            document_id,
            self.current or "",
            review_key=self.review_key,
            config_id=self.config_id,
            as_of=self.as_of,
            prefer=[cid for cid, _ in self.fallbacks],
        )
        if state == "stale" and summary is not None and summary.config_id in dict(self.fallbacks):
            state = "fallback"
        return summary, state

    def describe(self, s: Session) -> dict[str, Any]:
        """The current configuration (id, label) and what was asked for, for a report's header."""
        cur = repo.configuration(s, self.current) if self.current else None
        picked = repo.configuration(s, self.config_id) if self.config_id else None
        return {
            "current": self.current,
            "current_label": cur.label if cur is not None else None,
            "selected": self.config_id,
            "selected_label": picked.label if picked is not None else None,
            "as_of": self.as_of.isoformat() if self.as_of else None,
        }


def selection_for(
    s: Session,
    settings: Any,
    playbook: Any,
    *,
    config_id: str | None = None,
    as_of: str | datetime | None = None,
    tier: str = "primary",
) -> Selection:
    """The selection ``settings`` imply (current = the configuration a summarize run would use now);
    ``config_id`` is an id or a unique prefix of one, ``as_of`` an ISO date or date-time (UTC if no
    zone is given)."""
    return Selection(
        current=current_config_id(settings, playbook, tier=tier),
        review_key=playbook.review_key(settings.prompt_version),
        config_id=resolve_config(s, config_id) if config_id else None,
        as_of=parse_as_of(as_of) if as_of is not None else None,
        fallbacks=fallback_config_ids(settings, playbook, but=tier),
    )


def fallback_config_ids(settings: Any, playbook: Any, *, but: str = "primary") -> tuple[tuple[str, str], ...]:
    """(config id, tier) of every configured tier other than ``but`` whose model is here."""
    from pipeline.engine.tiers import tiers_of
    from pipeline.errors import ContractsumError

    out = []
    for t in tiers_of(settings):
        if t.name == but:
            continue
        try:
            out.append((current_config_id(settings, playbook, tier=t.name), t.name))
        except ContractsumError:  # a tier whose model is not on this machine made no result here
            continue
    return tuple((cid, name) for cid, name in out if cid is not None)


def current_config_id(settings: Any, playbook: Any, *, tier: str = "primary") -> str | None:
    """The id of the configuration a summarize run on ``tier`` with ``settings`` would key its
    results on; None when that tier's model is not here (then no result can be called current)."""
    from pipeline.batch import config_id_for
    from pipeline.errors import ModelNotFoundError

    try:
        return config_id_for(settings, playbook, tier=tier)
    except ModelNotFoundError:
        return None


def resolve_config(s: Session, ref: str) -> str:
    """A configuration id from an id or a unique prefix (4+ characters)."""
    ref = ref.strip().lower()
    if len(ref) < 4:
        raise ConfigError(
            f"configuration {ref!r}: give at least 4 characters of its id", hint="see `contractsum configs`"
        )
    hits = repo.find_configurations(s, ref)
    if not hits:
        raise ConfigError(f"no configuration {ref!r}", hint="see `contractsum configs`")
    if len(hits) > 1:
        raise ConfigError(f"configuration {ref!r} is ambiguous: give more of its id", hint="see `contractsum configs`")
    return hits[0].id


def parse_as_of(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(
                f"--as-of {value!r} is not an ISO date or date-time", hint="e.g. 2026-11-30 or 2026-11-30T06:00"
            ) from None
        if len(text) == 10:  # a date: the end of that day
            moment = moment.replace(hour=23, minute=59, second=59, microsecond=999999)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
