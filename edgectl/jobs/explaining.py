"""`job submit --explain`: what the scheduler would do with a job, without doing anything."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from edgectl.facts.store import ProbeResult
from edgectl.inventory.model import Node
from edgectl.jobs.kinds import Kind
from edgectl.jobs.model import Job
from edgectl.jobs.placement import job_spec, local_inputs, node_state, task_specs
from edgectl.scheduler import Dispatcher, Explanation, SchedulerConfig


def explain_placement(
    job: Job,
    kind: Kind,
    nodes: Sequence[Node],
    probed: Mapping[str, ProbeResult],
    done_dependencies: Sequence[str] = (),
    now: float | None = None,
) -> Explanation:
    """Per node, why it would be chosen or rejected, the score parts and the predicted makespan."""
    now = time.time() if now is None else now
    dispatcher = Dispatcher(SchedulerConfig())
    local = local_inputs([job])
    states = []
    for node in nodes:
        result = probed.get(node.name) or ProbeResult(node.name, False, reason="not probed")
        states.append(node_state(node, result, local.get(node.name, frozenset())))
    dispatcher.update_nodes(states, now)
    for dependency in done_dependencies:
        dispatcher.job_done(dependency)
    dispatcher.add_job(
        job_spec(job, kind), task_specs(job, kind, job.params.get("inputs", [])), now
    )
    return dispatcher.explain(now, job.id)
