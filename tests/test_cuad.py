"""CUAD reader, text matching, scorer and keyword baseline, on the CUAD contracts shipped in examples/cuad."""

from __future__ import annotations

import csv
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from pipeline.ingest import ingest
from pipeline.quality.baseline import RULES, baseline_predictions, rule_hits
from pipeline.quality.cuad import (
    ANSWER_KINDS,
    CuadContract,
    CuadFormatError,
    CuadLabel,
    Prediction,
    all_present,
    answers_match,
    load_cuad,
    normalize_date,
    normalize_duration,
    overlaps,
    score,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "cuad"
PLAYBOOK = ROOT / "prompts" / "playbooks" / "cuad.toml"


@pytest.fixture(scope="module")
def contracts() -> list[CuadContract]:
    return load_cuad(EXAMPLES)


@pytest.fixture(scope="module")
def sentences(contracts) -> dict[str, list[str]]:
    out = {}
    for c in contracts:
        ex = ingest.extract(c.pdf_paths[0])
        assert ex.status == "ok", (c.name, ex.reason)
        out[c.name] = [s.text for s in ex.sentences]
    return out


# --- reader ---------------------------------------------------------------------------------


def test_load_cuad_reads_every_shipped_contract_with_its_pdf_and_41_categories(contracts):
    assert len(contracts) == 5
    for c in contracts:
        assert len(c.pdf_paths) == 1 and c.pdf_paths[0].is_file() and c.pdf_paths[0].name == c.name
        assert len(c.labels) == 41
        # CUAD's odd header "Notice Period To Terminate Renewal- Answer" is read like the others
        assert "Notice Period To Terminate Renewal" in c.labels
    tickets = next(c for c in contracts if c.name.startswith("TICKETSCOM"))
    assert tickets.labels["Governing Law"].answer and tickets.labels["Governing Law"].present
    assert tickets.labels["Anti-Assignment"].answer == "Yes" and tickets.labels["Anti-Assignment"].spans
    assert not tickets.labels["Non-Compete"].present


def test_load_cuad_limit_keeps_the_first_rows():
    assert [c.name for c in load_cuad(EXAMPLES, limit=2)] == [c.name for c in load_cuad(EXAMPLES)[:2]]


def test_a_filename_cut_short_is_matched_to_its_pdf_by_prefix(tmp_path):
    shutil.copytree(EXAMPLES, tmp_path / "cuad")
    path = tmp_path / "cuad" / "master_clauses.csv"
    text = path.read_text(encoding="utf-8")
    full = "TICKETSCOMINC_06_22_1999-EX-10.22-SPONSORSHIP AGREEMENT.PDF"
    path.write_text(text.replace(full, "TICKETSCOMINC_06_22_1999-EX-10.22-SPONSORSHIP AGRE"), encoding="utf-8")
    got = {c.name: c.pdf_paths for c in load_cuad(tmp_path / "cuad")}
    assert [p.name for p in got["TICKETSCOMINC_06_22_1999-EX-10.22-SPONSORSHIP AGRE"]] == [full]


def test_a_row_without_a_pdf_is_returned_with_no_paths_not_dropped(tmp_path):
    shutil.copytree(EXAMPLES, tmp_path / "cuad")
    victim = next((tmp_path / "cuad" / "full_contract_pdf").rglob("RMRGROUP*"))
    victim.unlink()
    got = {c.name: c.pdf_paths for c in load_cuad(tmp_path / "cuad")}
    assert len(got) == 5 and got[victim.name] == []


def test_malformed_span_cell_names_the_file_row_and_column(tmp_path):
    shutil.copytree(EXAMPLES, tmp_path / "cuad")
    path = tmp_path / "cuad" / "master_clauses.csv"
    rows = list(csv.reader(path.open(encoding="utf-8", newline="")))
    col = rows[0].index("Insurance")
    rows[2][col] = "['unterminated"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(CuadFormatError, match=r"master_clauses\.csv: row 3, column 'Insurance'"):
        load_cuad(tmp_path / "cuad")


def test_missing_csv_or_wrong_header_is_a_clear_error(tmp_path):
    with pytest.raises(CuadFormatError, match="master_clauses.csv: no such file"):
        load_cuad(tmp_path)
    (tmp_path / "master_clauses.csv").write_text("Name,Parties\nx,[]\n", encoding="utf-8")
    with pytest.raises(CuadFormatError, match="first column must be 'Filename'"):
        load_cuad(tmp_path)


# --- text matching --------------------------------------------------------------------------

SPAN = (
    "The Sponsor shall not assign this Agreement or any of its rights hereunder without the prior written "
    "consent of Tickets.com, which consent shall not be unreasonably withheld."
)


@pytest.mark.parametrize(
    "ours",
    [
        # line breaks and doubled spaces, as PDF text comes out
        (
            "The Sponsor shall not assign this\nAgreement or any of its  rights hereunder without the prior written "
            "consent of Tickets.com, which consent shall not be unreasonably withheld."
        ),
        # hyphenation at a line end
        (
            "The Sponsor shall not as-\nsign this Agreement or any of its rights hereunder without the prior writ-\nten "
            "consent of Tickets.com, which consent shall not be unreasonably withheld."
        ),
        # case and curly quotes / dashes / ligature
        (
            "THE SPONSOR SHALL NOT ASSIGN THIS AGREEMENT OR ANY OF ITS RIGHTS HEREUNDER \u2014 WITHOUT THE PRIOR WRITTEN "
            "CONSENT OF TICKETS.COM, WHICH CONSENT SHALL NOT BE UNREASONABLY WITHHELD."
        ),
        # our sentence is only part of CUAD's span (a sentence split inside it)
        "The Sponsor shall not assign this Agreement or any of its rights hereunder",
        # our sentence is longer than the span (the span is a clause fragment)
        "12. Assignment. " + SPAN + " Any attempted assignment is void.",
    ],
)
def test_text_matching_survives_pdf_vs_txt_differences(ours):
    assert overlaps(SPAN, ours) and overlaps(ours, SPAN)


def test_text_matching_handles_ligatures_and_quotes():
    assert overlaps(
        "the \u201cEffective Date\u201d of the o\ufb03cial \ufb01ling", 'the "Effective Date" of the official filing'
    )
    assert overlaps("Licensee\u2019s affiliates", "licensee's affiliates")


@pytest.mark.parametrize(
    "other",
    [
        "This Agreement shall be governed by the laws of the State of California.",
        "Any attempted assignment is void.",  # the neighbouring sentence
    ],
)
def test_unrelated_or_neighbouring_text_does_not_match(other):
    assert not overlaps(SPAN, other)


def test_a_short_span_must_be_contained_whole():
    assert overlaps("December 1st, 2015", "This Agreement is made on December 1st, 2015 by the parties.")
    assert not overlaps("December 1st, 2015", "This Agreement is made on December 2nd, 2015 by the parties.")
    assert not overlaps("", "anything")


# --- answers --------------------------------------------------------------------------------


def test_answer_normalisation():
    assert normalize_date("12/1/15") == normalize_date("December 1st, 2015") == "2015-12-01"
    assert normalize_date("the 8th day of May, 2014") == normalize_date("5/8/2014") == "2014-05-08"
    assert normalize_date("no date here") is None
    assert normalize_duration("successive one (1) year terms") == normalize_duration("1 year") == "1 year"
    assert normalize_duration("sixty (60) days' prior notice") == "60 day"
    assert answers_match("place", "the laws of the State of New York", "New York")
    assert not answers_match("place", "Delaware", "New York")
    assert answers_match("party", "Tickets.com, Inc.; The Sponsor LLC", "TICKETS.COM INC. and the Sponsor")
    assert not answers_match("date", "2015-12-02", "12/1/15")
    assert not answers_match("duration", None, "60 days")


# --- scorer ---------------------------------------------------------------------------------


def _perfect(contracts) -> dict[str, dict[str, Prediction]]:
    return {
        c.name: {
            cat: Prediction(status="found", answer=label.answer, citations=list(label.spans))
            if label.present
            else Prediction(status="not_found")
            for cat, label in c.labels.items()
        }
        for c in contracts
    }


def test_a_perfect_prediction_scores_one(contracts):
    result = score(contracts, _perfect(contracts)).to_json_dict()
    assert result["micro"]["support"] > 20
    for key in ("precision", "recall", "f1", "evidence_recall", "evidence_precision", "answer_accuracy"):
        assert result["micro"][key] == 1.0, key
        assert result["macro"][key] == 1.0, key
    present = [c for c in result["categories"].values() if c["support"]]
    assert present and all(c["f1"] == 1.0 for c in present)


def test_an_empty_prediction_has_zero_recall_and_counts_as_not_asked(contracts):
    for preds in (
        {},
        {c.name: {} for c in contracts},
        {c.name: {"Not A CUAD Category": Prediction(status="found")} for c in contracts},
    ):
        result = score(contracts, preds).to_json_dict()
        assert result["micro"]["recall"] == 0.0 and result["micro"]["evidence_recall"] == 0.0
        assert result["micro"]["tp"] == 0 and result["micro"]["fp"] == 0
        assert "Not A CUAD Category" not in result["categories"]


def test_not_found_failed_and_not_asked_all_get_no_credit(contracts):
    for status in ("not_found", "failed", "not_asked"):
        preds = {
            c.name: {k: Prediction(status=status, citations=list(v.spans)) for k, v in c.labels.items()}
            for c in contracts
        }
        assert score(contracts, preds).to_json_dict()["micro"]["recall"] == 0.0


def test_citing_the_neighbouring_sentence_counts_as_no_evidence():
    span = (
        "Either party may terminate this Agreement at any time upon thirty (30) days written notice to the other party."
    )
    neighbour = "Upon termination, Sponsor shall pay all fees accrued through the date of termination."
    c = CuadContract(name="k.pdf", pdf_paths=[], labels={"Termination For Convenience": CuadLabel("Yes", [span])})
    right = score([c], {"k.pdf": {"Termination For Convenience": Prediction(status="found", citations=[span])}})
    wrong = score([c], {"k.pdf": {"Termination For Convenience": Prediction(status="found", citations=[neighbour])}})
    r, w = right.to_json_dict()["micro"], wrong.to_json_dict()["micro"]
    assert (r["f1"], r["evidence_recall"], r["evidence_precision"]) == (1.0, 1.0, 1.0)
    assert w["f1"] == 1.0  # presence is right ...
    assert (w["evidence_recall"], w["evidence_precision"]) == (0.0, 0.0)  # ... the evidence is not


def test_presence_needs_a_span_and_an_answer_other_than_no():
    assert not CuadLabel("No", ["some text"]).present
    assert not CuadLabel("Yes", []).present
    assert not CuadLabel(None, []).present
    assert CuadLabel("Delaware", ["governed by Delaware law"]).present


def test_every_category_present_floor_has_full_recall_and_low_precision(contracts):
    micro = score(contracts, all_present(contracts)).to_json_dict()["micro"]
    assert micro["recall"] == 1.0 and micro["precision"] < 0.5 and micro["evidence_recall"] == 0.0


def test_scoring_nothing_is_an_error():
    with pytest.raises(ValueError):
        score([], {})


# --- the playbook ---------------------------------------------------------------------------


def test_cuad_playbook_has_one_clause_per_cuad_column_with_the_agreed_kinds():
    data = tomllib.loads(PLAYBOOK.read_text(encoding="utf-8"))
    assert data["name"] == "cuad" and data["version"] and "CC BY 4.0" in data["attribution"]
    with open(EXAMPLES / "master_clauses.csv", encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))
    categories = [h for h in header[1:] if not re.search(r"-\s*Answer$", h)]
    clauses = data["clause"]
    assert [c["cuad_category"] for c in clauses] == categories and len(clauses) == 41
    ids = [c["id"] for c in clauses]
    assert len(set(ids)) == 41 and all(re.fullmatch(r"[a-z][a-z0-9_]*", i) for i in ids)
    for c in clauses:
        assert set(c) == {"id", "label", "kind", "question", "cuad_category"}
        assert c["kind"] == ANSWER_KINDS.get(c["cuad_category"], "yes_no")
        assert c["question"].strip() and c["label"].strip()


# --- baseline -------------------------------------------------------------------------------


def test_baseline_has_a_rule_for_every_cuad_category(contracts):
    assert set(RULES) == set(contracts[0].labels)


def test_baseline_on_shipped_contracts_is_sane(contracts, sentences):
    preds = baseline_predictions(contracts, sentences)
    assert set(preds) == {c.name for c in contracts}
    found = [(name, cat, p) for name, ps in preds.items() for cat, p in ps.items() if p.status == "found"]
    assert found
    for name, _cat, p in found:
        assert p.citations and all(t in sentences[name] for t in p.citations)  # cites real sentences, verbatim
    result = score(contracts, preds).to_json_dict()
    # Beats the every-category-present floor on these contracts, and cites real evidence.
    floor = score(contracts, all_present(contracts)).to_json_dict()
    assert result["micro"]["f1"] > floor["micro"]["f1"]
    assert result["micro"]["evidence_recall"] > 0.3
    assert result["categories"]["Governing Law"]["recall"] == 1.0


def test_baseline_marks_a_contract_without_text_failed(contracts):
    preds = baseline_predictions(contracts[:1], {})
    assert {p.status for p in preds[contracts[0].name].values()} == {"failed"}


def test_every_labelled_span_of_the_shipped_contracts_matches_one_of_our_pdf_sentences(contracts, sentences):
    # CUAD's spans come from CUAD's text, ours from our own PDF extraction: the matching must bridge them.
    spans = [(c.name, s) for c in contracts for label in c.labels.values() if label.present for s in label.spans]
    assert len(spans) > 20
    missed = [(name, s) for name, s in spans if not any(overlaps(s, ours) for ours in sentences[name])]
    assert not missed


def test_rule_hits_are_the_sentences_the_baseline_cites(contracts, sentences):
    name = next(c.name for c in contracts if c.name.startswith("TICKETSCOM"))
    hits = rule_hits("Anti-Assignment", sentences[name])
    assert (
        hits
        and [sentences[name][i] for i in hits][:5]
        == baseline_predictions(contracts, sentences)[name]["Anti-Assignment"].citations
    )
    assert rule_hits("Not A CUAD Category", sentences[name]) == []
