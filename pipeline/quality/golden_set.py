"""The golden set: a versioned set of prompts built from the bundled contracts (one whole page
each, with what the corpus manifest says the page contains), loaded from ``prompts/golden/<version>/``
and rendered through a model's chat template.

Loading and building need only the standard library (``scripts/gpu/golden_gpu.py`` uses them on a
bare PyTorch host); prompts, schemas and extraction are imported where they are used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, PromptError, read_toml

GOLDEN_DIR = "golden"
DEFAULT_VERSION = "v1"

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
    "limits": {
        "summary_chars": 300,
        "finding_chars": 150,
        "text_chars": 60,
        "max_parties": 4,
        "max_dates": 3,
        "max_citations": 4,
    },
    "find_limits": {
        "summary_chars": 160,
        "finding_chars": 150,
        "text_chars": 60,
        "max_parties": 0,
        "max_dates": 0,
        "max_citations": 4,
    },
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
    return GoldenSet(
        version=version, directory=folder, params=meta["params"], cases=cases, built_from=meta.get("built_from", {})
    )


def build_golden_set(
    out_dir: Path,
    *,
    corpus_dir: Path | None = None,
    version: str = DEFAULT_VERSION,
    params: dict[str, Any] | None = None,
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
            assert clause_type is not None
            expected = {clause_type: [page]}
            case_id, max_tokens = f"find-{clause_type}-{c['id']}-p{page}", params["find_max_tokens"]
        absent = [t for t in CLAUSE_TYPES if not c["clauses"].get(t, {}).get("present")]
        return GoldenCase(
            id=case_id,
            kind=kind,
            contract=c["id"],
            source=c["pdf_file"],
            pages=[page],
            sentences=sentences,
            expected=expected,
            absent=absent,
            max_tokens=max_tokens,
            clause_type=clause_type,
        )

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
    raw = read_toml(path, what="clause-finding template", error=PromptError)
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
