"""OCR of scanned pages: real Tesseract on scans made from the bundled contracts' own pages.

Scans are rendered from real text PDFs (``pipeline.quality.scans``) at test time, at 200 dpi to
keep Tesseract's time small; the text layer of the same page is what the OCR text is held to.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import badfiles
import pytest
from conftest import CORPUS, TINY_OVERRIDES, make_settings

from pipeline.batch import Chunker, ingest_paths
from pipeline.ingest import ingest, ocr
from pipeline.quality import scans
from storage import repo
from storage.models import Page

NDA = CORPUS / "commonpaper-mutual-nda-v1.pdf"  # 4 pages
DPI = 200
OCR_AT_200 = {"ocr": "auto", "ocr_dpi": DPI}


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]{4,}", text)}


def _recall(reference: str, ocr_text: str) -> float:
    """Share of the reference page's words (4+ letters) that the OCR text has."""
    ref = _words(reference)
    assert ref, "reference page has no words: the check would prove nothing"
    return len(ref & _words(ocr_text)) / len(ref)


def _assert_spans(ex: ingest.Extraction) -> None:
    assert ex.sentences
    for s in ex.sentences:
        assert ex.pages[s.page - 1].text[s.start : s.end] == s.text


@pytest.fixture(scope="module")
def reference_pages() -> list[str]:
    return [p.text for p in ingest.extract(NDA).pages]


def test_tesseract_is_installed_here():
    """The set-up installs it (scripts/system-deps.sh); every other test here needs it."""
    assert ocr.problem("eng") is None, ocr.problem("eng")


@pytest.mark.engine
def test_scanned_contract_is_ocrd_summarized_and_every_citation_is_on_its_ocr_page(
    tmp_path, tiny_model, engine, reference_pages
):
    from pipeline.reports.export import render
    from pipeline.reports.report import build_report
    from pipeline.review.summarize import summarize
    from storage.db import open_database

    scan = scans.scanned_copy(NDA, tmp_path / "nda-scan.pdf", dpi=DPI)
    settings = make_settings(tmp_path / "home", **TINY_OVERRIDES, model=tiny_model, **OCR_AT_200)
    factory = open_database(settings.db_url)
    report = ingest_paths(
        factory, settings, [scan], batch_name="scans", chunker=Chunker.for_model(settings, tiny_model), workers=2
    )
    [outcome] = report.files
    assert outcome.status == "ok", outcome.reason
    assert outcome.ocr_pages == 4 and outcome.reason.startswith("4 of 4 pages read by OCR (tesseract ")
    assert outcome.chunks >= 1

    done = summarize(factory, settings, engine=engine)
    assert not done.failed and done.summarized
    with factory() as s:
        pages = {p.number: p for p in s.query(Page).filter(Page.document_id == outcome.document_id)}
        assert [pages[n].text_source for n in sorted(pages)] == ["ocr"] * 4
        for n, page in pages.items():
            assert page.ocr_engine == "tesseract" and page.ocr_engine_version == ocr.engine_version()
            assert 0 < page.ocr_confidence <= 100
            assert _recall(reference_pages[n - 1], page.text) > 0.9, f"page {n}"
        pairs = repo.all_citations(s)
        assert pairs, "no citations were stored: the check would prove nothing"
        for cit, page in pairs:
            sentence = s.get(repo.Sentence, cit.sentence_id)
            assert page.text[cit.char_start : cit.char_end] == cit.text == sentence.text
            assert cit.text in page.text and page.text_source == "ocr"
            assert sentence.page_number == cit.page_number == page.number

    built = build_report(factory, prompt_version=settings.prompt_version, batch="scans")
    [doc] = built["documents"]
    assert doc["ocr_pages"] == 4
    cites = [c for cl in doc["clauses"] for c in cl["citations"]]
    assert cites and all(c["ocr"] and c["ocr_confidence"] > 0 for c in cites)
    assert "(OCR" in render(built, "md")
    assert ",ocr" in render(built, "csv")
    assert 'class="src src-ocr' in render(built, "html")
    factory.kw["bind"].dispose()

    from typer.testing import CliRunner

    from pipeline.cli.main import app

    shown = CliRunner().invoke(
        app, ["--home", str(tmp_path / "home"), "show", str(outcome.document_id)], catch_exceptions=False
    )
    assert shown.exit_code == 0, shown.output
    assert "4 of 4 pages read by OCR" in shown.output and "(OCR" in shown.output


def test_mixed_pdf_gets_ocr_for_its_scanned_page_and_keeps_text_layer_pages_untouched(tmp_path, reference_pages):
    mixed = scans.mixed_copy(NDA, tmp_path / "mixed.pdf", scanned=[2], dpi=DPI)
    off = ingest.extract(mixed)
    assert off.status == "needs_ocr" and off.reason == "no text layer on page 3 (needs OCR)"

    ex = ingest.extract(mixed, ocr=ocr.OcrConfig(mode="auto", dpi=DPI))
    assert ex.status == "ok", ex.reason
    assert [p.text_source for p in ex.pages] == ["text_layer", "text_layer", "ocr", "text_layer"]
    for i in (0, 1, 3):
        assert ex.pages[i].text == reference_pages[i]
        assert ex.pages[i].ocr_engine is None and ex.pages[i].ocr_confidence is None
    assert _recall(reference_pages[2], ex.pages[2].text) > 0.9
    assert ex.pages[2].ocr_engine == "tesseract" and ex.pages[2].ocr_confidence > 50
    assert ex.ocr_pages == 1 and ex.reason.startswith("1 of 4 pages read by OCR")
    _assert_spans(ex)


def test_force_ocrs_pages_that_have_a_text_layer(tmp_path):
    pdf = badfiles.text_pdf(tmp_path, ["The Supplier shall deliver the goods within thirty days."])
    ex = ingest.extract(pdf, ocr=ocr.OcrConfig(mode="force", dpi=DPI))
    assert ex.status == "ok" and [p.text_source for p in ex.pages] == ["ocr"]
    assert _recall("The Supplier shall deliver the goods within thirty days.", ex.pages[0].text) == 1.0
    _assert_spans(ex)


def _tesseracts(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"tesseract") and marker.encode() in cmd:
                found.append(int(proc.name))
    return found


def test_ocr_past_its_time_limit_fails_only_its_file_and_leaves_no_tesseract_behind(tmp_path):
    from storage.db import open_database

    before = badfiles.text_pdf(tmp_path, ["An earlier contract.\nThe parties agree."], name="before.pdf")
    scan = scans.scanned_copy(NDA, tmp_path / "slow-scan.pdf", dpi=DPI)
    after = badfiles.text_pdf(tmp_path, ["A later contract.\nThe parties agree."], name="after.pdf")
    # 4 pages at 600 dpi: many seconds of Tesseract; the file may take 3 s + 4 x 0.25 s.
    settings = make_settings(
        tmp_path / "home", ocr="auto", ocr_dpi=600, extract_timeout_seconds=3, ocr_timeout_seconds_per_page=0.25
    )
    factory = open_database(settings.db_url)
    started = time.monotonic()
    report = ingest_paths(factory, settings, [before, scan, after], batch_name="ocr-timeout", workers=1)
    elapsed = time.monotonic() - started
    factory.kw["bind"].dispose()
    by_name = {f.source: f for f in report.files}
    assert by_name["slow-scan.pdf"].status == "failed"
    reason = by_name["slow-scan.pdf"].reason
    assert "OCR of 4 pages took longer than 4 s" in reason and "ocr_timeout_seconds_per_page" in reason, reason
    assert by_name["before.pdf"].status == by_name["after.pdf"].status == "ok"
    assert elapsed < 60
    time.sleep(0.5)
    assert not _tesseracts("600"), "Tesseract outlived the extraction process that was stopped"


def test_ocr_off_keeps_todays_behaviour(tmp_path, factory):
    image_only = badfiles.image_only_pdf(tmp_path)
    scan = scans.scanned_copy(NDA, tmp_path / "nda-scan.pdf", dpi=DPI, pages=[0])
    settings = make_settings(tmp_path / "home", ocr="off")
    report = ingest_paths(factory, settings, [image_only, scan], batch_name="off")
    assert [(f.status, f.reason, f.ocr_pages) for f in report.files] == [
        ("needs_ocr", "no text layer on page 1 (needs OCR)", 0)
    ] * 2
    assert not report.notices
    with factory() as s:
        pages = s.query(Page).all()
        assert len(pages) == 2 and {(p.text_source, p.text, p.ocr_engine) for p in pages} == {("text_layer", "", None)}


def test_without_tesseract_ingest_says_so_once_and_files_stay_needs_ocr(tmp_path, factory, monkeypatch, caplog):
    scans_ = [scans.scanned_copy(NDA, tmp_path / f"scan{i}.pdf", dpi=100, pages=[i]) for i in range(2)]
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))  # no tesseract on it
    ocr.engine_version.cache_clear()
    ocr.installed_languages.cache_clear()
    try:
        settings = make_settings(tmp_path / "home", ocr="auto")
        with caplog.at_level("WARNING", logger="pipeline.batch"):
            report = ingest_paths(factory, settings, scans_, batch_name="no-tesseract")
    finally:
        ocr.engine_version.cache_clear()
        ocr.installed_languages.cache_clear()
    assert len(report.notices) == 1 and "tesseract not found on PATH" in report.notices[0]
    assert [r.message for r in caplog.records if "OCR is unavailable" in r.message] == report.notices
    for f in report.files:
        assert f.status == "needs_ocr"
        assert f.reason.startswith("no text layer on page 1 (needs OCR): the OCR engine is not installed"), f.reason


def test_fax_and_jbig2_pages_end_ok_with_ocr_text(tmp_path, reference_pages):
    image = scans.render_pages(NDA, DPI, [1])
    fax = scans.image_pdf([scans.bilevel(im) for im in image], tmp_path / "fax.pdf", dpi=DPI, encoding="ccitt")
    jbig2 = scans.image_pdf(image, tmp_path / "jbig2.pdf", dpi=DPI, encoding="jbig2")
    assert b"/CCITTFaxDecode" in fax.read_bytes() and b"/JBIG2Decode" in jbig2.read_bytes()
    for path in (fax, jbig2):
        ex = ingest.extract(path, ocr=ocr.OcrConfig(mode="auto", dpi=DPI))
        assert ingest.extract(path).status == "needs_ocr"  # no text layer at all
        assert ex.status == "ok", (path.name, ex.reason)
        assert ex.pages[0].text_source == "ocr" and _recall(reference_pages[1], ex.pages[0].text) > 0.9, path.name
        _assert_spans(ex)


def test_image_only_pages_ocr_cannot_read_end_needs_ocr_with_a_reason(tmp_path):
    """A damaged JBIG2 stream, a blank scan and a 2x2-pixel image: never a crash, always a reason."""
    image = scans.render_pages(NDA, 100, [1])
    jbig2 = scans.image_pdf(image, tmp_path / "jbig2.pdf", dpi=100, encoding="jbig2").read_bytes()
    start = jbig2.index(b"stream\n", jbig2.index(b"/JBIG2Decode")) + len(b"stream\n")
    damaged = tmp_path / "damaged-jbig2.pdf"
    damaged.write_bytes(jbig2[: start + 40] + bytes(200) + jbig2[start + 240 :])  # same length: xref still right
    blank = scans.image_pdf([image[0].point(lambda _: 255)], tmp_path / "blank-scan.pdf", dpi=100)
    tiny = badfiles.image_only_pdf(tmp_path)
    for path in (damaged, blank, tiny):
        ex = ingest.extract(path, ocr=ocr.OcrConfig(mode="auto", dpi=100))
        assert ex.status in ("ok", "needs_ocr"), (path.name, ex.reason)
        if ex.status == "needs_ocr":
            assert ex.reason.startswith("no text layer on page 1 (needs OCR): "), ex.reason
            assert len(ex.reason) > len("no text layer on page 1 (needs OCR): ")
        else:
            assert ex.pages[0].text_source == "ocr" and ex.pages[0].has_text
    assert ingest.extract(blank, ocr=ocr.OcrConfig(mode="auto", dpi=100)).reason.endswith(
        "OCR found no words on page 1"
    )


def test_tsv_words_come_back_as_lines_and_paragraphs_with_a_length_weighted_confidence():
    head = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    rows = [
        "1\t1\t0\t0\t0\t0\t0\t0\t100\t100\t-1\t",
        "5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t90\tThe",
        "5\t1\t1\t1\t1\t2\t0\t0\t1\t1\t60\tSupplier",
        "5\t1\t1\t1\t2\t1\t0\t0\t1\t1\t90\tshall.",
        "5\t1\t2\t1\t1\t1\t0\t0\t1\t1\t-1\t ",
        "5\t1\t2\t1\t1\t2\t0\t0\t1\t1\t100\tNext",
    ]
    page = ocr.parse_tsv("\n".join([head, *rows]))
    assert page.text == "The Supplier\nshall.\n\nNext"
    assert page.words == 4
    assert page.confidence == round((90 * 3 + 60 * 8 + 90 * 6 + 100 * 4) / 21, 1)
    assert ocr.parse_tsv(head).confidence is None


def _tsv(*words: tuple[int, int, int, str]) -> str:
    """Tesseract TSV with one word row per (block, paragraph, line, text)."""
    head = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    rows = [f"5\t1\t{b}\t{p}\t{ln}\t{i}\t0\t0\t1\t1\t95\t{w}" for i, (b, p, ln, w) in enumerate(words, 1)]
    return "\n".join([head, *rows])


def test_section_numbers_split_off_their_lines_trigger_the_one_column_reading_unless_it_lost_text():
    # Mode 3 on a page with hanging numbers: "2.10." and "2.11." alone in blocks of their own.
    split = _tsv(
        (1, 1, 1, "2.10."),
        (2, 1, 1, "2.11."),
        (3, 1, 1, '"Content"'),
        (3, 1, 1, "means"),
        (4, 1, 1, '"Cover"'),
        (4, 1, 1, "means"),
    )
    assert ocr.detached_enumerators(split) == 2
    # Numbers on their lines, a heading "1. Scope" of two words, a lone word: nothing detached.
    whole = _tsv(
        (1, 1, 1, "2.10."),
        (1, 1, 1, '"Content"'),
        (1, 1, 1, "means"),
        (2, 1, 1, "1."),
        (2, 1, 1, "Scope"),
        (3, 1, 1, "Signature"),
        (4, 1, 1, "(a)b"),
    )
    assert ocr.detached_enumerators(whole) == 0
    assert ocr.detached_enumerators(_tsv((1, 1, 1, "(3)"), (2, 1, 1, "4)"), (3, 1, 1, "1.2"))) == 3
    one_column = _tsv(
        (1, 1, 1, "2.10."),
        (1, 1, 1, '"Content"'),
        (1, 1, 1, "means"),
        (1, 1, 2, "2.11."),
        (1, 1, 2, '"Cover"'),
        (1, 1, 2, "means"),
    )
    assert ocr.choose_reading(split, one_column).text == '2.10. "Content" means\n2.11. "Cover" means'
    # A one-column reading that dropped text (as mode 4 does on a crooked page) is not taken.
    lossy = _tsv((1, 1, 1, "2.10."), (1, 1, 1, '"Content"'), (1, 1, 1, "means"))
    assert ocr.choose_reading(split, lossy).text == ocr.parse_tsv(split).text
    assert ocr.choose_reading(split, None).text == ocr.parse_tsv(split).text


def test_line_slope_tells_a_crooked_page_from_a_straight_one():
    head = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"

    def page(rise: int) -> str:  # two lines of four words 600 px apart, the last word ``rise`` px lower
        rows = [
            f"5\t1\t1\t1\t{ln}\t{i}\t{200 + 200 * i}\t{100 * ln + rise * i // 3}\t150\t30\t95\tword"
            for ln in (1, 2)
            for i in range(4)
        ]
        return "\n".join([head, *rows])

    assert ocr.line_slope(page(0)) == 0.0
    assert abs(ocr.line_slope(page(21)) - 21 / 600) < 1e-9  # 2 degrees: not retried in one-column mode
    assert abs(ocr.line_slope(page(21))) > ocr.MAX_RETRY_SLOPE > abs(ocr.line_slope(page(3)))
    assert ocr.line_slope(head) == 0.0


def test_ocr_languages_must_be_a_tesseract_language_list(tmp_path):
    from pipeline.errors import ConfigError

    assert make_settings(tmp_path, ocr_languages="eng+deu").ocr_languages == "eng+deu"
    with pytest.raises(ConfigError, match="ocr_languages"):
        make_settings(tmp_path, ocr_languages="eng; rm -rf /")
    assert "tesseract-ocr-xyz" in ocr.problem("eng+xyz")


def test_a_needs_ocr_document_is_re_read_when_ocr_can_read_it(tmp_path, factory):
    scan = scans.scanned_copy(NDA, tmp_path / "nda-page1.pdf", dpi=150, pages=[0])
    first = ingest_paths(factory, make_settings(tmp_path / "home", ocr="off"), [scan], batch_name="first")
    assert first.files[0].status == "needs_ocr"
    again = ingest_paths(factory, make_settings(tmp_path / "home", ocr="auto", ocr_dpi=150), [scan], batch_name="again")
    [f] = again.files
    assert f.status == "ok" and f.document_id == first.files[0].document_id, f.reason
    assert "re-read: document" in f.reason and f.ocr_pages == 1
    with factory() as s:
        doc = s.get(repo.Document, f.document_id)
        assert doc.status == "ok"
        [page] = s.query(Page).filter(Page.document_id == doc.id).all()
        assert page.text_source == "ocr" and page.has_text
        sentences = repo.sentences_of(s, doc.id)
        assert sentences and all(page.text[x.char_start : x.char_end] == x.text for x in sentences)
        assert repo.counts(s)["ocr_pages"] == 1  # what `contractsum status` shows
    third = ingest_paths(factory, make_settings(tmp_path / "home", ocr="auto", ocr_dpi=150), [scan], batch_name="third")
    assert third.files[0].status == "duplicate"


def test_reports_mark_citations_resting_on_ocr_text_and_flag_low_confidence_pages():
    from pipeline.reports.export import render

    cite = {"sentence_id": "S1", "page": 1, "text": "The Supplier shall deliver.", "char_start": 0, "char_end": 27}
    report = {
        "generated_at": "2026-12-02T00:00:00+00:00",
        "batch": "b",
        "documents": [
            {
                "document_id": 1,
                "source": "scan.pdf",
                "pages": 3,
                "status": "summarized",
                "summary": "s",
                "ocr_pages": 2,
                "low_confidence_pages": [2],
                "clauses": [
                    {
                        "type": "delivery",
                        "finding": "f",
                        "citations": [
                            cite,
                            {**cite, "sentence_id": "S2", "ocr": True, "ocr_confidence": 91.0},
                            {**cite, "sentence_id": "S3", "page": 2, "ocr": True, "ocr_confidence": 42.0},
                        ],
                    }
                ],
            }
        ],
    }
    import csv
    import io

    csv_rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert [r["text_source"] for r in csv_rows] == ["text_layer", "ocr", "ocr_low_confidence"]
    md = render(report, "md")
    assert "p. 1, S1: " in md and "p. 1, S2 (OCR): " in md and "p. 2, S3 (OCR, low confidence): " in md
    assert "**OCR:** 2 of 3 pages read by OCR; low OCR confidence on page(s) 2" in md
    html = render(report, "html")
    assert html.count('class="src src-ocr"') == 1 and html.count('class="src src-ocr_low_confidence"') == 1
    assert "page confidence 42" in html
    assert '"ocr": true' in render(report, "json")
