"""Chunking against a real byte-level BPE tokenizer trained on the sample corpus."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from pipeline.errors import ModelNotFoundError, PromptError
from pipeline.ingest.chunking import (
    ChunkPlan,
    TokenCounter,
    chunk_budget,
    plan_chunks,
    plan_key,
    render_line,
    render_sentences,
)
from pipeline.settings import REPO_ROOT

CONTRACTS = REPO_ROOT / "examples" / "reference"


@dataclass(frozen=True)
class Sentence:
    ordinal: int
    page: int
    text: str


def corpus_files() -> list[Path]:
    return sorted(CONTRACTS.glob("*.txt"))


def page_aligned_contracts() -> list[Path]:
    """``ID.txt`` files (pages separated by form feeds); ``ID.source.txt`` is not page-aligned."""
    return [p for p in corpus_files() if not p.name.endswith(".source.txt")]


def naive_sentences(path: Path) -> list[Sentence]:
    """Pages by form feed, sentences by ". " -- enough for chunking tests; ingest does it properly."""
    sentences: list[Sentence] = []
    for page_number, page in enumerate(path.read_text(encoding="utf-8").split("\f"), start=1):
        for text in re.split(r"(?<=\.) ", " ".join(page.split())):
            if text:
                sentences.append(Sentence(len(sentences) + 1, page_number, text))
    return sentences


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    files = corpus_files()
    assert files, f"no sample contracts under {CONTRACTS}"
    tokenizer.train([str(p) for p in files], trainer)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def counter(tokenizer_json: Path) -> TokenCounter:
    return TokenCounter(tokenizer_json)


class EncodedChars:
    """A real counter that also tallies how many characters it was asked to encode."""

    def __init__(self, inner: TokenCounter) -> None:
        self.inner = inner
        self.chars = 0

    def count(self, text: str) -> int:
        self.chars += len(text)
        return self.inner.count(text)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        self.chars += sum(map(len, texts))
        return self.inner.count_many(texts)


def assert_valid_plan(
    sentences: Sequence[Sentence], plans: list[ChunkPlan], counter: TokenCounter, budget: int
) -> None:
    """Every chunk fits and is counted exactly; chunks cover the sentences once, in order."""
    assert [p.ordinal for p in plans] == list(range(len(plans)))
    for plan in plans:
        assert counter.count(plan.text) == plan.token_count <= budget, plan
    index = 0  # next sentence to be covered
    k = 0
    while k < len(plans):
        plan = plans[k]
        sentence = sentences[index]
        assert plan.first_sentence == sentence.ordinal, (plan, sentence)
        if plan.piece is None:
            included = list(sentences[index : index + plan.last_sentence - plan.first_sentence + 1])
            assert included[-1].ordinal == plan.last_sentence
            assert plan.text == render_sentences([(s.ordinal, s.text) for s in included])
            assert (plan.first_page, plan.last_page) == (min(s.page for s in included), max(s.page for s in included))
            index += len(included)
            k += 1
            continue
        # A run of pieces of one sentence: consecutive, tiling its text exactly.
        assert counter.count(render_line(sentence.ordinal, sentence.text)) > budget, "split although it fits"
        end = 0
        while k < len(plans) and plans[k].piece is not None and plans[k].first_sentence == sentence.ordinal:
            piece = plans[k]
            a, b = piece.piece
            assert a == end and b > a, piece
            assert piece.last_sentence == sentence.ordinal
            assert piece.text == render_line(sentence.ordinal, sentence.text[a:b])
            if b < len(sentence.text) and not sentence.text[b - 1].isspace():
                # Not cut back to whitespace, so cut as late as fits.
                assert counter.count(render_line(sentence.ordinal, sentence.text[a : b + 1])) > budget, piece
            assert (piece.first_page, piece.last_page) == (sentence.page, sentence.page)
            end = b
            k += 1
        assert end == len(sentence.text), "pieces do not reach the end of the sentence"
        index += 1
    assert index == len(sentences), "sentences left uncovered"


# Unicode (no surrogates, which are not encodable text), including newlines and control characters.
_any_text = st.text(max_size=120)
_words = st.lists(
    st.sampled_from(["the", "Party", "shall", "indemnify", "§", "12.3", "(a)", "Käufer", "—"]), max_size=150
)
_long_no_space = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.,-", min_size=200, max_size=4000)
_long_unicode = st.text(
    alphabet=st.characters(min_codepoint=0x370, max_codepoint=0x1FAFF, exclude_categories=("Cs", "Zs", "Cc")),
    min_size=100,
    max_size=1500,
)


@st.composite
def documents(draw: st.DrawFn) -> list[Sentence]:
    texts = draw(st.lists(st.one_of(_any_text, _words.map(" ".join), _long_no_space, _long_unicode), max_size=30))
    first = draw(st.sampled_from([1, 1, 99_990]))  # big ordinals make longer markers
    page = 1
    sentences = []
    for offset, text in enumerate(texts):
        page += draw(st.integers(0, 1))
        # Trailing whitespace merges with the joining newline differently alone and in a chunk,
        # which is where per-line estimates undercount.
        text += draw(st.sampled_from(["", "", "", " ", "  ", " \t", "\r"]))
        sentences.append(Sentence(first + offset, page, text))
    return sentences


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sentences=documents(), budget=st.integers(32, 400))
def test_any_document_chunks_within_budget_covering_every_sentence_once_in_order(
    counter: TokenCounter, sentences: list[Sentence], budget: int
) -> None:
    plans = plan_chunks(sentences, counter=counter, budget=budget)
    assert_valid_plan(sentences, plans, counter, budget)


def test_empty_document_has_no_chunks(counter: TokenCounter) -> None:
    assert plan_chunks([], counter=counter, budget=100) == []


def test_render_sentences_is_marked_lines_joined_by_newlines() -> None:
    assert render_sentences([(1, "First."), (2, "Second one.")]) == "[S1] First.\n[S2] Second one."
    assert render_sentences([]) == ""


def test_over_long_sentence_is_cut_into_consecutive_pieces_between_whole_neighbours(counter: TokenCounter) -> None:
    long_text = "x7" * 2000
    sentences = [Sentence(1, 1, "Short one."), Sentence(2, 2, long_text), Sentence(3, 3, "Another short one.")]
    plans = plan_chunks(sentences, counter=counter, budget=40)
    assert_valid_plan(sentences, plans, counter, budget=40)
    pieces = [p for p in plans if p.piece is not None]
    assert len(pieces) > 1
    assert "".join(long_text[a:b] for a, b in (p.piece for p in pieces)) == long_text
    assert plans[0].piece is None and plans[0].last_sentence == 1
    assert plans[-1].piece is None and plans[-1].first_sentence == 3


def test_chunk_whose_line_estimates_undercount_is_backed_off_to_fit(counter: TokenCounter) -> None:
    # Alone, "  \n" is one pre-token; inside a chunk "  " and "\n" are two. So these lines cost
    # more together than their one-by-one counts say.
    sentences = [Sentence(n, 1, f"The Party shall pay fee {n}.  ") for n in range(1, 41)]
    estimate = sum(counter.count_many([render_line(s.ordinal, s.text) + "\n" for s in sentences]))
    exact = counter.count(render_sentences([(s.ordinal, s.text) for s in sentences]))
    assert exact > estimate, "the tokenizer no longer shows the undercount this test needs"
    probe = EncodedChars(counter)
    plans = plan_chunks(sentences, counter=probe, budget=estimate)
    assert_valid_plan(sentences, plans, counter, budget=estimate)
    assert len(plans) == 2
    # Backing off drops as many lines as the excess needs at once, rather than re-adding them.
    rendered = render_sentences([(s.ordinal, s.text) for s in sentences])
    assert probe.chars < 6 * len(rendered), probe.chars / len(rendered)
    following = sentences[plans[1].first_sentence - 1]
    assert counter.count(plans[0].text + "\n" + render_line(following.ordinal, following.text)) > estimate


def test_pieces_of_a_worded_sentence_end_at_whitespace(counter: TokenCounter) -> None:
    text = " ".join(f"clause{n} applies" for n in range(400))
    sentence = Sentence(5, 1, text)
    plans = plan_chunks([sentence], counter=counter, budget=64)
    assert len(plans) > 2
    assert_valid_plan([sentence], plans, counter, budget=64)
    for plan in plans[:-1]:
        assert plan.piece is not None
        assert text[plan.piece[1] - 1].isspace(), plan


def test_cutting_a_very_long_sentence_costs_time_linear_in_its_length(counter: TokenCounter) -> None:
    text = "".join(chr(ord("a") + (i * 7919) % 26) for i in range(100_000))
    probe = EncodedChars(counter)
    plans = plan_chunks([Sentence(1, 1, text)], counter=probe, budget=256)
    assert len(plans) > 50
    # Re-encoding the rest of the sentence per piece would be ~len(plans)/2 times the text.
    assert probe.chars < 15 * len(text), probe.chars / len(text)


def test_every_corpus_contract_chunks_under_512_tokens_and_long_ones_into_several(counter: TokenCounter) -> None:
    contracts = page_aligned_contracts()
    assert contracts
    long_ones = 0
    for path in contracts:
        sentences = naive_sentences(path)
        assert sentences, path
        probe = EncodedChars(counter)
        plans = plan_chunks(sentences, counter=probe, budget=512)
        assert_valid_plan(sentences, plans, counter, budget=512)
        rendered = render_sentences([(s.ordinal, s.text) for s in sentences])
        if counter.count(rendered) > 512:
            long_ones += 1
            assert len(plans) > 1, path
        # Each sentence is counted once, each chunk about once more: nothing quadratic.
        assert probe.chars < 3 * len(rendered), (path, probe.chars / len(rendered))
        assert plans[-1].last_page == sentences[-1].page
    assert long_ones >= 5


def test_corpus_chunks_close_only_when_the_next_sentence_would_overflow(counter: TokenCounter) -> None:
    checked = 0
    for path in page_aligned_contracts():
        sentences = {s.ordinal: s for s in naive_sentences(path)}
        plans = plan_chunks(list(sentences.values()), counter=counter, budget=512)
        for plan, following in zip(plans, plans[1:], strict=False):
            if plan.piece is None and following.piece is None:
                nxt = sentences[following.first_sentence]
                assert counter.count(plan.text + "\n" + render_line(nxt.ordinal, nxt.text)) > 512, plan
                checked += 1
    assert checked > 20


def test_counter_counts_without_special_tokens_and_batch_agrees(counter: TokenCounter) -> None:
    texts = ["[S1] The Supplier shall indemnify the Customer.", "", "Käufer — § 12.3 (a)", "x" * 5000]
    assert counter.count_many(texts) == [counter.count(t) for t in texts]
    assert counter.count("") == 0


def test_counter_ignores_truncation_and_padding_saved_in_tokenizer_json(tokenizer_json: Path, tmp_path: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.enable_truncation(max_length=8)
    tokenizer.enable_padding(length=64)
    (tmp_path / "tokenizer.json").write_text(tokenizer.to_str(), encoding="utf-8")
    configured = TokenCounter.from_model_dir(tmp_path)
    text = "The Supplier shall indemnify the Customer against all losses arising from any breach."
    assert configured.count(text) == TokenCounter(tokenizer_json).count(text) > 8
    assert configured.count_many([text, "a"])[1] < 8


def test_counter_name_is_a_hash_of_the_tokenizer_file(tokenizer_json: Path) -> None:
    expected = hashlib.sha256(tokenizer_json.read_bytes()).hexdigest()[:16]
    assert TokenCounter(tokenizer_json).name == TokenCounter.from_model_dir(tokenizer_json.parent).name == expected


def test_model_dir_without_tokenizer_json_is_a_model_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="tokenizer.json"):
        TokenCounter.from_model_dir(tmp_path)


def test_chunk_budget_is_context_minus_template_minus_output_capped() -> None:
    assert chunk_budget(max_model_len=4096, template_tokens=500, max_output_tokens=1024) == 2572
    assert chunk_budget(max_model_len=4096, template_tokens=500, max_output_tokens=1024, cap=2000) == 2000
    assert chunk_budget(max_model_len=4096, template_tokens=500, max_output_tokens=1024, cap=9000) == 2572
    assert chunk_budget(max_model_len=1056, template_tokens=0, max_output_tokens=1024) == 32


def test_chunk_budget_under_32_tokens_is_a_prompt_error_naming_the_numbers() -> None:
    with pytest.raises(PromptError, match=r"only 31 tokens.*max_model_len 1055.*output 1024"):
        chunk_budget(max_model_len=1055, template_tokens=0, max_output_tokens=1024)
    with pytest.raises(PromptError, match="cap 16"):
        chunk_budget(max_model_len=4096, template_tokens=100, max_output_tokens=100, cap=16)


def test_plan_key_is_stable_short_and_tells_budgets_and_tokenizers_apart() -> None:
    key = plan_key("0123456789abcdef", 512)
    assert key == plan_key("0123456789abcdef", 512)
    assert len(key) <= 64
    assert key != plan_key("0123456789abcdef", 513)
    assert key != plan_key("fedcba9876543210", 512)
    long_name = "tokenizer-" + "z" * 200
    assert len(plan_key(long_name, 512)) <= 64
    assert plan_key(long_name, 512) != plan_key(long_name + "y", 512)


_CHUNKER_PROBE = """
import json, sys
from pathlib import Path
from pipeline.batch import Chunker
from pipeline.settings import load_settings
settings, _ = load_settings({"home": sys.argv[1], "max_model_len": 4096}, environ={})
chunker = Chunker.for_model(settings, Path(sys.argv[2]))
print(json.dumps({"budget": chunker.budget, "transformers": "transformers" in sys.modules}))
"""


def test_the_chunker_counts_the_chat_template_once_then_starts_without_transformers(tiny_model, tmp_path):
    import json
    import shutil
    import subprocess
    import sys

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    home = tmp_path / "home"

    def probe() -> dict:
        out = subprocess.run(
            [sys.executable, "-c", _CHUNKER_PROBE, str(home), str(model)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = probe(), probe()
    assert first["transformers"] and not second["transformers"]  # counted once, then remembered
    assert first["budget"] == second["budget"]
    # A changed chat template is a different count: the cache must not answer for it.
    config_path = model / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = config["chat_template"].replace("{{- bos_token }}", "{{- bos_token }}You are careful. ")
    config_path.write_text(json.dumps(config))
    third = probe()
    assert third["transformers"] and third["budget"] < first["budget"]
