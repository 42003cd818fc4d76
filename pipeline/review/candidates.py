"""Candidate review (a playbook's ``review_mode = "candidates"``): cheap retrieval proposes, per clause
type, the few sentences of a contract most likely to hold it; the model is asked one short question per
clause type and may cite only those candidates.

Retrieval is the keyword baseline's rule for the clause's CUAD category (``rule_hits``), when it has one,
then BM25 over the document's sentences with the clause's label and question as the query, up to
``candidates_k`` sentences. A clause type retrieval finds no candidate for is ``not_found`` without a
prompt (the review looked; nothing in the contract resembles it).

The prompt (``prompts/candidates/v1.toml``) puts the fixed instruction first, so every prompt of a wave
shares one cached prefix; then the clause type's question; then the candidates, fenced as data. The
answer schema's citation enum holds only the candidates' ids; ``found`` is the model's verdict.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import OutputError

if TYPE_CHECKING:
    from pipeline.review.playbooks import PlaybookClause

# Shown text of one candidate (the stored sentence stays whole; citations are by id).
CANDIDATE_CHARS = 360
MAX_CITATIONS = 3
ANSWER_CHARS = 120

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and any are as at be by does do for from has have if in into is it its may of on or such that the this "
    "these those to under what when where which who will with whether there their than other any each agreement "
    "contract party parties".split()
)


def tokens(text: str) -> list[str]:
    """Lowercase word tokens without stop words, crudely stemmed (plural / -ing / -ed), for BM25."""
    out = []
    for w in _WORD.findall(text.lower()):
        if w in _STOP or len(w) < 2:
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(w) > len(suffix) + 3 and w.endswith(suffix):
                w = w[: -len(suffix)]
                break
        out.append(w)
    return out


class BM25:
    """Okapi BM25 (k1 = 1.5, b = 0.75) over one document's sentences."""

    def __init__(self, sentences: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.docs = [Counter(tokens(s)) for s in sentences]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        df: Counter[str] = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.k1, self.b = k1, b

    def scores(self, query: str) -> list[float]:
        q = set(tokens(query))
        out = []
        for d, length in zip(self.docs, self.lengths, strict=True):
            score = 0.0
            norm = self.k1 * (1 - self.b + self.b * length / self.avg) if self.avg else self.k1
            for t in q:
                f = d.get(t)
                if f:
                    score += self.idf[t] * f * (self.k1 + 1) / (f + norm)
            out.append(score)
        return out


def propose(
    clause: PlaybookClause, sentences: Sequence[str], k: int, *, bm25: BM25 | None = None, rule_gate: bool = False
) -> list[int]:
    """Indices into ``sentences`` of at most ``k`` candidates for ``clause``, best first: the keyword
    rule's hits for its CUAD category (document order), then BM25's ranking for label + question.
    With ``rule_gate`` a clause type whose category has a rule gets no candidates when the rule matches
    nothing (the model then only confirms or rejects what the keyword search found)."""
    from pipeline.quality.baseline import RULES, rule_hits

    chosen: list[int] = []
    if clause.cuad_category:
        chosen = rule_hits(clause.cuad_category, sentences)[:k]
        if rule_gate and not chosen and clause.cuad_category in RULES:
            return []
    if len(chosen) < k:
        scores = (bm25 or BM25(sentences)).scores(f"{clause.label} {clause.question}")
        ranked = sorted((i for i, sc in enumerate(scores) if sc > 0), key=lambda i: (-scores[i], i))
        chosen += [i for i in ranked if i not in chosen][: k - len(chosen)]
    return chosen


_OWN_FENCE = re.compile(r"<\s*(/?)\s*(candidates)\s*>", re.IGNORECASE)


def render_item(clause: PlaybookClause, candidates: Sequence[tuple[int, str]]) -> str:
    """The per-clause part of the prompt (after the fixed instruction): the question, then the candidates."""
    from pipeline.review.playbooks import ANSWER_HINTS

    ask = f"Clause type: {clause.label}\nQuestion: {clause.question}"
    if clause.kind != "yes_no":
        ask += f'\nIf found, "answer" is {ANSWER_HINTS[clause.kind]}.'
    lines = []
    for o, text in candidates:
        text = " ".join(text.split())
        if len(text) > CANDIDATE_CHARS:
            text = text[: CANDIDATE_CHARS - 1].rstrip() + "\u2026"
        lines.append(f"[S{o}] {_OWN_FENCE.sub(lambda m: f'({m.group(1)}{m.group(2)})', text)}")
    return ask + "\n\n<candidates>\n" + "\n".join(lines) + "\n</candidates>"


def candidate_schema(ordinals: Sequence[int], clause: PlaybookClause) -> dict[str, Any]:
    """The answer schema for one clause type's prompt: ``found``, ``answer`` for non-yes/no kinds, and
    ``citations`` from the candidates' ids only (at least one: the closest candidate when not found)."""
    ids = [f"S{o}" for o in sorted(set(ordinals))]
    with_answer = clause.kind != "yes_no"
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["found", *(["answer"] if with_answer else []), "citations"],
        "properties": {
            "found": {"type": "boolean"},
            **({"answer": {"type": "string", "maxLength": ANSWER_CHARS}} if with_answer else {}),
            "citations": {
                "type": "array",
                "items": {"type": "string", "enum": ids},
                "minItems": 1,
                "maxItems": min(MAX_CITATIONS, len(ids)),
            },
        },
    }


class CandidateAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    found: bool
    answer: str | None = Field(default=None, max_length=ANSWER_CHARS)
    citations: list[str] = Field(default_factory=list)


def parse_candidate(raw: str, allowed: set[int], *, finish_reason: str | None = None) -> CandidateAnswer:
    """Validate one clause type's answer; a citation outside the candidates is an error."""
    from pipeline.review.schema import _clean, sentence_ordinal

    if finish_reason == "length":
        raise OutputError("output stopped at the token limit", raw=raw, finish_reason=finish_reason)
    try:
        result = CandidateAnswer.model_validate(_clean(json.loads(raw, strict=False)))
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise OutputError(
            f"output is not valid against the schema: {first}", raw=raw, finish_reason=finish_reason
        ) from None
    bad = []
    for sid in result.citations:
        try:
            if sentence_ordinal(sid) not in allowed:
                bad.append(sid)
        except ValueError:
            bad.append(sid)
    if bad:
        raise OutputError(
            f"output cites sentences not among the candidates: {', '.join(bad[:5])}",
            raw=raw,
            finish_reason=finish_reason,
        )
    return result
