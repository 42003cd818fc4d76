"""Render a batch report as JSON, CSV, Markdown or HTML.

Pure functions over an already-built report dict (``storage`` builds it); nothing here touches the
database. Contract text is hostile input: every renderer escapes it for its own format.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pipeline.errors import ConfigError, ContractsumError
from pipeline.reports.markdown import md_inline

Format = Literal["json", "csv", "md", "html"]
FORMATS: tuple[Format, ...] = ("json", "csv", "md", "html")

__all__ = [
    "FORMATS",
    "CitationReport",
    "ClauseReport",
    "DateReport",
    "DocumentReport",
    "Format",
    "Provenance",
    "Report",
    "render",
    "write_report",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CitationReport(_Strict):
    """One sentence quoted as evidence: ``S<ordinal>``, its 1-based page and its span on that page."""

    sentence_id: str = Field(pattern=r"^S[1-9][0-9]*$")
    page: int = Field(ge=1)
    text: str
    char_start: int = Field(ge=0)
    char_end: int = Field(ge=0)
    # True when the cited page's text was read by OCR (not the PDF's text layer), with that page's confidence.
    ocr: bool = False
    ocr_confidence: float | None = None


ClauseStatus = Literal["found", "not_found", "not_asked"]


class ClauseReport(_Strict):
    """One clause type of the playbook: ``found`` (finding, answer, citations), ``not_found`` (asked,
    absent) or ``not_asked`` (the summary's playbook did not ask it) — never confused with each other."""

    type: str = Field(min_length=1)
    status: ClauseStatus = "found"
    finding: str = ""
    answer: str | None = None
    citations: list[CitationReport] = Field(default_factory=list)


class DateReport(_Strict):
    # Kept as written by the model: contracts state dates the model may not normalise to ISO.
    label: str
    date: str


class Provenance(_Strict):
    """What produced a summary, so a number in a report can be traced to an engine configuration."""

    model: str
    dtype: str
    quantization: str | None = None
    tensor_parallel_size: int = Field(ge=1)
    vllm_version: str
    prompt_version: str
    engine_run_id: int | None = None


class ConfigurationReport(_Strict):
    """The configuration behind a shown result and whether it is the current one (``stale``: made
    under another configuration, shown because the current one has no result for this document)."""

    id: str
    label: str
    tier: str = "primary"
    state: Literal["current", "fallback", "stale"]
    current: str | None = None


class SelectionReport(_Strict):
    current: str | None = None
    current_label: str | None = None
    selected: str | None = None
    selected_label: str | None = None
    as_of: str | None = None


class ResultCounts(_Strict):
    current: int = Field(default=0, ge=0)
    fallback: int = Field(default=0, ge=0)
    stale: int = Field(default=0, ge=0)
    by_tier: dict[str, int] = Field(default_factory=dict)


class DocumentReport(_Strict):
    # document_id, sha256 and pages are optional because a file that failed ingest has no document row.
    document_id: int | None
    source: str
    sha256: str | None = None
    pages: int | None = Field(default=None, ge=0)
    status: Literal["summarized", "pending", "failed", "needs_ocr"]
    error: str | None = None
    summary: str | None = None
    parties: list[str] = Field(default_factory=list)
    dates: list[DateReport] = Field(default_factory=list)
    clauses: list[ClauseReport] = Field(default_factory=list)
    playbook: str | None = None
    playbook_version: str | None = None
    provenance: Provenance | None = None
    configuration: ConfigurationReport | None = None
    ocr_pages: int = Field(default=0, ge=0)  # pages whose text OCR read
    low_confidence_pages: list[int] = Field(default_factory=list)  # OCR pages below ocr_low_confidence


class Report(_Strict):
    generated_at: AwareDatetime
    batch: str | None = None
    configuration: SelectionReport | None = None
    results: ResultCounts = Field(default_factory=ResultCounts)
    documents: list[DocumentReport]


_EXTENSIONS: dict[str, str] = {"json": "json", "csv": "csv", "md": "md", "html": "html"}


def render(report: Report | dict, fmt: Format) -> str:
    """The report in ``fmt``; a dict is validated first (unknown keys are an error)."""
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        raise ConfigError(f"unknown export format {fmt!r}", hint=f"choose one of {', '.join(FORMATS)}")
    validated = report if isinstance(report, Report) else Report.model_validate(report)
    return renderer(validated)


def write_report(report: Report | dict, fmt: Format, out: Path) -> Path:
    """Write the rendered report to ``out`` (or ``out/report.<ext>`` if ``out`` is a directory).

    The file is replaced atomically and is readable by its owner only: it quotes contract text.
    """
    text = render(report, fmt)
    out = Path(out)
    target = out / f"report.{_EXTENSIONS[fmt]}" if out.is_dir() else out
    return write_private(target, lambda tmp: write_synced(tmp, text), what="report")


def write_private(target: Path, fill: Callable[[Path], object], *, what: str) -> Path:
    """Create or replace ``target`` atomically, readable by its owner only (reports quote contract
    text): ``fill`` writes the content to a temporary file beside it, which then takes its place."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0o600; same directory so os.replace is a rename, never a copy.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            fill(Path(tmp))
            os.chmod(tmp, 0o600)  # whatever ``fill`` did to the file's mode
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ContractsumError(
            f"cannot write {what} to {target}: {exc.strerror or exc}", hint="choose a writable output path"
        ) from exc
    return target


def write_synced(path: Path, text: str) -> None:
    """``text`` as UTF-8, flushed to disk. Bytes, not text mode: CSV's \\r\\n must not be translated."""
    with open(path, "wb") as fh:
        fh.write(text.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


# --- json -----------------------------------------------------------------------------------


def _render_json(report: Report) -> str:
    return json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


# --- csv ------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "document_id",
    "source",
    "status",
    "clause_type",
    "clause_status",
    "finding",
    "answer",
    "sentence_id",
    "page",
    "text",
    "text_source",
    "config_id",
    "config_state",
)

# Spreadsheets evaluate cells starting with these as formulas (OWASP "CSV injection");
# tab and CR are on OWASP's list too because some importers strip them before evaluating.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str | int | None) -> str | int:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def _render_csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_MINIMAL)
    writer.writerow(CSV_COLUMNS)
    for doc in report.documents:
        head = (doc.document_id, doc.source, doc.status)
        conf = (doc.configuration.id, doc.configuration.state) if doc.configuration else (None, None)
        if not doc.clauses:
            writer.writerow([_cell(v) for v in (*head, None, None, None, None, None, None, None, None, *conf)])
        for clause in doc.clauses:
            # A clause without evidence (or not found, or not asked) still gets a row, so no
            # finding is silently dropped and "not found" never reads as "not asked".
            facts = (clause.type, clause.status, clause.finding, clause.answer)
            if not clause.citations:
                writer.writerow([_cell(v) for v in (*head, *facts, None, None, None, None, *conf)])
            for cit in clause.citations:
                row = (*head, *facts, cit.sentence_id, cit.page, cit.text, _text_source(doc, cit), *conf)
                writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def _text_source(doc: DocumentReport, cit: CitationReport) -> str:
    """ "text_layer", "ocr" or "ocr_low_confidence": what a citation's quote rests on."""
    if not cit.ocr:
        return "text_layer"
    return "ocr_low_confidence" if cit.page in doc.low_confidence_pages else "ocr"


def _ocr_fact(doc: DocumentReport) -> str | None:
    if not doc.ocr_pages:
        return None
    text = f"{doc.ocr_pages} of {doc.pages} pages read by OCR" if doc.pages else f"{doc.ocr_pages} pages read by OCR"
    if doc.low_confidence_pages:
        text += "; low OCR confidence on page(s) " + ", ".join(str(n) for n in doc.low_confidence_pages)
    return text


# --- markdown -------------------------------------------------------------------------------

_SOURCE_MARK = {"text_layer": "", "ocr": " (OCR)", "ocr_low_confidence": " (OCR, low confidence)"}


def _md_citation(doc: DocumentReport, cit: CitationReport) -> str:
    mark = _SOURCE_MARK[_text_source(doc, cit)]
    return f"p. {cit.page}, {cit.sentence_id}{mark}: \u201c{md_inline(cit.text)}\u201d"


_STATUS_TEXT = {"found": "found", "not_found": "not found", "not_asked": "not asked"}


def _provenance_line(p: Provenance) -> str:
    return (
        f"model {p.model}, dtype {p.dtype}, quantization {p.quantization or 'none'}, "
        f"TP {p.tensor_parallel_size}, vLLM {p.vllm_version}, prompt {p.prompt_version}"
        + (f", engine run {p.engine_run_id}" if p.engine_run_id is not None else "")
    )


def configuration_fact(c: ConfigurationReport) -> str:
    """One line on the configuration behind a result; a stale one says so first."""
    if c.state == "current":
        return f"{c.id} (current): {c.label}"
    if c.state == "fallback":
        return f"made by the fallback tier {c.tier} ({c.id}), not the primary: {c.label}"
    now = f"; current is {c.current}" if c.current else "; the current configuration is unknown here"
    return f"STALE \u2014 made under {c.id}, not the current configuration{now}: {c.label}"


def _selection_line(report: Report) -> str | None:
    sel = report.configuration
    if sel is None:
        return None
    if sel.selected:
        head = f"Showing configuration {sel.selected} ({sel.selected_label or 'unknown'})"
    elif sel.as_of:
        head = f"Showing the newest results as of {sel.as_of}"
    else:
        head = f"Current configuration {sel.current or 'unknown'} ({sel.current_label or 'no result yet'})"
    fallback = f", {report.results.fallback} by a fallback tier" if report.results.fallback else ""
    tiers = (
        " By tier: " + ", ".join(f"{t} {n}" for t, n in sorted(report.results.by_tier.items())) + "."
        if len(report.results.by_tier) > 1
        else ""
    )
    return f"{head}: {report.results.current} result(s) current{fallback}, {report.results.stale} stale.{tiers}"


def _render_md(report: Report) -> str:
    title = "Contract report" + (f" \u2014 {md_inline(report.batch)}" if report.batch else "")
    lines = [f"# {title}", "", f"Generated {report.generated_at.isoformat()}.", ""]
    if line := _selection_line(report):
        lines += [md_inline(line), ""]
    for doc in report.documents:
        lines += [f"## {md_inline(doc.source)} \u2014 {doc.status}", ""]
        facts = []
        if doc.document_id is not None:
            facts.append(f"- **Document:** {doc.document_id}")
        if doc.pages is not None:
            facts.append(f"- **Pages:** {doc.pages}")
        if doc.sha256:
            facts.append(f"- **SHA-256:** {md_inline(doc.sha256)}")
        if doc.error:
            facts.append(f"- **Error:** {md_inline(doc.error)}")
        if ocr := _ocr_fact(doc):
            facts.append(f"- **OCR:** {md_inline(ocr)}")
        if doc.parties:
            facts.append(f"- **Parties:** {'; '.join(md_inline(p) for p in doc.parties)}")
        if doc.dates:
            facts.append("- **Dates:** " + "; ".join(f"{md_inline(d.label)}: {md_inline(d.date)}" for d in doc.dates))
        if doc.playbook:
            facts.append(f"- **Playbook:** {md_inline(doc.playbook)} {md_inline(doc.playbook_version or '')}".rstrip())
        if doc.configuration:
            facts.append(f"- **Configuration:** {md_inline(configuration_fact(doc.configuration))}")
        if doc.provenance:
            facts.append(f"- **Provenance:** {md_inline(_provenance_line(doc.provenance))}")
        lines += [*facts, ""]
        if doc.summary:
            lines += ["**Summary:** " + md_inline(doc.summary), ""]
        if doc.clauses:
            lines += ["| Clause | Finding | Evidence |", "|---|---|---|"]
            for clause in doc.clauses:
                if clause.status != "found":
                    lines.append(f"| {md_inline(clause.type)} | *{_STATUS_TEXT[clause.status]}* | \u2014 |")
                    continue
                evidence = "<br>".join(_md_citation(doc, c) for c in clause.citations) or "(no citation)"
                finding = md_inline(clause.finding) + (
                    f" (answer: {md_inline(clause.answer)})" if clause.answer else ""
                )
                lines.append(f"| {md_inline(clause.type)} | {finding} | {evidence} |")
            lines.append("")
    return "\n".join(lines)


# --- html -----------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.5rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
nav ol{padding-left:1.4rem}.meta{color:#555;font-size:.9rem}
.status{display:inline-block;padding:0 .5rem;border-radius:.6rem;font-size:.8rem;vertical-align:middle;background:#eee}
.status-summarized{background:#dff3e3}.status-failed{background:#fbe0e0}.status-needs_ocr,.status-pending{background:#fff3cd}
.error{background:#fbe0e0;padding:.5rem .8rem;border-radius:.3rem}.summary{white-space:pre-line}
table{border-collapse:collapse;width:100%;margin:.8rem 0}th,td{border:1px solid #ddd;padding:.35rem .55rem;text-align:left;vertical-align:top}
th{background:#f5f5f5}ul.cites{margin:0;padding-left:1rem}.cite-ref{font-family:ui-monospace,monospace;color:#555;white-space:nowrap}
blockquote{margin:.2rem 0 .5rem;padding-left:.6rem;border-left:3px solid #ccc;color:#333}
.src{display:inline-block;padding:0 .4rem;border-radius:.5rem;font-size:.75rem;background:#e8eefc}.src-ocr_low_confidence{background:#fbe0e0}
.ocr-note{background:#e8eefc;padding:.4rem .8rem;border-radius:.3rem}
.config-stale{background:#fff3cd;padding:.4rem .8rem;border-radius:.3rem}
dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:0 1rem;font-size:.9rem}dl.prov dt{color:#555}
""".strip()


def _h(value: object) -> str:
    return html.escape(str(value), quote=True)


def _html_source(doc: DocumentReport, cit: CitationReport) -> str:
    source = _text_source(doc, cit)
    if source == "text_layer":
        return ""
    label = "OCR, low confidence" if source == "ocr_low_confidence" else "OCR"
    title = "quoted from text read by OCR"
    if cit.ocr_confidence is not None:
        title += f" (page confidence {cit.ocr_confidence:.0f})"
    return f' <span class="src src-{_h(source)}" title="{_h(title)}">{_h(label)}</span>'


def _html_document(index: int, doc: DocumentReport) -> list[str]:
    out = [
        f'<section id="doc-{index}">',
        f'<h2>{_h(doc.source)} <span class="status status-{_h(doc.status)}">{_h(doc.status)}</span></h2>',
    ]
    meta = []
    if doc.document_id is not None:
        meta.append(f"document {_h(doc.document_id)}")
    if doc.pages is not None:
        meta.append(f"{_h(doc.pages)} pages")
    if doc.sha256:
        meta.append(f"sha256 <code>{_h(doc.sha256)}</code>")
    if meta:
        out.append(f'<p class="meta">{" · ".join(meta)}</p>')
    if doc.error:
        out.append(f'<p class="error"><strong>Error:</strong> {_h(doc.error)}</p>')
    if ocr := _ocr_fact(doc):
        out.append(f'<p class="ocr-note"><strong>OCR:</strong> {_h(ocr)}</p>')
    if doc.configuration:
        out.append(
            f'<p class="config config-{_h(doc.configuration.state)}"><strong>Configuration:</strong> '
            f"{_h(configuration_fact(doc.configuration))}</p>"
        )
    if doc.summary:
        out += ["<h3>Summary</h3>", f'<p class="summary">{_h(doc.summary)}</p>']
    if doc.parties:
        out += ["<h3>Parties</h3>", "<ul>", *(f"<li>{_h(p)}</li>" for p in doc.parties), "</ul>"]
    if doc.dates:
        out += ["<h3>Dates</h3>", "<ul>"]
        out += [f"<li>{_h(d.label)}: <time>{_h(d.date)}</time></li>" for d in doc.dates]
        out.append("</ul>")
    if doc.clauses:
        out += ["<h3>Clauses</h3>", "<table>", "<tr><th>Clause</th><th>Finding</th><th>Evidence</th></tr>"]
        for clause in doc.clauses:
            if clause.status != "found":
                out.append(
                    f'<tr class="clause-{_h(clause.status)}"><td>{_h(clause.type)}</td>'
                    f"<td><em>{_h(_STATUS_TEXT[clause.status])}</em></td><td>\u2014</td></tr>"
                )
                continue
            cites = [
                f'<li><span class="cite-ref">p. {_h(c.page)}, {_h(c.sentence_id)}</span>{_html_source(doc, c)}'
                f"<blockquote>{_h(c.text)}</blockquote></li>"
                for c in clause.citations
            ]
            evidence = f'<ul class="cites">{"".join(cites)}</ul>' if cites else "<em>no citation</em>"
            answer = f' <span class="answer">(answer: {_h(clause.answer)})</span>' if clause.answer else ""
            out.append(
                f'<tr class="clause-found"><td>{_h(clause.type)}</td><td>{_h(clause.finding)}{answer}</td><td>{evidence}</td></tr>'
            )
        out.append("</table>")
    if doc.provenance:
        p = doc.provenance
        rows = [
            ("Model", p.model),
            ("dtype", p.dtype),
            ("Quantization", p.quantization or "none"),
            ("Tensor parallel", p.tensor_parallel_size),
            ("vLLM", p.vllm_version),
            ("Prompt version", p.prompt_version),
        ]
        if doc.playbook:
            rows.append(("Playbook", f"{doc.playbook} {doc.playbook_version or ''}".strip()))
        if p.engine_run_id is not None:
            rows.append(("Engine run", p.engine_run_id))
        out += ["<h3>Provenance</h3>", '<dl class="prov">']
        out += [f"<dt>{_h(k)}</dt><dd>{_h(v)}</dd>" for k, v in rows]
        out.append("</dl>")
    out.append("</section>")
    return out


def _render_html(report: Report) -> str:
    title = "Contract report" + (f" \u2014 {report.batch}" if report.batch else "")
    generated = report.generated_at.isoformat()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        # Belt and braces: even if something slipped past escaping, the page may load nothing and run nothing.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_h(title)}</h1>",
        f'<p class="meta">Generated <time datetime="{_h(generated)}">{_h(generated)}</time> · '
        f"{len(report.documents)} document(s)</p>",
        *([f'<p class="meta">{_h(line)}</p>'] if (line := _selection_line(report)) else []),
        "<nav><h2>Contents</h2><ol>",
    ]
    for i, doc in enumerate(report.documents, start=1):
        parts.append(f'<li><a href="#doc-{i}">{_h(doc.source)}</a> <span class="meta">({_h(doc.status)})</span></li>')
    parts.append("</ol></nav>")
    for i, doc in enumerate(report.documents, start=1):
        parts += _html_document(i, doc)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


_RENDERERS = {"json": _render_json, "csv": _render_csv, "md": _render_md, "html": _render_html}
