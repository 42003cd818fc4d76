"""Playbooks: the clause types a review asks about, as data (``prompts/playbooks/<name>.toml``).

A playbook names each clause type (``id``), labels it for people, says what the model is asked
(``question``) and what kind of answer it has (``kind``). The summarize prompt's clause list, the
answer schema's clause enum and the stored findings all come from it. A user adds one by dropping
``<name>.toml`` into ``<home>/playbooks/`` (searched first) or by passing a path.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import PromptError

Kind = Literal["yes_no", "date", "party", "duration", "place", "text"]
KINDS: tuple[str, ...] = ("yes_no", "date", "party", "duration", "place", "text")
DEFAULT_PLAYBOOK = "default"
REVIEW_MODES: tuple[str, ...] = ("whole", "candidates", "gated")
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
CLAUSE_ID = re.compile(r"^[a-z][a-z0-9_]*$")

# What the model is told to put in "answer", per kind (yes/no kinds have no answer field).
ANSWER_HINTS: dict[str, str] = {
    "date": "the date as written",
    "party": "the party or parties named",
    "duration": "the length of time, e.g. 30 days",
    "place": "the state, country or city",
    "text": "a short quote or value",
}


class PlaybookClause(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(max_length=64)
    label: str = Field(min_length=1, max_length=120)
    kind: Kind
    question: str = Field(min_length=1, max_length=600)
    cuad_category: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not CLAUSE_ID.match(v):
            raise ValueError("must be lowercase letters, digits and _ and start with a letter")
        return v

    @field_validator("question", "label")
    @classmethod
    def _one_line(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v:
            raise ValueError("must not be empty")
        return v


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str = Field(min_length=1, max_length=12, pattern=r"^[A-Za-z0-9._-]+$")
    description: str = ""
    attribution: str = ""
    # "ids": list only the ids in the prompt (the default playbook: prompt v1 byte for byte);
    # "questions": one line per clause type with its question and answer kind.
    prompt_style: Literal["ids", "questions"] = "questions"
    # "whole": one structured prompt per chunk asks every clause type (prompt v1);
    # "candidates": retrieval proposes candidates_k sentences per clause type and the model judges and
    # cites among them, one short prompt per clause type (pipeline.review.candidates).
    review_mode: Literal["whole", "candidates"] = "whole"
    candidates_k: int = Field(default=5, ge=1, le=20)
    # Candidate review only: a clause type whose CUAD category has a keyword rule is asked only when
    # the rule matches a sentence (else not_found without a prompt): the model confirms keyword hits.
    rule_gate: bool = False
    clauses: list[PlaybookClause] = Field(alias="clause", min_length=1, max_length=100)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("must be 1-40 lowercase letters, digits, _ or - and start with a letter")
        return v

    @model_validator(mode="after")
    def _unique(self) -> Playbook:
        seen: set[str] = set()
        for c in self.clauses:
            if c.id in seen:
                raise ValueError(f"clause id {c.id!r} appears twice")
            seen.add(c.id)
        return self

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.clauses)

    @property
    def has_answers(self) -> bool:
        """Whether any clause type has an answer beyond yes/no (then the schema carries "answer")."""
        return any(c.kind != "yes_no" for c in self.clauses)

    def clause(self, clause_id: str) -> PlaybookClause:
        for c in self.clauses:
            if c.id == clause_id:
                return c
        raise KeyError(clause_id)

    def review_key(self, prompt_version: str) -> str:
        """The namespace jobs and summaries are stored under: the prompt version alone for the
        default playbook (so existing summaries stay valid), else prompt version + playbook."""
        if self.name == DEFAULT_PLAYBOOK and self.version == "1" and self.review_mode == "whole":
            return prompt_version
        key = f"{prompt_version}/{self.name}@{self.version}"
        if self.review_mode == "candidates":  # a different review: its own jobs and summaries
            key += f"+c{self.candidates_k}" + ("g" if self.rule_gate else "")
        if len(key) > 32:  # the column is 32 wide; the playbook is also stored in its own columns
            key = f"{prompt_version}/{hashlib.sha256(key.encode()).hexdigest()[:16]}"[:32]
        return key

    def with_mode(self, mode: str | None) -> Playbook:
        """This playbook reviewed in ``mode`` ("whole" | "candidates" | "gated" = candidates with
        ``rule_gate``; None: as the file says)."""
        if mode is None:
            return self
        if mode not in REVIEW_MODES:
            raise PromptError(f"unknown review mode {mode!r}", hint=", ".join(REVIEW_MODES))
        if mode == "gated":
            return self.model_copy(update={"review_mode": "candidates", "rule_gate": True})
        return self.model_copy(
            update={"review_mode": mode, "rule_gate": False if mode == "candidates" else self.rule_gate}
        )

    @property
    def mode_name(self) -> str:
        """The review mode as ``eval cuad`` reports it."""
        if self.review_mode == "whole":
            return "whole"
        return f"{'gated' if self.rule_gate else 'candidates'} (k={self.candidates_k})"

    def clause_block(self) -> str:
        """The clause instruction the summarize template's ``{clauses}`` slot receives."""
        if self.prompt_style == "ids":
            return (
                "for each of these clause types that the excerpt contains: "
                + ", ".join(self.ids)
                + '; give the type, a one-sentence finding, and the ids of the sentences that support it in "citations".'
            )
        lines = [
            "for each clause type below that the excerpt contains, give the type, a one-sentence finding, "
            + ('"answer" (the value asked for; "yes" for yes/no questions), ' if self.has_answers else "")
            + 'and the ids of the sentences that support it in "citations":'
        ]
        for c in self.clauses:
            hint = f" (answer: {ANSWER_HINTS[c.kind]})" if c.kind != "yes_no" and self.has_answers else ""
            lines.append(f"  - {c.id}: {c.question}{hint}")
        return "\n".join(lines)


def playbook_dirs(home: Path | None, prompts_dir: Path) -> list[Path]:
    """Where playbooks are looked up by name, first match wins: the user's, then the shipped ones."""
    dirs = [Path(home) / "playbooks"] if home is not None else []
    return [*dirs, Path(prompts_dir) / "playbooks"]


def available_playbooks(home: Path | None, prompts_dir: Path) -> list[str]:
    names: list[str] = []
    for d in playbook_dirs(home, prompts_dir):
        if d.is_dir():
            names += [p.stem for p in sorted(d.glob("*.toml")) if p.stem not in names]
    return names


def resolve_playbook_path(
    name_or_path: str | Path, *, home: Path | None = None, prompts_dir: Path | None = None
) -> Path:
    from pipeline.settings import REPO_ROOT

    prompts_dir = prompts_dir or REPO_ROOT / "prompts"
    text = str(name_or_path)
    if NAME.match(text) and not text.endswith(".toml"):
        for d in playbook_dirs(home, prompts_dir):
            candidate = d / f"{text}.toml"
            if candidate.is_file():
                return candidate
        known = ", ".join(available_playbooks(home, prompts_dir)) or "none"
        raise PromptError(f"no playbook named {text!r}", hint=f"known: {known}; or pass a path to a .toml file")
    path = Path(text).expanduser()
    if not path.is_file():
        raise PromptError(f"playbook file {path} does not exist")
    return path


def load_playbook(name_or_path: str | Path, *, home: Path | None = None, prompts_dir: Path | None = None) -> Playbook:
    """A playbook by name (user folder first, then ``prompts/playbooks``) or by path, validated.

    A bad file is a ``PromptError`` that names the file and the field at fault."""
    path = resolve_playbook_path(name_or_path, home=home, prompts_dir=prompts_dir)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise PromptError(f"playbook {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PromptError(f"playbook {path} is not valid TOML: {exc}") from None
    try:
        playbook = Playbook.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _field_name(raw, err["loc"])
        raise PromptError(f"playbook {path}: field {where}: {err['msg']}") from None
    if playbook.name != path.stem:
        raise PromptError(f"playbook {path}: field name: {playbook.name!r} must equal the file name {path.stem!r}")
    return playbook


def _field_name(raw: dict, loc: tuple) -> str:
    """``clause[3].kind`` (with the clause's id when it has one) for a pydantic error location."""
    parts: list[str] = []
    node: Any = raw
    for part in loc:
        if isinstance(part, int) and parts:
            label = f"{parts[-1]}[{part}]"
            item = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                label += f" ({item['id']})"
            parts[-1] = label
            node = item
        else:
            parts.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return ".".join(parts) or "clause"  # the one whole-file check is on the clause list (unique ids)


def playbook_for(settings, override: str | Path | Playbook | None = None) -> Playbook:
    """The playbook a run uses: ``override`` (a flag), else ``settings.playbook``."""
    if isinstance(override, Playbook):
        return override
    return load_playbook(override or settings.playbook, home=settings.home, prompts_dir=settings.prompts_dir)
