"""One end-to-end run with a real model (SmolLM2-135M-Instruct) on one short contract: the
citations it chooses are real sentences on real pages. Slow on CPU, so only one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import CORPUS

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """One home with SmolLM2 built (dequantized once) for this module's tests, and a CLI runner."""
    import os

    env_home = tmp_path_factory.mktemp("smollm2") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACTSUM_")}
    env.update(
        CONTRACTSUM_HOME=str(env_home),
        CONTRACTSUM_REPETITION_PENALTY="1.1",
        CONTRACTSUM_CPU_KVCACHE_SPACE_GIB="2",
        # at least one clause, so there are citations to check; which sentences it cites is the model's choice
        CONTRACTSUM_MIN_CLAUSES="1",
    )
    cli = [sys.executable, "-m", "pipeline.cli.main"]

    def run(*args: str, timeout: int = 900, extra: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*cli, *args], env={**env, **(extra or {})}, capture_output=True, text=True, timeout=timeout
        )

    built = run("demo-model", "smollm2", "--json")
    assert built.returncode == 0, built.stderr
    return env_home, run


def test_smollm2_summarizes_the_nda_with_citations_that_resolve_to_its_pages(tmp_path, manifest, smollm2):
    _, run = smollm2
    nda = CORPUS / "commonpaper-mutual-nda-v1.pdf"
    assert run("ingest", str(nda), "--batch", "e2e").returncode == 0
    summarized = run("summarize", "--batch", "e2e", "--json")
    assert summarized.returncode == 0, summarized.stderr[-3000:]
    out = tmp_path / "report.json"
    assert run("export", "--batch", "e2e", "--format", "json", "--out", str(out)).returncode == 0
    report = json.loads(out.read_text())
    (doc,) = report["documents"]
    assert doc["status"] == "summarized" and doc["source"] == nda.name and doc["summary"].strip()
    assert doc["provenance"]["model"].endswith("smollm2-135m-instruct")

    from pipeline.ingest.ingest import extract

    pages = {p.number: p.text for p in extract(nda).pages}
    sentences = {f"S{s.ordinal}": s for s in extract(nda).sentences}
    citations = [c for cl in doc["clauses"] for c in cl["citations"]]
    print(
        f"SmolLM2: {len(doc['clauses'])} clauses, {len(citations)} citations:",
        [(cl["type"], [c["sentence_id"] for c in cl["citations"]]) for cl in doc["clauses"]],
    )
    # A real model may find no clause in a given run; then this check has nothing to prove.
    assert citations, "SmolLM2 cited nothing; the grounding check needs at least one citation"
    for c in citations:
        s = sentences[c["sentence_id"]]
        assert c["page"] == s.page and c["text"] == s.text
        assert pages[c["page"]][c["char_start"] : c["char_end"]] == c["text"]


def test_smollm2_eval_cuad_cites_sentences_verbatim_on_their_pages(smollm2):
    """`eval cuad` with a real model on two shipped CUAD contracts: it cites, and every cited
    sentence is a stored sentence, verbatim, on the page the matrix names."""
    from conftest import REPO
    from test_eval_cuad import assert_matrix_citations_are_stored_sentences

    from pipeline.reports.portfolio import build_matrix
    from pipeline.review.playbooks import load_playbook
    from storage.db import open_database

    home, run = smollm2
    # Short findings and a few types per answer keep SmolLM2's answers inside the token budget on CPU.
    done = run(
        "eval",
        "cuad",
        str(REPO / "examples" / "cuad"),
        "--limit",
        "2",
        "--json",
        timeout=1500,
        extra={"CONTRACTSUM_FINDING_MAX_CHARS": "80", "CONTRACTSUM_MAX_CLAUSES": "8"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["contracts"] == 2 and result["model"] == "smollm2-135m-instruct" and len(result["categories"]) == 41
    print("SmolLM2 on 2 CUAD contracts: micro", result["micro"], "baseline micro", result["baseline"]["micro"])
    factory = open_database(f"sqlite:///{home / 'contractsum.db'}")
    with factory() as s:
        m = build_matrix(s, batch=result["batch"], playbook=load_playbook("cuad"))
    assert len(m.rows) == 2
    cited = assert_matrix_citations_are_stored_sentences(factory, m)
    assert cited > 0, "SmolLM2 cited nothing; the grounding check needs at least one citation"
