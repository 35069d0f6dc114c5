"""Between the job engine and the scheduler: jobs, inputs and probed nodes as scheduler data.

The scheduler places one task per input; the executor runs each placement (a chunk of one
job's inputs) as one task on its node. Scheduler task ids are `<job id>/<input name>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from edgectl.facts.store import ProbeResult
from edgectl.inventory.model import Node
from edgectl.jobs.kinds import Kind
from edgectl.jobs.model import Job
from edgectl.scheduler import JobSpec, NodeState, SchedulerConfig, TaskSpec


def task_key(job_id: str, name: str) -> str:
    """The scheduler's id of one input of a job."""
    return f"{job_id}/{name}"


def input_name(key: str) -> str:
    """The input name in a scheduler task id."""
    return key.split("/", 1)[1]


def job_spec(job: Job, kind: Kind) -> JobSpec:
    """A job as the scheduler sees it; the kind's eligibility test is its capability filter."""
    params = dict(job.params)

    def capability(facts: Mapping[str, Any]) -> str | None:
        """Why the kind cannot run on a node with these facts (None: it can)."""
        why = kind.eligible(params, dict(facts))
        return f"cannot run {kind.name} tasks: {why}" if why else None

    return JobSpec(
        id=job.id,
        priority=job.priority,
        after=tuple(job.after),
        selector=job.selector,
        mem_per_task=kind.mem_per_task,
        capability=capability,
    )


def task_specs(job: Job, kind: Kind, items: Iterable[dict[str, Any]]) -> list[TaskSpec]:
    """One scheduler task per input; an input already on a node may only run there."""
    specs = []
    for item in items:
        size = int(item.get("size") or 0)
        key = task_key(job.id, item["name"])
        specs.append(
            TaskSpec(
                id=key,
                job_id=job.id,
                inputs={key: size},
                work=kind.work(item),
                output_bytes=size,  # a guess: about as much out as in
                only_on=item.get("node"),
            )
        )
    return specs


def node_state(node: Node, probed: ProbeResult, has_inputs: frozenset[str]) -> NodeState:
    """A probed node as the scheduler sees it."""
    record = {"facts": probed.facts, "reachable": probed.reachable, "probed_at": probed.probed_at}
    return NodeState.from_records(node, record, has_inputs)


def local_inputs(jobs: Iterable[Job]) -> dict[str, frozenset[str]]:
    """Per node, the scheduler ids of inputs that already live there (`--remote-path`)."""
    found: dict[str, set[str]] = {}
    for job in jobs:
        for item in job.params.get("inputs", []):
            if item.get("node"):
                found.setdefault(item["node"], set()).add(task_key(job.id, item["name"]))
    return {name: frozenset(keys) for name, keys in found.items()}


def scheduler_config(poll_max: float, reprobe_s: float) -> SchedulerConfig:
    """The scheduler's settings for a live run: news comes a poll late, facts a re-probe late."""
    return SchedulerConfig(report_delay_s=poll_max, max_fact_age_s=max(300.0, 3 * reprobe_s))
