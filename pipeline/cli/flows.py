"""`contractsum serve` and `contractsum submit`: the Prefect side of the CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from pipeline.cli._common import console, err_console, print_json, settings_from, sources_from

if TYPE_CHECKING:
    from pipeline.batch import ProgressEvent


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("submit")(submit)
    app.command("deploy")(deploy)


def serve(
    ctx: typer.Context,
    limit: int = typer.Option(1, "--limit", min=1, help="Flow runs at once; each runs in its own process with its own engine."),
) -> None:
    """Register the deployments and run their flow runs until stopped (Ctrl-C).

    Deployments: `nightly/nightly` on the nightly_cron schedule in the configured timezone, and
    `summarize-batch/summarize-batch` for `contractsum submit`. Needs a Prefect server:
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

    The same two deployments as `serve` (nightly schedule, summarize-batch), but runs go to
    whichever worker polls the pool. Each node needs this checkout at the same path and its own
    CONTRACTSUM_* settings (one shared PostgreSQL database_url).
    """
    from flows._prefect import apply_prefect_environment

    settings = settings_from(ctx)
    apply_prefect_environment(settings)
    from flows.serve import BATCH_DEPLOYMENT, NIGHTLY_DEPLOYMENT, deploy_to_pool

    deploy_to_pool(settings, pool)
    console.print(f"registered {NIGHTLY_DEPLOYMENT} and {BATCH_DEPLOYMENT} on work pool {pool!r}", highlight=False)
    console.print(f"on each node: prefect worker start --pool {pool} --limit 1", highlight=False)


def submit(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(..., help="Files, folders or glob patterns (.pdf, .txt)."),
    name: str | None = typer.Option(None, "--name", "-n", help="Batch name (default: batch-<timestamp>); reusing one resumes it."),
    wait: bool = typer.Option(False, "--wait", help="Follow the run with a progress bar until it ends; exit 1 if it failed."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    in_process: bool = typer.Option(False, "--in-process", help="Run here even when `serve` is running."),
    playbook: str | None = typer.Option(None, "--playbook", help="Clause playbook: a name or a .toml path (default: settings)."),
) -> None:
    """Create a batch from PATHS and run it; print the flow-run id and its UI URL.

    The run goes to the `summarize-batch` deployment when a Prefect server answers and
    `contractsum serve` is polling it, and runs in this process otherwise (this waits for it).
    Exit 0 when the run completed, 1 when it failed, 2 for usage errors.
    """
    from flows._prefect import apply_prefect_environment
    from pipeline.batch import default_batch_name
    from pipeline.review.playbooks import playbook_for, resolve_playbook_path

    if playbook is not None and playbook.endswith(".toml"):  # the run may execute in another folder
        playbook = str(resolve_playbook_path(playbook).resolve())
    settings = settings_from(ctx, playbook=playbook)
    playbook_for(settings)  # a bad playbook is a usage error here, not a failed run
    apply_prefect_environment(settings)
    from flows.serve import route, run_in_process, submit_to_deployment, watch

    batch = name or default_batch_name()
    # The run may execute in another process and folder: hand it absolute paths.
    absolute = [str(Path(p).expanduser().resolve()) if Path(p).expanduser().exists() else str(Path.cwd() / p) for p in paths]
    where = route()
    bar = _Bar()  # on stderr, so --json output stays clean
    if where.deployment_id is not None and not in_process:
        sub = submit_to_deployment(where.deployment_id, batch, absolute, playbook)
        if not as_json:
            _announce(sub, where.reason)
        if wait:
            with bar:
                sub = watch(sub, bar.update)
    else:
        if not as_json:
            err_console.print(f"running in this process: {'--in-process' if in_process else where.reason}", highlight=False)
        from pipeline.engine.engine import release_shared_engine

        try:
            with bar:
                sub = run_in_process(settings, batch, absolute, bar.event, temporary_server=not where.api_answers)
        finally:
            release_shared_engine()  # vLLM's processes would keep this one from exiting
        if not as_json:
            _announce(sub, "in-process")
    if as_json:
        print_json(sub.as_dict())
    elif sub.state is not None:
        style = "green" if sub.ok else "red"
        console.print(f"[{style}]{sub.state.lower()}[/]" + (f": {sub.message}" if sub.message and not sub.ok else ""), highlight=False)
    raise typer.Exit(0 if sub.ok else 1)


def _announce(sub: Any, how: str) -> None:
    console.print(f"flow run {sub.flow_run_id} ({sub.name}), {how}", highlight=False)
    if sub.url:
        console.print(sub.url, highlight=False, soft_wrap=True)


class _Bar:
    """A progress bar on a terminal; elsewhere one line per change, so logs show the run too."""

    def __init__(self) -> None:
        self.tty = err_console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.fields[state]}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"), console=err_console, transient=True, disable=not self.tty,
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
