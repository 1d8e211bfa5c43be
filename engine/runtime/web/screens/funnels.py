"""The funnel and approvals on the record page, and their one-click actions.

A record in a funnel shows its stage bar (done / current / next), what the next stage needs —
each requirement ticked, or with its one-click way to satisfy it: fill in the field, upload the
file, log the related record, tick the checklist, request the approval — and the current
stage's guidance and talk tracks (the one for the customer's concern first). Every action is an
ordinary write through RecordService (or the approvals desk), so it meets the same gates.
An approval task's page lets its approver approve or reject with a comment; a request's page
lets its requester withdraw it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from markupsafe import escape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from engine.metamodel import EntitySpec
from engine.metamodel.approvals import APPROVAL_ENTITY, TASK_ENTITY
from engine.metamodel.funnels import RequirementKind, StageKind
from engine.rules.approvals import plan_from_json
from engine.rules.funnels import RequirementCheck, how_to
from engine.runtime.automation.funnels import FunnelOutlook
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import RecordError, StageRefused, ValidationFailed
from engine.runtime.web.screens.contexts import (ApprovalLine, ApprovalsPanel, Choice, DecisionPanel, DisplayItem,
                                                 FunnelPanel, RequirementItem, SetAside, StageChip, TalkTrack)
from engine.runtime.web.screens.event_values import event_value
from engine.runtime.web.screens.i18n import field_error_text, translate
from engine.runtime.web.screens.site import Site
from engine.runtime.web.widgets import NOT_SUBMITTED, FieldContext, InputError, local_time

_ACCEPT = {"application/pdf": ".pdf,application/pdf", "image/*": "image/*"}


# -- what the record page shows ---------------------------------------------------------------------

def funnel_panel(site: Site, actor: Actor, entity: EntitySpec, record: dict[str, Any], lang: str) -> FunnelPanel | None:
    outlook = site.services.funnels.outlook(entity, record)
    if outlook is None:
        return None
    can_act = site.may(actor, entity.name, "update", record)
    base = f"/{entity.name}/{record['id']}"
    items = tuple(_item(site, actor, entity, record, check, lang, can_act, base)
                  for check in outlook.checks if check.applies)
    move = outlook.next_move
    return FunnelPanel(
        title=outlook.funnel.label.text(lang) if outlook.funnel.label.texts else entity.field(
            outlook.funnel.field).label.text(lang),
        stages=tuple(StageChip(item.stage.name, item.stage.label.text(lang), item.state,
                               f"{item.stage.probability}%" if item.stage.probability is not None else "")
                     for item in outlook.stages),
        current=outlook.current.label.text(lang) if outlook.current else "—",
        since=_since(outlook, site, lang), next_stage=outlook.next.name if outlook.next else None,
        next_label=outlook.next.label.text(lang) if outlook.next else "", items=items, can_act=can_act,
        is_ready=move is not None and move.is_allowed and all(item.is_met for item in items),
        move_refusal=move.refusal.text(lang) if move is not None and not move.is_allowed else "",
        action_base=base, guidance=outlook.current.guidance.text(lang) if outlook.current else "",
        talk_tracks=_tracks(entity, outlook, lang),
        set_aside=_set_aside_forms(site, entity, outlook, record, lang) if can_act else ())


def _set_aside_forms(site: Site, entity: EntitySpec, outlook: FunnelOutlook, record: dict[str, Any], lang: str
                     ) -> tuple[SetAside, ...]:
    """While the record is open or paused: one form per lost/paused stage, with that stage's reason."""
    current = outlook.current
    if current is None or current.kind not in (StageKind.OPEN, StageKind.HOLD):
        return ()
    forms = []
    for stage in outlook.funnel.stages:
        if stage.kind not in (StageKind.LOST, StageKind.HOLD) or stage.name == current.name or not stage.reason \
                or not entity.has_field(stage.reason):
            continue
        spec = entity.field(stage.reason)
        field = FieldContext(spec, spec.label.text(lang), spec.help.text(lang), True)
        control = site.widgets.for_field(spec).render_form(field, record.get(spec.name), [], lang)
        forms.append(SetAside(stage.name, translate(lang, "set_aside_to", label=stage.label.text(lang)),
                              field.label, spec.name, control))
    return tuple(forms)


def _since(outlook: FunnelOutlook, site: Site, lang: str) -> str:
    if outlook.entered_at is None:
        return ""
    days = (site.services.clock.now() - outlook.entered_at) / dt.timedelta(days=1)
    when = local_time(outlook.entered_at, site.model.settings.timezone).strftime("%Y-%m-%d")
    return translate(lang, "stage_since", date=when, days=f"{days:.1f}")


def _tracks(entity: EntitySpec, outlook: FunnelOutlook, lang: str) -> tuple[TalkTrack, ...]:
    field = entity.field(outlook.funnel.talk_track_field) if outlook.funnel.talk_track_field else None
    return tuple(TalkTrack(translate(lang, "any_concern") if value == "*" or field is None
                           else field.choice_label(value, lang), text.text(lang), value == outlook.track)
                 for value, text in outlook.talk_tracks())


def _item(site: Site, actor: Actor, entity: EntitySpec, record: dict[str, Any], check: RequirementCheck, lang: str,
          can_act: bool, base: str) -> RequirementItem:
    requirement = check.requirement
    item = RequirementItem(requirement.label.text(lang), "" if check.is_met else how_to(
        check, site.model, entity, lang), check.is_met, requirement.kind.value)
    if check.is_met or not can_act:
        return _with_status(site, item, check, base) if requirement.kind is RequirementKind.APPROVAL else item
    kind = requirement.kind
    if kind in (RequirementKind.FIELD, RequirementKind.CHECK):
        anchor = f"#f-{requirement.field}" if requirement.field else ""
        return _replace(item, link_url=f"{base}/edit{anchor}", link_label=translate(lang, "fill_it"))
    if kind is RequirementKind.ATTACHMENT:
        accept = ",".join(_ACCEPT.get(kind_, kind_) for kind_ in requirement.types)
        return _replace(item, upload_field=requirement.field, upload_accept=accept)
    if kind is RequirementKind.CHECKLIST:
        spec = entity.field(requirement.field or "")
        ticked = set(record.get(spec.name) or ())
        return _replace(item, checklist_field=spec.name, checklist=tuple(
            Choice(value, spec.choice_label(value, lang), value in ticked) for value in spec.choice_values()))
    if kind is RequirementKind.RELATED:
        assert requirement.related is not None
        related = requirement.related
        if related.mode.value != "children" or not site.may(actor, related.entity, "create"):
            return item
        query = urlencode([(related.via, str(record["id"])), *((name, str(value).lower() if isinstance(value, bool)
                                                                 else str(value)) for name, value in requirement.prefill),
                           ("next", base)])
        return _replace(item, link_url=f"/{related.entity}/new?{query}", link_label=translate(lang, "log_it"))
    return _with_status(site, _replace(item, request_url=None if check.state == "pending" else
                                       f"{base}/approvals/{requirement.approval}"), check, base)


def _with_status(site: Site, item: RequirementItem, check: RequirementCheck, base: str) -> RequirementItem:
    approval = check.detail.get("approval") if check.detail else None
    if approval is None and isinstance(check.evidence, dict):
        approval = check.evidence.get("approval")
    return _replace(item, status_url=f"/{APPROVAL_ENTITY}/{approval}" if approval else None)


def _replace(item: RequirementItem, **changes: Any) -> RequirementItem:
    import dataclasses
    return dataclasses.replace(item, **changes)


def approvals_panel(site: Site, actor: Actor, entity: EntitySpec, record: dict[str, Any],
                    lang: str) -> ApprovalsPanel | None:
    desk = site.services.approvals
    specs = site.model.approvals_for(entity.name)
    if desk is None or not specs:
        return None
    request_entity = site.model.entity(APPROVAL_ENTITY)
    status = request_entity.field("status")
    zone = site.model.settings.timezone
    lines = tuple(ApprovalLine(
        site.model.approval(row["approval_name"]).label.text(lang) if site.model.has_approval(row["approval_name"])
        else str(row["approval_name"]), str(row["status"]), status.choice_label(str(row["status"]), lang),
        str(row.get("current_step") or ""), f"/{APPROVAL_ENTITY}/{row['id']}",
        local_time(row["created_at"], zone).strftime("%Y-%m-%d %H:%M")) for row in desk.requests_of(entity.name,
                                                                                                     record["id"]))
    base = f"/{entity.name}/{record['id']}"
    return ApprovalsPanel(lines, tuple(Choice(f"{base}/approvals/{spec.name}", spec.label.text(lang))
                                       for spec in specs), site.may(actor, entity.name, "update", record))


def decision_panel(site: Site, actor: Actor, entity: EntitySpec, record: dict[str, Any],
                   lang: str) -> DecisionPanel | None:
    if entity.name not in (APPROVAL_ENTITY, TASK_ENTITY):
        return None
    subject_entity, subject_id = str(record.get("subject_entity") or ""), record.get("subject_id")
    subject_url = f"/{subject_entity}/{subject_id}" if site.model.has_entity(subject_entity) and subject_id else None
    status = str(record.get("status") or "")
    pending = status == "pending"
    plan: tuple[str, ...] = ()
    if entity.name == APPROVAL_ENTITY and site.model.has_approval(str(record.get("approval_name"))):
        spec = site.model.approval(str(record["approval_name"]))
        # each step by its label (which says when it applies); the values it saw are shown below
        plan = tuple(f"{spec.step(step.step).label.text(lang)}：" + (translate(lang, "step_applies") if step.applies
                                                                     else translate(lang, "step_skipped"))
                     for step in plan_from_json(record.get("plan")))
    is_admin = actor.role == "admin" or bool(actor.role and site.model.has_role(actor.role)
                                             and site.model.role(actor.role).is_admin)
    mine = record.get("owner") == actor.id or is_admin
    base = f"/{entity.name}/{record['id']}"
    return DecisionPanel(
        subject_url, str(record.get("subject_title") or subject_url or ""), status,
        entity.field("status").choice_label(status, lang),
        decide_url=f"{base}/decide" if entity.name == TASK_ENTITY and pending and mine else None,
        withdraw_url=f"{base}/withdraw" if entity.name == APPROVAL_ENTITY and pending and mine else None, plan=plan,
        covered=_covered(site, subject_entity, _covered_values(site, entity, record), lang))


def _covered_values(site: Site, entity: EntitySpec, record: dict[str, Any]) -> Any:
    """The values the request was made for (a task shows its request's: what is being approved)."""
    if entity.name == APPROVAL_ENTITY:
        return record.get("covered")
    table = site.services.schema.table(APPROVAL_ENTITY)
    with site.services.db.read() as connection:
        return connection.execute(sa.select(table.c.covered).where(table.c.id == record.get("approval"))).scalar()


def _covered(site: Site, subject_entity: str, values: Any, lang: str) -> tuple[DisplayItem, ...]:
    """Those values (JSON form) as people read them: the subject's field labels, choices by label,
    money with its currency."""
    if not isinstance(values, dict) or not site.model.has_entity(subject_entity):
        return ()
    subject, users = site.model.entity(subject_entity), site.user_names()
    return tuple(DisplayItem(subject.field(name).label.text(lang),
                             escape(event_value(subject, name, value, lang, users)))
                 for name, value in values.items() if subject.has_field(name))


# -- refusals as people read them ---------------------------------------------------------------------

def refusal_text(error: RecordError, entity: EntitySpec, lang: str) -> str:
    """A refused write in one line: a stage refusal with each missing item and how to satisfy it."""
    if isinstance(error, StageRefused):
        items = [translate(lang, "refusal_item", what=item["what"], how=item["how"]) for item in error.items(lang)]
        return translate(lang, "refusal_items", headline=error.headline(lang),
                         items=translate(lang, "list_separator").join(items)) if items else error.headline(lang)
    if isinstance(error, ValidationFailed):
        return "; ".join(field_error_text(entity, failure, lang) for failure in error.errors)
    return error.text(lang)


# -- the one-click actions -------------------------------------------------------------------------------

def _back(site: Site, request: Request, entity: EntitySpec, record_id: int, message: str) -> Response:
    site.flash(request, message)
    return RedirectResponse(f"/{entity.name}/{record_id}", status_code=303)


def _version(form: Any) -> int | None:
    text = str(form.get("version", ""))
    return int(text) if text.isdigit() else None


def advance(site: Site, request: Request, actor: Actor, entity_name: str, record_id: int, form: Any) -> Response:
    """The "move to the next stage" button (or any `to`): RecordService.transition, refusals explained."""
    entity = site.records.entity(entity_name)
    lang = site.lang(request)
    target = str(form.get("to", ""))
    try:
        site.records.transition(entity.name, record_id, target, actor=actor, expected_version=_version(form))
    except RecordError as error:
        return _back(site, request, entity, record_id, refusal_text(error, entity, lang))
    funnel = site.model.funnel_for(entity.name)
    label = funnel.stage(target).label.text(lang) if funnel and funnel.has_stage(target) else target
    return _back(site, request, entity, record_id, translate(lang, "moved", label=label))


def set_aside(site: Site, request: Request, actor: Actor, entity_name: str, record_id: int, form: Any
              ) -> Response:
    """Move the record to a lost or paused stage with its reason in one write (RecordService checks
    the move, the reason and the version); a refusal comes back at the top of the page."""
    entity = site.records.entity(entity_name)
    lang = site.lang(request)
    funnel = site.model.funnel_for(entity.name)
    target = str(form.get("to", ""))
    if funnel is None or not funnel.has_stage(target) or funnel.stage(target).kind not in (StageKind.LOST,
                                                                                           StageKind.HOLD):
        return _back(site, request, entity, record_id, translate(lang, "set_aside_unknown", stage=target[:40]))
    stage = funnel.stage(target)
    changes: dict[str, Any] = {funnel.field: target}
    if stage.reason and entity.has_field(stage.reason):
        spec = entity.field(stage.reason)
        try:
            value = site.widgets.for_field(spec).parse(FieldContext(spec, spec.label.text(lang)),
                                                       {key: form.getlist(key) for key in form.keys()})
        except InputError as error:
            return _back(site, request, entity, record_id, str(error))
        if value is not NOT_SUBMITTED:
            changes[spec.name] = value
    try:
        site.records.update(entity.name, record_id, changes, actor=actor, expected_version=_version(form))
    except RecordError as error:
        return _back(site, request, entity, record_id, refusal_text(error, entity, lang))
    return _back(site, request, entity, record_id, translate(lang, "moved", label=stage.label.text(lang)))


def attach(site: Site, request: Request, actor: Actor, entity_name: str, record_id: int,
           form: dict[str, list[Any]]) -> Response:
    """One-click upload into an attachment field (the file was stored when the form was read)."""
    entity = site.records.entity(entity_name)
    lang = site.lang(request)
    field = str((form.get("field") or [""])[-1])
    if not entity.has_field(field):
        return _back(site, request, entity, record_id, translate(lang, "pick_file"))
    if form.get(f"{field}__too_large"):
        return _back(site, request, entity, record_id, translate(lang, "file_too_large"))
    files = form.get(field) or []
    if not files:
        return _back(site, request, entity, record_id, translate(lang, "pick_file"))
    try:
        site.records.update(entity.name, record_id, {field: files[-1]}, actor=actor)
    except RecordError as error:
        return _back(site, request, entity, record_id, refusal_text(error, entity, lang))
    return _back(site, request, entity, record_id, translate(lang, "uploaded", label=entity.field(field).label.text(lang)))


def tick(site: Site, request: Request, actor: Actor, entity_name: str, record_id: int, form: Any) -> Response:
    """The checklist's boxes saved into its multichoice field."""
    entity = site.records.entity(entity_name)
    lang = site.lang(request)
    field = str(form.get("field", ""))
    try:
        site.records.update(entity.name, record_id, {field: [str(value) for value in form.getlist("items")]},
                            actor=actor, expected_version=_version(form))
    except RecordError as error:
        return _back(site, request, entity, record_id, refusal_text(error, entity, lang))
    return _back(site, request, entity, record_id, translate(lang, "saved"))


def request_approval(site: Site, request: Request, actor: Actor, entity_name: str, record_id: int, approval: str,
                     form: Any) -> Response:
    entity = site.records.entity(entity_name)
    lang = site.lang(request)
    desk = site.services.approvals
    if desk is None:
        return _back(site, request, entity, record_id, translate(lang, "no_approvals"))
    try:
        desk.request(entity.name, record_id, approval, actor=actor, reason=str(form.get("reason", "")) or None)
    except RecordError as error:
        return _back(site, request, entity, record_id, error.text(lang))
    return _back(site, request, entity, record_id, translate(lang, "approval_requested",
                                                             label=site.model.approval(approval).label.text(lang)))


def decide(site: Site, request: Request, actor: Actor, record_id: int, form: Any) -> Response:
    """The approver's approve / reject, with the comment."""
    entity = site.records.entity(TASK_ENTITY)
    lang = site.lang(request)
    desk = site.services.approvals
    if desk is None:
        return _back(site, request, entity, record_id, translate(lang, "no_approvals"))
    decision = str(form.get("decision", ""))
    try:
        desk.decide(record_id, decision, str(form.get("comment", "")).strip() or None, actor=actor,
                    expected_version=_version(form))
    except RecordError as error:
        return _back(site, request, entity, record_id, refusal_text(error, entity, lang))
    return _back(site, request, entity, record_id, translate(lang, "decided_" + ("approve" if decision == "approve"
                                                                                  else "reject")))


def withdraw(site: Site, request: Request, actor: Actor, record_id: int, form: Any) -> Response:
    entity = site.records.entity(APPROVAL_ENTITY)
    lang = site.lang(request)
    try:
        site.records.update(APPROVAL_ENTITY, record_id, {"status": "cancelled"}, actor=actor,
                            expected_version=_version(form))
    except RecordError as error:
        return _back(site, request, entity, record_id, refusal_text(error, entity, lang))
    return _back(site, request, entity, record_id, translate(lang, "withdrawn"))
