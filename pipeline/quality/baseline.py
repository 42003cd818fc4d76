"""The non-LLM baseline: one keyword rule per CUAD category over a contract's sentences.

A review that does not beat a keyword search adds cost, not value; this is that keyword search, scored
with the same :func:`pipeline.quality.cuad.score` as the model. A category is ``found`` when at least
one sentence matches its rule, and the matching sentences are its citations. For the answer
categories a simple extractor derives the answer from the first matching sentence (a date, a
duration, the place after "laws of", the title). No model, no training: the rules are written from
CUAD's category descriptions, not fitted to its labels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.quality.cuad import (
    CuadContract,
    Prediction,
    normalize_date,
    normalize_duration,
)

_F = re.IGNORECASE


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    # Only the first ``head`` sentences are searched (titles, parties and dates sit at the top).
    head: int | None = None
    # Cite at most this many sentences (the first matches in document order).
    max_citations: int = 5
    answer: Callable[[list[str]], str | None] | None = None
    # A sentence matching this is not a hit even if ``pattern`` matches (negations, look-alike terms).
    exclude: re.Pattern[str] | None = None


def _r(pattern: str, exclude: str | None = None, **kw) -> Rule:
    return Rule(re.compile(pattern, _F), exclude=re.compile(exclude, _F) if exclude else None, **kw)


def _first_date(sentences: list[str]) -> str | None:
    for s in sentences:
        if d := normalize_date(s):
            return d
    return None


def _first_duration(sentences: list[str]) -> str | None:
    for s in sentences:
        if d := normalize_duration(s):
            return d
    return None


_LAW = re.compile(
    r"(?i:laws?\s+(?:of|in)\s+(?:the\s+)?(?:(?:state|commonwealth|province|republic|federal\s+republic)\s+of\s+)?)"
    r"([A-Z][A-Za-z.]*(?:\s+[A-Z][A-Za-z.]*){0,3})"
)
_INCORPORATION = re.compile(r"\b(organi[sz]ed|incorporated|existing|formed)\b", _F)


def _place(sentences: list[str]) -> str | None:
    # Where a company is incorporated is not the contract's governing law.
    for s in sorted(sentences, key=lambda x: bool(_INCORPORATION.search(x))):
        for m in _LAW.finditer(s):
            place = re.sub(r"\s+(?:and|without|applicable|as|which|that|excluding)\b.*$", "", m[1]).strip(" .,")
            if place and place.casefold() not in {"united", "the"}:
                return place
    return None


def _title(sentences: list[str]) -> str | None:
    for s in sentences:
        m = re.search(
            r"([A-Z][A-Za-z&\-]*(?:\s+[A-Z][A-Za-z&\-]*){0,6}\s+(?:AGREEMENT|Agreement|CONTRACT|Contract))", s
        )
        if m:
            return m[1].strip()
    return None


_COMPANY = re.compile(
    r"((?:[A-Z][\w&'.-]*\s+){0,5}[A-Z][\w&'.-]*,?\s+(?:Inc|LLC|L\.L\.C|Ltd|Corporation|Corp|Company|Limited|L\.?P|GmbH|plc|S\.A|N\.V|B\.V|AG)\b\.?)"
)


def _parties(sentences: list[str]) -> str | None:
    names: list[str] = []
    for s in sentences:
        for m in _COMPANY.finditer(s):
            name = re.sub(r"^(?:This|The|By|And|Between|Among|Agreement)\s+", "", m[1].strip(), flags=_F)
            if name not in names:
                names.append(name)
    return "; ".join(names[:4]) or None


_NUM = r"(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirty|sixty|ninety)"

# CUAD column name -> rule. The expressions follow each category's description in CUAD's README.
RULES: dict[str, Rule] = {
    "Document Name": _r(r"\b(agreement|contract|amendment|addendum)\b", head=8, max_citations=1, answer=_title),
    "Parties": _r(
        r"\b(by and between|between|among)\b.*\b(inc|llc|ltd|corporation|corp|company|limited|l\.?p|gmbh|plc|s\.a)\b"
        r"|\(\s*[\"'\u201c]\w+[\"'\u201d]\s*\)",
        head=25,
        max_citations=3,
        answer=_parties,
    ),
    "Agreement Date": _r(
        r"\b(dated|made|entered into|effective)\b.*\b(\d{4})\b|\bas of\b.*\b\d{4}\b|\bday of\b\s+\w+,?\s+\d{4}",
        head=12,
        max_citations=1,
        answer=_first_date,
    ),
    "Effective Date": _r(
        r"\beffective\s+(date|as of|on|upon)\b|\bshall (become|be) effective\b|\bcommenc\w+ on\b",
        max_citations=2,
        answer=_first_date,
    ),
    "Expiration Date": _r(
        r"\b(initial|original)\s+term\b|\bshall (expire|terminate|continue|remain in (full )?(force|effect))\b.*"
        r"\b(until|for a period|years?|months?|expir)|\bterm of (this|the) agreement\b.*\b(year|month|until)",
        max_citations=2,
        answer=_first_date,
    ),
    "Renewal Term": _r(
        r"\b(automatically|successive|further)\b.*\b(renew\w*|extend\w*)\b|\brenew\w*\b.*\b(successive|additional)\b"
        r"|\brenewal term\b",
        max_citations=2,
        answer=_first_duration,
    ),
    "Notice Period To Terminate Renewal": _r(
        r"\b(not to renew|non-?renewal|intention not to|elects? not to|prior to the (end|expiration) of the (then[- ]current|initial|renewal)"
        r"|unless (either|a|one) party (gives|provides|notifies))\b",
        max_citations=2,
        answer=_first_duration,
    ),
    "Governing Law": _r(
        r"\bgovern(ed|s|ing)?\b.{0,100}\blaws?\b|\blaws?\b.{0,100}\bgovern|\b(construed|interpreted|enforced)\b.{0,60}"
        r"\b(accordance with|under|by) the laws?\b|\bgoverning law\b",
        max_citations=2,
        answer=_place,
    ),
    "Most Favored Nation": _r(
        r"most favou?red|(no less|not less|at least as) favou?rable\b.*\b(terms|price|pricing)"
        r"|\b(better|lower|more favou?rable) (terms|price|pricing)\b.*\b(third part|other|any)"
    ),
    "Competitive Restriction Exception": _r(
        r"\b(notwithstanding|except|shall not (prevent|restrict|prohibit|apply)|nothing in this)\b.*"
        r"\b(compet\w*|exclusiv\w*|solicit\w*)\b"
    ),
    "Non-Compete": _r(
        r"\bnon-?compet\w*|\bnot\b.{0,60}\b(compet\w+|competitive product|competing)\b|\b(engage|participate) in\b.{0,60}\bcompet"
    ),
    "Exclusivity": _r(
        r"(?<!non-)(?<!non)\bexclusiv\w*\b(?!.{0,20}\blicen)(?! of\b)|\bsole (and exclusive )?(supplier|distributor|provider|source)\b"
        r"|\ball (of )?(its|their) requirements\b"
    ),
    "No-Solicit Of Customers": _r(
        r"\bsolicit\w*\b.{0,120}\b(customer|client|distributor|supplier|account)s?\b"
        r"|\b(customer|client)s?\b.{0,80}\bsolicit"
    ),
    "No-Solicit Of Employees": _r(
        r"\b(solicit\w*|hire|hiring|employ|recruit\w*)\b.{0,120}\b(employee|personnel|staff|contractor)s?\b"
        r".{0,120}\b(other party|either party|the company|without|during|for a period)"
    ),
    "Non-Disparagement": _r(r"\bdisparag\w*|\bderogatory\b|\bnegative (statement|comment)s?\b|\bdefam\w*"),
    "Termination For Convenience": _r(
        r"\b(terminate|termination)\b.{0,80}\b(for convenience|without cause|for any reason|at any time"
        r"|with or without cause|upon \w+ \(?\d*\)?\s*(days|months)'? (prior )?(written )?notice)"
    ),
    "Rofr/Rofo/Rofn": _r(
        r"\bright of first (refusal|offer|negotiation)|\bfirst right to\b|\bright to (first )?negotiate\b"
        r"|\boption to (purchase|acquire|license)\b"
    ),
    "Change Of Control": _r(
        r"\bchange (of|in) (the )?control\b|\b(merger|consolidation|acquisition)\b.{0,100}\b(terminat|assign|consent)"
        r"|\b(all or substantially all|sale of all)\b.{0,40}\b(assets|business|stock)\b"
    ),
    "Anti-Assignment": _r(
        r"\b(assign\w*|transfer\w*|delegat\w*)\b.{0,150}\b(without the (prior )?(written )?consent|consent of)"
        r"|\bmay not\b.{0,30}\bassign|\bshall not\b.{0,40}\bassign|\bnot (be )?assignable\b|\bnon-?assignable\b"
    ),
    "Revenue/Profit Sharing": _r(
        r"\broyalt(y|ies)\b(?![- ]free)|\b(revenue|profit)s?[- ]shar\w*|\bshare of (the )?(revenue|profit|net|gross)"
        r"|\b\d+(\.\d+)?\s*%\s*(of|on)\s*(the\s+)?(net|gross|all)\s+(revenue|sales|receipts|profit|income)"
        r"|(?-i:\bcommissions?\b)"
    ),
    "Price Restrictions": _r(
        r"\b(price|prices|pricing|fees?)\b.{0,80}\b(shall not|may not|will not)\b.{0,30}\b(increase|exceed|change|raise)"
        r"|\b(not|no) (be )?(increase|raise)\w*.{0,40}\b(price|fee)s?|\bprice (protection|increase|adjustment)s?\b"
    ),
    "Minimum Commitment": _r(
        r"\bminimum (purchase|order|quantity|quantities|volume|commitment|annual|amount|number|royalt|payment|sales|fee)"
        r"|\b(guaranteed )?minimum (of \d|number of|threshold)|\bat least\b.{0,40}\b(units|per (year|month|quarter)|orders?)\b|\b(purchase|order|buy)\b.{0,40}\bnot less than\b"
    ),
    "Volume Restriction": _r(
        r"\b(exceed\w*|in excess of|more than|additional)\b.{0,60}\b(users?|units|volume|capacity|usage|licenses|seats|cap)\b"
        r".{0,80}\b(fee|charge|consent|approv|pay|additional)|\bvolume (limit|restriction|cap)"
    ),
    "Ip Ownership Assignment": _r(
        r"\b(hereby assigns?|shall assign|agrees to assign|assigns? and transfers?|shall (be|become|remain) the "
        r"(sole |exclusive )?(and exclusive )?property of|shall own all|vest\w* in|work made for hire|works? for hire)\b"
    ),
    "Joint Ip Ownership": _r(
        r"\bjoint(ly)?\b.{0,40}\b(own\w*|intellectual property|invent\w*|patent)|\bco-?own\w*|\bshared ownership\b"
    ),
    "License Grant": _r(
        r"\b(hereby )?grants?\b.{0,120}\blicen[cs]e|\blicen[cs]e (is )?(granted|to use)\b|\bsub-?licen[cs]e\b"
    ),
    "Non-Transferable License": _r(
        r"\bnon-?transferable|\bnot transferable|\bnon-?sub-?licensable|\bwithout the right to (sub-?licen|transfer)"
        r"|\blicen[cs]e\b.{0,120}\b(may not|shall not)\b.{0,40}\b(transfer|assign|sub-?licen)"
    ),
    "Affiliate License-Licensor": _r(
        r"\b(on behalf of|for) itself and (on behalf of )?its affiliates\b.{0,120}\b(grant|licen[cs]e)"
        r"|\b(grant\w*|licen[cs]e\w*)\b.{0,150}\b(owned|controlled|licensable|held)\b.{0,40}\b(by )?(its|their|any of its)"
        r" affiliates\b"
    ),
    "Affiliate License-Licensee": _r(
        r"\blicen[cs]e\w*\b.{0,150}\b(to|for|by)\b.{0,40}\b(its |their )?(affiliates|subsidiaries)\b"
        r"|\b(licensee|distributor|company)'?s? (affiliates|subsidiaries)\b.{0,80}\b(use|licen)"
    ),
    "Unlimited/All-You-Can-Eat-License": _r(
        r"\bunlimited\b.{0,60}\b(licen|use|number|copies|users)|\ball[- ]you[- ]can[- ]eat\b"
        r"|\benterprise[- ]wide\b|\bwithout (any )?(limit|limitation) (on|as to) the number\b"
    ),
    "Irrevocable Or Perpetual License": _r(
        r"\b(irrevocabl\w*|perpetual\w*|in perpetuity)\b.{0,120}\blicen|\blicen[cs]e\w*\b.{0,120}"
        r"\b(irrevocabl\w*|perpetual\w*|in perpetuity)\b"
    ),
    "Source Code Escrow": _r(r"\bescrow\b|\bsource code\b.{0,80}\b(deposit|release|deliver)"),
    "Post-Termination Services": _r(
        r"\b(after|following|upon|survive)\b.{0,30}\b(termination|expiration)\b.{0,150}"
        r"\b(continue to|transition|wind[- ]down|sell[- ]off|support|services|return|deliver|complete|fulfil)"
    ),
    "Audit Rights": _r(r"\baudit\w*\b|\b(inspect|examine|review)\w*\b.{0,60}\b(books|records|accounts)\b"),
    "Uncapped Liability": _r(
        r"\b(shall not|will not|does not|not) (apply|limit)\b.{0,80}\b(indemnif|gross negligence|willful|wilful|breach of"
        r" confidential|fraud)|\b(exclusion|limitation)s? (of|on) liability\b.{0,120}\b(shall not apply|do not apply|except)"
        r"|\b(except|excluding|other than|save)\b.{0,150}\b(indemnif\w*|confidentiality|gross negligence|wil+ful|infring\w*)"
        r"\b.{0,200}\b(liab\w*|damages)\b"
    ),
    "Cap On Liability": _r(
        r"\b(liability|liable)\b.{0,200}\b(shall not exceed|not to exceed|in no event exceed|limited to|in excess of"
        r"|exceed the (total|amount|aggregate|fees)|maximum)|\bin no event shall\b.{0,80}\bliab"
        r"|\b(aggregate|total|cumulative) liability\b|\b(consequential|indirect|incidental|special|punitive)\b.{0,80}\bdamages\b"
        r"|\b(action|claim)s?\b.{0,80}\b(may|shall|must) (not )?be (brought|commenced)\b.{0,80}\b(years?|months?)\b"
    ),
    "Liquidated Damages": _r(
        r"\bliquidated damages\b|\b(termination|cancellation|break[- ]up|early termination|kill) (fee|charge|payment)\b"
    ),
    "Warranty Duration": _r(
        r"\bwarrant\w*\b.{0,120}\b(for a period of|period of|months?|years?|days?) (from|after|following|of)"
        r"|\bwarranty period\b"
    ),
    "Insurance": _r(r"\binsurance\b|\binsured\b|\binsurer\b"),
    "Covenant Not To Sue": _r(
        r"\b(not to|never|shall not|will not|agrees? not)\b.{0,60}\b(sue|bring (any )?(action|claim|suit)|contest|challenge"
        r"|dispute|attack|oppose)\b.{0,160}\b(validity|ownership|intellectual|trademarks?|patents?|marks?|rights?|title)"
        r"|\bcovenants? not to sue\b|\b(challeng\w*|contest\w*|question\w*|impair\w*|adversely affect\w*)\b.{0,60}\bvalidity\b"
        r"|\binconsistent with\b.{0,80}\bownership\b"
    ),
    "Third Party Beneficiary": _r(
        r"\bthird[- ]party beneficiar\w*|\bintended beneficiar\w*|\bentitled to enforce\b",
        exclude=r"\bno\b.{0,30}\bbeneficiar|\bnot\b.{0,80}\bbeneficiar|\bnothing\b.{0,120}\bbeneficiar"
        r"|^\W*[\d.]*\s*third[- ]party beneficiar\w*\W*$",
    ),
}


def rule_hits(category: str, sentences: Sequence[str]) -> list[int]:
    """Indices of the sentences the keyword rule for ``category`` matches (empty for a category without
    a rule): cheap candidates a model can be asked to judge and cite among."""
    rule = RULES.get(category)
    if rule is None:
        return []
    pool = sentences if rule.head is None else sentences[: rule.head]
    return [i for i, s in enumerate(pool) if _hit(rule, s)]


def _hit(rule: Rule, sentence: str) -> bool:
    return bool(rule.pattern.search(sentence)) and not (rule.exclude and rule.exclude.search(sentence))


def _predict(rule: Rule, sentences: Sequence[str]) -> Prediction:
    pool = sentences if rule.head is None else sentences[: rule.head]
    hits = [s for s in pool if _hit(rule, s)]
    if not hits:
        return Prediction(status="not_found")
    answer = None
    if rule.answer:
        index = {id(s): i for i, s in enumerate(sentences)}
        context: list[str] = []
        for h in hits:
            i = index[id(h)]
            context += [x for x in sentences[i : i + 2] if x not in context]
        answer = rule.answer(hits) or rule.answer(context)
    return Prediction(status="found", answer=answer, citations=hits[: rule.max_citations])


def baseline_predictions(
    contracts: Sequence[CuadContract], sentences_by_contract: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, Prediction]]:
    """Keyword predictions per contract and CUAD category. A contract whose sentences are missing
    (its text could not be extracted) gets ``failed`` for every category; a category without a rule
    is left out (not asked)."""
    out: dict[str, dict[str, Prediction]] = {}
    for contract in contracts:
        sentences = sentences_by_contract.get(contract.name)
        preds: dict[str, Prediction] = {}
        for cat in contract.labels:
            rule = RULES.get(cat)
            if rule is None:
                continue
            preds[cat] = Prediction(status="failed") if sentences is None else _predict(rule, list(sentences))
        out[contract.name] = preds
    return out
