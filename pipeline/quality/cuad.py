"""CUAD v1 as a yardstick: read a folder in CUAD's layout and score clause findings against the lawyers' labels.

CUAD v1 (The Atticus Project, CC BY 4.0) is 510 commercial contracts labelled for 41 clause categories.
Its ``master_clauses.csv`` has a ``Filename`` column, then per category a ``<Category>`` column (the
marked text spans, a Python-literal list of strings) and a ``<Category>-Answer`` column (``Yes``/``No``
for 33 categories, a date, name, duration or place for 8). Definitions of every number here are in
``docs/quality.md``; in short:

- **presence**: a category is present when its answer is not ``No`` and its span list is not empty;
  it is predicted present when the prediction's status is ``found``. A category with no prediction at
  all counts as not asked (predicted absent: no credit).
- **evidence recall**: share of the lawyers' spans that overlap a sentence cited for that category;
  **evidence precision**: share of cited sentences that overlap a labelled span of that category.
- **answer accuracy** (the 8 answer categories): share of present cases with a usable CUAD answer whose predicted answer equals
  CUAD's after normalisation (dates to ISO, durations to number + unit, names folded).

Text matching (:func:`overlaps`) survives the differences between CUAD's text and ours (whitespace,
line-end hyphenation, curly quotes, dashes, ligatures, case): both sides become lists of folded
alphanumeric tokens, and two texts overlap when they share a run of ``MATCH_TOKENS`` tokens, or when
the shorter one is wholly contained in the other.
"""

from __future__ import annotations

import ast
import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import ConfigError

CSV_NAME = "master_clauses.csv"
PDF_FOLDER = "full_contract_pdf"
FILENAME_COLUMN = "Filename"

# The 8 categories whose answer is not Yes/No, with the answer kind a playbook gives them.
ANSWER_KINDS: dict[str, str] = {
    "Document Name": "text",
    "Parties": "party",
    "Agreement Date": "date",
    "Effective Date": "date",
    "Expiration Date": "date",
    "Renewal Term": "duration",
    "Notice Period To Terminate Renewal": "duration",
    "Governing Law": "place",
}
ANSWER_CATEGORIES: tuple[str, ...] = tuple(ANSWER_KINDS)

# Minimum shared run of normalised tokens for two texts to count as the same passage.
MATCH_TOKENS = 8

Status = Literal["found", "not_found", "not_asked", "failed"]


class CuadFormatError(ConfigError):
    """A folder or CSV is not in CUAD's layout; the message names the file and what is wrong."""


# --------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True, slots=True)
class CuadLabel:
    answer: str | None  # the ``-Answer`` cell; None when the cell is empty
    spans: list[str] = field(default_factory=list)

    @property
    def present(self) -> bool:
        """CUAD's rule: the answer is not ``No`` and at least one span is marked."""
        return bool(self.spans) and (self.answer or "").strip().casefold() != "no"


@dataclass(frozen=True, slots=True)
class CuadContract:
    name: str  # the ``Filename`` cell, as CUAD wrote it (possibly cut short)
    pdf_paths: list[Path]  # empty when no PDF in the folder matches the name
    labels: dict[str, CuadLabel]  # CUAD category -> label


class Prediction(BaseModel):
    """What a reviewer (the model or the baseline) said about one category of one contract."""

    model_config = ConfigDict(extra="forbid")

    status: Status
    answer: str | None = None
    citations: list[str] = Field(default_factory=list)  # the cited sentences' texts


# --------------------------------------------------------------------------------------------
# reading CUAD's layout


def answer_header(category: str, header: Iterable[str]) -> str | None:
    """The answer column of ``category`` in ``header``: ``<C>-Answer``, or CUAD's ``<C>- Answer`` spelling."""
    names = set(header)
    for candidate in (f"{category}-Answer", f"{category}- Answer", f"{category} -Answer", f"{category} - Answer"):
        if candidate in names:
            return candidate
    return None


def _categories(header: list[str], source: str) -> list[tuple[str, str]]:
    if not header or header[0].strip() != FILENAME_COLUMN:
        raise CuadFormatError(f"{source}: first column must be {FILENAME_COLUMN!r}, found {header[:1]!r}")
    out: list[tuple[str, str]] = []
    for name in header[1:]:
        if re.search(r"-\s*Answer$", name):
            continue
        answer = answer_header(name, header)
        if answer is None:
            raise CuadFormatError(f"{source}: column {name!r} has no matching {name + '-Answer'!r} column")
        out.append((name, answer))
    if not out:
        raise CuadFormatError(f"{source}: no category columns")
    return out


def _unquote_formula(value: str) -> str:
    # Our own CSV writer neutralises formula-like cells with a leading apostrophe; undo it on read.
    if len(value) > 1 and value[0] == "'" and value[1] in "=+-@\t\r":
        return value[1:]
    return value


def parse_spans(cell: str, *, where: str) -> list[str]:
    """A ``<Category>`` cell: a Python-literal list of strings (``[]`` or empty when none)."""
    cell = _unquote_formula(cell.strip())
    if not cell:
        return []
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise CuadFormatError(f"{where}: span cell is not a Python-literal list ({type(exc).__name__})") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CuadFormatError(f"{where}: span cell must be a list of strings, got {type(value).__name__}")
    return value


def read_master_clauses(source: Path | str, *, text: str | None = None) -> list[tuple[str, dict[str, CuadLabel]]]:
    """Rows of a ``master_clauses.csv`` (a path, or ``text`` with ``source`` naming it): ``(Filename, labels)``."""
    name = str(source)
    if text is None:
        try:
            text = Path(source).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise CuadFormatError(f"{name}: no such file (a CUAD folder holds {CSV_NAME})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CuadFormatError(f"{name}: cannot read ({exc})") from None
    text = text.lstrip("\ufeff")
    csv.field_size_limit(1 << 30)  # CUAD's span cells run to hundreds of kilobytes
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise CuadFormatError(f"{name}: empty file")
    header = [h.strip("\ufeff") for h in header]
    cats = _categories(header, name)
    index = {h: i for i, h in enumerate(header)}
    rows: list[tuple[str, dict[str, CuadLabel]]] = []
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise CuadFormatError(f"{name}: row {line} has {len(row)} cells, the header has {len(header)}")
        filename = _unquote_formula(row[0].strip())
        if not filename:
            raise CuadFormatError(f"{name}: row {line} has an empty {FILENAME_COLUMN}")
        labels: dict[str, CuadLabel] = {}
        for cat, ans in cats:
            spans = parse_spans(row[index[cat]], where=f"{name}: row {line}, column {cat!r}")
            answer = _unquote_formula(row[index[ans]].strip())
            labels[cat] = CuadLabel(answer=answer or None, spans=spans)
        rows.append((filename, labels))
    return rows


def _strip_pdf(name: str) -> str:
    return name[:-4] if name.lower().endswith(".pdf") else name


def _match_pdfs(filenames: list[str], pdfs: list[Path]) -> list[list[Path]]:
    """Each Filename's PDF(s): an exact (case-insensitive) name first; else, since CUAD sometimes cuts the
    name short, the PDFs whose name starts with it and that no other row names exactly."""
    by_name: dict[str, list[Path]] = {}
    for p in pdfs:
        by_name.setdefault(p.name.casefold(), []).append(p)
    exact: list[list[Path]] = []
    claimed: set[Path] = set()
    for f in filenames:
        key = f.casefold()
        hit = by_name.get(key) or by_name.get(key + ".pdf") or []
        exact.append(hit[:1])
        claimed.update(hit[:1])
    out: list[list[Path]] = []
    for f, hit in zip(filenames, exact, strict=True):
        if hit:
            out.append(hit)
            continue
        stem = _strip_pdf(f).casefold().rstrip()
        cands = sorted(p for p in pdfs if p not in claimed and _strip_pdf(p.name).casefold().startswith(stem))
        out.append(cands)
    return out


def load_cuad(folder: Path, limit: int | None = None) -> list[CuadContract]:
    """Contracts of a folder in CUAD's layout: ``master_clauses.csv`` + ``full_contract_pdf/**/<name>.pdf``.

    Works on a full CUAD v1 download and on a slice of it. ``limit`` keeps the first N rows. A row whose
    PDF cannot be found is returned with ``pdf_paths == []`` so the caller records it and goes on.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CuadFormatError(f"{folder}: not a folder (expected CUAD's layout: {CSV_NAME} + {PDF_FOLDER}/)")
    csv_path = folder / CSV_NAME
    rows = read_master_clauses(csv_path)
    if limit is not None:
        if limit < 1:
            raise CuadFormatError(f"--limit must be at least 1, got {limit}")
        rows = rows[:limit]
    pdf_root = folder / PDF_FOLDER
    if not pdf_root.is_dir():
        raise CuadFormatError(f"{pdf_root}: no such folder (CUAD keeps its PDFs there)")
    pdfs = sorted(p for p in pdf_root.rglob("*") if p.is_file() and p.suffix.lower() == ".pdf")
    paths = _match_pdfs([f for f, _ in rows], pdfs)
    return [CuadContract(name=f, pdf_paths=ps, labels=labels) for (f, labels), ps in zip(rows, paths, strict=True)]


# --------------------------------------------------------------------------------------------
# text matching

_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u00b4": "'",
        "`": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u00ad": None,  # soft hyphen
    }
)
# A hyphen between word characters, possibly followed by a line break: joined, so "termi-\nnation",
# "termi- nation" and "termination" agree (and "non-exclusive" equals "nonexclusive" on both sides).
_JOIN_HYPHEN = re.compile(r"(?<=\w)-\s*(?=\w)")
_TOKEN = re.compile(r"[^\W_]+")


def normalize_tokens(text: str) -> tuple[str, ...]:
    """Folded alphanumeric tokens: NFKC (ligatures, full-width forms), quotes and dashes unified,
    hyphenated words joined, case folded, every other character a separator."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _JOIN_HYPHEN.sub("", text)
    return tuple(_TOKEN.findall(text.casefold()))


def _grams(tokens: tuple[str, ...], n: int) -> set[tuple[str, ...]]:
    return {tokens[i : i + n] for i in range(len(tokens) - n + 1)}


def overlaps_tokens(a: tuple[str, ...], b: tuple[str, ...], *, min_run: int = MATCH_TOKENS) -> bool:
    """True when ``a`` and ``b`` share a run of ``min_run`` tokens, or the shorter lies whole in the other."""
    n = min(min_run, len(a), len(b))
    if n == 0:
        return False
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    return not _grams(short, n).isdisjoint(_grams(long_, n))


def overlaps(a: str, b: str, *, min_run: int = MATCH_TOKENS) -> bool:
    """Whether two texts are (part of) the same passage, across PDF-vs-TXT differences. See module doc."""
    return overlaps_tokens(normalize_tokens(a), normalize_tokens(b), min_run=min_run)


# --------------------------------------------------------------------------------------------
# answer normalisation

_MONTHS = {
    m: i
    for i, m in enumerate(
        [
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ],
        start=1,
    )
}
_MONTHS.update({k[:3]: v for k, v in list(_MONTHS.items())})
_MONTHS["sept"] = 9
_MONTH_RE = r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
_ORD = r"(?:st|nd|rd|th)?"
_DATE_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), "ymd"),
    (re.compile(r"\b(\d{1,2})[/.](\d{1,2})[/.](\d{2,4})\b"), "mdy"),
    (re.compile(rf"\b{_MONTH_RE}\s+(\d{{1,2}}){_ORD},?\s+(\d{{4}})\b"), "Mdy"),
    (re.compile(rf"\b(\d{{1,2}}){_ORD}\s+(?:day\s+of\s+)?{_MONTH_RE},?\s+(\d{{4}})\b"), "dMy"),
]
_WORD_NUMBERS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_WORD_NUMBERS.update(
    {
        "thirty": 30,
        "forty": 40,
        "forty-five": 45,
        "fifty": 50,
        "sixty": 60,
        "seventy": 70,
        "eighty": 80,
        "ninety": 90,
        "a": 1,
        "an": 1,
        "one hundred twenty": 120,
        "one hundred eighty": 180,
        "one hundred and eighty": 180,
        "one hundred and twenty": 120,
    }
)
_UNITS = {"day": "day", "business day": "business day", "week": "week", "month": "month", "year": "year"}
_DURATION = re.compile(
    r"\b(\d+|" + "|".join(sorted((re.escape(w) for w in _WORD_NUMBERS), key=len, reverse=True)) + r")"
    r"(?:\s*\(\d+\))?[\s-]*(business\s+day|day|week|month|year)s?\b"
)


def _year(text: str) -> int:
    y = int(text)
    if len(text) == 2:
        y += 2000 if y < 50 else 1900
    return y


def _month(word: str) -> int:
    return _MONTHS[word.rstrip(".")[:3]]


_PARTIAL_DATE = re.compile(r"(\d{1,2}|\[\s*\])/(\d{1,2}|\[\s*\])/(\d{4}|\d{2})\b")
_PERPETUAL = re.compile(r"\b(perpetual|perpetuity|indefinite(ly)?)\b")


def normalize_date(text: str) -> str | None:
    """The first date in ``text`` as ISO ``YYYY-MM-DD`` (US month/day order for numeric dates, as CUAD
    writes them); ``YYYY`` or ``YYYY-MM`` for CUAD's partly blank dates (``[]/[]/2019``); ``perpetual``
    for a term without end; None when there is none."""
    s = unicodedata.normalize("NFKC", text).casefold()
    best: tuple[int, str] | None = None
    for pattern, order in _DATE_PATTERNS:
        m = pattern.search(s)
        if not m:
            continue
        try:
            if order == "ymd":
                y, mo, d = int(m[1]), int(m[2]), int(m[3])
            elif order == "mdy":
                mo, d, y = int(m[1]), int(m[2]), _year(m[3])
            elif order == "Mdy":
                mo, d, y = _month(m[1]), int(m[2]), int(m[3])
            else:
                d, mo, y = int(m[1]), _month(m[2]), int(m[3])
            iso = date(y, mo, d).isoformat()
        except (ValueError, KeyError):
            continue
        if best is None or m.start() < best[0]:
            best = (m.start(), iso)
    if best:
        return best[1]
    if m := _PARTIAL_DATE.search(s):
        y = _year(m[3])
        return f"{y:04d}-{int(m[1]):02d}" if m[1].isdigit() else f"{y:04d}"
    if _PERPETUAL.search(s):
        return "perpetual"
    return None


def normalize_duration(text: str) -> str | None:
    """The first duration in ``text`` as ``"<number> <unit>"`` (``"60 day"``, ``"1 year"``), ``"perpetual"``
    for perpetual/indefinite terms, or None."""
    s = unicodedata.normalize("NFKC", text).casefold().translate(_QUOTES)
    m = _DURATION.search(s)
    if m:
        raw = m[1]
        n = int(raw) if raw.isdigit() else _WORD_NUMBERS[raw]
        unit = _UNITS[re.sub(r"\s+", " ", m[2])]
        return f"{n} {unit}"
    if _PERPETUAL.search(s):
        return "perpetual"
    return None


_LEGAL_SUFFIXES = {
    "inc",
    "incorporated",
    "llc",
    "ltd",
    "limited",
    "corp",
    "corporation",
    "co",
    "company",
    "plc",
    "lp",
    "llp",
    "sa",
    "ag",
    "gmbh",
    "bv",
    "nv",
    "the",
    "and",
    "of",
    "dba",
    "a",
    "an",
}


def fold_name(text: str) -> tuple[str, ...]:
    """A name as comparable tokens: folded, punctuation and legal-form words (Inc., LLC, the...) dropped."""
    return tuple(t for t in normalize_tokens(text) if t not in _LEGAL_SUFFIXES)


_PLACE_NOISE = {
    "state",
    "commonwealth",
    "laws",
    "law",
    "province",
    "of",
    "the",
    "country",
    "usa",
    "us",
    "united",
    "states",
    "america",
    "federal",
}


def _place_tokens(text: str) -> set[str]:
    return {t for t in normalize_tokens(text) if t not in _PLACE_NOISE}


def answer_key(kind: str, text: str | None) -> object | None:
    """``text`` normalised for comparison as an answer of ``kind``; None when nothing usable is in it
    (CUAD leaves some answers blank or redacted, ``[]/[]/[]``: those cases are not answer-scored)."""
    if not text:
        return None
    if kind == "date":
        return normalize_date(text)
    if kind == "duration":
        return normalize_duration(text)
    if kind == "place":
        return frozenset(_place_tokens(text)) or None
    if kind == "party":
        return frozenset(fold_name(text)) or None
    return fold_name(text) or None


def answers_match(kind: str, predicted: str | None, expected: str | None) -> bool:
    """Whether a predicted answer equals CUAD's after normalising both for the answer ``kind``.

    date: the same ISO date (a partial CUAD date, ``[]/[]/2019``, matches any date it is a prefix of),
    or both perpetual. duration: the same number and unit, or both perpetual. place: the same place
    words once "State of", "laws of", country words are dropped (one side may add to the other:
    "Delaware" = "Delaware, USA"). party: token F1 of the folded names >= 0.5 (legal forms such as Inc.
    ignored). text: the folded token sequences are equal.
    """
    p: Any = answer_key(kind, predicted)
    e: Any = answer_key(kind, expected)
    if p is None or e is None:
        return False
    if kind == "date":
        return p == e or (len(e) < 10 and e != "perpetual" and str(p).startswith(e))
    if kind == "place":
        return p <= e or e <= p
    if kind == "party":
        common = len(p & e)
        if not common:
            return False
        precision, recall = common / len(p), common / len(e)
        return 2 * precision * recall / (precision + recall) >= 0.5
    return p == e


# --------------------------------------------------------------------------------------------
# scoring


@dataclass
class CategoryScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    spans: int = 0  # labelled spans of present cases
    spans_hit: int = 0
    cited: int = 0  # sentences cited by found predictions
    cited_hit: int = 0
    answers: int = 0  # present cases of an answer category where CUAD gives a usable answer
    answers_right: int = 0
    answer_category: bool = False

    @property
    def support(self) -> int:
        return self.tp + self.fn

    def to_json_dict(self) -> dict:
        out: dict = {
            "precision": _ratio(self.tp, self.tp + self.fp),
            "recall": _ratio(self.tp, self.tp + self.fn),
            "f1": _f1(self.tp, self.fp, self.fn),
            "support": self.support,
            "evidence_recall": _ratio(self.spans_hit, self.spans, empty=None),
            "evidence_precision": _ratio(self.cited_hit, self.cited, empty=None),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
        }
        if self.answer_category:
            out["answer_accuracy"] = _ratio(self.answers_right, self.answers, empty=None)
        return out


def _ratio(num: int, den: int, *, empty: float | None = 0.0) -> float | None:
    return round(num / den, 4) if den else empty


def _f1(tp: int, fp: int, fn: int) -> float:
    return round(2 * tp / (2 * tp + fp + fn), 4) if tp else 0.0


@dataclass
class CuadScore:
    contracts: int
    categories: dict[str, CategoryScore]

    def micro(self) -> dict:
        total = CategoryScore(answer_category=True)
        for c in self.categories.values():
            for f in ("tp", "fp", "fn", "tn", "spans", "spans_hit", "cited", "cited_hit", "answers", "answers_right"):
                setattr(total, f, getattr(total, f) + getattr(c, f))
        out = total.to_json_dict()
        return out

    def macro(self) -> dict:
        """Unweighted mean over the categories present at least once (a category nobody labelled has no recall)."""
        scored = [c.to_json_dict() for c in self.categories.values() if c.support]
        out: dict = {"categories": len(scored), "support": sum(s["support"] for s in scored)}
        for key in ("precision", "recall", "f1", "evidence_recall", "evidence_precision", "answer_accuracy"):
            values = [s[key] for s in scored if s.get(key) is not None]
            out[key] = round(sum(values) / len(values), 4) if values else None
        return out

    def to_json_dict(self) -> dict:
        return {
            "contracts": self.contracts,
            "categories": {name: c.to_json_dict() for name, c in self.categories.items()},
            "micro": self.micro(),
            "macro": self.macro(),
        }


def score(contracts: list[CuadContract], predictions: Mapping[str, Mapping[str, Prediction]]) -> CuadScore:
    """Score ``predictions`` (contract name -> CUAD category -> Prediction) against the contracts' labels.

    Every category of every contract is scored; a missing contract or category counts as not asked.
    Citations count as evidence only for a ``found`` prediction.
    """
    if not contracts:
        raise ValueError("no contracts to score")
    cats: dict[str, CategoryScore] = {}
    for contract in contracts:
        preds = predictions.get(contract.name, {})
        for cat, label in contract.labels.items():
            s = cats.setdefault(cat, CategoryScore(answer_category=cat in ANSWER_KINDS))
            pred = preds.get(cat)
            found = pred is not None and pred.status == "found"
            if pred is None:
                pred = Prediction(status="not_asked")
            present = label.present
            if present and found:
                s.tp += 1
            elif present:
                s.fn += 1
            elif found:
                s.fp += 1
            else:
                s.tn += 1
            cited = [normalize_tokens(t) for t in pred.citations] if found else []
            span_tokens = [normalize_tokens(t) for t in label.spans] if present else []
            if present:
                s.spans += len(span_tokens)
                s.spans_hit += sum(1 for sp in span_tokens if any(overlaps_tokens(sp, c) for c in cited))
            s.cited += len(cited)
            s.cited_hit += sum(1 for c in cited if any(overlaps_tokens(c, sp) for sp in span_tokens))
            if present and cat in ANSWER_KINDS and answer_key(ANSWER_KINDS[cat], label.answer) is not None:
                s.answers += 1
                if found and answers_match(ANSWER_KINDS[cat], pred.answer, label.answer):
                    s.answers_right += 1
    return CuadScore(contracts=len(contracts), categories=cats)


def all_present(contracts: list[CuadContract]) -> dict[str, dict[str, Prediction]]:
    """The floor: every category of every contract predicted present, with no evidence and no answer."""
    return {c.name: {cat: Prediction(status="found") for cat in c.labels} for c in contracts}
