"""Map/reduce over a batch's chunks in plain Python: queue, lease, one engine wave at a time,
parse, store. Reruns do only unfinished work; a summary and its last job commit together."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipeline.batch import Chunker, ProgressEvent, queue_document, resolve_batch
from pipeline.errors import EngineError, OutputError, PromptError
from pipeline.ingest.chunking import render_sentences
from pipeline.review.candidates import BM25, candidate_schema, propose, render_item
from pipeline.review.configuration import FIRST_TEMPERATURE, RETRY_TEMPERATURE, ResultConfig
from pipeline.review.playbooks import Playbook, playbook_for
from pipeline.review.prompts import PromptTemplate, Renderer, load_template
from pipeline.review.schema import ContractSummary, OutputLimits, json_schema, parse_output, printable
from pipeline.settings import Settings
from storage import repo
from storage.db import in_transaction
from storage.models import Job

# Tokens held back when packing reduce inputs by estimate; the exact count is checked later.
REDUCE_MARGIN = 32
# Output budget of one candidate-review answer ({"found", "answer", "citations"}), doubled per retry.
CANDIDATE_MAX_TOKENS = 96


@dataclass
class SummarizeReport:
    engine_run_id: int | None = None
    documents: list[int] = field(default_factory=list)
    summarized: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    waves: int = 0
    prompts: int = 0
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    engine_seconds: float = 0.0
    nothing_to_do: bool = False
    playbook: str = ""  # name@version
    config_id: str = ""
    reused: int = 0  # prompts answered from stored completions instead of the engine
    stale_queued: int = 0  # of ``documents``: those that had a result under another configuration
    deferred: int = 0  # documents left for a later run by max_documents

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_out / self.engine_seconds if self.engine_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine_run_id": self.engine_run_id,
            "documents": len(self.documents),
            "summarized": self.summarized,
            "failed": {str(k): v for k, v in self.failed.items()},
            "waves": self.waves,
            "prompts": self.prompts,
            "retries": self.retries,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "seconds": round(self.seconds, 3),
            "output_tokens_per_second": round(self.tokens_per_second, 2),
            "nothing_to_do": self.nothing_to_do,
            "playbook": self.playbook,
            "config_id": self.config_id,
            "reused_prompts": self.reused,
            "stale_queued": self.stale_queued,
            "deferred": self.deferred,
        }


@dataclass
class _Part:
    """One clause type's prompt of a candidate-review job."""

    clause_id: str
    token_ids: list[int]
    allowed: set[int]
    schema: dict[str, Any]
    max_tokens: int


@dataclass
class _Prepared:
    job_id: int
    document_id: int
    token_ids: list[int]
    allowed: set[int]
    schema: dict[str, Any]
    max_tokens: int
    temperature: float
    seed: int
    # Candidate review: the job's prompts, one per clause type with candidates (token_ids unused).
    parts: list[_Part] | None = None
    engine_run_id: int | None = None  # the engine run that answered it (set after the wave)


@dataclass
class _Answer:
    """A prompt's answer taken from stored completions (see configuration.request_key)."""

    text: str
    finish_reason: str | None
    engine_run_id: int | None


def fault_point(settings: Settings, name: str) -> None:
    """Fault injection for the crash tests: die here, hard, when told to (never set in production)."""
    if settings.fault_injection == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def reclaim_dead_leases(s: Session) -> int:
    """Jobs leased by a process of this host that no longer exists go back to the queue now,
    not when their lease expires (a crashed run's rerun should not wait an hour)."""
    import psutil

    host = socket.gethostname()
    freed = 0
    for owner in repo.leased_owners(s):
        name, _, pid = (owner or "").rpartition(":")
        if name == host and pid.isdigit() and int(pid) != os.getpid() and not psutil.pid_exists(int(pid)):
            freed += repo.release_owner(s, owner, error=f"worker {owner} died; re-queued")
    return freed


class Summarizer:
    """One run of the map/reduce loop against one engine."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        *,
        chunker: Chunker,
        owner: str | None = None,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        playbook: Playbook | None = None,
    ) -> None:
        self.factory, self.settings, self.chunker = factory, settings, chunker
        self.owner = owner or default_owner()
        self.on_progress = on_progress
        self.on_wave: Callable[[SummarizeReport], None] | None = None
        self.playbook = playbook_for(settings, playbook)
        # Jobs and summaries are keyed by the configuration; the review key (the prompt version for
        # the default playbook) is kept beside it.
        self.pv = self.playbook.review_key(settings.prompt_version)
        if chunker.review_key and chunker.review_key != self.pv:
            raise PromptError(f"the chunker was planned for {chunker.review_key}, not {self.pv}")
        if chunker.config is None:
            raise PromptError("the chunker carries no configuration")
        self.config = chunker.config
        self.cid = chunker.config.id
        self.map_tpl = load_template(settings.prompts_dir, "summarize", settings.prompt_version, playbook=self.playbook)
        self.reduce_tpl = load_template(settings.prompts_dir, "reduce", settings.prompt_version)
        self.candidates = self.playbook.review_mode == "candidates"
        self.cand_tpl = (
            load_template(settings.prompts_dir, "candidates", settings.prompt_version) if self.candidates else None
        )
        self._retrieval: dict[int, tuple[dict[str, list[int]], dict[int, str]]] = {}
        self.renderer = Renderer(chunker.model_dir)
        self.limits = OutputLimits(
            summary_chars=settings.summary_max_chars,
            finding_chars=settings.finding_max_chars,
            min_clauses=min(settings.min_clauses, len(self.playbook.clauses)),
            max_clauses=settings.max_clauses or len(self.playbook.clauses),
        )
        self.context = chunker.context

    # -- queueing ---------------------------------------------------------------------------
    def queue(
        self,
        *,
        batch: str | None = None,
        document_ids: Sequence[int] | None = None,
        max_documents: int | None = None,
        stale_first: bool = False,
        report: SummarizeReport | None = None,
    ) -> list[int]:
        """Make chunks and map jobs for every document in scope without a result under the current
        configuration; return their ids. ``max_documents`` caps how many: documents already in
        progress under it first, then new ones (no result of this review at all), then stale ones
        (a result under another configuration) — or stale before new with ``stale_first``."""

        def work(s: Session) -> list[int]:
            reclaim_dead_leases(s)
            batch_id = resolve_batch(s, batch)
            docs = repo.documents(s, batch_id=batch_id)
            if document_ids is not None:
                wanted = set(document_ids)
                docs = [d for d in docs if d.id in wanted]
            done = repo.documents_with_results(s, [d.id for d in docs], config_id=self.cid)
            todo = [d for d in docs if d.id not in done]
            ids = [d.id for d in todo]
            stale = repo.documents_with_results(s, ids, review_key=self.pv)  # of this review, another configuration
            started = repo.documents_with_jobs(s, ids, config_id=self.cid, plan=self.chunker.plan)

            def rank(d) -> tuple[int, int]:
                group = 0 if d.id in started else (1 if (d.id in stale) == stale_first else 2)
                return group, d.id

            todo.sort(key=rank)
            if max_documents is not None:
                if report is not None:
                    report.deferred = max(len(todo) - max_documents, 0)
                todo = todo[:max_documents]
            for d in todo:
                queue_document(s, d, self.chunker, batch_id=batch_id)
            if report is not None:
                report.stale_queued = sum(1 for d in todo if d.id in stale)
            return [d.id for d in todo]

        return self._tx(work)

    def has_ready_work(self, doc_ids: Sequence[int]) -> bool:
        if not doc_ids:
            return False

        def work(s: Session) -> int:
            self._plan_reductions(s, doc_ids)
            return repo.ready_count(s, document_ids=doc_ids, plan=self.chunker.plan, config_id=self.cid)

        return self._tx(work) > 0

    # -- the loop ---------------------------------------------------------------------------
    def run(self, engine: Callable[[], Any], doc_ids: Sequence[int], report: SummarizeReport) -> None:
        """Work the queue of ``doc_ids`` to the end. ``engine`` returns the engine (starting it the
        first time) — called only when a wave has a prompt no stored completion answers."""

        def take(s: Session) -> tuple[list[_Prepared], list[tuple[int, str]]]:
            self._plan_reductions(s, doc_ids)
            jobs = repo.lease(
                s,
                owner=self.owner,
                lease_seconds=self.settings.lease_seconds,
                document_ids=doc_ids,
                plan=self.chunker.plan,
                config_id=self.cid,
                count_attempt=True,
                limit=self.settings.max_wave_prompts,
            )
            prepared, rejected = self._prepare(s, jobs)
            for job_id, reason in rejected:
                repo.fail_job(s, job_id, error=reason)
            return prepared, rejected

        while True:
            prepared, rejected = self._tx(take)
            if not prepared:
                if rejected:
                    continue
                return
            self._wave(engine, prepared, report)
            if self.on_wave is not None:  # e.g. the deadline check of pipeline/engine/routing.py
                self.on_wave(report)

    def _wave(self, engine: Callable[[], Any], prepared: list[_Prepared], report: SummarizeReport) -> None:
        from pipeline.engine.engine import Request

        requests: list[Request] = []
        spans: list[tuple[int, int]] = []  # each prepared job's slice of the wave's requests
        for p in prepared:
            start = len(requests)
            for ids, max_tokens, schema in (
                [(x.token_ids, x.max_tokens, x.schema) for x in p.parts]
                if p.parts is not None
                else [(p.token_ids, p.max_tokens, p.schema)]
            ):
                requests.append(
                    Request(
                        prompt_token_ids=ids,
                        max_tokens=max_tokens,
                        json_schema=schema,
                        temperature=p.temperature,
                        seed=p.seed,
                        repetition_penalty=self.settings.repetition_penalty,
                    )
                )
            spans.append((start, len(requests)))
        report.waves += 1
        self._emit(ProgressEvent("wave_start", wave=report.waves, prompts=len(requests)))
        completions: list = []
        if requests:  # a candidate-review job whose chunk holds no candidate needs no prompt
            try:
                completions = self._answers(engine, requests, report)
            except BaseException:  # a dead engine, one refused as not matching, Ctrl-C: the jobs go back
                self._tx(
                    lambda s: repo.release(
                        s, [p.job_id for p in prepared], owner=self.owner, error="engine failed; re-queued"
                    )
                )
                raise
        for p, (start, end) in zip(prepared, spans, strict=True):
            mine = completions[start:end]
            runs = {getattr(c, "engine_run_id", report.engine_run_id) for c in mine}
            p.engine_run_id = runs.pop() if len(runs) == 1 else report.engine_run_id
            try:
                if p.parts is not None:
                    c = _Joined("\n".join(x.text for x in mine))
                    result = self._candidate_result(p, mine)
                else:
                    (c,) = mine
                    result = parse_output(
                        c.text, p.allowed, finish_reason=c.finish_reason, clause_ids=self.playbook.ids
                    )
            except OutputError as exc:
                error, raw = exc.message, printable(c.text)
                final = self._tx(
                    lambda s, p=p, error=error, raw=raw: repo.retry_or_fail(
                        s, p.job_id, error=error, raw=raw, max_attempts=self.settings.max_attempts
                    )
                )
                if not final:
                    report.retries += 1
                continue
            done = self._tx(lambda s, p=p, text=c.text, result=result: self._complete(s, p, text, result, report))
            if done is not None:
                report.summarized.append(done)
                self._emit(ProgressEvent("document_done", document_id=done))
        self._emit(ProgressEvent("wave_end", wave=report.waves, tokens_out=report.tokens_out))

    def _answers(self, engine: Callable[[], Any], requests: list, report: SummarizeReport) -> list:
        """The wave's answers in order: from stored completions where the exact prompt was answered
        before by this model with this sampling, from the engine for the rest (stored for next time)."""
        from pipeline.review.configuration import request_key

        reuse = self.settings.reuse_completions
        keys = [request_key(self.config.engine_identity, r) for r in requests]
        stored = (
            self._tx(
                lambda s: {
                    k: _Answer(c.text, c.finish_reason, c.engine_run_id)
                    for k, c in repo.stored_completions(s, keys).items()
                }
            )
            if reuse
            else {}
        )
        out: list = [stored.get(k) for k in keys]
        missing = [i for i, a in enumerate(out) if a is None]
        report.reused += len(requests) - len(missing)
        if not missing:
            return out
        completions, stats = engine().generate(
            [requests[i] for i in missing],
            on_finished=lambda n, t: self._emit(ProgressEvent("progress", wave=report.waves, done=n, total=t)),
        )
        report.prompts += stats.prompts
        report.tokens_in += stats.tokens_in
        report.tokens_out += stats.tokens_out
        report.engine_seconds += stats.seconds
        rows: dict[str, dict[str, Any]] = {}
        for i, c in zip(missing, completions, strict=True):
            out[i] = c
            rows.setdefault(
                keys[i],
                {
                    "key": keys[i],
                    "text": c.text,
                    "finish_reason": c.finish_reason,
                    "prompt_tokens": c.prompt_tokens,
                    "output_tokens": len(c.token_ids),
                    "engine_run_id": report.engine_run_id,
                },
            )
        if reuse:
            self._tx(lambda s: repo.store_completions(s, list(rows.values())))
        return out

    def _candidate_result(self, p: _Prepared, completions: list) -> ContractSummary:
        """One chunk's candidate-review answers as one result: a clause type is found when the model
        said so, citing the candidates it chose; a clause type it said no to is left out (not found)."""
        from pipeline.review.candidates import parse_candidate
        from pipeline.review.schema import ClauseFinding

        clauses = []
        for part, c in zip(p.parts or [], completions, strict=True):
            answer = parse_candidate(c.text, part.allowed, finish_reason=c.finish_reason)
            if not answer.found:
                continue
            clause = self.playbook.clause(part.clause_id)
            text = "yes" if clause.kind == "yes_no" else _value(answer.answer)
            clauses.append(
                ClauseFinding(
                    type=clause.id,
                    finding=f"{clause.label}: {text or 'found'}"[: self.limits.finding_chars],
                    answer=text if self.playbook.has_answers else None,
                    citations=list(dict.fromkeys(answer.citations)),
                )
            )
        return ContractSummary(summary=_candidate_summary(len(clauses), len(self.playbook.clauses)), clauses=clauses)

    def _complete(
        self, s: Session, p: _Prepared, text: str, result: ContractSummary, report: SummarizeReport
    ) -> int | None:
        """Mark the job done with its result and, if it finishes its document, write the summary —
        one transaction, so a crash leaves either both or neither. Returns a finished document id."""
        job = repo.complete_job(
            s,
            p.job_id,
            owner=self.owner,
            result=result.model_dump(),
            raw_output=printable(text),
            engine_run_id=p.engine_run_id,
        )
        if job is None:
            return None  # our lease expired and someone else took the job: their result wins
        finished = self._maybe_finish_document(s, job, result, report)
        fault_point(self.settings, "before-commit")
        return finished

    def _tx(self, fn):
        return in_transaction(
            self.factory,
            fn,
            retry_seconds=self.settings.db_retry_seconds,
            on_retry=lambda exc, n: self._emit(ProgressEvent("db_retry", attempt=n, error=type(exc).__name__)),
        )

    # -- prompts ----------------------------------------------------------------------------
    def _prepare(self, s: Session, jobs: list[Job]) -> tuple[list[_Prepared], list[tuple[int, str]]]:
        rejected: list[tuple[int, str]] = []
        rendered: list[tuple[Job, PromptTemplate, str, set[int]]] = []
        asked: list[tuple[Job, list[tuple[str, set[int], str]]]] = []  # candidate review: per job, per clause type
        for job in jobs:
            if job.interruptions >= self.settings.max_interruptions:
                rejected.append(
                    (
                        job.id,
                        f"gave up: its engine died or its worker was killed {job.interruptions} times while it ran",
                    )
                )
                continue
            try:
                if job.kind == "map" and self.candidates:
                    asked.append((job, self._candidate_items(s, job)))
                elif job.kind == "map":
                    data, allowed = self._map_data(s, job)
                    rendered.append((job, self.map_tpl, data, allowed))
                else:
                    data, allowed = self._reduce_data(s, job)
                    rendered.append((job, self.reduce_tpl, data, allowed))
            except PromptError as exc:
                rejected.append((job.id, exc.message))
        # One batch encode for the whole wave (the largest cost of preparing it).
        items = [(tpl, data) for _, tpl, data, _ in rendered]
        if asked:
            assert self.cand_tpl is not None  # set whenever the playbook's review mode is candidates
            items += [(self.cand_tpl, d) for _, parts in asked for _, _, d in parts]
        all_ids = self.renderer.token_ids_many(items) if items else []
        out: list[_Prepared] = []
        cand_ids = iter(all_ids[len(rendered) :])
        for job, parts in asked:
            attempt = max(job.attempts, 1)
            prepared_parts = []
            for (clause_id, allowed, _), ids in zip(
                parts, cand_ids, strict=False
            ):  # cand_ids runs on over the later jobs' parts
                clause = self.playbook.clause(clause_id)
                prepared_parts.append(
                    _Part(
                        clause_id=clause_id,
                        token_ids=ids,
                        allowed=allowed,
                        schema=candidate_schema(sorted(allowed), clause),
                        max_tokens=max(16, min(CANDIDATE_MAX_TOKENS * attempt, self.context - len(ids))),
                    )
                )
            out.append(
                _Prepared(
                    job_id=job.id,
                    document_id=job.document_id,
                    token_ids=[],
                    allowed=set(),
                    schema={},
                    max_tokens=0,
                    temperature=FIRST_TEMPERATURE if attempt == 1 else RETRY_TEMPERATURE,
                    seed=self.settings.seed + attempt,
                    parts=prepared_parts,
                )
            )
        for (job, _, _, allowed), ids in zip(rendered, all_ids, strict=False):  # candidate ids follow
            room = self.context - len(ids)
            if room < 16:
                rejected.append((job.id, f"prompt of {len(ids)} tokens leaves no room to answer in {self.context}"))
                continue
            attempt = max(job.attempts, 1)
            growth = self.settings.retry_token_growth ** (attempt - 1)
            out.append(
                _Prepared(
                    job_id=job.id,
                    document_id=job.document_id,
                    token_ids=ids,
                    allowed=allowed,
                    schema=json_schema(allowed, self.limits, self.playbook),
                    max_tokens=min(int(self.settings.max_output_tokens * growth), room),
                    # First try greedy; retries sample a little so they can leave a bad path.
                    temperature=FIRST_TEMPERATURE if attempt == 1 else RETRY_TEMPERATURE,
                    seed=self.settings.seed + attempt,
                )
            )
        return out, rejected

    def _candidate_items(self, s: Session, job: Job) -> list[tuple[str, set[int], str]]:
        """(clause id, candidate ordinals, prompt data) for each clause type retrieval proposes
        candidates for inside this job's chunk. Retrieval runs over the whole document, once."""
        if job.document_id not in self._retrieval:
            rows = repo.sentences_of(s, job.document_id)
            texts = [x.text for x in rows]
            bm25 = BM25(texts)
            proposed = {
                c.id: [
                    rows[i].ordinal
                    for i in propose(c, texts, self.playbook.candidates_k, bm25=bm25, rule_gate=self.playbook.rule_gate)
                ]
                for c in self.playbook.clauses
            }
            if len(self._retrieval) >= 256:
                self._retrieval.clear()
            self._retrieval[job.document_id] = (proposed, {x.ordinal: x.text for x in rows})
        proposed, text_of = self._retrieval[job.document_id]
        chunk = repo.get_chunk(s, job.chunk_id)
        out = []
        for c in self.playbook.clauses:
            mine = [o for o in proposed[c.id] if chunk.first_sentence <= o <= chunk.last_sentence]
            if mine:
                out.append((c.id, set(mine), render_item(c, [(o, text_of[o]) for o in sorted(mine)])))
        return out

    def _map_data(self, s: Session, job: Job) -> tuple[str, set[int]]:
        chunk = repo.get_chunk(s, job.chunk_id)
        sentences = repo.sentence_range(s, job.document_id, chunk.first_sentence, chunk.last_sentence)
        items = [(x.ordinal, x.text) for x in sentences]
        if chunk.piece_start is not None and len(items) == 1:
            o, t = items[0]
            items = [(o, t[chunk.piece_start : chunk.piece_end])]
        return render_sentences(items), {o for o, _ in items}

    def _reduce_inputs(self, s: Session, job: Job) -> list[ContractSummary]:
        below = {
            j.ordinal: j for j in repo.jobs_at_level(s, job.document_id, self.cid, self.chunker.plan, job.level - 1)
        }
        return [ContractSummary.model_validate(below[o].result) for o in (job.inputs or [])]

    def _reduce_data(self, s: Session, job: Job) -> tuple[str, set[int]]:
        parts = self._reduce_inputs(s, job)
        return self.render_findings(s, job.document_id, parts)

    def render_findings(self, s: Session, document_id: int, parts: list[ContractSummary]) -> tuple[str, set[int]]:
        cited: set[int] = set()
        lines: list[str] = []
        for i, part in enumerate(parts, 1):
            lines.append(_part_text(i, part))
            cited |= part.cited_ordinals()
        sentences = repo.sentences_by_ordinal(s, document_id, cited)
        lines.append("Cited sentences:")
        lines.append(render_sentences([(o, sentences[o].text) for o in sorted(sentences)]))
        return "\n".join(lines), set(sentences)

    # -- reduce planning --------------------------------------------------------------------
    def _plan_reductions(self, s: Session, doc_ids: Sequence[int]) -> None:
        """For each document whose top level is complete with > 1 result, queue the next level.
        (A candidate review needs no model to combine chunks: see _maybe_finish_document.)"""
        if self.candidates:
            return
        for doc_id in doc_ids:
            jobs = repo.jobs_for_document(s, doc_id, self.cid, self.chunker.plan)
            if not jobs or any(j.state != "done" for j in jobs):
                continue
            top = max(j.level for j in jobs)
            level = sorted((j for j in jobs if j.level == top), key=lambda j: j.ordinal)
            if len(level) == 1:
                continue
            groups = self._group(s, doc_id, level)
            if len(groups) >= len(level):
                groups = [[j.ordinal for j in level[i : i + 2]] for i in range(0, len(level), 2)]
            repo.enqueue(
                s,
                [
                    {
                        "kind": "reduce",
                        "batch_id": level[0].batch_id,
                        "document_id": doc_id,
                        "plan": self.chunker.plan,
                        "level": top + 1,
                        "ordinal": n,
                        "inputs": group,
                        "prompt_version": self.pv,
                        "config_id": self.cid,
                    }
                    for n, group in enumerate(groups)
                ],
            )

    def _group(self, s: Session, doc_id: int, level: list[Job]) -> list[list[int]]:
        """Pack consecutive results into groups whose reduce prompt fits the context."""
        room = (
            self.context
            - self.settings.max_output_tokens
            - self.renderer.template_tokens(self.reduce_tpl)
            - REDUCE_MARGIN
        )
        counter = self.chunker.counter
        groups: list[list[int]] = [[]]
        used = 0
        for j in level:
            part = ContractSummary.model_validate(j.result)
            sentences = repo.sentences_by_ordinal(s, doc_id, part.cited_ordinals())
            cost = counter.count(_part_text(1, part)) + sum(counter.count(x.text) + 6 for x in sentences.values()) + 8
            if groups[-1] and used + cost > room:
                groups.append([])
                used = 0
            groups[-1].append(j.ordinal)
            used += cost
        return groups

    # -- completion -------------------------------------------------------------------------
    def _maybe_finish_document(
        self, s: Session, job: Job, result: ContractSummary, report: SummarizeReport
    ) -> int | None:
        jobs = repo.jobs_for_document(s, job.document_id, self.cid, self.chunker.plan)
        p_run = job.engine_run_id  # the run that answered the last job (its answer may have been stored earlier)
        if self.candidates:  # every chunk answered: the findings are the union of the chunks'
            if any(j.state != "done" for j in jobs) or repo.summary_for(s, job.document_id, self.cid) is not None:
                return None
            parts = [ContractSummary.model_validate(j.result) for j in sorted(jobs, key=lambda j: j.ordinal)]
            clauses = [c for part in parts for c in part.clauses]
            found = len({c.type for c in clauses})
            result = ContractSummary(
                summary=_candidate_summary(found, len(self.playbook.clauses)), clauses=clauses
            ).merged()
            for c in result.clauses:
                del c.citations[self.limits.max_citations * 2 :]
            store_summary(
                s,
                job.document_id,
                self.config,
                result,
                engine_run_id=p_run,
                chunks=len(jobs),
                playbook=self.playbook,
            )
            return job.document_id
        if job.kind == "map":
            final = sum(1 for j in jobs if j.level == 0) == 1
        else:
            below = sum(1 for j in jobs if j.level == job.level - 1)
            final = len(job.inputs or []) == below
        if not final or repo.summary_for(s, job.document_id, self.cid) is not None:
            return None
        store_summary(
            s,
            job.document_id,
            self.config,
            result,
            engine_run_id=p_run,
            chunks=sum(1 for j in jobs if j.level == 0),
            playbook=self.playbook,
        )
        return job.document_id

    def _emit(self, event: ProgressEvent) -> None:
        if self.on_progress:
            self.on_progress(event)


@dataclass
class _Joined:
    """The raw text kept for a candidate-review job: its prompts' answers, one per line."""

    text: str
    finish_reason: str | None = None


def _value(answer: str | None) -> str | None:
    """A candidate answer's value for a non-yes/no kind; a bare yes/no/true/false is no value."""
    text = (answer or "").strip()
    return None if text.strip(".").casefold() in {"", "yes", "no", "true", "false", "none", "n/a"} else text


def _candidate_summary(found: int, asked: int) -> str:
    return f"Candidate review: {found} of {asked} clause types found."


def _part_text(i: int, part: ContractSummary) -> str:
    lines = [f"Part {i}:", f"summary: {part.summary}"]
    if part.parties:
        lines.append("parties: " + "; ".join(part.parties))
    if part.dates:
        lines.append("dates: " + "; ".join(f"{d.label}: {d.date}" for d in part.dates))
    for c in part.clauses:
        answer = f" (answer: {c.answer})" if c.answer else ""
        lines.append(f"- {c.type}: {c.finding}{answer} [{', '.join(c.citations)}]")
    return "\n".join(lines)


def store_summary(
    s: Session,
    document_id: int,
    config: ResultConfig,
    result: ContractSummary,
    *,
    engine_run_id: int | None,
    chunks: int,
    playbook: Playbook | None = None,
) -> None:
    """Write the summary under ``config`` with its clauses and citations resolved to stored
    sentences: every type the playbook asked is stored, found (finding, answer, citations) or not_found."""
    from pipeline.batch import record_configuration

    record_configuration(s, config)
    sentences = repo.sentences_by_ordinal(s, document_id, result.cited_ordinals())
    missing = result.cited_ordinals() - set(sentences)
    if missing:  # the schema makes this impossible; refuse rather than store a dangling citation
        raise OutputError(f"citations name unknown sentences {sorted(missing)[:5]}", raw=result.model_dump_json())
    clauses = [
        (i, c.type, c.finding, [sentences[int(sid[1:])] for sid in dict.fromkeys(c.citations)])
        for i, c in enumerate(result.clauses)
    ]
    found = {c.type for c in result.clauses}
    asked = playbook.ids if playbook is not None else ()
    repo.add_summary(
        s,
        document_id=document_id,
        prompt_version=config.review_key,
        config_id=config.id,
        engine_run_id=engine_run_id,
        output=result.model_dump(),
        chunks=chunks,
        citations=clauses,
        answers={c.type: c.answer for c in result.clauses},
        not_found=[t for t in asked if t not in found],
        playbook=playbook.name if playbook is not None else None,
        playbook_version=playbook.version if playbook is not None else None,
    )


def summarize(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    batch: str | None = None,
    document_ids: Sequence[int] | None = None,
    engine=None,
    owner: str | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    engine_factory: Callable[[], Any] | None = None,
    playbook: Playbook | str | None = None,
    max_documents: int | None = None,
    stale_first: bool = False,
    tier: str = "primary",
    on_wave: Callable[[SummarizeReport], None] | None = None,
) -> SummarizeReport:
    """Give every document (of ``batch``) a result under the current configuration (settings,
    ``playbook`` — default ``settings.playbook`` —, ``tier``) where it has none. Starts an engine
    only when a prompt is not answered by a stored completion, and only one; ``engine`` lets a
    caller (tests, benchmarks, flows) share one. ``max_documents``/``stale_first``: see
    :meth:`Summarizer.queue`. ``on_wave`` is called with the report after each engine wave."""
    t0 = time.perf_counter()
    model_dir = settings.resolved_model()
    book = playbook_for(settings, playbook)
    chunker = Chunker.for_model(settings, model_dir, book, tier=tier)
    runner = Summarizer(factory, settings, chunker=chunker, owner=owner, on_progress=on_progress, playbook=book)
    runner.on_wave = on_wave
    report = SummarizeReport(playbook=f"{book.name}@{book.version}", config_id=runner.cid)
    report.documents = runner.queue(
        batch=batch, document_ids=document_ids, max_documents=max_documents, stale_first=stale_first, report=report
    )
    if not runner.has_ready_work(report.documents):
        report.nothing_to_do = True
        _collect_failures(factory, runner.cid, chunker, report)
        report.seconds = time.perf_counter() - t0
        return report
    live: dict[str, Any] = {"engine": engine, "own": False}

    def start() -> Any:
        """The engine, started (and its run recorded) on the first prompt that needs it."""
        if live["engine"] is None:
            from pipeline.engine.engine import Engine

            live["engine"] = engine_factory() if engine_factory else Engine.from_settings(settings, model_dir)
            live["own"] = True
        eng = live["engine"]
        if report.engine_run_id is None:
            check_engine(eng, runner.config, model_dir)
            report.engine_run_id = runner._tx(
                lambda s: (
                    repo.start_engine_run(
                        s,
                        model=str(model_dir),
                        dtype=eng.config.dtype,
                        quantization=eng.config.quantization,
                        tensor_parallel_size=eng.config.tensor_parallel_size,
                        vllm_version=eng.vllm_version,
                        prompt_version=settings.prompt_version,
                        device=eng.device,
                        config=eng.snapshot(),
                        config_id=runner.cid,
                        tier=tier,
                    ).id
                )
            )
        return eng

    status, error = "finished", None
    try:
        runner.run(start, report.documents, report)
    except EngineError as exc:
        status, error = "failed", str(exc)
        raise
    except BaseException as exc:  # Ctrl-C, a database that stayed away: the run did not finish
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        try:
            if report.engine_run_id is not None:
                runner._tx(
                    lambda s: repo.finish_engine_run(
                        s,
                        report.engine_run_id,
                        status=status,
                        error=error,
                        prompts=report.prompts,
                        tokens_in=report.tokens_in,
                        tokens_out=report.tokens_out,
                        wall_seconds=report.engine_seconds,
                    )
                )
        finally:
            if live["own"]:
                live["engine"].shutdown()
    _collect_failures(factory, runner.cid, chunker, report)
    report.seconds = time.perf_counter() - t0
    return report


def check_engine(engine: Any, config: ResultConfig, model_dir: Path) -> None:
    """Refuse an engine that would make results the configuration does not describe (a shared
    engine on another checkpoint, dtype or quantization)."""
    from pipeline.errors import ConfigError
    from pipeline.review.configuration import model_fingerprint

    ran = engine.config
    problems = [
        f"{name} {got!r} (configuration: {want!r})"
        for name, got, want in (
            ("dtype", ran.dtype, config.dtype),
            ("quantization", ran.quantization, config.quantization),
            ("kv_cache_dtype", ran.kv_cache_dtype, config.kv_cache_dtype),
        )
        if got != want
    ]
    if Path(str(engine.model)).resolve() != Path(model_dir).resolve():
        if model_fingerprint(Path(str(engine.model))) != config.model_fingerprint:
            problems.append(f"model {engine.model} (configuration: {model_dir})")
    if problems:
        raise ConfigError("the engine does not match the configuration: " + "; ".join(problems))


def _collect_failures(factory, config_id: str, chunker: Chunker, report: SummarizeReport) -> None:
    with factory() as s:
        for doc_id in report.documents:
            for j in repo.jobs_for_document(s, doc_id, config_id, chunker.plan):
                if j.state == "failed":
                    report.failed[doc_id] = j.last_error or "failed"
                    break
