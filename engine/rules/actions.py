"""Actions with their values computed: what a rule, an SLA checkpoint or a cadence step does.

The blueprint's one action vocabulary (engine/metamodel/actions.py) is resolved here against
a record's values — every expression evaluated, each action seeing the field changes of the
ones before it — into plain data the runtime's one executor applies
(engine/runtime/automation/actions.py), whoever asked for it. Pure: no database, no clock.

A verb a plugin provides (`crm_actions`) is resolved here too: the plugin's `apply` gets its
options computed and the record as expressions see it, and answers with actions of the
built-in vocabulary below. So a plugin verb joins the write exactly like the built-in ones —
its field changes before the row is stored, its effects in the same transaction, every step
in the rule's trace — and the executor needs nothing new. The built-in verbs are not
registered through the hook: they are the vocabulary a plugin verb is made of, dispatched by
`isinstance` on frozen dataclasses in the write path's innermost loop.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from engine.metamodel.actions import (BUILTIN_VERBS, ActionSpec, AddTagsAction, AssignAction, CreateRelatedAction,
                                      NotifyAction, PluginAction, RemoveTagsAction, RequestApprovalAction, SetAction, TransitionAction,
                                      UpdateRelatedAction, WebhookAction)
from engine.metamodel.expressions import Expression, ValueSpec
from engine.metamodel.related import RelatedSpec
from engine.plugins import PluginError, claim
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
    own: str | None = None                 # this record's link, when named differently from via
    unless: RelatedSpec | None = None      # related records whose existence skips the action


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
ACTIONS = (SetField, AddTags, RemoveTags, Assign, CreateRelated, UpdateRelated, Transition, Notify, CallWebhook,
           RequestApproval)
FIELD_ACTIONS = (SetField, AddTags, RemoveTags)  # change the record's own fields in place
EFFECTS = (CreateRelated, UpdateRelated, Notify, CallWebhook, RequestApproval)  # beyond the record, after it is written


# --------------------------------------------------------------------------- plugin verbs

@dataclass(frozen=True, slots=True)
class ActionCall:
    """What a plugin verb's `apply` is given: its options with every expression computed, and
    the record (of `entity`) as expressions see it — read-only, with the changes of the
    actions before it."""

    verb: str
    entity: str
    options: Mapping[str, Any]
    record: Mapping[str, Any]


class ActionType(Protocol):
    """A plugin's action verb (engine/plugins/hookspecs.py, crm_actions): `name` is what a
    blueprint writes, `schema` the JSON Schema its body must satisfy at load, and `apply`
    answers with actions of the built-in vocabulary. `apply` must be pure — no database, no
    network, no clock: reaching out is a `Notify` or a `CallWebhook`, delivered from the outbox."""

    @property
    def name(self) -> str: ...

    @property
    def schema(self) -> Mapping[str, Any]: ...

    def apply(self, call: ActionCall) -> Sequence[Action]: ...


@dataclass(frozen=True, slots=True)
class ActionTypes:
    """The plugin verbs by name, and which plugin provides each."""

    by_name: Mapping[str, ActionType] = field(default_factory=lambda: types.MappingProxyType({}))
    providers: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))

    @classmethod
    def of(cls, answers: Iterable[tuple[str, Iterable[ActionType]]]) -> ActionTypes:
        """From each plugin's answer to crm_actions; PluginError when a verb is taken twice."""
        by_name: dict[str, ActionType] = {}
        providers: dict[str, str] = {}
        for plugin, verbs in answers:
            for verb in verbs:
                if verb.name in BUILTIN_VERBS:
                    raise PluginError(f"plugin {plugin} provides the action '{verb.name}', which is a built-in "
                                      "verb; the plugin must choose another name")
                claim(by_name, providers, verb.name, verb, plugin, "action")
        return cls(types.MappingProxyType(by_name), types.MappingProxyType(providers))

    def schemas(self) -> dict[str, Mapping[str, Any]]:
        """Verb → the JSON Schema of its body: what the blueprint loader needs to check one."""
        return {name: verb.schema for name, verb in self.by_name.items()}

    def expand(self, spec: PluginAction, options: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[Action, ...]:
        """The built-in actions the plugin answers for one use of its verb (ExpressionError when it
        fails or answers something else, so the rule's trace says which verb and why)."""
        verb = self.by_name.get(spec.verb)
        if verb is None:
            raise ExpressionError(f"no installed plugin provides the action '{spec.verb}' any more")
        call = ActionCall(spec.verb, spec.entity, types.MappingProxyType(dict(options)),
                          types.MappingProxyType(dict(values)))
        try:
            answered = tuple(verb.apply(call))
        except Exception as exc:  # plugin code: its failure is the rule's error, not the engine's crash
            raise ExpressionError(f"{spec.verb} (plugin {self.providers[spec.verb]}): {type(exc).__name__}: {exc}") \
                from None
        for action in answered:
            if not isinstance(action, ACTIONS):
                raise ExpressionError(f"{spec.verb} (plugin {self.providers[spec.verb]}) answered {action!r}, "
                                      "which is not an action of the built-in vocabulary (engine/rules/actions.py)")
        return answered


NO_PLUGIN_ACTIONS = ActionTypes()


def resolve_actions(specs: Sequence[ActionSpec], values: Mapping[str, Any], evaluator: Evaluator,
                    verbs: ActionTypes = NO_PLUGIN_ACTIONS) -> tuple[Action, ...]:
    """The actions with every expression computed (and every plugin verb in `verbs` expanded);
    each sees the field changes of the actions before it. Raises ExpressionError naming the
    action and where it was written."""
    current = dict(values)
    actions: list[Action] = []
    for index, spec in enumerate(specs, start=1):
        try:
            resolved = resolve_action(spec, current, evaluator, verbs)
        except ExpressionError as exc:
            name = spec.verb if isinstance(spec, PluginAction) else type(spec).__name__.removesuffix('Action').lower()
            raise ExpressionError(f"action {index} ({name}) at {spec.location}: {exc}") from None
        actions.extend(resolved)
        current = apply_field_actions(current, resolved)
    return tuple(actions)


def resolve_action(spec: ActionSpec, values: Mapping[str, Any], evaluator: Evaluator,
                   verbs: ActionTypes = NO_PLUGIN_ACTIONS) -> tuple[Action, ...]:
    """One action against the record's `values` (a `set` of several fields gives one SetField
    each; a plugin verb the actions its plugin answers)."""
    def computed(pairs: tuple[tuple[str, ValueSpec], ...]) -> tuple[tuple[str, Any], ...]:
        return tuple((name, compute_value(value, values, evaluator)) for name, value in pairs)

    if isinstance(spec, SetAction):
        return tuple(SetField(name, value) for name, value in computed(spec.values))
    if isinstance(spec, PluginAction):
        return verbs.expand(spec, dict(computed(spec.values)), values)
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
                             spec.where, spec.own, spec.unless)
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
