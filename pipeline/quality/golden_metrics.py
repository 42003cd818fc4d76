"""The golden check's metrics: one side's outputs, and how far a candidate's drift from the
baseline's — per case (first divergence, vLLM's top-N rule, logprob deltas, ROUGE-L, citations,
clause coverage against the manifest) and over the set.

Standard library only (``scripts/gpu/golden_gpu.py`` uses these on a bare PyTorch host).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError
from pipeline.quality.golden_set import GoldenCase

# --- one side's outputs -----------------------------------------------------------------------


@dataclass
class SideOutput:
    """One case's greedy answer: text, token ids, and per position the top-N logprobs (plus the
    chosen token's)."""

    case_id: str
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, float]]
    finish_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "text": self.text,
            "token_ids": self.token_ids,
            "logprobs": [[[t, lp] for t, lp in pos.items()] for pos in self.logprobs],
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SideOutput:
        return cls(
            d["case_id"],
            d["text"],
            list(d["token_ids"]),
            [{int(t): float(lp) for t, lp in pos} for pos in d["logprobs"]],
            d.get("finish_reason"),
        )


# --- metrics -----------------------------------------------------------------------------------


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first differing token; the shorter length when one is a prefix of the other;
    None when the sequences are equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def mutual_top_n(a_tok: int, b_tok: int, a_lps: dict[int, float], b_lps: dict[int, float]) -> bool:
    """vLLM's check_logprobs_close rule at one position: each side's token is among the other's
    reported logprobs (its top-N, plus its own pick)."""
    return a_tok in b_lps and b_tok in a_lps


def logprobs_close(base: SideOutput, cand: SideOutput) -> bool:
    """vLLM's own FP8 test rule for one prompt: walk the outputs; at the first differing token
    both tokens must be in the other's top-N, and the comparison stops there."""
    for i, (x, y) in enumerate(zip(base.token_ids, cand.token_ids, strict=False)):
        if x != y:
            return mutual_top_n(x, y, _lp(base, i), _lp(cand, i))
    return True


def _lp(side: SideOutput, i: int) -> dict[int, float]:
    return side.logprobs[i] if i < len(side.logprobs) else {}


def top_n_agreement(base: SideOutput, cand: SideOutput) -> float:
    """Share of positions (of the longer output) where each side's token is within the other's
    top-N. Before the first divergence this always holds; after it, the sides condition on
    different prefixes, so the share falls as the outputs drift apart and recovers only where
    they realign. Positions past the shorter output count as disagreement."""
    n = max(len(base.token_ids), len(cand.token_ids))
    if n == 0:
        return 1.0
    ok = sum(
        mutual_top_n(x, y, _lp(base, i), _lp(cand, i))
        for i, (x, y) in enumerate(zip(base.token_ids, cand.token_ids, strict=False))
    )
    return ok / n


def mean_abs_logprob_delta(base: SideOutput, cand: SideOutput) -> tuple[float, int]:
    """Mean |logprob_base(t) - logprob_cand(t)| of the chosen token over the shared prefix, and
    how many positions it covers (0 when the outputs differ from the first token)."""
    d = first_divergence(base.token_ids, cand.token_ids)
    n = len(base.token_ids) if d is None else d
    total, count = 0.0, 0
    for i in range(n):
        t = base.token_ids[i]
        a, b = _lp(base, i).get(t), _lp(cand, i).get(t)
        if a is None or b is None or math.isinf(a) or math.isinf(b):
            continue
        total += abs(a - b)
        count += 1
    return (total / count if count else 0.0), count


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (one row of the DP table at a time)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


_JSON_PUNCTUATION = str.maketrans({ch: " " for ch in '{}[]":,'})


def words(text: str) -> list[str]:
    """Whitespace-separated words, JSON punctuation counted as space: the engine writes compact
    JSON, where a plain split would make whole fields one word."""
    return text.translate(_JSON_PUNCTUATION).split()


def rouge_l_f(reference: str, candidate: str) -> float:
    """ROUGE-L F1 over :func:`words`; two empty texts agree fully."""
    r, c = words(reference), words(candidate)
    if not r and not c:
        return 1.0
    if not r or not c:
        return 0.0
    lcs = lcs_length(r, c)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return 2 * p * rec / (p + rec)


# pipeline.review.schema.SENTENCE_ID, repeated so this module loads without pydantic (scripts/gpu).
_SENTENCE_ID = re.compile(r"^S([1-9][0-9]*)$")


@dataclass(frozen=True)
class Answer:
    """What an output claims, read leniently: a truncated or invalid answer claims nothing."""

    valid: bool
    clauses: dict[str, frozenset[int]]  # clause type -> cited sentence ordinals

    @property
    def citations(self) -> frozenset[int]:
        return frozenset().union(*self.clauses.values()) if self.clauses else frozenset()


def read_answer(text: str) -> Answer:
    try:
        data = json.loads(text, strict=False)
    except ValueError:
        return Answer(False, {})
    clauses: dict[str, set[int]] = {}
    items = data.get("clauses") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return Answer(False, {})
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            continue
        cited = clauses.setdefault(item["type"], set())
        for sid in item.get("citations") or []:
            m = _SENTENCE_ID.match(sid) if isinstance(sid, str) else None
            if m:
                cited.add(int(m.group(1)))
    return Answer(True, {k: frozenset(v) for k, v in clauses.items()})


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    a, b = set(a), set(b)
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def found_clauses(case: GoldenCase, answer: Answer) -> dict[str, bool]:
    """Per expected clause type: did the answer name it with a citation on a page labelled for it?"""
    page_of = case.page_of()
    return {
        t: any(page_of.get(o) in pages for o in answer.clauses.get(t, ())) for t, pages in sorted(case.expected.items())
    }


def case_metrics(case: GoldenCase, base: SideOutput, cand: SideOutput) -> dict[str, Any]:
    """Every per-case number the gate and the report use."""
    a_base, a_cand = read_answer(base.text), read_answer(cand.text)
    f_base, f_cand = found_clauses(case, a_base), found_clauses(case, a_cand)
    dlp, dlp_n = mean_abs_logprob_delta(base, cand)
    div = first_divergence(base.token_ids, cand.token_ids)

    def coverage(found: dict[str, bool]) -> float | None:
        return sum(found.values()) / len(found) if found else None

    return {
        "kind": case.kind,
        "exact_match": div is None,
        "first_divergence": div,
        "tokens_baseline": len(base.token_ids),
        "tokens_candidate": len(cand.token_ids),
        "logprobs_close": logprobs_close(base, cand),
        "top_n_agreement": top_n_agreement(base, cand),
        "mean_abs_logprob_delta": dlp,
        "shared_prefix": dlp_n,
        "rouge_l_f": rouge_l_f(base.text, cand.text),
        "citation_jaccard": jaccard(a_base.citations, a_cand.citations),
        "valid_baseline": a_base.valid,
        "valid_candidate": a_cand.valid,
        "coverage_baseline": coverage(f_base),
        "coverage_candidate": coverage(f_cand),
        "clause_flips": sum(f_base[t] != f_cand[t] for t in f_base),
        "clause_expectations": len(f_base),
        "false_alarms_baseline": len(set(case.absent) & set(a_base.clauses)),
        "false_alarms_candidate": len(set(case.absent) & set(a_cand.clauses)),
    }


def _mean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return sum(vs) / len(vs) if vs else None


def aggregate(per_case: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Set-level numbers: shares and means over cases; |Δ logprob| weighted by positions."""
    if not per_case:
        raise ConfigError("the golden set has no cases")
    n = len(per_case)
    shared = sum(m["shared_prefix"] for m in per_case)
    expectations = sum(m["clause_expectations"] for m in per_case)
    cov_b = _mean(m["coverage_baseline"] for m in per_case)
    cov_c = _mean(m["coverage_candidate"] for m in per_case)
    divs = sorted(m["first_divergence"] for m in per_case if m["first_divergence"] is not None)
    return {
        "cases": n,
        "exact_match_rate": sum(m["exact_match"] for m in per_case) / n,
        "logprobs_close_rate": sum(m["logprobs_close"] for m in per_case) / n,
        "top_n_agreement": sum(m["top_n_agreement"] for m in per_case) / n,
        "mean_abs_logprob_delta": (
            sum(m["mean_abs_logprob_delta"] * m["shared_prefix"] for m in per_case) / shared if shared else None
        ),
        "median_first_divergence": divs[len(divs) // 2] if divs else None,
        "rouge_l_f": sum(m["rouge_l_f"] for m in per_case) / n,
        "citation_jaccard": sum(m["citation_jaccard"] for m in per_case) / n,
        "valid_rate_baseline": sum(m["valid_baseline"] for m in per_case) / n,
        "valid_rate_candidate": sum(m["valid_candidate"] for m in per_case) / n,
        "coverage_baseline": cov_b,
        "coverage_candidate": cov_c,
        "coverage_drop": (cov_b - cov_c) if cov_b is not None and cov_c is not None else None,
        "clause_flip_rate": sum(m["clause_flips"] for m in per_case) / expectations if expectations else 0.0,
        "tokens_baseline": sum(m["tokens_baseline"] for m in per_case),
        "tokens_candidate": sum(m["tokens_candidate"] for m in per_case),
    }
