"""Hostile input: mutated PDFs, odd file names, symlinks out of the inbox. Every file ends in
exactly one state with a reason; nothing crashes the batch."""

from __future__ import annotations

import json
import os
import shutil

from badfiles import inflating_pdf
from conftest import CORPUS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.ingest.ingest import extract

SEEDS = [CORPUS / "commonpaper-mutual-nda-v1.pdf", CORPUS / "cuad-netgear-ingram-distributor-agreement.pdf"]
SEED_BYTES = [p.read_bytes() for p in SEEDS]
STATES = {"ok", "needs_ocr", "failed"}


@st.composite
def mutated_pdf(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEED_BYTES)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "zero", "dup"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "zero":
            n = draw(st.integers(1, 4096))
            data[at : at + n] = bytes(min(n, len(data) - at))
        else:
            n = draw(st.integers(1, 2048))
            data[at:at] = data[at : at + n]
        if not data:
            break
    return bytes(data)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=mutated_pdf())
def test_mutated_pdfs_never_raise_and_always_end_in_one_state(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "mutant.pdf"
    path.write_bytes(data)
    ex = extract(path, max_pages=100)
    assert ex.status in STATES
    assert (ex.status == "ok") == (ex.reason == "")
    for s in ex.sentences:
        assert ex.pages[s.page - 1].text[s.start : s.end] == s.text


def test_odd_file_names_are_ingested_and_reported(tmp_path, db_url):
    from storage.db import make_engine, upgrade

    upgrade(make_engine(db_url))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = [b"caf\xe9 contract.pdf", b"  spaced  name .pdf", ("x" * 240 + ".pdf").encode(), "合同-契約.pdf".encode()]
    for name, src in zip(names, SEEDS * 2, strict=False):
        with open(os.path.join(os.fsencode(inbox), name), "wb") as f:
            f.write(src.read_bytes() + name)  # distinct bytes, so none is a duplicate
    res = CliRunner().invoke(app, ["--database-url", db_url, "ingest", str(inbox), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    docs = json.loads(res.output)["documents"]
    assert len(docs) == len(names) and all(d["status"] == "ok" for d in docs)
    shown = {d["source"] for d in docs}
    assert "caf\ufffd contract.pdf" in shown and "合同-契約.pdf" in shown and "  spaced  name .pdf" in shown


def test_symlinks_that_leave_the_inbox_are_refused(tmp_path):
    inbox, outside = tmp_path / "inbox", tmp_path / "elsewhere"
    inbox.mkdir()
    outside.mkdir()
    secret = outside / "secret.pdf"
    shutil.copy(SEEDS[0], secret)
    shutil.copy(SEEDS[1], inbox / "real.pdf")
    (inbox / "escape.pdf").symlink_to(secret)
    (inbox / "inside-link.pdf").symlink_to(inbox / "real.pdf")
    res = CliRunner().invoke(app, ["ingest", str(inbox), "--json"], catch_exceptions=False)
    docs = {d["source"]: d for d in json.loads(res.output)["documents"]}
    assert res.exit_code == 1
    escape = next(d for name, d in docs.items() if "escape.pdf" in name)
    assert escape["status"] == "failed" and "outside" in escape["reason"]
    # a link that stays inside is fine (and is the same file as real.pdf, so it is taken once)
    inside = [d for n, d in docs.items() if n in ("real.pdf", "inside-link.pdf")]
    assert len(inside) == 1 and inside[0]["status"] == "ok"
    assert not any(d.get("document_id") for n, d in docs.items() if "escape" in n)


def test_decompression_bomb_is_refused_naming_the_cap(tmp_path):
    # A text page whose content stream is ~50 KB on disk and inflates to ~50 MB.
    path = inflating_pdf(tmp_path, 48)
    assert path.stat().st_size < 200_000
    ex = extract(path, max_decompressed_bytes=10_000_000)
    assert ex.status == "failed" and "max_decompressed_bytes" in ex.reason, ex.reason
    assert extract(path, max_decompressed_bytes=60_000_000).status == "ok"  # under a higher cap it reads
