"""Approval decisions, pure: which steps a request goes through, who may approve a step, and
when a step, a group of parallel steps and the whole request are done.

The runtime (engine/runtime/automation/approvals.py) reads the record, its related counts and
the users, and writes requests and tasks through RecordService; every choice is made here on
plain data, so a plan can be explained ("finance: overdue_payments = 3 > 2") and tested in bulk.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.metamodel.approvals import ApprovalSpec, ApprovalStepSpec
from engine.metamodel.expressions import Expression

Evaluate = Callable[[Expression, Mapping[str, Any]], Any]


class StepOutcome(enum.StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One step of a request's plan: whether its `when` held when the request was made, and why."""

    step: str
    group: int
    applies: bool
    why: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"step": self.step, "group": self.group, "applies": self.applies, "why": self.why}


@dataclass(frozen=True, slots=True)
class Person:
    id: int
    username: str
    name: str
    is_active: bool = True
    on_leave: bool = False


@dataclass(frozen=True, slots=True)
class ApproverChoice:
    """Who gets a task for a step, and notes on who was passed over (on leave, the requester)."""

    people: tuple[Person, ...]
    notes: tuple[str, ...] = ()
    is_fallback: bool = False


def plan_steps(spec: ApprovalSpec, values: Mapping[str, Any], evaluate: Evaluate) -> tuple[PlannedStep, ...]:
    """Every step with whether it applies to this record (its `when`, over the fields and counts)."""
    planned = []
    for step in spec.steps:
        if step.when is None:
            planned.append(PlannedStep(step.name, step.group, True))
            continue
        seen = ", ".join(f"{name} = {values.get(name)!r}" for name in sorted(step.when.names))
        try:
            holds = bool(evaluate(step.when, values))
        except Exception as error:  # a condition that cannot be evaluated does not add the step
            planned.append(PlannedStep(step.name, step.group, False, f"{step.when.source}: {error}"))
            continue
        planned.append(PlannedStep(step.name, step.group, holds, f"{step.when.source} with {seen}: {holds}"))
    return tuple(planned)


def plan_from_json(raw: Any) -> tuple[PlannedStep, ...]:
    return tuple(PlannedStep(str(item["step"]), int(item["group"]), bool(item["applies"]), str(item.get("why", "")))
                 for item in raw or ())


def next_group(plan: Sequence[PlannedStep], after: int | None) -> int | None:
    """The first group after `after` (None: from the start) with a step that applies."""
    groups = sorted({step.group for step in plan if step.applies and (after is None or step.group > after)})
    return groups[0] if groups else None


def steps_of_group(plan: Sequence[PlannedStep], group: int) -> tuple[str, ...]:
    return tuple(step.step for step in plan if step.group == group and step.applies)


def step_outcome(step: ApprovalStepSpec, statuses: Sequence[str]) -> StepOutcome:
    """A step is rejected by any rejection; approved by one approval (mode any) or by all of its
    approvers (mode all; a task cancelled because its approver left does not count against it)."""
    if "rejected" in statuses:
        return StepOutcome.REJECTED
    decided = [status for status in statuses if status != "cancelled"]
    if step.mode == "all":
        return StepOutcome.APPROVED if decided and all(status == "approved" for status in decided) else StepOutcome.OPEN
    return StepOutcome.APPROVED if "approved" in statuses else StepOutcome.OPEN


def choose_approvers(candidates: Sequence[Person], requester: int | None,
                     fallback: Sequence[Person]) -> ApproverChoice:
    """The candidates who can act now: active, not on leave, not the requester approving their own
    request. With nobody left, the step goes to `fallback` (the administrators), with the reason."""
    notes = []
    chosen: dict[int, Person] = {}
    for person in candidates:
        if not person.is_active:
            notes.append(f"{person.username}: disabled")
        elif person.on_leave:
            notes.append(f"{person.username}: on leave")
        elif person.id == requester:
            notes.append(f"{person.username}: the requester does not approve their own request")
        else:
            chosen.setdefault(person.id, person)
    if chosen:
        return ApproverChoice(tuple(chosen.values()), tuple(notes))
    usable = tuple(person for person in fallback if person.is_active and not person.on_leave)
    notes.append("nobody else could approve: given to the administrators" if usable else "nobody can approve it")
    return ApproverChoice(usable, tuple(notes), is_fallback=True)
