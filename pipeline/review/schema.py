"""The shape of model output: pydantic models, and a JSON schema that pins clause types to the
playbook's ids and citations to the sentence ids present in one prompt (so the model can neither
invent a clause type nor cite a sentence it was not shown)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import OutputError

if TYPE_CHECKING:
    from pipeline.review.playbooks import Playbook


def _default_clause_types() -> tuple[str, ...]:
    from pipeline.review.playbooks import DEFAULT_PLAYBOOK, load_playbook

    return load_playbook(DEFAULT_PLAYBOOK).ids


# The default playbook's clause types (prompts/playbooks/default.toml): the enum when no playbook is given.
CLAUSE_TYPES: tuple[str, ...] = _default_clause_types()
SENTENCE_ID = re.compile(r"^S([1-9][0-9]*)$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyDate(Strict):
    label: str
    date: str


class ClauseFinding(Strict):
    type: str  # one of the playbook's clause ids (the schema's enum; parse_output checks it again)
    finding: str
    answer: str | None = None  # the value asked for, for playbooks with non-yes/no kinds
    citations: list[str] = Field(default_factory=list)


class ContractSummary(Strict):
    summary: str
    parties: list[str] = Field(default_factory=list)
    dates: list[KeyDate] = Field(default_factory=list)
    clauses: list[ClauseFinding] = Field(default_factory=list)

    def merged(self) -> ContractSummary:
        """One finding per clause type (the first), citations united in order, parties and dates
        without repeats: the constrained decoder cannot be told "unique"."""
        by_type: dict[str, ClauseFinding] = {}
        for c in self.clauses:
            if c.type in by_type:
                cur = by_type[c.type]
                cur.citations.extend(x for x in c.citations if x not in cur.citations)
            else:
                by_type[c.type] = ClauseFinding(
                    type=c.type, finding=c.finding, answer=c.answer, citations=list(dict.fromkeys(c.citations))
                )
        dates = list({(d.label, d.date): d for d in self.dates}.values())
        return self.model_copy(
            update={"clauses": list(by_type.values()), "parties": list(dict.fromkeys(self.parties)), "dates": dates}
        )

    def cited_ordinals(self) -> set[int]:
        return {sentence_ordinal(c) for cl in self.clauses for c in cl.citations}


class OutputLimits(Strict):
    """Bounds that keep every answer finite (a random-weight model never closes a string)."""

    summary_chars: int = 800
    finding_chars: int = 300
    text_chars: int = 120
    max_parties: int = 6
    max_dates: int = 6
    min_clauses: int = 0
    max_clauses: int = len(CLAUSE_TYPES)
    max_citations: int = 4


def sentence_ordinal(sid: str) -> int:
    m = SENTENCE_ID.match(sid)
    if m is None:
        raise ValueError(f"not a sentence id: {sid!r}")
    return int(m.group(1))


def json_schema(
    sentence_ordinals: Iterable[int], limits: OutputLimits | None = None, playbook: Playbook | None = None
) -> dict[str, Any]:
    """The answer schema for one prompt: clause types are an enum of the playbook's ids (default:
    the default playbook's), citations an enum of that prompt's sentence ids. Playbooks with
    non-yes/no kinds add a required "answer" string to each clause (the default's schema is unchanged)."""
    lim = limits or OutputLimits()
    clause_ids = list(playbook.ids if playbook is not None else CLAUSE_TYPES)
    with_answer = playbook is not None and playbook.has_answers
    ids = [f"S{o}" for o in sorted(set(sentence_ordinals))]
    if ids:
        citations: dict[str, Any] = {
            "type": "array",
            "items": {"type": "string", "enum": ids},
            "minItems": 1,
            "maxItems": lim.max_citations,
        }
        min_clauses = lim.min_clauses
    else:  # nothing to cite: no clause can be supported
        citations = {"type": "array", "maxItems": 0, "items": {"type": "string"}}
        min_clauses = 0

    def text(n: int) -> dict[str, Any]:
        return {"type": "string", "maxLength": n}

    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["summary", "parties", "dates", "clauses"],
        "properties": {
            "summary": text(lim.summary_chars),
            "parties": {"type": "array", "items": text(lim.text_chars), "maxItems": lim.max_parties},
            "dates": {
                "type": "array",
                "maxItems": lim.max_dates,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["label", "date"],
                    "properties": {"label": text(lim.text_chars), "date": text(lim.text_chars)},
                },
            },
            "clauses": {
                "type": "array",
                "minItems": min_clauses,
                "maxItems": min(lim.max_clauses, len(clause_ids)),
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["type", "finding", *(["answer"] if with_answer else []), "citations"],
                    "properties": {
                        "type": {"type": "string", "enum": clause_ids},
                        "finding": text(lim.finding_chars),
                        **({"answer": text(lim.text_chars)} if with_answer else {}),
                        "citations": citations,
                    },
                },
            },
        },
    }


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def printable(text: str) -> str:
    """``text`` without control characters other than tab and newlines."""
    return _CONTROL.sub("", text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def parse_output(
    raw: str, allowed: set[int], *, finish_reason: str | None = None, clause_ids: Iterable[str] | None = None
) -> ContractSummary:
    """Validate model output; any citation outside ``allowed`` or clause type outside
    ``clause_ids`` (default: the default playbook's) is an error, never silently kept."""
    if finish_reason == "length":
        raise OutputError("output stopped at the token limit", raw=raw, finish_reason=finish_reason)
    try:
        # xgrammar lets raw control characters into strings: accept them, then drop them
        # (PostgreSQL refuses NUL in text).
        data = _clean(json.loads(raw, strict=False))
        result = ContractSummary.model_validate(data)
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise OutputError(
            f"output is not valid against the schema: {first}", raw=raw, finish_reason=finish_reason
        ) from None
    known = set(CLAUSE_TYPES if clause_ids is None else clause_ids)
    unknown = [c.type for c in result.clauses if c.type not in known]
    if unknown:
        raise OutputError(
            f"output names clause types not in the playbook: {', '.join(unknown[:5])}",
            raw=raw,
            finish_reason=finish_reason,
        )
    bad = []
    for clause in result.clauses:
        for sid in clause.citations:
            try:
                ordinal = sentence_ordinal(sid)
            except ValueError:
                bad.append(sid)
                continue
            if ordinal not in allowed:
                bad.append(sid)
    if bad:
        raise OutputError(
            f"output cites sentences not in the prompt: {', '.join(bad[:5])}", raw=raw, finish_reason=finish_reason
        )
    return result.merged()
