"""Actions with their values computed: what a rule, an SLA checkpoint or a cadence step does.

The blueprint's one action vocabulary (engine/metamodel/actions.py) is resolved here against
a record's values — every expression evaluated, each action seeing the field changes of the
ones before it — into plain data the runtime's one executor applies
(engine/runtime/automation/actions.py), whoever asked for it. Pure: no database, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from engine.metamodel.actions import (ActionSpec, AddTagsAction, AssignAction, CreateRelatedAction, NotifyAction,
                                      RemoveTagsAction, RequestApprovalAction, SetAction, TransitionAction,
                                      UpdateRelatedAction, WebhookAction)
from engine.metamodel.expressions import Expression, ValueSpec
from engine.rules.expressions import Evaluator, ExpressionError


@dataclass(frozen=True, slots=True)
class SetField:
    field: str
    value: Any


@dataclass(frozen=True, slots=True)
class AddTags:
    field: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RemoveTags:
    field: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Assign:
    """Route with `policy` (None: the first policy of the entity whose match holds), or give the
    record to the first usable person of `to`; `reassign`: never to the current owner."""

    policy: str | None
    to: tuple[str, ...] = ()
    reassign: bool = False


@dataclass(frozen=True, slots=True)
class CreateRelated:
    entity: str
    link_field: str
    values: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class UpdateRelated:
    """Change the related records (see UpdateRelatedAction): values already computed from this
    record; `where` is evaluated on each related record when it is read."""

    entity: str
    via: str
    mode: str
    values: tuple[tuple[str, Any], ...]
    values_if_empty: tuple[tuple[str, Any], ...] = ()
    where: Expression | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    field: str
    to: str


@dataclass(frozen=True, slots=True)
class Notify:
    """A message to render and queue: inline Jinja2 `text` or the named `template`."""

    channel: str
    to: tuple[str, ...]
    text: str | None = None
    template: str | None = None


@dataclass(frozen=True, slots=True)
class CallWebhook:
    url: str | None
    url_env: str | None
    secret_env: str | None
    payload: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class RequestApproval:
    """Open a request of the declared approval (skipped when one is pending or still covers the record)."""

    approval: str
    reason: str | None = None


Action = Union[SetField, AddTags, RemoveTags, Assign, CreateRelated, UpdateRelated, Transition, Notify, CallWebhook,
               RequestApproval]
FIELD_ACTIONS = (SetField, AddTags, RemoveTags)  # change the record's own fields in place
EFFECTS = (CreateRelated, UpdateRelated, Notify, CallWebhook, RequestApproval)  # beyond the record, after it is written


def resolve_actions(specs: Sequence[ActionSpec], values: Mapping[str, Any],
                    evaluator: Evaluator) -> tuple[Action, ...]:
    """The actions with every expression computed; each sees the field changes of the actions
    before it. Raises ExpressionError naming the action and where it was written."""
    current = dict(values)
    actions: list[Action] = []
    for index, spec in enumerate(specs, start=1):
        try:
            resolved = resolve_action(spec, current, evaluator)
        except ExpressionError as exc:
            raise ExpressionError(f"action {index} ({type(spec).__name__.removesuffix('Action').lower()}) "
                                  f"at {spec.location}: {exc}") from None
        actions.extend(resolved)
        current = apply_field_actions(current, resolved)
    return tuple(actions)


def resolve_action(spec: ActionSpec, values: Mapping[str, Any], evaluator: Evaluator) -> tuple[Action, ...]:
    """One action against the record's `values` (a `set` of several fields gives one SetField each)."""
    def computed(pairs: tuple[tuple[str, ValueSpec], ...]) -> tuple[tuple[str, Any], ...]:
        return tuple((name, compute_value(value, values, evaluator)) for name, value in pairs)

    if isinstance(spec, SetAction):
        return tuple(SetField(name, value) for name, value in computed(spec.values))
    return (_resolve_one(spec, computed),)


def _resolve_one(spec: ActionSpec, computed: Callable[[tuple[tuple[str, ValueSpec], ...]], tuple[tuple[str, Any], ...]]) -> Action:
    if isinstance(spec, AddTagsAction):
        return AddTags(spec.field, spec.values)
    if isinstance(spec, RemoveTagsAction):
        return RemoveTags(spec.field, spec.values)
    if isinstance(spec, AssignAction):
        return Assign(spec.policy, spec.to, spec.reassign)
    if isinstance(spec, CreateRelatedAction):
        return CreateRelated(spec.entity, spec.link_field, computed(spec.values))
    if isinstance(spec, UpdateRelatedAction):
        return UpdateRelated(spec.entity, spec.via, spec.mode, computed(spec.values), computed(spec.values_if_empty),
                             spec.where)
    if isinstance(spec, TransitionAction):
        return Transition(spec.field, spec.to)
    if isinstance(spec, NotifyAction):
        return Notify(spec.channel, spec.to, spec.text, spec.template)
    if isinstance(spec, WebhookAction):
        return CallWebhook(spec.url, spec.url_env, spec.secret_env, computed(spec.payload))
    if isinstance(spec, RequestApprovalAction):
        reason = computed((("reason", spec.reason),))[0][1] if spec.reason is not None else None
        return RequestApproval(spec.approval, None if reason is None else str(reason))
    raise TypeError(f"unknown action {spec!r}")


def compute_value(value: ValueSpec, values: Mapping[str, Any], evaluator: Evaluator) -> Any:
    """A literal as written (lists as lists), or the expression's result."""
    if value.expression is not None:
        return evaluator.evaluate(value.expression, values)
    return list(value.literal) if isinstance(value.literal, tuple) else value.literal


def apply_field_actions(values: Mapping[str, Any], actions: Sequence[Action]) -> dict[str, Any]:
    """`values` with the set and tag actions applied (other actions do not change fields)."""
    result = dict(values)
    for action in actions:
        if isinstance(action, SetField):
            result[action.field] = action.value
        elif isinstance(action, AddTags):
            existing = list(result.get(action.field) or [])
            result[action.field] = existing + [tag for tag in action.values if tag not in existing]
        elif isinstance(action, RemoveTags):
            result[action.field] = [tag for tag in (result.get(action.field) or []) if tag not in action.values]
    return result


def changed_values(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `after` that differ from `before`."""
    return {name: value for name, value in after.items() if name not in before or before[name] != value}
