"""The scheduler: pure decisions about which node runs which task, with reasons.

Data in, decisions out: no I/O, no clock (`now` is an argument), no randomness. The job
executor and the simulator (`edgectl.sim`) drive the same `Dispatcher` with events.
"""

from edgectl.scheduler.dispatcher import Dispatcher
from edgectl.scheduler.explain import to_dict as explanation_to_dict
from edgectl.scheduler.model import (
    Assignment,
    Explanation,
    JobExplanation,
    JobSpec,
    JobStatus,
    NodeExplanation,
    NodeState,
    Plan,
    PlannedTask,
    SchedulerConfig,
    Stall,
    TakeBack,
    TaskSpec,
    TaskStatus,
)

__all__ = [
    "Assignment",
    "Dispatcher",
    "Explanation",
    "JobExplanation",
    "JobSpec",
    "JobStatus",
    "NodeExplanation",
    "NodeState",
    "Plan",
    "PlannedTask",
    "SchedulerConfig",
    "Stall",
    "TakeBack",
    "TaskSpec",
    "TaskStatus",
    "explanation_to_dict",
]
