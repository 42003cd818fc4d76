"""The output schema: citations are pinned to the prompt's sentence ids; parsing is strict."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import OutputError
from pipeline.review.schema import CLAUSE_TYPES, OutputLimits, json_schema, parse_output


def _answer(**kw) -> str:
    base = {"summary": "s", "parties": ["A"], "dates": [], "clauses": []}
    base.update(kw)
    return json.dumps(base)


def test_schema_enumerates_exactly_the_prompt_sentence_ids_and_all_clause_types():
    schema = json_schema([3, 1, 2, 3], OutputLimits(min_clauses=1))
    clause = schema["properties"]["clauses"]
    assert clause["items"]["properties"]["citations"]["items"]["enum"] == ["S1", "S2", "S3"]
    assert clause["items"]["properties"]["type"]["enum"] == list(CLAUSE_TYPES)
    assert clause["minItems"] == 1 and len(CLAUSE_TYPES) >= 7


def test_a_prompt_without_sentences_allows_no_citations():
    schema = json_schema([], OutputLimits(min_clauses=2))
    clause = schema["properties"]["clauses"]
    assert clause["minItems"] == 0 and clause["items"]["properties"]["citations"]["maxItems"] == 0


def test_citation_outside_the_prompt_is_rejected():
    raw = _answer(clauses=[{"type": "termination", "finding": "f", "citations": ["S999"]}])
    with pytest.raises(OutputError, match="S999"):
        parse_output(raw, {1, 2})


def test_extra_fields_and_length_stops_are_errors_with_raw_kept():
    with pytest.raises(OutputError) as exc:
        parse_output(_answer(note="x"), {1})
    assert exc.value.raw
    with pytest.raises(OutputError, match="token limit"):
        parse_output(_answer(), {1}, finish_reason="length")
    with pytest.raises(OutputError):
        parse_output('{"summary": "unterminated', {1})


def test_repeated_clause_types_merge_and_control_characters_are_dropped():
    raw = _answer(
        summary="a\x00b",
        parties=["A", "B", "A"],
        dates=[{"label": "effective", "date": "2024"}] * 3,
        clauses=[
            {"type": "termination", "finding": "f1", "citations": ["S1", "S1"]},
            {"type": "termination", "finding": "f2", "citations": ["S2"]},
        ],
    )
    out = parse_output(raw, {1, 2})
    assert out.summary == "ab" and out.parties == ["A", "B"] and len(out.dates) == 1
    assert [(c.type, c.finding, c.citations) for c in out.clauses] == [("termination", "f1", ["S1", "S2"])]
