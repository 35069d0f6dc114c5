"""Which nodes may run what, each refusal with a reason a person can act on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgectl.errors import ValidationError
from edgectl.inventory.model import Node
from edgectl.inventory.selectors import Selector
from edgectl.scheduler.model import JobSpec, NodeState, SchedulerConfig, TaskSpec


def format_bytes(count: float) -> str:
    """A short human size: 512 B, 3.2 MB, 1.5 GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"  # pragma: no cover - the loop always returns


def node_reasons(
    state: NodeState,
    now: float,
    config: SchedulerConfig,
    excluded: str | None = None,
    lost_at: float | None = None,
) -> list[str]:
    """Why a node can take no task at all (empty when it can)."""
    reasons = []
    if excluded is not None:
        reasons.append(f"excluded after repeated failures ({excluded})")
    if lost_at is not None:
        reasons.append(f"lost at {lost_at:.0f}, not probed reachable since")
    if not state.reachable:
        reasons.append("unreachable at the last probe")
    if state.probed_at is None:
        reasons.append("never probed")
    elif now - state.probed_at > config.max_fact_age_s:
        age = now - state.probed_at
        reasons.append(f"facts stale ({age:.0f} s old, max {config.max_fact_age_s:.0f} s)")
    return reasons


def selector_facts(state: NodeState) -> dict[str, Any]:
    """The facts a selector sees: the raw ones, overridden by the scheduler's fields."""
    facts: dict[str, Any] = dict(state.facts)
    facts.update(
        cores=state.cores,
        load1=state.load1,
        mem_available=state.mem_available,
        disk_free=state.disk_free,
        tesseract_langs=sorted(state.langs),
        probed_at=state.probed_at,
    )
    if state.langs and not facts.get("tesseract"):
        facts["tesseract"] = "yes"
    if state.load1 is not None and state.cores:
        facts["load_pct"] = round(100 * state.load1 / state.cores, 1)
    return facts


def inventory_node(state: NodeState) -> Node | None:
    """The inventory record to match selectors on; None if the name is not a valid node name."""
    if state.node is not None:
        return state.node
    try:
        return Node(
            name=state.name, host="localhost", groups=list(state.groups), labels=dict(state.labels)
        )
    except ValidationError:
        return None


def job_reasons(
    job: JobSpec, state: NodeState, selector: Selector, record: Node | None
) -> list[str]:
    """Why a node may not run any task of this job: selector, languages, memory."""
    reasons = []
    if record is None or not selector.matches(record, selector_facts(state)):
        reasons.append(f"selector {job.selector!r} does not match")
    reasons.extend(lang_reasons(job.requires_langs, state.langs))
    if job.capability is not None:
        refusal = job.capability(state.facts)
        if refusal:
            reasons.append(refusal)
    if job.mem_per_task and (state.mem_available or 0) < job.mem_per_task:
        have = format_bytes(state.mem_available or 0)
        reasons.append(f"memory: {have} available < {format_bytes(job.mem_per_task)} per task")
    return reasons


def lang_reasons(required: tuple[str, ...], langs: frozenset[str]) -> list[str]:
    """A reason when a node lacks tesseract or some of the languages asked for."""
    if not required:
        return []
    if not langs:
        return [f"no tesseract (needs {', '.join(required)})"]
    missing = [lang for lang in required if lang not in langs]
    return [f"missing tesseract language(s): {', '.join(missing)}"] if missing else []


def disk_need(task: TaskSpec, has_inputs: frozenset[str]) -> int:
    """Bytes a task takes on a node: the inputs not already there plus its expected output."""
    pushed = sum(size for name, size in task.inputs.items() if name not in has_inputs)
    return pushed + task.output_bytes


def transfer_bytes(task: TaskSpec, has_inputs: frozenset[str]) -> int:
    """Bytes that must be pushed to a node before the task can run there."""
    if not has_inputs:
        return task.input_bytes
    return sum(size for name, size in task.inputs.items() if name not in has_inputs)


def disk_reason(need: int, free: int | None, reserved: int) -> str | None:
    """A reason when `need` bytes do not fit in the free disk left after running tasks."""
    if free is None:
        return "disk: free space unknown"
    left = free - reserved
    if need > left:
        return f"disk: {format_bytes(left)} free < {format_bytes(need)} needed"
    return None


def task_langs(task: TaskSpec, job: JobSpec) -> tuple[str, ...]:
    """Languages a task needs beyond its job's."""
    return tuple(lang for lang in task.requires_langs if lang not in job.requires_langs)


def eligible_names(reasons: Mapping[str, list[str]]) -> list[str]:
    """The names with no reason against them, in the given order."""
    return [name for name, why in reasons.items() if not why]
