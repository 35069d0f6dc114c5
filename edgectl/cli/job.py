"""`edgectl job ...`: submit work to the fleet, follow it, and collect the results."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import typer

from edgectl.cli import render
from edgectl.cli.completion import complete_selector
from edgectl.cli.state import State, get_state
from edgectl.errors import NotFoundError, UsageError
from edgectl.jobs.model import JobState
from edgectl.status import ExitStatus

app = typer.Typer(
    help="Submit jobs to the fleet, follow them, collect their results.", no_args_is_help=True
)

JSON = typer.Option(False, "--json", help="Print JSON for scripts.")
JOB_ID = typer.Argument(..., help="Job id (a unique prefix will do; `last`: the newest job).")


def _jobs(state: State) -> Any:
    from edgectl.jobs.service import Jobs

    return Jobs(state.fleet)


def job_exit_status(document: dict[str, Any]) -> ExitStatus:
    """0 when every task is done, PARTIAL when some failed, ALL_FAILED when none is done."""
    tasks = [t for t in document["tasks"] if not t.get("duplicate_of")]
    done = sum(t["state"] == "done" for t in tasks)
    if document["state"] == JobState.DONE.value:
        return ExitStatus.OK
    return ExitStatus.PARTIAL if done else ExitStatus.ALL_FAILED


def _summary(state: State, document: dict[str, Any]) -> None:
    tasks = document["tasks"]
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task["state"]] = counts.get(task["state"], 0) + 1
    shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no tasks"
    render.note(
        state.env, f"job {document['id']} ({document['kind']}): {document['state']}: {shown}"
    )
    for task in tasks:
        if task["state"] == "failed":
            render.note(state.env, f"  task {task['id']} failed: {task['error']}")


def _run_and_report(state: State, job_id: str, as_json: bool, forks: int, accept_new: bool) -> None:
    jobs = _jobs(state)
    with render.count_progress(state.env, "tasks") as progress:
        jobs.run(job_id, forks=forks, accept_new=accept_new, on_progress=progress)
    document = jobs.show(job_id)
    state.exit_status = job_exit_status(document)
    if as_json:
        render.emit_json(state.env, document)
    else:
        _summary(state, document)
        where, files = jobs.results(job_id)
        if files:
            render.line(state.env, f"results: {where} ({len(files)} file(s))")


@app.command()
def submit(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help="ocr, analytics or script."),
    inputs: list[str] = typer.Argument(None, help="Input files, directories or globs."),
    on: str = typer.Option(
        "all",
        "--on",
        help="Selector of the nodes that may run it.",
        autocompletion=complete_selector,
    ),
    priority: int = typer.Option(0, "--priority", help="Higher runs first."),
    after: list[str] = typer.Option(
        [], "--after", help="Run after this job has finished (repeatable)."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Run it here and wait for the end (default: run in the background)."
    ),
    explain: bool = typer.Option(
        False,
        "--explain",
        help="Dry run: per node, why it would be chosen or rejected, and the predicted makespan.",
    ),
    remote_path: list[str] = typer.Option(
        [],
        "--remote-path",
        help="Glob of files already on the nodes: processed where they lie (repeatable).",
    ),
    run_command: str | None = typer.Option(
        None, "--run", help="script: the command per input, with {input}, {name}, {stem}."
    ),
    files: list[Path] = typer.Option(
        [], "--file", help="script: an extra file shipped to each task's in/ (repeatable)."
    ),
    samples: bool = typer.Option(
        False, "--samples", help="Add the sample pages shipped with edgectl to the inputs."
    ),
    lang: str | None = typer.Option(
        None, "--lang", help="ocr: tesseract languages, e.g. chi_sim+eng (default eng)."
    ),
    psm: int | None = typer.Option(
        None, "--psm", help="ocr: page segmentation mode (default 3: automatic layout)."
    ),
    output_formats: str | None = typer.Option(
        None, "--format", help="ocr: outputs per page, any of txt,tsv,hocr,pdf (default txt)."
    ),
    preprocess: str | None = typer.Option(
        None,
        "--preprocess",
        help="ocr: auto (default: retry small or faint text cleaned up), on or off.",
    ),
    rotate: str | None = typer.Option(
        None, "--rotate", help="ocr: auto (detect orientation), none, 90, 180 or 270 clockwise."
    ),
    dpi: int | None = typer.Option(None, "--dpi", help="ocr: the images' resolution."),
    op: str | None = typer.Option(
        None, "--op", help="analytics: describe (default), groupby or window."
    ),
    by: str | None = typer.Option(None, "--by", help="analytics groupby: the key column(s)."),
    agg: str | None = typer.Option(
        None, "--agg", help="analytics: count,sum,mean,std,min,max,p50,p90,p99 (some of them)."
    ),
    time_col: str | None = typer.Option(
        None, "--time-col", help="analytics window: the time column (epoch seconds or ISO 8601)."
    ),
    every: str | None = typer.Option(
        None, "--every", help="analytics window: the bucket width, e.g. 30s, 5m, 1h, 1d."
    ),
    where: list[str] = typer.Option(
        [], "--where", help="analytics: keep rows where 'COLUMN OP VALUE' (=, !=, <, <=, >, >=)."
    ),
    columns: str | None = typer.Option(
        None, "--columns", help="analytics: only these columns (comma-separated)."
    ),
    forks: int = typer.Option(100, "--forks", min=1, help="Connections at once."),
    accept_new: bool = typer.Option(
        False, "--accept-new", help="Trust and record unknown host keys."
    ),
    as_json: bool = JSON,
) -> None:
    """Submit a job; with --wait, run it and wait for its results."""
    state = get_state(ctx)
    params: dict[str, Any] = {}
    if run_command is not None:
        params["run"] = run_command
    if files:
        params["files"] = [str(f) for f in files]
    kind_options = {
        "lang": lang,
        "psm": psm,
        "formats": output_formats,
        "preprocess": preprocess,
        "rotate": rotate,
        "dpi": dpi,
        "op": op,
        "by": by,
        "aggs": agg,
        "time_col": time_col,
        "every": every,
        "where": where or None,
        "columns": columns,
    }
    params.update({key: value for key, value in kind_options.items() if value is not None})
    inputs = list(inputs or [])
    if samples:
        from edgectl import sample_pages

        inputs += [str(page) for page in sample_pages.paths()]
    jobs = _jobs(state)
    if explain:
        explanation = jobs.explain(
            kind,
            inputs or [],
            selector=on,
            priority=priority,
            after=after,
            params=params,
            remote_paths=remote_path,
            forks=forks,
            accept_new=accept_new,
        )
        _render_explanation(state, explanation, as_json)
        return
    job = jobs.submit(
        kind,
        inputs,
        selector=on,
        priority=priority,
        after=after,
        params=params,
        remote_paths=remote_path,
    )
    if wait:
        _run_and_report(state, job.id, as_json, forks, accept_new)
        return
    pid = jobs.start_background(job.id)
    if as_json:
        render.emit_json(state.env, jobs.show(job.id))
    else:
        render.line(state.env, job.id)
        render.note(
            state.env,
            f"job {job.id} runs in the background (pid {pid}); follow it with: edgectl job wait {job.id}",
        )


def _render_explanation(state: State, explanation: Any, as_json: bool) -> None:
    from edgectl.scheduler import explanation_to_dict

    if as_json:
        render.emit_json(state.env, explanation_to_dict(explanation))
        return
    rows = [
        [
            n.node,
            "chosen" if n.tasks else ("rejected" if not n.eligible else "idle"),
            str(n.tasks),
            f"{n.free_slots}/{n.slots}",
            f"{n.rate:.3g} ({n.rate_source})" if n.eligible else "",
            f"{n.wait_s:.1f}" if n.eligible else "",
            f"{n.transfer_s:.1f}" if n.eligible else "",
            f"{n.compute_s:.1f}" if n.eligible else "",
            f"{n.finish_s:.1f}" if n.eligible else "",
            n.verdict,
        ]
        for n in explanation.nodes
    ]
    render.table(
        state.env,
        [
            "NODE",
            "VERDICT",
            "TASKS",
            "FREE",
            "RATE/S",
            "WAIT S",
            "PUSH S",
            "WORK S",
            "DONE IN S",
            "WHY",
        ],
        rows,
    )
    for job in explanation.jobs:
        waiting = f", waiting for {', '.join(job.waiting_for)}" if job.waiting_for else ""
        render.line(
            state.env, f"job: {job.queued} input(s) to place, priority {job.priority}{waiting}"
        )
    if explanation.unplaceable:
        reasons = sorted(set(explanation.unplaceable.values()))
        render.line(
            state.env,
            f"{len(explanation.unplaceable)} input(s) cannot be placed: {'; '.join(reasons)}",
        )
    render.line(
        state.env, f"predicted makespan: {explanation.makespan_s:.1f} s (nothing was submitted)"
    )


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    state_filter: str | None = typer.Option(None, "--state", help="Only jobs in this state."),
    as_json: bool = JSON,
) -> None:
    """List jobs, oldest first."""
    state = get_state(ctx)
    documents = _jobs(state).list_jobs(state_filter)
    if as_json:
        render.emit_json(state.env, documents)
        return
    rows = []
    for d in documents:
        done = sum(t["state"] == "done" for t in d["tasks"])
        rows.append(
            [
                d["id"],
                d["kind"],
                d["state"],
                str(d["inputs"]),
                f"{done}/{len(d['tasks'])}",
                d["selector"],
            ]
        )
    render.table(state.env, ["ID", "KIND", "STATE", "INPUTS", "TASKS DONE", "ON"], rows)


@app.command()
def show(
    ctx: typer.Context,
    job_id: str = JOB_ID,
    as_json: bool = JSON,
) -> None:
    """Show a job and its tasks."""
    state = get_state(ctx)
    document = _jobs(state).show(job_id)
    if as_json:
        render.emit_json(state.env, document)
        return
    render.key_values(
        state.env,
        [(k, document[k]) for k in ("id", "kind", "state", "selector", "priority", "inputs")],
    )
    rows = [
        [
            t["id"],
            t["node"] or "",
            t["state"],
            str(len(t["inputs"])),
            str(len(t["attempts"])),
            t["error"] or "",
        ]
        for t in document["tasks"]
    ]
    render.table(state.env, ["TASK", "NODE", "STATE", "INPUTS", "ATTEMPTS", "ERROR"], rows)


@app.command()
def logs(
    ctx: typer.Context,
    job_id: str = JOB_ID,
    task: str | None = typer.Argument(None, help="A task id: its stdout and stderr from the node."),
) -> None:
    """A job's events, or one task's output on its node."""
    import time

    state = get_state(ctx)
    for entry in _jobs(state).logs(job_id, task):
        if "time" in entry:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
            render.line(state.env, f"{stamp}  {entry['text']}")
        else:
            state.env.stdout.write(entry["text"])


@app.command()
def results(
    ctx: typer.Context,
    job_id: str = JOB_ID,
    out: Path | None = typer.Option(
        None, "--out", help="Copy the result files into this directory."
    ),
    as_json: bool = JSON,
    table_format: str = typer.Option(
        "table",
        "--format",
        help="table or csv (of the files; the pages of ocr, the merged result of analytics).",
    ),
    text: bool = typer.Option(
        False, "--text", help="Print the text result files (an OCR job's recognised text)."
    ),
) -> None:
    """A job's results: the files (sha256 verified on arrival), OCR pages, merged analytics."""
    from edgectl.jobs.kinds import get_kind

    state = get_state(ctx)
    if table_format not in ("table", "csv"):
        raise UsageError(f"--format {table_format!r}: use table or csv")
    jobs = _jobs(state)
    where, files = jobs.results(job_id)
    report = get_kind(jobs.show(job_id)["kind"]).report(where, files)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for item in files:
            shutil.copy2(where / item["name"], out / item["name"])
        where = out
    if report is not None and report.problems:
        state.exit_status = ExitStatus.PARTIAL
    if text:
        _print_texts(state, where, files)
        return
    if as_json:
        document = {"directory": str(where), "files": files}
        if report is not None:
            document[report.key] = report.data
        render.emit_json(state.env, document)
        return
    if table_format == "csv":
        if report is not None:
            _write_csv(state, report.headers, report.rows)
        else:
            _write_csv(
                state,
                ["file", "size", "node", "sha256"],
                [[f["name"], f["size"], f["node"], f["sha256"]] for f in files],
            )
        return
    if report is None:
        render.table(
            state.env,
            ["FILE", "SIZE", "NODE", "SHA256"],
            [[f["name"], str(f["size"]), f["node"] or "", f["sha256"][:16]] for f in files],
        )
    else:
        render.table(state.env, report.headers, [[_cell(v) for v in row] for row in report.rows])
        if report.problems:
            render.note(state.env, f"{report.problems} input(s) or page(s) gave no result")
    render.note(state.env, f"{len(files)} file(s) in {where}")


def _print_texts(state: State, where: Path, files: list[dict[str, Any]]) -> None:
    """Each .txt result under a heading naming it and its node; then where they are."""
    texts = sorted((f for f in files if f["name"].endswith(".txt")), key=lambda f: f["name"])
    if not texts:
        raise NotFoundError(
            f"no text results in {where} (an ocr job writes them with --format txt)"
        )
    for item in texts:
        body = (where / item["name"]).read_text(encoding="utf-8", errors="replace")
        render.line(state.env, f"== {item['name']} (from {item['node'] or '?'})")
        render.line(state.env, body.strip() + "\n")
    render.note(state.env, f"{len(files)} result file(s) in {where}")


def _cell(value: Any) -> str:
    """A table cell: integers whole, other numbers to 6 significant digits, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.6g}"
    return str(value)


def _write_csv(state: State, headers: list[str], rows: list[list[Any]]) -> None:
    """CSV on stdout: numbers at full precision, None as an empty cell."""
    import csv

    writer = csv.writer(state.env.stdout, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])


@app.command()
def cancel(ctx: typer.Context, job_id: str = JOB_ID) -> None:
    """Cancel a job: its remote process groups are killed."""
    state = get_state(ctx)
    tasks = _jobs(state).cancel(job_id)
    render.note(
        state.env,
        f"cancelled; {sum(t.state.value == 'cancelled' for t in tasks)} task(s) cancelled",
    )


@app.command()
def retry(
    ctx: typer.Context,
    job_id: str = JOB_ID,
    wait: bool = typer.Option(False, "--wait", help="Run it here and wait."),
    as_json: bool = JSON,
) -> None:
    """Queue a job's failed and cancelled tasks again, and run it."""
    state = get_state(ctx)
    jobs = _jobs(state)
    count = jobs.retry(job_id)
    render.note(state.env, f"{count} task(s) queued again")
    job_id = jobs.show(job_id)["id"]
    if wait:
        _run_and_report(state, job_id, as_json, 100, False)
    else:
        jobs.start_background(job_id)


@app.command()
def resume(
    ctx: typer.Context,
    job_id: str | None = typer.Argument(None, help="Job id (default: every unfinished job)."),
    as_json: bool = JSON,
    forks: int = typer.Option(100, "--forks", min=1, help="Connections at once."),
) -> None:
    """Run an unfinished job here: reattach to tasks still running, fetch finished ones, redo lost ones."""
    from edgectl.jobs.executor import job_is_busy

    state = get_state(ctx)
    jobs = _jobs(state)
    if job_id is not None:
        _run_and_report(state, job_id, as_json, forks, False)
        return
    unfinished = [
        d
        for d in jobs.list_jobs()
        if d["state"] in ("queued", "running") and not job_is_busy(state.fleet.home, d["id"])
    ]
    # Together, in one run: their tasks are placed by priority across the jobs, and a job
    # after another one of them waits for it there.
    ids = [d["id"] for d in unfinished]
    if ids:
        with render.count_progress(state.env, "inputs") as progress:
            jobs.run_many(ids, forks=forks, on_progress=progress)
    worst = ExitStatus.OK
    documents = [jobs.show(job_id) for job_id in ids]
    for document in documents:
        worst = max(worst, job_exit_status(document))
        if not as_json:
            _summary(state, document)
    if as_json:
        render.emit_json(state.env, documents)
    state.exit_status = worst


@app.command()
def wait(
    ctx: typer.Context,
    job_id: str = JOB_ID,
    timeout: float | None = typer.Option(
        None, "--timeout", help="Give up after this many seconds."
    ),
    as_json: bool = JSON,
) -> None:
    """Wait for a job running elsewhere (in the background) to end."""
    state = get_state(ctx)
    jobs = _jobs(state)
    jobs.wait(job_id, timeout)
    document = jobs.show(job_id)
    state.exit_status = job_exit_status(document)
    if as_json:
        render.emit_json(state.env, document)
    else:
        _summary(state, document)
