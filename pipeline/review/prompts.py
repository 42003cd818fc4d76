"""Prompt templates from ``prompts/``: loaded, validated, rendered through the model's chat template."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from pipeline.errors import PromptError, read_toml

Kind = Literal["summarize", "reduce", "candidates"]


class PromptTemplate(BaseModel):
    """A versioned template file; the placeholder appears once, after the fixed instruction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    kind: Kind
    placeholder: str
    system: str
    user: str
    # The slot the playbook's clause list fills (pipeline.review.playbooks.Playbook.clause_block);
    # it sits in the fixed instruction, before the data, so every prompt of a playbook shares one prefix.
    clauses_placeholder: str | None = None

    @model_validator(mode="after")
    def _check(self) -> PromptTemplate:
        if self.user.count(self.placeholder) != 1:
            raise ValueError(f"user text must contain {self.placeholder} exactly once")
        if self.placeholder in self.system:
            raise ValueError("the system text must not contain the placeholder")
        head = self.user.split(self.placeholder)[0]
        if len(head.strip()) < 40:
            raise ValueError("the fixed instruction must come before the placeholder (prefix caching)")
        if self.clauses_placeholder is not None and head.count(self.clauses_placeholder) != 1:
            raise ValueError(
                f"user text must contain {self.clauses_placeholder} exactly once, before {self.placeholder}"
            )
        return self

    def with_clauses(self, block: str) -> PromptTemplate:
        """This template with the playbook's clause instruction in its slot (no slot: unchanged)."""
        if self.clauses_placeholder is None:
            return self
        return self.model_copy(
            update={"user": self.user.replace(self.clauses_placeholder, block), "clauses_placeholder": None}
        )

    def messages(self, data: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user.replace(self.placeholder, defuse_fences(data))},
        ]


_FENCE = re.compile(r"<\s*(/?)\s*(contract|findings)\s*>", re.IGNORECASE)


def defuse_fences(data: str) -> str:
    """Contract text cannot close the data fence: its own fence-like tags lose their brackets.
    (Only the prompt's view changes; stored sentences stay verbatim.)"""
    return _FENCE.sub(lambda m: f"({m.group(1)}{m.group(2)})", data)


def load_template(prompts_dir: Path, kind: Kind, version: str, *, playbook=None) -> PromptTemplate:
    """The template ``prompts_dir/kind/version.toml``; a clause slot is filled from ``playbook``
    (default: the shipped ``default`` playbook, which renders prompt v1 as it always was)."""
    tpl = _load_template_file(prompts_dir, kind, version)
    if tpl.clauses_placeholder is None:
        return tpl
    if playbook is None:
        from pipeline.review.playbooks import DEFAULT_PLAYBOOK, load_playbook

        playbook = load_playbook(DEFAULT_PLAYBOOK, prompts_dir=prompts_dir)
    return tpl.with_clauses(playbook.clause_block())


def _load_template_file(prompts_dir: Path, kind: Kind, version: str) -> PromptTemplate:
    path = prompts_dir / kind / f"{version}.toml"
    raw = read_toml(path, what="prompt template", error=PromptError, hint="check prompt_version / prompts_dir")
    try:
        tpl = PromptTemplate.model_validate(raw)
    except ValidationError as exc:
        raise PromptError(f"prompt template {path} is invalid: {exc.errors()[0]['msg']}") from None
    if tpl.kind != kind or tpl.version != version:
        raise PromptError(f"prompt template {path} says kind={tpl.kind} version={tpl.version}")
    return tpl


@lru_cache(maxsize=8)
def _hf_tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@dataclass
class Renderer:
    """Turns messages into the exact token ids the engine will see."""

    model_dir: Path

    @property
    def tokenizer(self):
        return _hf_tokenizer(str(self.model_dir))

    def text(self, template: PromptTemplate, data: str) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(template.messages(data), tokenize=False, add_generation_prompt=True)
        msgs = template.messages(data)
        return f"{msgs[0]['content']}\n\n{msgs[1]['content']}\n\n"

    def token_ids(self, template: PromptTemplate, data: str) -> list[int]:
        return self.token_ids_many([(template, data)])[0]

    def token_ids_many(self, items: Sequence[tuple[PromptTemplate, str]]) -> list[list[int]]:
        """The ids of several prompts at once: one call into the Rust tokenizer, which encodes a
        batch on all cores and, with ``encode_batch_fast``, skips the character offsets nobody reads."""
        # The chat template already carries BOS where the model wants it.
        texts = [self.text(template, data) for template, data in items]
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:  # the Rust tokenizer directly: same ids, without the Python wrapper's cost
            encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
            return [e.ids for e in encode(texts, add_special_tokens=False)]
        return [list(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]

    def template_tokens(self, template: PromptTemplate) -> int:
        """Tokens the template costs around the data (what the chunk budget must leave room for)."""
        return len(self.token_ids(template, ""))


# Files that decide how a chat template renders and tokenizes.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "special_tokens_map.json",
)


def template_tokens_cached(model_dir: Path, template: PromptTemplate, cache_file: Path | None) -> int:
    """``Renderer(model_dir).template_tokens(template)``, remembered in ``cache_file``.

    Counting needs the chat template rendered exactly as the engine will render it, which takes
    ``transformers`` (~4 s and ~340 MiB to import): too much for every ``ingest``. The count is
    kept per (tokenizer files, template) digest, so a changed tokenizer or template is counted anew.
    """
    import hashlib
    import json
    import os

    digest = hashlib.sha256(template.model_dump_json().encode())
    for name in _TOKENIZER_FILES:
        path = Path(model_dir) / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-") + b"\0")
    key = digest.hexdigest()
    known: dict[str, int] = {}
    if cache_file is not None:
        try:
            loaded = json.loads(cache_file.read_text())
            known = {k: v for k, v in loaded.items() if isinstance(v, int)} if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            known = {}  # missing or damaged: count again
        if key in known:
            return known[key]
    count = Renderer(model_dir).template_tokens(template)
    if cache_file is not None:
        known[key] = count
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}")
            tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
            os.replace(tmp, cache_file)
        except OSError:
            pass  # a read-only home only costs the recount next time
    return count


def model_context(model_dir: Path) -> int | None:
    """The model's own context limit from config.json, if it states one."""
    import json

    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


def effective_context(max_model_len: int, model_dir: Path) -> int:
    limit = model_context(model_dir)
    return min(max_model_len, limit) if limit else max_model_len
