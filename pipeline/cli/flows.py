"""`contractsum serve` and `contractsum submit`: the Prefect side of the CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from pipeline.cli._common import console, err_console, print_json, settings_from, sources_from
from pipeline.errors import ConfigError, ContractsumError, PromptError

if TYPE_CHECKING:
    from pipeline.batch import ProgressEvent


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("submit")(submit)
    app.command("deploy")(deploy)


def serve(
    ctx: typer.Context,
    limit: int = typer.Option(
        1, "--limit", min=1, help="Flow runs at once; each runs in its own process with its own engine."
    ),
) -> None:
    """Register the deployments and run their flow runs until stopped (Ctrl-C).

    Deployments: `nightly/nightly` on the nightly_cron schedule in the configured timezone,
    `summarize-batch/summarize-batch` for `contractsum submit`, and `summarize-tier/<tier>` per
    fallback tier (the hand-over; use --limit 2 or more so it can run beside the batch that hands
    over, or serve it on another machine). Needs a Prefect server:
    `prefect server start`, with PREFECT_API_URL=http://127.0.0.1:4200/api here.
    """
    from flows._prefect import apply_prefect_environment, settings_environment

    settings = settings_from(ctx)
    apply_prefect_environment(settings)
    # Runs execute in child processes that build their own settings: hand them this command's flags.
    os.environ.update(settings_environment(settings, sources_from(ctx)))
    from flows.serve import serve_deployments

    serve_deployments(settings, limit=limit)


def deploy(
    ctx: typer.Context,
    pool: str = typer.Option(..., "--pool", help="Process work pool to register on (created if missing)."),
) -> None:
    """Register the deployments on a work pool, for `prefect worker start --pool POOL` on each GPU node.

    The same deployments as `serve` (nightly schedule, summarize-batch), but runs go to whichever
    worker polls the pool; each fallback tier's hand-over deployment goes to that tier's own
    work_pool. Each node needs this checkout at the same path and its own
    CONTRACTSUM_* settings (one shared PostgreSQL database_url).
    """
    from flows._prefect import apply_prefect_environment

    settings = settings_from(ctx)
    apply_prefect_environment(settings)
    from flows.handover import deployment_name
    from flows.serve import BATCH_DEPLOYMENT, NIGHTLY_DEPLOYMENT, deploy_to_pool
    from pipeline.engine.tiers import tiers_of

    deploy_to_pool(settings, pool)
    console.print(f"registered {NIGHTLY_DEPLOYMENT} and {BATCH_DEPLOYMENT} on work pool {pool!r}", highlight=False)
    console.print(f"on each node: prefect worker start --pool {pool} --limit 1", highlight=False)
    for t in tiers_of(settings):
        if not t.is_primary:
            console.print(
                f"tier {t.name}: registered {deployment_name(t)} on work pool {t.work_pool!r} "
                f"(its nodes: prefect worker start --pool {t.work_pool} --limit 1)",
                highlight=False,
            )


def submit(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(..., help="Files, folders or glob patterns (.pdf, .txt)."),
    name: str | None = typer.Option(
        None, "--name", "-n", help="Batch name (default: batch-<timestamp>); reusing one resumes it."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Follow the run with a progress bar until it ends, then exit with its code."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    in_process: bool = typer.Option(False, "--in-process", help="Run here even when `serve` is running."),
    playbook: str | None = typer.Option(
        None, "--playbook", help="Clause playbook: a name or a .toml path (default: settings)."
    ),
    strict: bool | None = typer.Option(
        None, "--strict/--no-strict", help="Failed documents fail the run (default: the strict_batches setting)."
    ),
    compare_with: str | None = typer.Option(
        None,
        "--compare-with",
        help="After the run, compare its results with this configuration's (id or prefix) as a report artifact.",
    ),
    tier: str | None = typer.Option(
        None, "--tier", help="Run the batch on this engine tier from the start (default: primary, then fallbacks)."
    ),
    deadline: str | None = typer.Option(
        None,
        "--deadline",
        help="HH:MM (next such time in the timezone setting) or an ISO date-time: work the first tier "
        "cannot finish by then goes to the next tier.",
    ),
) -> None:
    """Create a batch from PATHS and run it; print the flow-run id, and its UI URL where a
    Prefect server answers.

    The run goes to the `summarize-batch` deployment when a Prefect server answers and
    `contractsum serve` is polling it, and runs in this process otherwise (this waits for it).

    Exit codes: 0 every document summarized (or submitted without --wait); 3 the run completed
    but some documents failed (unreadable, needs OCR, output never validated; listed); 1 the run
    failed (engine, database, settings; or failed documents with --strict); 2 usage errors.
    """
    from flows._prefect import apply_prefect_environment
    from pipeline.batch import default_batch_name
    from pipeline.review.playbooks import playbook_for, resolve_playbook_path

    try:  # a bad playbook is a usage error here (exit 2), not a failed run
        if playbook is not None and playbook.endswith(".toml"):  # the run may execute in another folder
            playbook = str(resolve_playbook_path(playbook).resolve())
        settings = settings_from(ctx, playbook=playbook, strict_batches=strict)
        playbook_for(settings)
    except PromptError as exc:
        raise ConfigError(exc.message, hint=exc.hint) from None
    from pipeline.engine.tiers import parse_deadline
    from pipeline.engine.tiers import tier as tier_named

    if tier is not None:
        tier_named(settings, tier)  # unknown: a usage error naming the configured tiers
    # HH:MM means the next such time from now, not from whenever the run starts: send the moment.
    when = parse_deadline(deadline, settings.timezone).isoformat() if deadline is not None else None
    apply_prefect_environment(settings)
    from flows.serve import route, run_in_process, submit_to_deployment, watch

    batch = name or default_batch_name()
    # The run may execute in another process and folder: hand it absolute paths.
    absolute = [
        str(Path(p).expanduser().resolve()) if Path(p).expanduser().exists() else str(Path.cwd() / p) for p in paths
    ]
    where = route()
    bar = _Bar()  # on stderr, so --json output stays clean
    timing = None
    if where.deployment_id is not None and not in_process:
        sub = submit_to_deployment(
            where.deployment_id,
            batch,
            absolute,
            playbook,
            strict=strict,
            compare_with=compare_with,
            tier=tier,
            deadline=when,
        )
        if not as_json:
            _announce(sub, where.reason)
        if wait:
            with bar:
                sub = watch(sub, bar.update)
    else:
        if not as_json:
            err_console.print(
                f"running in this process: {'--in-process' if in_process else where.reason}", highlight=False
            )
        from pipeline.engine.engine import release_shared_engine

        try:
            with bar:
                sub = run_in_process(
                    settings,
                    batch,
                    absolute,
                    bar.event,
                    temporary_server=not where.api_answers,
                    compare_with=compare_with,
                    tier=tier,
                    deadline=when,
                )
        finally:
            release_shared_engine()  # vLLM's processes would keep this one from exiting
        timing = _timing(settings, sub)
        if not as_json:
            _announce(sub, "in-process")
    if as_json:
        print_json({**sub.as_dict(), "timing": timing})
    elif sub.state is not None:
        _print_outcome(sub)
        if timing is not None:
            console.print(timing_line(timing), highlight=False, soft_wrap=True)
    raise typer.Exit(sub.exit_code)


def _print_outcome(sub: Any) -> None:
    from flows.serve import EXIT_DOCUMENTS_FAILED, EXIT_SUMMARIZED

    if sub.exit_code == EXIT_SUMMARIZED:
        console.print(f"[green]{sub.state.lower()}[/]", highlight=False)
    elif sub.exit_code == EXIT_DOCUMENTS_FAILED:
        console.print(f"[yellow]completed with {sub.failed_documents} failed document(s)[/]", highlight=False)
        failures = sub.outcome["failures"] if sub.outcome is not None else None
        if failures is None:  # a served run: its state message lists them
            console.print(f"  {sub.message}", highlight=False, soft_wrap=True)
        for f in failures or []:
            console.print(f"  {f['source']}: {f['status']} — {f['reason']}", highlight=False, soft_wrap=True)
    else:
        console.print(
            f"[red]{sub.state.lower()}[/]" + (f": {sub.message}" if sub.message else ""),
            highlight=False,
            soft_wrap=True,
        )


def _timing(settings: Any, sub: Any) -> dict[str, Any] | None:
    """The run's numbers from storage (batch documents, the engine run's record) and Prefect's
    record of the flow run (wall time)."""
    from pipeline.cli._common import open_db
    from pipeline.reports.report import run_timing

    if sub.outcome is None:  # the run failed: its state message is what matters
        return None
    try:
        timing = run_timing(open_db(settings), batch=sub.batch, engine_run_id=sub.outcome["engine_run_id"])
    except ContractsumError:  # the database is gone: the run's own state says so
        return None
    return {**timing, "wall_seconds": round(sub.wall_seconds, 1) if sub.wall_seconds is not None else None}


def timing_line(t: dict[str, Any]) -> str:
    """contracts, pages, prompts, output tokens/s, wall time — what a vLLM user looks for."""
    run = t["engine_run"]
    engine = (
        f"{run['prompts']} prompts, {run['output_tokens_per_second']:.1f} output tokens/s "
        f"({run['tokens_out']:,} tokens in {run['wall_seconds']:.1f} s of generation)"
        if run
        else "no engine work (nothing left to summarize)"
    )
    wall = t["wall_seconds"]
    took = (
        f"{int(wall // 60)} min {wall % 60:.0f} s"
        if wall is not None and wall >= 60
        else f"{wall:.1f} s"
        if wall is not None
        else "?"
    )
    return f"timing: {t['contracts']} contracts, {t['pages']} pages, {engine}; wall {took}"


def _announce(sub: Any, how: str) -> None:
    console.print(f"flow run {sub.flow_run_id} ({sub.name}), {how}", highlight=False, soft_wrap=True)
    if sub.url:  # only where that server answers now
        console.print(sub.url, highlight=False, soft_wrap=True)
    elif sub.browse:
        console.print(sub.browse, highlight=False, soft_wrap=True)


class _Bar:
    """A progress bar on a terminal; elsewhere one line per change, so logs show the run too."""

    def __init__(self) -> None:
        self.tty = err_console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.fields[state]}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=err_console,
            transient=True,
            disable=not self.tty,
        )
        self.task: TaskID | None = None
        self.last_line = ""

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        self.task = self.progress.add_task("", total=100, state="submitted")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, state: str, percent: float | None, text: str | None) -> None:
        assert self.task is not None, "update() outside the with block"
        self.progress.update(self.task, completed=percent or 0, description=text or "", state=state)
        if not self.tty:
            line = f"{state} {percent or 0:.0f}% {text or ''}".rstrip()
            if line != self.last_line:
                err_console.print(line, highlight=False)
                self.last_line = line

    def event(self, ev: ProgressEvent) -> None:
        """In-process: the batch flow's progress events."""
        if ev.kind in ("progress", "finished", "document_done"):
            self.update("Running", ev.percent, ev.describe())
