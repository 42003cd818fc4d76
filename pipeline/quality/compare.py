"""Compare two configurations' results on the same contracts: what a model, prompt or playbook change did.

Per document (those of the batch with a result under either configuration): the clause types
found under one and not the other, citations added and removed (by sentence id), answers that
differ, and the summary similarity — ROUGE-L F1 over words (the golden check's metric,
pipeline/quality/golden_metrics.py): 1.0 for the same words in the same order, 0.0 for none in
common. Documents are ordered by how much changed (:attr:`DocumentChange.score`), and totals are
given per clause type. This is the golden check's companion on real contracts: after an FP8
rollout, ``compare <bf16 id> <fp8 id> --batch last-night`` says what moved.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from pipeline.batch import resolve_batch
from pipeline.errors import ConfigError
from pipeline.quality.golden_metrics import rouge_l_f
from pipeline.reports.markdown import md_inline
from storage import repo

COMPARE_FORMATS = ("md", "html", "json")


@dataclass
class _Side:
    found: dict[str, set[int]]  # clause type -> cited sentence ordinals
    not_found: set[str]
    answers: dict[str, str | None]
    summary: str


@dataclass
class ClauseChange:
    type: str
    a: str  # found | not_found | not_asked
    b: str
    citations_added: list[str] = field(default_factory=list)  # sentence ids cited under B, not under A
    citations_removed: list[str] = field(default_factory=list)
    answer_a: str | None = None
    answer_b: str | None = None

    @property
    def answer_changed(self) -> bool:
        return self.a == self.b == "found" and _norm(self.answer_a) != _norm(self.answer_b)


@dataclass
class DocumentChange:
    document_id: int
    source: str
    presence: str  # both | only_a | only_b
    found_only_a: list[str] = field(default_factory=list)
    found_only_b: list[str] = field(default_factory=list)
    answers_differ: list[str] = field(default_factory=list)
    citations_added: int = 0
    citations_removed: int = 0
    summary_similarity: float | None = None
    clauses: list[ClauseChange] = field(default_factory=list)

    @property
    def score(self) -> float:
        """How much changed: a clause type that flipped or an answer that changed counts 1, a
        citation added or removed 0.25, the summary 1 - similarity; a missing side counts 100."""
        if self.presence != "both":
            return 100.0
        return (
            len(self.found_only_a)
            + len(self.found_only_b)
            + len(self.answers_differ)
            + 0.25 * (self.citations_added + self.citations_removed)
            + (1.0 - (self.summary_similarity if self.summary_similarity is not None else 1.0))
        )

    @property
    def changed(self) -> bool:
        return self.score > 0


@dataclass
class TypeTotals:
    type: str
    found_a: int = 0
    found_b: int = 0
    found_only_a: int = 0
    found_only_b: int = 0
    citations_added: int = 0
    citations_removed: int = 0
    answers_differ: int = 0


@dataclass
class Comparison:
    a: str
    b: str
    a_label: str
    b_label: str
    batch: str | None
    differences: dict[str, list[Any]]  # configuration field -> [A's value, B's value]
    documents: list[DocumentChange]
    totals: list[TypeTotals]

    @property
    def mean_similarity(self) -> float | None:
        sims = [d.summary_similarity for d in self.documents if d.summary_similarity is not None]
        return sum(sims) / len(sims) if sims else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": {"id": self.a, "label": self.a_label},
            "b": {"id": self.b, "label": self.b_label},
            "batch": self.batch,
            "configuration_differences": self.differences,
            "summary_similarity_metric": "ROUGE-L F1 over words",
            "documents_compared": len(self.documents),
            "documents_changed": sum(1 for d in self.documents if d.changed),
            "mean_summary_similarity": _round(self.mean_similarity),
            "documents": [
                {
                    **{k: v for k, v in asdict(d).items() if k != "clauses"},
                    "summary_similarity": _round(d.summary_similarity),
                    "score": round(d.score, 4),
                    "clauses": [
                        {**asdict(c), "answer_changed": c.answer_changed}
                        for c in d.clauses
                        if c.a != c.b or c.citations_added or c.citations_removed or c.answer_changed
                    ],
                }
                for d in self.documents
            ],
            "totals": [asdict(t) for t in self.totals],
        }


def compare(session: Session, a: str, b: str, *, batch: str | None = None) -> Comparison:
    """Compare the results of configurations ``a`` and ``b`` (ids) over ``batch`` (None: every document)."""
    conf_a, conf_b = repo.configuration(session, a), repo.configuration(session, b)
    for ref, conf in ((a, conf_a), (b, conf_b)):
        if conf is None:
            raise ConfigError(f"no configuration {ref!r}", hint="see `contractsum configs`")
    assert conf_a is not None and conf_b is not None
    from pipeline.review.configuration import ResultConfig

    try:
        diff = ResultConfig.model_validate(conf_a.fields).differences(ResultConfig.model_validate(conf_b.fields))
    except ValueError:  # a legacy record that does not parse as today's configuration
        diff = {
            k: (conf_a.fields.get(k), conf_b.fields.get(k))
            for k in conf_a.fields
            if conf_a.fields.get(k) != conf_b.fields.get(k)
        }
    batch_id = resolve_batch(session, batch)
    changes: list[DocumentChange] = []
    totals: dict[str, TypeTotals] = {}
    for doc in repo.documents(session, batch_id=batch_id):
        sa, sb = repo.summary_for(session, doc.id, a), repo.summary_for(session, doc.id, b)
        if sa is None and sb is None:
            continue
        presence = "both" if sa is not None and sb is not None else ("only_a" if sa is not None else "only_b")
        change = DocumentChange(document_id=doc.id, source=doc.source, presence=presence)
        side_a = _side(session, sa) if sa is not None else None
        side_b = _side(session, sb) if sb is not None else None
        for side, count in ((side_a, "found_a"), (side_b, "found_b")):
            for t in side.found if side else ():
                tot = totals.setdefault(t, TypeTotals(type=t))
                setattr(tot, count, getattr(tot, count) + 1)
        if side_a is not None and side_b is not None:
            _diff(change, side_a, side_b, totals)
        changes.append(change)
    changes.sort(key=lambda d: (-d.score, d.source, d.document_id))
    return Comparison(
        a=a,
        b=b,
        a_label=conf_a.label,
        b_label=conf_b.label,
        batch=batch,
        differences={k: list(v) for k, v in diff.items()},
        documents=changes,
        totals=sorted(totals.values(), key=lambda t: t.type),
    )


def _side(session: Session, summary) -> _Side:
    clauses = repo.clauses_of(session, summary.id)
    cited: dict[int, set[int]] = {}
    for c in repo.citations_of(session, summary.id):
        cited.setdefault(c.clause_id, set()).add(c.sentence_ordinal)
    found = {cl.type: cited.get(cl.id, set()) for cl in clauses if (cl.status or "found") == "found"}
    return _Side(
        found=found,
        not_found={cl.type for cl in clauses if cl.status == "not_found"},
        answers={cl.type: cl.answer for cl in clauses if (cl.status or "found") == "found"},
        summary=summary.summary or "",
    )


def _state(side: _Side, t: str) -> str:
    return "found" if t in side.found else ("not_found" if t in side.not_found else "not_asked")


def _diff(change: DocumentChange, a: _Side, b: _Side, totals: dict[str, TypeTotals]) -> None:
    change.summary_similarity = rouge_l_f(a.summary, b.summary)
    for t in sorted(set(a.found) | set(b.found) | a.not_found | b.not_found):
        cc = ClauseChange(type=t, a=_state(a, t), b=_state(b, t))
        before, after = a.found.get(t, set()), b.found.get(t, set())
        cc.citations_added = [f"S{o}" for o in sorted(after - before)]
        cc.citations_removed = [f"S{o}" for o in sorted(before - after)]
        cc.answer_a, cc.answer_b = a.answers.get(t), b.answers.get(t)
        change.clauses.append(cc)
        tot = totals.setdefault(t, TypeTotals(type=t))
        if cc.a == "found" and cc.b != "found":
            change.found_only_a.append(t)
            tot.found_only_a += 1
        if cc.b == "found" and cc.a != "found":
            change.found_only_b.append(t)
            tot.found_only_b += 1
        if cc.answer_changed:
            change.answers_differ.append(t)
            tot.answers_differ += 1
        change.citations_added += len(cc.citations_added)
        change.citations_removed += len(cc.citations_removed)
        tot.citations_added += len(cc.citations_added)
        tot.citations_removed += len(cc.citations_removed)


def _norm(answer: str | None) -> str:
    return " ".join((answer or "").split()).casefold()


def _round(x: float | None) -> float | None:
    return round(x, 4) if x is not None else None


# --- renderers --------------------------------------------------------------------------------


def render(c: Comparison, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(c.as_dict(), indent=2, ensure_ascii=False) + "\n"
    if fmt == "md":
        return to_markdown(c)
    if fmt == "html":
        return to_html(c)
    raise ConfigError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(COMPARE_FORMATS)}")


def _headline(c: Comparison) -> str:
    changed = sum(1 for d in c.documents if d.changed)
    sim = c.mean_similarity
    return f"{len(c.documents)} document(s) compared, {changed} changed" + (
        f"; mean summary similarity (ROUGE-L F1) {sim:.3f}" if sim is not None else ""
    )


def _doc_facts(d: DocumentChange) -> list[str]:
    if d.presence != "both":
        return [f"result only under {'A' if d.presence == 'only_a' else 'B'}"]
    facts = []
    if d.found_only_a:
        facts.append("found only under A: " + ", ".join(d.found_only_a))
    if d.found_only_b:
        facts.append("found only under B: " + ", ".join(d.found_only_b))
    if d.answers_differ:
        facts.append("answers differ: " + ", ".join(d.answers_differ))
    if d.citations_added or d.citations_removed:
        facts.append(f"citations +{d.citations_added} / -{d.citations_removed}")
    if d.summary_similarity is not None:
        facts.append(f"summary similarity {d.summary_similarity:.3f}")
    return facts


def to_markdown(c: Comparison) -> str:
    lines = [
        f"# Compare {c.a} (A) with {c.b} (B)" + (f" \u2014 batch {md_inline(c.batch)}" if c.batch else ""),
        "",
        f"- **A:** {md_inline(c.a_label)}",
        f"- **B:** {md_inline(c.b_label)}",
    ]
    if c.differences:
        lines.append(
            "- **What differs:** "
            + "; ".join(f"{md_inline(k)}: {md_inline(v[0])} \u2192 {md_inline(v[1])}" for k, v in c.differences.items())
        )
    lines += ["", md_inline(_headline(c)) + ".", "", "## Documents, most changed first", ""]
    lines += ["| Document | Change | What changed |", "|---|---|---|"]
    for d in c.documents:
        facts = "; ".join(md_inline(f) for f in _doc_facts(d)) or "no change"
        lines.append(f"| {md_inline(d.source)} ({d.document_id}) | {d.score:.2f} | {facts} |")
    lines += ["", "## Per clause type", ""]
    lines += ["| Clause | Found A | Found B | Only A | Only B | Citations + | Citations \u2212 | Answers differ |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for t in c.totals:
        lines.append(
            f"| {md_inline(t.type)} | {t.found_a} | {t.found_b} | {t.found_only_a} | {t.found_only_b} | "
            f"{t.citations_added} | {t.citations_removed} | {t.answers_differ} |"
        )
    detail = [d for d in c.documents if d.presence == "both" and d.changed]
    if detail:
        lines += ["", "## Details", ""]
        for d in detail:
            lines.append(f"### {md_inline(d.source)}")
            if d.summary_similarity is not None and d.summary_similarity < 1:
                lines.append(f"- summary similarity (ROUGE-L F1): {d.summary_similarity:.3f}")
            for cc in d.clauses:
                bits = []
                if cc.a != cc.b:
                    bits.append(f"{cc.a} \u2192 {cc.b}")
                if cc.citations_added:
                    bits.append("cites +" + ", ".join(cc.citations_added))
                if cc.citations_removed:
                    bits.append("cites \u2212" + ", ".join(cc.citations_removed))
                if cc.answer_changed:
                    bits.append(f"answer {md_inline(cc.answer_a)!s} \u2192 {md_inline(cc.answer_b)!s}")
                if bits:
                    lines.append(f"- {md_inline(cc.type)}: " + "; ".join(bits))
            lines.append("")
    return "\n".join(lines) + "\n"


def to_html(c: Comparison) -> str:
    h = html.escape
    rows = "".join(
        f'<tr data-score="{d.score:.4f}"><td>{h(d.source)} ({d.document_id})</td><td>{d.score:.2f}</td>'
        f"<td>{h('; '.join(_doc_facts(d)) or 'no change')}</td></tr>"
        for d in c.documents
    )
    totals = "".join(
        f"<tr><td>{h(t.type)}</td><td>{t.found_a}</td><td>{t.found_b}</td><td>{t.found_only_a}</td>"
        f"<td>{t.found_only_b}</td><td>{t.citations_added}</td><td>{t.citations_removed}</td><td>{t.answers_differ}</td></tr>"
        for t in c.totals
    )
    diffs = "".join(f"<li>{h(k)}: {h(str(v[0]))} \u2192 {h(str(v[1]))}</li>" for k, v in c.differences.items())
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>Compare {h(c.a)} with {h(c.b)}</title>"
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse;width:100%;margin:.8rem 0}th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left}"
        "th{background:#f5f5f5}</style></head><body>"
        f"<h1>Compare {h(c.a)} (A) with {h(c.b)} (B){' — batch ' + h(c.batch) if c.batch else ''}</h1>"
        f"<p><strong>A:</strong> {h(c.a_label)}<br><strong>B:</strong> {h(c.b_label)}</p>"
        + (f"<p>What differs:</p><ul>{diffs}</ul>" if diffs else "")
        + f"<p>{h(_headline(c))}.</p>"
        "<h2>Documents, most changed first</h2><table><tr><th>Document</th><th>Change</th><th>What changed</th></tr>"
        f"{rows}</table><h2>Per clause type</h2><table><tr><th>Clause</th><th>Found A</th><th>Found B</th>"
        "<th>Only A</th><th>Only B</th><th>Citations +</th><th>Citations −</th><th>Answers differ</th></tr>"
        f"{totals}</table></body></html>\n"
    )
