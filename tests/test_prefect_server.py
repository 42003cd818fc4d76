"""The whole operating story for real: `prefect server start`, `contractsum serve`, then
`contractsum submit --wait`, checked through the Prefect API and in the Prefect UI with Chromium.

One module fixture pays for the server start and the one engine start (inside the served run's
process), and both tests read what that one run left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import psutil
import pytest
from conftest import CORPUS, REPO, start_session, stop_session

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
NDA = CORPUS / "commonpaper-mutual-nda-v1.pdf"
BATCH = "served-nda"
SCREENSHOTS = REPO / "test-output"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1400,1000",
    # The UI is a single-page app: let its API calls and rendering finish before the dump.
    "--virtual-time-budget=20000",
]


@dataclass
class Served:
    api: str
    ui: str
    home: Path
    submit: subprocess.CompletedProcess
    logs: Path
    server_home: Path
    temporary: subprocess.CompletedProcess  # in-process, before any server ran: Prefect's temporary one
    in_process: subprocess.CompletedProcess  # in-process with the server up
    in_process_url_status: int | None  # what its printed URL answered right after it was printed
    unserved: subprocess.CompletedProcess  # submit while the server answers but nothing serves
    failed: subprocess.CompletedProcess  # submit --wait of a batch whose served run fails
    empty: Path
    listening: dict[str, list[tuple[str, int]]]  # listening sockets of each process tree


def _listening(proc: subprocess.Popen) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of the process and its descendants."""
    root = psutil.Process(proc.pid)
    found = []
    for p in [root, *root.children(recursive=True)]:
        try:
            conns = p.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found += [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(what: str, check: Callable[[], bool], timeout: float, procs: list[subprocess.Popen], logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                pytest.fail(
                    f"{' '.join(map(str, p.args[:3]))} exited ({p.returncode}) while waiting for {what}; logs in {logs}"
                )
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; logs in {logs}")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("served")
    port = _free_port()
    api, ui = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONTRACTSUM_", "PREFECT_"))}
    base.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
        VLLM_NO_USAGE_STATS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    server_env = {
        **base,
        "PREFECT_HOME": str(root / "server-prefect"),
        "PREFECT_SERVER_UI_API_URL": api,
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
    }
    client_env = {
        **base,
        "PREFECT_API_URL": api,
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",  # serve notices the submitted run within 2 s
        "CONTRACTSUM_HOME": str(root / "home"),
        "CONTRACTSUM_MODEL": str(tiny_model),
        "CONTRACTSUM_DTYPE": "float32",
        "CONTRACTSUM_CPU_KVCACHE_SPACE_GIB": "2",
        "CONTRACTSUM_MIN_CLAUSES": "2",
        "CONTRACTSUM_SUMMARY_MAX_CHARS": "60",
        "CONTRACTSUM_FINDING_MAX_CHARS": "40",
        "CONTRACTSUM_MAX_OUTPUT_TOKENS": "512",
        "CONTRACTSUM_TIMEZONE": "Europe/Berlin",
        "CONTRACTSUM_NIGHTLY_CRON": "15 3 * * *",
    }
    unreadable = root / "empty.txt"  # a batch that needs no engine: its one file fails to read
    unreadable.write_bytes(b"")
    # Before any server runs: the run goes through Prefect's temporary server, gone when the
    # command ends, into the database the server below will use.
    temporary = subprocess.run(
        [str(BIN / "contractsum"), "submit", str(unreadable), "--name", "temporary-run"],
        env={
            **{k: v for k, v in client_env.items() if k != "PREFECT_API_URL"},
            "PREFECT_HOME": server_env["PREFECT_HOME"],
            "CONTRACTSUM_HOME": str(root / "home-temporary"),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    (root / "temporary.log").write_text(temporary.stdout + "\n--- stderr ---\n" + temporary.stderr)
    server = start_session(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        server_env,
        root / "server.log",
    )
    procs = [server]
    try:
        _wait_for(
            "the Prefect server", lambda: httpx.get(f"{api}/health", timeout=5).status_code == 200, 180, procs, root
        )
        in_process = subprocess.run(
            [str(BIN / "contractsum"), "submit", str(unreadable), "--name", "in-process-run", "--in-process", "--json"],
            env={**client_env, "CONTRACTSUM_HOME": str(root / "home-in-process")},
            capture_output=True,
            text=True,
            timeout=300,
        )
        (root / "in-process.log").write_text(in_process.stdout + "\n--- stderr ---\n" + in_process.stderr)
        try:
            url = json.loads(in_process.stdout)["url"]
            url_status = httpx.get(url, timeout=10).status_code if url else None
        except (ValueError, KeyError, httpx.HTTPError):
            url_status = None
        # The server answers but nothing serves the deployment yet: submit runs the batch here.
        empty = root / "empty.txt"
        empty.write_bytes(b"")  # fails ingest, so these runs need no engine
        unserved = subprocess.run(
            [str(BIN / "contractsum"), "submit", str(empty), "--name", "unserved"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=420,
        )
        # serve's runner webserver is on, so serve listens too; its host is contractsum's default
        serve_env = {
            **client_env,
            "PREFECT_RUNNER_SERVER_ENABLE": "true",
            "PREFECT_RUNNER_SERVER_PORT": str(_free_port()),
        }
        serve = start_session([str(BIN / "contractsum"), "serve"], serve_env, root / "serve.log")
        procs.append(serve)

        def ready() -> bool:
            r = httpx.get(f"{api}/deployments/name/summarize-batch/summarize-batch", timeout=5)
            return r.status_code == 200 and r.json()["status"] == "READY"

        _wait_for("`contractsum serve` to poll its deployments", ready, 120, procs, root)
        submit = subprocess.run(
            [str(BIN / "contractsum"), "submit", str(NDA), "--name", BATCH, "--wait", "--json"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=420,
        )
        (root / "submit.log").write_text(submit.stdout + "\n--- stderr ---\n" + submit.stderr)
        failed = subprocess.run(
            [str(BIN / "contractsum"), "submit", str(empty), "--name", "served-empty", "--strict", "--wait", "--json"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=420,
        )
        listening = {"prefect server": _listening(server), "contractsum serve": _listening(serve)}
        yield Served(
            api=api,
            ui=ui,
            home=root / "home",
            submit=submit,
            logs=root,
            server_home=Path(server_env["PREFECT_HOME"]),
            temporary=temporary,
            in_process=in_process,
            in_process_url_status=url_status,
            unserved=unserved,
            failed=failed,
            empty=empty,
            listening=listening,
        )
    finally:
        for p in reversed(procs):
            stop_session(p)


def _submitted(served: Served) -> dict:
    assert served.submit.returncode == 0, f"submit failed; logs in {served.logs}:\n{served.submit.stderr[-3000:]}"
    return json.loads(served.submit.stdout)


def _artifacts(served: Served, flow_run_id: str) -> dict[str, dict]:
    r = httpx.post(
        f"{served.api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}, timeout=10
    )
    r.raise_for_status()
    return {a["type"]: a for a in r.json()}


def test_submit_with_serve_running_goes_through_the_deployment_and_leaves_its_story_in_the_api(served):
    out = _submitted(served)
    assert out["mode"] == "deployment" and out["state"] == "COMPLETED" and out["exit_code"] == 0, out
    assert out["url"] == f"{served.ui}/runs/flow-run/{out['flow_run_id']}"
    assert httpx.get(out["url"], timeout=10).status_code == 200
    # --wait followed the run: progress lines on stderr (a bar on a terminal), ending at 100 %.
    progress = served.submit.stderr
    assert re.search(r"^Running \d+%", progress, re.M) and re.search(r"^Completed 100% ", progress, re.M), progress[
        -2000:
    ]

    run = httpx.get(f"{served.api}/flow_runs/{out['flow_run_id']}", timeout=10).json()
    deployment = httpx.get(f"{served.api}/deployments/name/summarize-batch/summarize-batch", timeout=10).json()
    assert run["state_type"] == "COMPLETED" and run["name"] == f"summarize {BATCH}"
    assert run["deployment_id"] == deployment["id"]
    assert {"contractsum", "ad-hoc", f"batch:{BATCH}"} <= set(run["tags"])

    artifacts = _artifacts(served, out["flow_run_id"])
    report = artifacts["markdown"]
    assert report["key"] == f"batch-report-{BATCH}"
    row = next(line for line in report["data"].splitlines() if line.startswith(f"| {NDA.name} "))
    assert "| summarized |" in row and "(p. " in row, row
    assert re.search(r"Throughput: [0-9.]+ output tokens/s", report["data"])
    assert float(artifacts["progress"]["data"]) == 100.0
    assert (served.home / "reports" / BATCH / "report.html").is_file()


def test_in_process_run_without_a_server_prints_no_url_and_a_later_server_start_shows_it(served):
    temporary = served.temporary
    assert temporary.returncode == 3, (
        f"logs in {served.logs}:\n{temporary.stderr[-3000:]}"
    )  # completed, 1 unreadable file
    # Prefect's temporary server is gone when the command ends: no URL anywhere in what it printed.
    assert "http://" not in temporary.stdout and "http://" not in temporary.stderr, (
        temporary.stdout + temporary.stderr[-2000:]
    )
    run_id = re.search(
        r"^flow run ([0-9a-f-]{36}) \(summarize temporary-run\), in-process$", temporary.stdout, re.M
    ).group(1)
    # It says how to see the run instead, and that is true: the server started since shows it.
    assert (
        f"PREFECT_HOME={served.server_home} " in temporary.stdout
        and "prefect server start --host 127.0.0.1" in temporary.stdout
    )
    run = httpx.get(f"{served.api}/flow_runs/{run_id}", timeout=10)
    assert run.status_code == 200, run.text
    assert run.json()["name"] == "summarize temporary-run" and run.json()["state_type"] == "COMPLETED"


def test_in_process_run_with_a_server_up_prints_its_url_and_it_answered(served):
    proc = served.in_process
    assert proc.returncode == 3, f"logs in {served.logs}:\n{proc.stderr[-3000:]}"
    out = json.loads(proc.stdout)
    assert out["mode"] == "in-process" and out["state"] == "COMPLETED" and out["failed_documents"] == 1, out
    assert out["url"] == f"{served.ui}/runs/flow-run/{out['flow_run_id']}" and out["browse"] is None
    assert served.in_process_url_status == 200
    assert httpx.get(f"{served.api}/flow_runs/{out['flow_run_id']}", timeout=10).json()["state_type"] == "COMPLETED"


def test_submit_when_the_server_answers_but_nothing_serves_runs_here_and_records_the_run_on_that_server(served):
    res = served.unserved
    # the batch's only file is empty: the run completes with it failed (exit 3), as a bad file does
    assert res.returncode == 3, res.stderr[-3000:]
    stdout, stderr = " ".join(res.stdout.split()), " ".join(res.stderr.split())  # rich wraps long lines
    reason = f"running in this process: no summarize-batch/summarize-batch deployment: `contractsum serve` has not run against {served.api}"
    assert reason in stderr, res.stderr[-3000:]
    match = re.search(r"flow run ([0-9a-f-]{36}) \(summarize unserved\), in-process", stdout)
    assert match, res.stdout
    run = httpx.get(f"{served.api}/flow_runs/{match[1]}", timeout=10).json()  # on this server, not a temporary one
    assert run["state_type"] == "COMPLETED" and run["deployment_id"] is None and run["name"] == "summarize unserved"
    assert served.empty.name in run["state"]["message"] and served.empty.name in stdout


def test_submit_wait_on_a_served_run_that_fails_exits_1_with_the_reason(served):
    """--strict makes the served run of a batch with a failed document a failed run."""
    res = served.failed
    assert res.returncode == 1, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["mode"] == "deployment" and out["state"] == "FAILED" and served.empty.name in out["message"], out
    run = httpx.get(f"{served.api}/flow_runs/{out['flow_run_id']}", timeout=10).json()
    deployment = httpx.get(f"{served.api}/deployments/name/summarize-batch/summarize-batch", timeout=10).json()
    assert run["state_type"] == "FAILED" and run["deployment_id"] == deployment["id"]
    assert re.search(r"^Failed ", res.stderr, re.M), res.stderr[-2000:]  # --wait followed it to the end


def test_prefect_server_and_serve_listen_on_loopback_only(served):
    # serve's address comes from contractsum's default (PREFECT_RUNNER_SERVER_HOST), the server's
    # from the documented `prefect server start --host 127.0.0.1`; both must listen somewhere.
    for name, sockets in served.listening.items():
        assert sockets, f"{name} has no listening socket"
        assert {ip for ip, _ in sockets} == {"127.0.0.1"}, (name, sockets)


def test_nightly_schedule_puts_runs_on_the_calendar_at_the_configured_local_time(served):
    nightly = httpx.get(f"{served.api}/deployments/name/nightly/nightly", timeout=10).json()
    (schedule,) = nightly["schedules"]
    assert schedule["active"] and schedule["schedule"]["cron"] == "15 3 * * *"
    assert schedule["schedule"]["timezone"] == "Europe/Berlin"

    # The server's scheduler (every 5 s here) must turn the schedule into scheduled runs.
    query = {"flow_runs": {"deployment_id": {"any_": [nightly["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}}
    deadline, runs = time.monotonic() + 60, []
    while not runs and time.monotonic() < deadline:
        runs = httpx.post(f"{served.api}/flow_runs/filter", json=query, timeout=10).json()
        time.sleep(0 if runs else 2)
    assert runs, f"the nightly schedule produced no scheduled runs; see {served.logs / 'server.log'}"
    berlin = ZoneInfo("Europe/Berlin")
    local = {datetime.fromisoformat(r["expected_start_time"].replace("Z", "+00:00")).astimezone(berlin) for r in runs}
    assert all((t.hour, t.minute) == (3, 15) for t in local), sorted(local)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("Debian's chromium is not installed (./scripts/test.sh installs it: scripts/system-deps.sh --test)")
    return subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


def test_prefect_ui_shows_the_run_completed_with_its_report_artifact(served, tmp_path):
    out = _submitted(served)
    run_page = f"{served.ui}/runs/flow-run/{out['flow_run_id']}"
    artifact_id = _artifacts(served, out["flow_run_id"])["markdown"]["id"]
    artifact_page = f"{served.ui}/artifacts/artifact/{artifact_id}"
    SCREENSHOTS.mkdir(exist_ok=True)

    dom = _chromium(["--dump-dom", run_page], tmp_path / "profile-1").stdout
    assert f"summarize {BATCH}" in dom
    assert re.search(r'class="[^"]*state-badge state--completed"[^>]*>.*?<span>Completed</span>', dom, re.S), dom[:2000]

    dom = _chromium(["--dump-dom", artifact_page], tmp_path / "profile-2").stdout
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert f"Batch {BATCH}" in text and "1 of 1 documents summarized" in text, text[:2000]
    assert re.search(rf"{re.escape(NDA.name)} summarized 4 ", text), text[:2000]

    for name, page in (("prefect-flow-run.png", run_page), ("prefect-report-artifact.png", artifact_page)):
        _chromium([f"--screenshot={SCREENSHOTS / name}", page], tmp_path / f"profile-{name}")
        assert (SCREENSHOTS / name).stat().st_size > 10_000, f"{name} looks empty"
