"""Sentences -> consecutive chunks that each fit a token budget.

Tokens are counted with the model's own tokenizer on the text exactly as the prompt shows it:
one ``[S<ordinal>] <text>`` line per sentence, lines joined by ``"\\n"`` (``render_sentences``).
Per-sentence counts only estimate a chunk (BPE counts of a concatenation are not additive), so
every chunk's final text is counted once more, exactly, and that count is what the plan stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tokenizers import Tokenizer

from pipeline.errors import ModelNotFoundError, PromptError

MIN_BUDGET = 32
# Bump when the packing rules change, so plans stored under an old key are recomputed.
PLAN_VERSION = 1


class SentenceLike(Protocol):
    @property
    def ordinal(self) -> int: ...
    @property
    def page(self) -> int: ...
    @property
    def text(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """One chunk: whole sentences ``first_sentence..last_sentence``, or one piece of one sentence."""

    ordinal: int
    first_sentence: int
    last_sentence: int
    first_page: int
    last_page: int
    token_count: int
    piece: tuple[int, int] | None = None
    text: str = ""


def render_line(ordinal: int, text: str) -> str:
    """One sentence (or piece of one) as the prompt shows it."""
    return f"[S{ordinal}] {text}"


def render_sentences(items: Sequence[tuple[int, str]]) -> str:
    """``(ordinal, text)`` pairs as prompt text: ``[S<ordinal>] <text>`` lines joined by newlines."""
    return "\n".join(render_line(ordinal, text) for ordinal, text in items)


class TokenCounter:
    """Counts tokens with a model's own tokenizer (tokenizers library, tokenizer.json; no special tokens added)."""

    def __init__(self, tokenizer_json: Path) -> None:
        data = Path(tokenizer_json).read_bytes()
        self.name: str = hashlib.sha256(data).hexdigest()[:16]
        self._tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        # A tokenizer.json may ship with truncation or padding switched on; either would make
        # counts lie about the text, so both are turned off.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> TokenCounter:
        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise ModelNotFoundError(
                f"{model_dir} has no tokenizer.json",
                hint="point --model at a checkpoint folder that ships a fast tokenizer (tokenizer.json)",
            )
        return cls(path)

    def count(self, text: str) -> int:
        # encode_batch_fast skips offset tracking, which counting does not need (~25% faster).
        return len(self._tokenizer.encode_batch_fast([text], add_special_tokens=False)[0])

    def count_many(self, texts: Sequence[str]) -> list[int]:
        encodings = self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return [len(encoding) for encoding in encodings]


class _Counter(Protocol):
    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


def chunk_budget(*, max_model_len: int, template_tokens: int, max_output_tokens: int, cap: int | None = None) -> int:
    """Tokens of contract text one prompt may hold: context minus template minus reserved output, capped."""
    budget = max_model_len - template_tokens - max_output_tokens
    if cap is not None:
        budget = min(budget, cap)
    if budget < MIN_BUDGET:
        raise PromptError(
            f"only {budget} tokens are left for contract text per prompt (max_model_len {max_model_len}"
            f" - template {template_tokens} - output {max_output_tokens}"
            + (f", cap {cap}" if cap is not None else "")
            + f"); at least {MIN_BUDGET} are needed",
            hint="raise max_model_len, or lower max_output_tokens or chunk_budget",
        )
    return budget


def plan_key(counter_name: str, budget: int) -> str:
    """Short stable identity of a plan's inputs (rules version, tokenizer, budget); at most 64 chars."""
    name = counter_name if len(counter_name) <= 40 else hashlib.sha256(counter_name.encode()).hexdigest()[:16]
    return f"v{PLAN_VERSION}:{name}:{budget}"


def plan_chunks(sentences: Sequence[SentenceLike], *, counter: _Counter, budget: int) -> list[ChunkPlan]:
    """Pack sentences, in order, greedily into chunks of at most ``budget`` tokens.

    A sentence too long for a chunk of its own is cut into consecutive pieces (preferring
    whitespace boundaries) whose character spans tile its text exactly.
    """
    if budget < 1:
        raise PromptError(f"chunk budget must be positive, got {budget}")
    n = len(sentences)
    if n == 0:
        return []
    lines = [render_line(s.ordinal, s.text) for s in sentences]
    # Count each line with its joining newline: with regex pre-tokenizers (GPT-2, Llama 3,
    # Qwen) a pre-token never spans "\n[S", so these sum to a chunk's count exactly or within a
    # token per line; the exact count below settles it either way.
    line_costs = counter.count_many([line + "\n" for line in lines])

    plans: list[ChunkPlan] = []
    i = 0
    while i < n:
        # Estimate: whole lines while their costs fit.
        j, estimate = i + 1, line_costs[i]
        while j < n and estimate + line_costs[j] <= budget:
            estimate += line_costs[j]
            j += 1
        text = "\n".join(lines[i:j])
        tokens = counter.count(text)
        # Back off while the exact count is over budget, dropping enough trailing lines at once
        # to cover the excess ...
        too_far = n + 1  # smallest chunk end known not to fit
        while tokens > budget and j - i > 1:
            too_far, excess = j, tokens - budget
            while j - i > 1 and excess > 0:
                j -= 1
                excess -= line_costs[j]
            text = "\n".join(lines[i:j])
            tokens = counter.count(text)
        if tokens > budget:
            plans.extend(
                _pieces(sentences[i], counter=counter, budget=budget, line_tokens=tokens, first_ordinal=len(plans))
            )
            i += 1
            continue
        # ... then add lines while they plausibly fit (an estimate can be pessimistic, too).
        while j < n and j + 1 < too_far and tokens + line_costs[j] <= budget:
            longer = text + "\n" + lines[j]
            longer_tokens = counter.count(longer)
            if longer_tokens > budget:
                break
            text, tokens, j = longer, longer_tokens, j + 1
        included = sentences[i:j]
        pages = [s.page for s in included]
        plans.append(
            ChunkPlan(
                ordinal=len(plans),
                first_sentence=included[0].ordinal,
                last_sentence=included[-1].ordinal,
                first_page=min(pages),
                last_page=max(pages),
                token_count=tokens,
                text=text,
            )
        )
        i = j
    return plans


def _pieces(
    sentence: SentenceLike, *, counter: _Counter, budget: int, line_tokens: int, first_ordinal: int
) -> list[ChunkPlan]:
    """Cut one over-long sentence into consecutive pieces that each fit, spans tiling its text."""
    text, ordinal = sentence.text, sentence.ordinal
    length = len(text)
    prefix_tokens = counter.count(render_line(ordinal, ""))
    room = max(1, budget - prefix_tokens)
    # Characters per token, first of the whole sentence, then of the piece just cut: it aims
    # each search close to its answer.
    density = length / max(1, line_tokens - prefix_tokens)
    plans: list[ChunkPlan] = []
    a = 0
    while a < length:
        b, tokens = _longest_fitting_end(
            text, a, ordinal=ordinal, counter=counter, budget=budget, guess=a + max(1, int(room * density))
        )
        if b < length:
            # Prefer ending the piece just after whitespace, unless that throws away over half of it.
            for k in range(b - 1, a + (b - a) // 2, -1):
                if text[k].isspace():
                    if k + 1 < b:
                        cut_tokens = counter.count(render_line(ordinal, text[a : k + 1]))
                        # Counts are not guaranteed monotonic in length, so the cut is re-checked.
                        if cut_tokens <= budget:
                            b, tokens = k + 1, cut_tokens
                    break
        plans.append(
            ChunkPlan(
                ordinal=first_ordinal + len(plans),
                first_sentence=ordinal,
                last_sentence=ordinal,
                first_page=sentence.page,
                last_page=sentence.page,
                token_count=tokens,
                piece=(a, b),
                text=render_line(ordinal, text[a:b]),
            )
        )
        density = (b - a) / max(1, tokens - prefix_tokens)
        a = b
    return plans


def _longest_fitting_end(
    text: str, a: int, *, ordinal: int, counter: _Counter, budget: int, guess: int
) -> tuple[int, int]:
    """Largest ``b`` with ``[S<ordinal>] text[a:b]`` within budget, and its token count.

    Steps out from ``guess`` in doubling steps until the answer is bracketed, then bisects. Probes
    stay near one chunk's size, so cutting a very long sentence costs time linear in its length.
    Counts are not strictly monotonic in length, so "largest" is as bisection finds it; every
    returned end is checked to fit.
    """
    length = len(text)

    def fits(b: int) -> int | None:
        tokens = counter.count(render_line(ordinal, text[a:b]))
        return tokens if tokens <= budget else None

    guess = min(max(guess, a + 1), length)
    step = max(1, (guess - a) // 16)
    lo, lo_tokens = a, None  # lo: longest end known to fit (a: none yet)
    tokens = fits(guess)
    if tokens is not None:
        lo, lo_tokens = guess, tokens
        while True:
            if lo == length:
                return lo, tokens
            candidate = min(length, lo + step)
            tokens = fits(candidate)
            if tokens is None:
                hi = candidate
                break
            lo, lo_tokens = candidate, tokens
            step *= 2
    else:
        hi = guess  # hi: shortest end known not to fit
        while hi - step > a:
            tokens = fits(hi - step)
            if tokens is not None:
                lo, lo_tokens = hi - step, tokens
                break
            hi -= step
            step *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        tokens = fits(mid)
        if tokens is None:
            hi = mid
        else:
            lo, lo_tokens = mid, tokens
    if lo_tokens is None:
        raise PromptError(
            f"chunk budget {budget} cannot hold even one character of sentence S{ordinal}",
            hint="raise the chunk budget",
        )
    return lo, lo_tokens
