"""Ingest on the real corpus and on generated bad files: pages, sentence spans, failure reasons."""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from functools import cache
from pathlib import Path

import badfiles
import pypdf
import pytest
from badfiles import CORPUS_DIR, SAMPLE_PAGES, SAMPLE_PDF
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.ingest import (
    SUPPORTED_SUFFIXES,
    Extraction,
    clean_page_text,
    discover,
    extract,
    split_sentences,
)

REFERENCE_DIR = CORPUS_DIR.parent / "reference"
MANIFEST = json.loads((CORPUS_DIR / "manifest.json").read_text(encoding="utf-8"))
CONTRACTS = {c["id"]: c for c in MANIFEST["contracts"]}
CONTRACT_IDS = sorted(CONTRACTS)


@cache
def extracted(contract_id: str) -> Extraction:
    return extract(CORPUS_DIR / CONTRACTS[contract_id]["pdf_file"])


def corpus_txt_pages(contract_id: str) -> list[str]:
    """The manifest's pypdf text of each page (each page ends with a form feed)."""
    text = (REFERENCE_DIR / CONTRACTS[contract_id]["text_file"]).read_text(encoding="utf-8")
    pages = text.split("\f")
    assert pages[-1] == ""
    return pages[:-1]


def sentence_texts(extraction: Extraction, page: int) -> list[str]:
    return [s.text for s in extraction.sentences if s.page == page]


def uncovered(text: str, spans: list[tuple[int, int]]) -> str:
    """The non-whitespace characters of ``text`` that no span covers."""
    gaps, position = [], 0
    for start, end in spans:
        gaps.append(text[position:start])
        position = end
    gaps.append(text[position:])
    return "".join("".join(gaps).split())


# -- the corpus ---------------------------------------------------------------------------------


def test_corpus_manifest_lists_contracts_whose_files_exist():
    assert len(CONTRACT_IDS) >= 10
    for contract in CONTRACTS.values():
        assert (CORPUS_DIR / contract["pdf_file"]).is_file()
        assert (REFERENCE_DIR / contract["text_file"]).is_file()


@pytest.mark.parametrize("contract_id", CONTRACT_IDS)
def test_corpus_pdf_is_ok_with_the_manifest_page_count(contract_id):
    contract = CONTRACTS[contract_id]
    path = CORPUS_DIR / contract["pdf_file"]
    result = extracted(contract_id)

    assert (result.status, result.reason) == ("ok", "")
    assert (result.kind, result.source, result.path) == ("pdf", path.name, path)
    assert len(result.pages) == contract["page_count"]
    assert [p.number for p in result.pages] == list(range(1, contract["page_count"] + 1))
    assert all(p.has_text for p in result.pages)
    assert result.size_bytes == contract["bytes_pdf"]
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("contract_id", CONTRACT_IDS)
def test_corpus_sentences_are_exact_spans_of_their_page_numbered_in_order(contract_id):
    result = extracted(contract_id)
    sentences = result.sentences

    assert sentences, "no sentences at all"
    assert [s.ordinal for s in sentences] == list(range(1, len(sentences) + 1))
    assert [s.page for s in sentences] == sorted(s.page for s in sentences)
    for s in sentences:
        page = result.pages[s.page - 1]
        assert page.number == s.page
        assert page.text[s.start : s.end] == s.text
        assert s.text == s.text.strip() and s.text
        # The prompt shows one sentence per line.
        assert "\n" not in s.text
    for page in result.pages:
        spans = [(s.start, s.end) for s in sentences if s.page == page.number]
        assert spans, f"page {page.number} has text but no sentence"
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))
        assert uncovered(page.text, spans) == "", f"text lost on page {page.number}"


@pytest.mark.parametrize("contract_id", CONTRACT_IDS)
def test_cleaning_keeps_every_character_of_the_pypdf_text_but_whitespace_and_hyphens(contract_id):
    pages = corpus_txt_pages(contract_id)
    assert pages

    def letters(text: str) -> str:
        return re.sub(r"[\s\-]", "", text)

    for number, raw in enumerate(pages, start=1):
        cleaned = clean_page_text(raw)
        assert letters(cleaned) == letters(unicodedata.normalize("NFC", raw)), f"page {number}"
        # Paragraphs are separated by exactly one blank line; no other newlines survive.
        assert "\n" not in cleaned.replace("\n\n", "")
        assert "\n\n\n" not in cleaned


@pytest.mark.parametrize("contract_id", CONTRACT_IDS)
def test_corpus_txt_file_reads_as_the_same_pages_as_its_pdf(contract_id):
    contract = CONTRACTS[contract_id]
    result = extract(REFERENCE_DIR / contract["text_file"])

    assert (result.status, result.kind) == ("ok", "txt")
    # The trailing form feed ends the last page rather than starting an empty one.
    assert len(result.pages) == contract["page_count"]
    assert [p.text for p in result.pages] == [clean_page_text(raw) for raw in corpus_txt_pages(contract_id)]
    # The reference text was made by one pypdf version; another may extract differently, and that
    # must be seen, not skipped: install the manifest's version or regenerate the corpus text.
    assert pypdf.__version__ == MANIFEST["tools"]["pypdf"], (
        f"corpus text made by pypdf {MANIFEST['tools']['pypdf']}, installed {pypdf.__version__}"
    )
    assert [p.text for p in result.pages] == [p.text for p in extracted(contract_id).pages]


# Phrases read from the corpus and checked by hand against the manifest's clause pages.
KNOWN_SENTENCES = [
    (
        "commonpaper-mutual-nda-v1",
        4,
        "Neither party may assign this MNDA without the prior written consent of the other party",
    ),
    ("commonpaper-mutual-nda-v1", 4, "governed by, and construed in accordance with, the laws of the State"),
    (
        "commonpaper-cloud-service-agreement",
        6,
        "The liability cap in Section 8.1(a) does not apply to any Increased Claims.",
    ),
    ("commonpaper-cloud-service-agreement", 7, "Provider will indemnify, defend, and hold harmless Customer"),
    (
        "commonpaper-cloud-service-agreement",
        9,
        "The Governing Law will govern all interpretations and disputes about this Agreement",
    ),
    (
        "bonterms-cloud-terms-v1",
        5,
        "The Governing Law governs this Agreement and any action arising out of or relating to this Agreement",
    ),
    ("bonterms-professional-services-agreement-v1.2", 10, "The Governing Law governs this Agreement and any Action"),
    ("github-terms-of-service", 16, "You agree to indemnify us, defend us, and hold us harmless"),
    (
        "cuad-meritlife-master-services-agreement",
        8,
        "governed by and construed in accordance with the laws of the Arizona",
    ),
    (
        "cuad-netgear-ingram-distributor-agreement",
        8,
        "This Agreement may not be assigned by either party without prior written permission",
    ),
]

# Section headings that must come out as sentences of their own, on the manifest's page.
KNOWN_HEADINGS = [
    ("commonpaper-mutual-nda-v1", 4, "9. Governing Law and Jurisdiction."),
    ("commonpaper-cloud-service-agreement", 10, "6. Assignment."),
    ("commonpaper-cloud-service-agreement", 7, "9. Indemnification"),
    ("bonterms-cloud-terms-v1", 5, "22.2. Governing Law and Courts."),
    ("bonterms-cloud-terms-v1", 5, "22.1. Assignment."),
    ("github-terms-of-service", 17, "1. Governing Law"),
    ("github-terms-of-service", 17, "2. Non-Assignability"),
    ("github-marketplace-developer-agreement", 11, "16. GOVERNING LAW"),
    ("cuad-meritlife-master-services-agreement", 8, "10. NONASSIGNABILITY."),
    ("commonpaper-data-processing-agreement", 1, "1. Processor and Subprocessor Relationships"),
]


@pytest.mark.parametrize(("contract_id", "page", "phrase"), KNOWN_SENTENCES)
def test_known_clause_phrase_is_in_a_sentence_on_its_manifest_page(contract_id, page, phrase):
    result = extracted(contract_id)
    assert any(phrase in text for text in sentence_texts(result, page)), phrase


@pytest.mark.parametrize(("contract_id", "page", "heading"), KNOWN_HEADINGS)
def test_known_heading_is_a_sentence_of_its_own_on_its_manifest_page(contract_id, page, heading):
    assert heading in sentence_texts(extracted(contract_id), page)


def test_numbered_list_items_start_their_own_sentences_in_the_corpus():
    texts = sentence_texts(extracted("commonpaper-cloud-service-agreement"), 3)
    assert "4. Payment & Taxes" in texts
    assert "1. Fees." in texts
    assert (
        "Unless the Order Form specifies a different currency, all Fees are in U.S. Dollars and are exclusive of taxes."
        in texts
    )


def test_line_end_hyphens_in_corpus_compounds_are_kept():
    texts = " ".join(s.text for s in extracted("commonpaper-cloud-service-agreement").sentences)
    for word in ("non-refundable", "non-renewal", "non-infringement"):
        assert word in texts
    assert "nonrefundable" not in texts


# -- split_sentences ------------------------------------------------------------------------------


def sentences_of(text: str) -> list[str]:
    return [text[a:b] for a, b in split_sentences(text)]


def test_split_does_not_break_after_abbreviations_or_initials():
    text = (
        "Acme Inc. and Beta Ltd. agree with Gamma Co. and Delta Corp. on this. "
        "The U.S. Government, e.g. the Dept. of Labor, i.e. No. 5, etc. applies. "
        "See Sec. 4 and Art. 9 in Smith vs. Jones. Mr. Lee, Ms. Park and Dr. Roe met at St. Paul. "
        "John A. Smith signed. Then it ended."
    )
    assert sentences_of(text) == [
        "Acme Inc. and Beta Ltd. agree with Gamma Co. and Delta Corp. on this.",
        "The U.S. Government, e.g. the Dept. of Labor, i.e. No. 5, etc. applies.",
        "See Sec. 4 and Art. 9 in Smith vs. Jones.",
        "Mr. Lee, Ms. Park and Dr. Roe met at St. Paul.",
        "John A. Smith signed.",
        "Then it ended.",
    ]


def test_split_keeps_section_numbers_and_decimals_inside_sentences():
    text = "12.3. Notices. All notices must be in writing. 1. Fees are $1.5 million. Payment is due in 2.5 days."
    assert sentences_of(text) == [
        "12.3. Notices.",
        "All notices must be in writing.",
        "1. Fees are $1.5 million.",
        "Payment is due in 2.5 days.",
    ]


def test_split_breaks_on_question_exclamation_quotes_brackets_and_numbers():
    text = "Is it due? Yes! “Fees” means money. (a) First item. 2. Second item. It is done."
    assert sentences_of(text) == [
        "Is it due?",
        "Yes!",
        "“Fees” means money.",
        "(a) First item.",
        "2. Second item.",
        "It is done.",
    ]


def test_split_does_not_break_before_lowercase():
    assert sentences_of("The fee (approx. five dollars) is due. and so on.") == [
        "The fee (approx. five dollars) is due. and so on."
    ]


def test_heading_before_a_paragraph_break_is_its_own_sentence():
    text = "GOVERNING LAW\n\nThis Agreement is governed by Delaware law. It binds both parties."
    assert sentences_of(text) == [
        "GOVERNING LAW",
        "This Agreement is governed by Delaware law.",
        "It binds both parties.",
    ]


def test_run_on_text_without_punctuation_stays_one_sentence():
    text = " ".join(["clause"] * 20_000)
    assert split_sentences(text) == [(0, len(text))]


def test_split_of_hostile_text_is_linear_not_quadratic():
    hostile = ["." * 200_000 + " A", "1. " * 100_000, "e.g. " * 100_000, "\n" + " " * 200_000 + "x"]
    start = time.perf_counter()
    for text in hostile:
        split_sentences(text)
        clean_page_text(text)
    assert time.perf_counter() - start < 10


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=st.one_of(st.sampled_from(list('aZ1 .!?\n\t“”"()\u00a0\u2028')), st.characters()), max_size=300)
)
def test_split_spans_are_ordered_stripped_and_cover_all_non_whitespace(text):
    spans = split_sentences(text)
    position = 0
    for start, end in spans:
        assert position <= start < end <= len(text)
        piece = text[start:end]
        assert piece == piece.strip() and piece
        position = end
    assert uncovered(text, spans) == ""


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.one_of(st.sampled_from(list("aZ1 .-\n\t\f\r\x00\x07\u00ad\ufb01")), st.characters()), max_size=300
    )
)
def test_cleaned_text_has_no_control_chars_and_its_sentences_no_newlines(raw):
    cleaned = clean_page_text(raw)
    assert cleaned == cleaned.strip()
    assert not any(unicodedata.category(c) == "Cc" and c != "\n" for c in cleaned)
    assert "\n" not in cleaned.replace("\n\n", "")
    assert unicodedata.is_normalized("NFC", cleaned)
    for start, end in split_sentences(cleaned):
        assert "\n" not in cleaned[start:end]


# -- clean_page_text -------------------------------------------------------------------------------


def test_clean_joins_words_broken_by_hyphenation():
    assert clean_page_text("The indemni-\nfication obligations apply.") == "The indemnification obligations apply."


def test_clean_keeps_hyphens_of_compounds_broken_at_line_end():
    raw = "Fees are non-\nrefundable and Provider-\nprocured items are royalty-\nfree here."
    assert clean_page_text(raw) == "Fees are non-refundable and Provider-procured items are royalty-free here."


def test_clean_keeps_hyphen_when_the_left_part_is_a_word_elsewhere_on_the_page():
    raw = "The policy applies to each line of text on this page as written here by us.\nSome policy-\nimplemented rule."
    assert "policy-implemented" in clean_page_text(raw)


def test_clean_joins_wrapped_lines_and_separates_headings_and_list_items():
    raw = (
        "3. Privacy & Security\n"
        "1. Personal Data. Before submitting Personal Data governed by\n"
        "GDPR, Customer must enter into a data processing agreement\n"
        "with Provider.\n"
        "2. Prohibited Data. Customer will not submit Prohibited Data to\n"
        "the Product.\n"
    )
    assert clean_page_text(raw).split("\n\n") == [
        "3. Privacy & Security",
        "1. Personal Data. Before submitting Personal Data governed by GDPR, Customer must enter into a data processing agreement with Provider.",
        "2. Prohibited Data. Customer will not submit Prohibited Data to the Product.",
    ]


def test_clean_keeps_a_lone_bullet_with_its_item():
    raw = "Developer will not distribute any Developer Product that would do harm:\n•\n(i) Contains malware of any kind at all.\n"
    assert clean_page_text(raw).split("\n\n") == [
        "Developer will not distribute any Developer Product that would do harm:",
        "• (i) Contains malware of any kind at all.",
    ]


def test_clean_normalizes_unicode_whitespace_and_control_characters():
    raw = (
        "Cafe\u0301\u00a0\u00a0costs\t\tfive\x00 dol\u00adlars;\r\nthe ﬁnal\x07 price\u200b.\r\n\r\n\fNext  paragraph."
    )
    assert clean_page_text(raw) == "Café costs five dollars; the final price.\n\nNext paragraph."


def test_clean_output_is_nfc_even_when_a_removed_soft_hyphen_sat_before_an_accent():
    assert clean_page_text("Caf\u00e9 and cafe\u00ad\u0301") == "Caf\u00e9 and caf\u00e9"


def test_clean_of_whitespace_only_page_is_empty():
    assert clean_page_text(" \n\t\u00a0\n\f ") == ""


# -- bad PDFs ------------------------------------------------------------------------------------


def test_encrypted_pdf_without_password_fails_and_asks_for_one(tmp_path):
    result = extract(badfiles.encrypted_pdf(tmp_path, "s3cret"))
    assert result.status == "failed"
    assert "encrypted; pass --password" in result.reason
    assert result.sha256 is not None and result.pages == [] and result.sentences == []


def test_encrypted_pdf_opens_with_the_right_password(tmp_path):
    result = extract(badfiles.encrypted_pdf(tmp_path, "s3cret"), password="s3cret")
    assert (result.status, result.reason) == ("ok", "")
    assert len(result.pages) == SAMPLE_PAGES
    assert result.sentences


def test_encrypted_pdf_with_a_wrong_password_says_the_password_is_wrong(tmp_path):
    result = extract(badfiles.encrypted_pdf(tmp_path, "s3cret"), password="guess")
    assert result.status == "failed"
    assert "password given is wrong" in result.reason


def test_owner_only_encrypted_pdf_opens_without_a_password(tmp_path):
    result = extract(badfiles.owner_only_encrypted_pdf(tmp_path))
    assert (result.status, result.reason) == ("ok", "")
    assert len(result.pages) == SAMPLE_PAGES
    assert [p.text for p in result.pages] == [p.text for p in extract(SAMPLE_PDF).pages]


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.9])
def test_truncated_pdf_fails_as_corrupt(tmp_path, fraction):
    result = extract(badfiles.truncated_pdf(tmp_path, fraction))
    assert result.status == "failed"
    assert "corrupt" in result.reason or "truncated" in result.reason
    assert result.pages == []


def test_pdf_with_garbage_after_its_header_fails_as_corrupt(tmp_path):
    result = extract(badfiles.garbage_after_header_pdf(tmp_path))
    assert result.status == "failed"
    assert "corrupt" in result.reason


def test_zip_renamed_to_pdf_fails_as_not_a_pdf_and_says_what_it_looks_like(tmp_path):
    path = badfiles.zip_renamed_pdf(tmp_path)
    result = extract(path)
    assert result.status == "failed"
    assert result.reason.startswith("not a PDF")
    assert "ZIP" in result.reason
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["empty.pdf", "empty.txt"])
def test_empty_file_fails_as_empty(tmp_path, name):
    result = extract(badfiles.empty_file(tmp_path, name))
    assert (result.status, result.reason) == ("failed", "empty file (0 bytes)")
    assert result.size_bytes == 0


def test_zero_page_pdf_fails_as_having_no_pages(tmp_path):
    result = extract(badfiles.zero_page_pdf(tmp_path))
    assert (result.status, result.reason) == ("failed", "PDF has no pages")


def test_image_only_page_needs_ocr_and_names_the_page(tmp_path):
    result = extract(badfiles.image_only_pdf(tmp_path))
    assert result.status == "needs_ocr"
    assert result.reason == "no text layer on page 1 (needs OCR)"
    assert [(p.number, p.has_text, p.text) for p in result.pages] == [(1, False, "")]
    assert result.sentences == []


def test_blank_pages_only_needs_ocr_listing_every_page(tmp_path):
    result = extract(badfiles.blank_page_pdf(tmp_path, pages=2))
    assert result.status == "needs_ocr"
    assert result.reason == "no text layer on pages 1, 2 (needs OCR)"


def test_pdf_with_blank_pages_among_text_pages_needs_ocr_for_just_those_and_keeps_the_rest(tmp_path):
    result = extract(badfiles.pdf_with_blank_pages(tmp_path, (2, 5)))
    assert result.status == "needs_ocr"
    assert result.reason == "no text layer on pages 2, 5 (needs OCR)"
    assert len(result.pages) == SAMPLE_PAGES + 2
    assert [p.number for p in result.pages if not p.has_text] == [2, 5]
    original = [p.text for p in extract(SAMPLE_PDF).pages]
    assert [p.text for p in result.pages if p.has_text] == original
    assert {s.page for s in result.sentences} == {1, 3, 4, 6}
    assert [s.ordinal for s in result.sentences] == list(range(1, len(result.sentences) + 1))


def test_generated_text_pdf_numbers_sentences_across_pages(tmp_path):
    path = badfiles.text_pdf(tmp_path, ["First page. It has two sentences.", "Second page (one sentence)."])
    result = extract(path)
    assert result.status == "ok"
    assert [(s.ordinal, s.page, s.text) for s in result.sentences] == [
        (1, 1, "First page."),
        (2, 1, "It has two sentences."),
        (3, 2, "Second page (one sentence)."),
    ]


def test_deeply_nested_pdf_fails_instead_of_crashing(tmp_path):
    result = extract(badfiles.deeply_nested_pdf(tmp_path))
    assert result.status == "failed"
    assert "nested too deeply" in result.reason


def test_file_over_the_byte_cap_fails_before_it_is_read(tmp_path):
    path = badfiles.oversized_file(tmp_path, 300 * 1024 * 1024)
    result = extract(path)
    assert result.status == "failed"
    assert result.reason == "file is 300 MB, over the 200 MB cap (max_file_bytes)"
    assert result.size_bytes == 300 * 1024 * 1024
    assert result.sha256 is None  # never read


def test_small_byte_cap_names_both_sizes(tmp_path):
    result = extract(SAMPLE_PDF, max_bytes=10_000)
    assert result.status == "failed"
    assert result.reason == "file is 57.6 KB, over the 9.8 KB cap (max_file_bytes)"


@pytest.mark.parametrize("name", ["commonpaper-cloud-service-agreement.pdf", "commonpaper-cloud-service-agreement.txt"])
def test_file_over_the_page_cap_fails_naming_the_cap(name):
    folder = CORPUS_DIR if name.endswith(".pdf") else REFERENCE_DIR
    result = extract(folder / name, max_pages=5)
    assert result.status == "failed"
    assert result.reason == "file has 14 pages, over the 5-page cap (max_pages)"
    assert result.pages == []


def test_page_cap_equal_to_the_page_count_is_allowed():
    assert extract(SAMPLE_PDF, max_pages=SAMPLE_PAGES).status == "ok"


def test_file_that_vanished_before_it_was_read_fails_cleanly(tmp_path):
    # (Permission errors cannot be produced here: the tests run as root, which reads anything.)
    path = tmp_path / "gone.pdf"
    path.symlink_to(tmp_path / "deleted-meanwhile.pdf")
    result = extract(path)
    assert result.status == "failed"
    assert result.reason == "no such file"
    assert result.sha256 is None


def test_folder_named_like_a_pdf_fails_as_not_a_file(tmp_path):
    folder = tmp_path / "looks.pdf"
    folder.mkdir()
    assert (extract(folder).status, extract(folder).reason) == ("failed", "is a folder, not a file")


def test_missing_file_fails_as_missing(tmp_path):
    result = extract(tmp_path / "gone.pdf")
    assert (result.status, result.reason, result.sha256) == ("failed", "no such file", None)


def test_unsupported_suffix_fails_naming_the_expected_types(tmp_path):
    path = tmp_path / "contract.docx"
    path.write_bytes(b"PK\x03\x04")
    result = extract(path)
    assert result.status == "failed"
    assert result.reason == "unsupported file type .docx (expected .pdf or .txt)"


BAD_FILE_MAKERS = [
    badfiles.encrypted_pdf,
    badfiles.truncated_pdf,
    badfiles.garbage_after_header_pdf,
    badfiles.zip_renamed_pdf,
    badfiles.empty_file,
    badfiles.zero_page_pdf,
    badfiles.image_only_pdf,
    badfiles.blank_page_pdf,
    badfiles.deeply_nested_pdf,
]


@pytest.mark.parametrize("make", BAD_FILE_MAKERS, ids=lambda f: f.__name__)
def test_bad_file_never_raises_and_always_gives_a_reason(tmp_path, make):
    result = extract(make(tmp_path))
    assert result.status in {"failed", "needs_ocr"}
    assert result.reason
    assert result.source == result.path.name


# -- text files ------------------------------------------------------------------------------------


def test_latin1_txt_with_form_feeds_reads_as_pages(tmp_path):
    result = extract(badfiles.latin1_txt(tmp_path))
    assert (result.status, result.kind) == ("ok", "txt")
    assert [p.text for p in result.pages] == [
        "Café Agreement. The señor pays 5 EUR.",
        "Second page: naïve façade.",
        "Third page.",
    ]
    assert [(s.page, s.text) for s in result.sentences] == [
        (1, "Café Agreement."),
        (1, "The señor pays 5 EUR."),
        (2, "Second page: naïve façade."),
        (3, "Third page."),
    ]


def test_cp1252_txt_decodes_smart_quotes(tmp_path):
    path = tmp_path / "windows.txt"
    path.write_bytes("“Fees” are due – now.".encode("cp1252"))
    assert extract(path).pages[0].text == "“Fees” are due – now."


def test_utf8_txt_with_bom_and_crlf_is_one_page_without_the_bom(tmp_path):
    path = badfiles.utf8_bom_txt(tmp_path, "Clause one is\r\nhere. Clause two.\r\n")
    result = extract(path)
    assert result.status == "ok"
    assert [p.text for p in result.pages] == ["Clause one is here. Clause two."]


def test_whitespace_only_txt_fails_as_having_no_text(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text(" \n\f\n ")
    result = extract(path)
    assert result.status == "failed"
    assert "no text" in result.reason


def test_binary_file_renamed_txt_fails_as_not_text(tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    result = extract(path)
    assert result.status == "failed"
    assert result.reason == "not a text file: it looks like a PNG image"


# -- discover --------------------------------------------------------------------------------------


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    root = tmp_path / "inbox"
    for name in [
        "b.pdf",
        "a.PDF",
        "sub/c.txt",
        "sub/deeper/d.pdf",
        ".hidden.pdf",
        ".git/e.pdf",
        "notes.docx",
        "sub/f.md",
    ]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


def test_discover_expands_a_folder_recursively_sorted_skipping_hidden_and_unsupported(inbox):
    files, problems = discover([inbox])
    assert files == [inbox / "a.PDF", inbox / "b.pdf", inbox / "sub" / "c.txt", inbox / "sub" / "deeper" / "d.pdf"]
    assert problems == []


def test_discover_expands_globs(inbox):
    files, problems = discover([str(inbox / "*.pdf"), str(inbox / "**" / "*.txt")])
    assert files == [inbox / "b.pdf", inbox / "sub" / "c.txt"]
    assert problems == []


def test_discover_reports_missing_paths_unsupported_files_and_empty_matches(inbox, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    given = [str(tmp_path / "missing.pdf"), str(inbox / "notes.docx"), str(inbox / "*.zip"), str(empty)]
    files, problems = discover(given)
    assert files == []
    assert problems == [
        (given[0], "no such file or folder"),
        (given[1], "unsupported file type .docx (expected .pdf or .txt)"),
        (given[2], "no .pdf or .txt files match this pattern"),
        (given[3], "folder has no .pdf or .txt files"),
    ]


def test_discover_returns_each_file_once(inbox):
    one = inbox / "b.pdf"
    files, problems = discover([one, str(one), inbox, str(inbox / "*.pdf")])
    assert files.count(one) == 1
    assert len(files) == len(set(files)) == 4
    assert problems == []


def test_discover_takes_a_hidden_file_named_directly(inbox):
    assert discover([inbox / ".hidden.pdf"]) == ([inbox / ".hidden.pdf"], [])


def test_discover_finds_the_whole_corpus():
    files, problems = discover([CORPUS_DIR])
    assert problems == []
    assert {f.suffix.lower() for f in files} <= set(SUPPORTED_SUFFIXES)
    pdfs = [f.name for f in files if f.suffix == ".pdf"]
    assert sorted(pdfs) == sorted(c["pdf_file"] for c in CONTRACTS.values())
