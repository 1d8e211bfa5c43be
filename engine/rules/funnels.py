"""Stage gates, decided: is a move allowed, and is everything its stages demand done?

Given a funnel, the stage a record is in and the one it is asked to enter, `classify_move` says
what kind of move it is (forward, skip, back, lose, hold, resume, reopen, or the start of a new
record) and whether the funnel allows it, and which stages' requirements it must meet: every
stage a forward move enters or passes; from nowhere (a new record, a resumed or reopened one),
every stage of the path up to the target; for a loss or a hold, that stage's own (its reason).
A move back is a return and demands nothing.

`judge_move` then checks each requirement against the record's values and the facts the
runtime read for it (related records, the attached file, the latest approval) and returns a
`GateDecision`: the missing items — each with what is asked and how to satisfy it, in Chinese
and English — and, for the met ones, the evidence the `stage_changed` event keeps. Pure: the
facts come in, nothing is read here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.metamodel.entities import EntitySpec
from engine.metamodel.expressions import Expression
from engine.metamodel.funnels import FunnelSpec, RequirementKind, RequirementSpec, StageKind, StageSpec
from engine.metamodel.labels import Label
from engine.metamodel.model import Metamodel

Evaluate = Callable[[Expression, Mapping[str, Any]], Any]


class MoveKind(enum.StrEnum):
    START = "start"      # a new record, created in this stage
    FORWARD = "forward"  # to the next stage of the path
    SKIP = "skip"        # further along the path, over stages
    BACK = "back"        # to an earlier stage: a return
    LOSE = "lose"        # into a lost stage
    HOLD = "hold"        # into a hold (paused) stage
    RESUME = "resume"    # out of a hold stage
    REOPEN = "reopen"    # out of a won or lost stage


@dataclass(frozen=True, slots=True)
class Move:
    kind: MoveKind
    source: str | None
    target: str
    is_allowed: bool
    stages: tuple[StageSpec, ...]          # whose requirements the move must meet
    refusal: Label = Label(())             # why the funnel does not allow it

    @property
    def is_return(self) -> bool:
        return self.kind is MoveKind.BACK


@dataclass(frozen=True, slots=True)
class ApprovalFact:
    """The latest request of one approval for a record, as the runtime found it."""

    approval_id: int | None = None
    status: str | None = None                 # pending | approved | rejected | cancelled | None (never asked)
    covers_current: bool = True               # its approved values are still the record's values
    waiting_for: tuple[str, ...] = ()         # names of the approvers of the open step
    step: str = ""
    comment: str = ""
    changed: tuple[str, ...] = ()             # covered fields changed since it was granted
    decided_at: str | None = None


@dataclass(frozen=True, slots=True)
class FileFact:
    id: int
    name: str
    content_type: str


@dataclass(frozen=True, slots=True)
class RequirementCheck:
    stage: StageSpec
    requirement: RequirementSpec
    applies: bool                  # False: its `when` is false, so it is not asked for now
    is_met: bool
    state: str = ""                # why not: missing, wrong_type, too_few, unticked, pending, rejected, stale, false
    evidence: Any = None           # what proves it (kept in the stage_changed event)
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_missing(self) -> bool:
        return self.applies and not self.is_met


@dataclass(frozen=True, slots=True)
class GateDecision:
    move: Move
    checks: tuple[RequirementCheck, ...]

    @property
    def missing(self) -> tuple[RequirementCheck, ...]:
        return tuple(check for check in self.checks if check.is_missing)

    @property
    def is_allowed(self) -> bool:
        return self.move.is_allowed and not self.missing

    def evidence(self) -> list[dict[str, Any]]:
        """What each met requirement rests on, for the stage_changed event."""
        return [{"stage": check.stage.name, "key": check.requirement.key, "kind": check.requirement.kind.value,
                 "evidence": check.evidence} for check in self.checks if check.applies and check.is_met]


# -- moves --------------------------------------------------------------------------------------

def classify_move(funnel: FunnelSpec, source: str | None, target: str) -> Move:
    """The kind of move from `source` (None: a new record) to `target`, whether the funnel allows
    it, and the stages whose requirements it must meet."""
    to = funnel.stage(target)
    path = funnel.path
    if source is None or not funnel.has_stage(source):
        return Move(MoveKind.START, source, target, True, _entering(path, to))
    frm = funnel.stage(source)
    if frm.kind.is_closed:
        return _ruled(MoveKind.REOPEN, frm, to, _entering(path, to))
    if to.kind is StageKind.LOST:
        return _ruled(MoveKind.LOSE, frm, to, (to,))
    if to.kind is StageKind.HOLD:
        return _ruled(MoveKind.HOLD, frm, to, (to,))
    if frm.kind is StageKind.HOLD:
        return Move(MoveKind.RESUME, source, target, True, _entering(path, to))
    i, j = path.index(frm), path.index(to)
    if j < i:
        return _ruled(MoveKind.BACK, frm, to, ())
    kind = MoveKind.FORWARD if j == i + 1 else MoveKind.SKIP
    return _ruled(kind, frm, to, path[i + 1:j + 1], skipped=path[i + 1:j])


def _entering(path: tuple[StageSpec, ...], to: StageSpec) -> tuple[StageSpec, ...]:
    """Entering `to` from nowhere: every stage of the path up to it, or just it beside the path."""
    return path[:path.index(to) + 1] if to in path else (to,)


_REFUSALS = {
    MoveKind.FORWARD: ("“{frm}”不允许前进到下一阶段", "moving on from “{frm}” is not allowed"),
    MoveKind.SKIP: ("不能跳过阶段：从“{frm}”到“{to}”会跳过{skipped}，请逐个阶段推进",
                    "stages cannot be skipped: “{frm}” → “{to}” skips {skipped}; move one stage at a time"),
    MoveKind.BACK: ("“{frm}”不能退回到之前的阶段", "“{frm}” cannot go back to an earlier stage"),
    MoveKind.REOPEN: ("“{frm}”已结束，不能再变更阶段", "“{frm}” is closed; its stage cannot change any more"),
    MoveKind.LOSE: ("“{frm}”不能直接标记为“{to}”", "“{frm}” cannot be marked “{to}”"),
    MoveKind.HOLD: ("“{frm}”不能暂缓", "“{frm}” cannot be put on hold"),
}


def _ruled(kind: MoveKind, frm: StageSpec, to: StageSpec, stages: tuple[StageSpec, ...],
           skipped: tuple[StageSpec, ...] = ()) -> Move:
    allowed = frm.moves.allows(kind.value)
    refusal = Label(())
    if not allowed:
        zh, en = _REFUSALS[kind]
        refusal = Label((("zh", zh.format(frm=frm.label.text("zh"), to=to.label.text("zh"),
                                          skipped="、".join(f"“{s.label.text('zh')}”" for s in skipped))),
                         ("en", en.format(frm=frm.label.text("en"), to=to.label.text("en"),
                                          skipped=", ".join(f"“{s.label.text('en')}”" for s in skipped)))))
    return Move(kind, frm.name, to.name, allowed, stages, refusal)


# -- requirements --------------------------------------------------------------------------------

def judge_move(move: Move, values: Mapping[str, Any], facts: Mapping[str, Any], evaluate: Evaluate) -> GateDecision:
    """Every requirement of the move's stages, checked against `values` (as expressions see them)
    and the runtime's `facts` (keyed by `fact_key`)."""
    checks = tuple(check_requirement(stage, requirement, values, facts.get(fact_key(stage, requirement)), evaluate)
                   for stage in move.stages for requirement in stage.requirements)
    return GateDecision(move, checks)


def fact_key(stage: StageSpec, requirement: RequirementSpec) -> str:
    return f"{stage.name}/{requirement.key}"


def needs_fact(requirement: RequirementSpec) -> bool:
    """Whether checking the requirement needs something read from the database."""
    return requirement.kind in (RequirementKind.RELATED, RequirementKind.APPROVAL) or (
        requirement.kind is RequirementKind.ATTACHMENT and bool(requirement.types))


def applies(requirement: RequirementSpec, values: Mapping[str, Any], evaluate: Evaluate) -> bool:
    if requirement.when is None:
        return True
    try:
        return bool(evaluate(requirement.when, values))
    except Exception:  # a condition over an empty field does not hold yet (ExpressionError, arithmetic)
        return False


def check_requirement(stage: StageSpec, requirement: RequirementSpec, values: Mapping[str, Any], fact: Any,
                      evaluate: Evaluate) -> RequirementCheck:
    if not applies(requirement, values, evaluate):
        return RequirementCheck(stage, requirement, False, True, "not_asked")
    return _CHECKERS[requirement.kind](stage, requirement, values, fact, evaluate)


def _filled(value: Any) -> bool:
    return not (value is None or value == "" or value == [] or value == {} or
                isinstance(value, str) and not value.strip())


def _field(stage: StageSpec, requirement: RequirementSpec, values: Mapping[str, Any], fact: Any,
           evaluate: Evaluate) -> RequirementCheck:
    value = values.get(requirement.field or "")
    if _filled(value):
        return RequirementCheck(stage, requirement, True, True, evidence=_plain(value))
    return RequirementCheck(stage, requirement, True, False, "missing")


def _check(stage: StageSpec, requirement: RequirementSpec, values: Mapping[str, Any], fact: Any,
           evaluate: Evaluate) -> RequirementCheck:
    assert requirement.check is not None
    try:
        passed = bool(evaluate(requirement.check, values))
    except Exception:  # a check over an empty field is not met yet
        passed = False
    if passed:
        return RequirementCheck(stage, requirement, True, True, evidence=requirement.check.source)
    return RequirementCheck(stage, requirement, True, False, "false")


def _attachment(stage: StageSpec, requirement: RequirementSpec, values: Mapping[str, Any], fact: Any,
                evaluate: Evaluate) -> RequirementCheck:
    file_id = values.get(requirement.field or "")
    if file_id is None:
        return RequirementCheck(stage, requirement, True, False, "missing")
    if not requirement.types:
        return RequirementCheck(stage, requirement, True, True, evidence={"file": file_id})
    if not isinstance(fact, FileFact):
        return RequirementCheck(stage, requirement, True, False, "missing")
    evidence = {"file": fact.id, "name": fact.name, "content_type": fact.content_type}
    if any(content_type_matches(pattern, fact.content_type) for pattern in requirement.types):
        return RequirementCheck(stage, requirement, True, True, evidence=evidence)
    return RequirementCheck(stage, requirement, True, False, "wrong_type", detail=evidence)


def _related(stage: StageSpec, requirement: RequirementSpec, values: Mapping[str, Any], fact: Any,
             evaluate: Evaluate) -> RequirementCheck:
    found = tuple(fact or ())
    if len(found) >= requirement.minimum:
        return RequirementCheck(stage, requirement, True, True, evidence={"ids": list(found[:requirement.minimum])})
    return RequirementCheck(stage, requirement, True, False, "too_few",
                            detail={"found": len(found), "needed": requirement.minimum - len(found)})


def _checklist(stage: StageSpec, requirement: RequirementSpec, values: Mapping[str, Any], fact: Any,
               evaluate: Evaluate) -> RequirementCheck:
    ticked = set(values.get(requirement.field or "") or ())
    open_items = [item for item in requirement.items if item not in ticked]
    if not open_items:
        return RequirementCheck(stage, requirement, True, True, evidence=list(requirement.items))
    return RequirementCheck(stage, requirement, True, False, "unticked", detail={"items": open_items})


def _approval(stage: StageSpec, requirement: RequirementSpec, values: Mapping[str, Any], fact: Any,
              evaluate: Evaluate) -> RequirementCheck:
    state = fact if isinstance(fact, ApprovalFact) else ApprovalFact()
    if state.status == "approved" and state.covers_current:
        return RequirementCheck(stage, requirement, True, True,
                                evidence={"approval": state.approval_id, "decided_at": state.decided_at})
    why = "stale" if state.status == "approved" else state.status or "none"
    if why == "cancelled":
        why = "none"
    return RequirementCheck(stage, requirement, True, False, why,
                            detail={"approval": state.approval_id, "waiting_for": list(state.waiting_for),
                                    "step": state.step, "comment": state.comment, "changed": list(state.changed)})


_CHECKERS: dict[RequirementKind, Callable[..., RequirementCheck]] = {
    RequirementKind.FIELD: _field, RequirementKind.CHECK: _check, RequirementKind.ATTACHMENT: _attachment,
    RequirementKind.RELATED: _related, RequirementKind.CHECKLIST: _checklist, RequirementKind.APPROVAL: _approval,
}


def content_type_matches(pattern: str, content_type: str) -> bool:
    """`image/*` matches image/png; `application/pdf` only itself (parameters ignored)."""
    kind = content_type.split(";")[0].strip().lower()
    pattern = pattern.lower()
    if pattern.endswith("/*"):
        subtype = kind[len(pattern) - 1:]
        return kind.startswith(pattern[:-1]) and bool(subtype) and "/" not in subtype
    return "*" not in pattern and kind == pattern or "*" in pattern and re.fullmatch(
        re.escape(pattern).replace(r"\*", "[^/]+"), kind) is not None


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value if not isinstance(value, str) or len(value) <= 200 else value[:200] + "…"
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return str(value)


# -- what each missing item says -------------------------------------------------------------------

_TYPE_WORDS = {"application/pdf": ("PDF", "PDF"), "image/*": ("图片", "an image"),
               "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ("Word 文档", "a Word file")}


def _types_text(types: Sequence[str], lang: str) -> str:
    words = [_TYPE_WORDS.get(kind, (kind, kind))[0 if lang == "zh" else 1] for kind in types]
    return ("、" if lang == "zh" else " or ").join(words)


def how_to(check: RequirementCheck, model: Metamodel, entity: EntitySpec, lang: str) -> str:
    """How a user satisfies a missing requirement, in `lang` (the analyst's `how:` when written)."""
    requirement = check.requirement
    if requirement.how.texts:
        return requirement.how.text(lang)
    zh = lang == "zh"
    kind, detail = requirement.kind, check.detail
    if kind is RequirementKind.FIELD:
        label = entity.field(requirement.field or "").label.text(lang)
        return f"在表单中填写“{label}”" if zh else f"fill in “{label}” on the form"
    if kind is RequirementKind.CHECK:
        return f"修改记录，使其满足：{requirement.label.text(lang)}" if zh else \
            f"change the record so that: {requirement.label.text(lang)}"
    if kind is RequirementKind.ATTACHMENT:
        label = entity.field(requirement.field or "").label.text(lang)
        allowed = f"（{_types_text(requirement.types, lang)}）" if zh and requirement.types else \
            f" ({_types_text(requirement.types, lang)})" if requirement.types else ""
        if check.state == "wrong_type":
            return (f"“{detail.get('name')}”的类型是 {detail.get('content_type')}，请重新上传{allowed}" if zh else
                    f"“{detail.get('name')}” is {detail.get('content_type')}; upload{allowed} instead")
        return f"上传文件到“{label}”{allowed}" if zh else f"upload the file to “{label}”{allowed}"
    if kind is RequirementKind.RELATED:
        assert requirement.related is not None
        target = model.entity(requirement.related.entity)
        needed = detail.get("needed", requirement.minimum)
        return f"新建并关联{target.label.text(lang)}（还差 {needed} 条）" if zh else \
            f"add a new {target.label.text(lang).lower()} record to it ({needed} more needed)"
    if kind is RequirementKind.CHECKLIST:
        spec = entity.field(requirement.field or "")
        items = [spec.choice_label(item, lang) for item in detail.get("items", ())]
        return ("勾选：" + "、".join(items)) if zh else "tick: " + ", ".join(items)
    return _approval_how(check, model, entity, lang)


def _approval_how(check: RequirementCheck, model: Metamodel, entity: EntitySpec, lang: str) -> str:
    zh = lang == "zh"
    approval = model.approval(check.requirement.approval or "")
    label, detail = approval.label.text(lang), check.detail
    if check.state == "pending":
        who = ("、" if zh else ", ").join(detail.get("waiting_for") or ()) or ("审批人" if zh else "the approver")
        return f"审批中，等待{who}处理（{detail.get('step')}）" if zh else \
            f"pending: waiting for {who} ({detail.get('step')})"
    if check.state == "rejected":
        comment = detail.get("comment") or ""
        return (f"{label}被驳回（{comment}）：调整后重新申请" if zh else
                f"the {label} was rejected ({comment}): change the offer and request it again")
    if check.state == "stale":
        fields = ("、" if zh else ", ").join(entity.field(name).label.text(lang) if entity.has_field(name) else name
                                             for name in detail.get("changed") or ())
        return f"批准后{fields}已修改，请重新申请{label}" if zh else \
            f"{fields} changed after it was approved: request the {label} again"
    return f"申请{label}" if zh else f"request the {label}"


def missing_items(decision: GateDecision, model: Metamodel, entity: EntitySpec, lang: str) -> list[dict[str, Any]]:
    """The missing requirements as the API, the board and the form show them: stage, what, how."""
    return [item_json(check, model, entity, lang) for check in decision.missing]


def item_json(check: RequirementCheck, model: Metamodel, entity: EntitySpec, lang: str) -> dict[str, Any]:
    requirement = check.requirement
    return {"stage": check.stage.name, "stage_label": check.stage.label.text(lang), "key": requirement.key,
            "kind": requirement.kind.value, "field": requirement.field, "approval": requirement.approval,
            "state": check.state or ("met" if check.is_met else "missing"), "is_met": check.is_met,
            "what": requirement.label.text(lang), "how": "" if check.is_met else how_to(check, model, entity, lang)}


def refusal_headline(decision: GateDecision, funnel: FunnelSpec, lang: str) -> str:
    """The refusal without its items: the move's own refusal, or "cannot enter “Quote”"."""
    if not decision.move.is_allowed:
        return decision.move.refusal.text(lang)
    target = funnel.stage(decision.move.target).label.text(lang)
    return f"不能进入“{target}”" if lang == "zh" else f"cannot enter “{target}”"


def refusal_message(decision: GateDecision, entity: EntitySpec, funnel: FunnelSpec, lang: str) -> str:
    """One sentence: why the move is refused, for the top of a form or a board message."""
    target = funnel.stage(decision.move.target).label.text(lang)
    if not decision.move.is_allowed:
        return decision.move.refusal.text(lang)
    count = len(decision.missing)
    items = ("；" if lang == "zh" else "; ").join(check.requirement.label.text(lang) for check in decision.missing)
    if lang == "zh":
        return f"不能进入“{target}”：还缺 {count} 项——{items}"
    return f"cannot enter “{target}”: {count} requirement{'s' if count != 1 else ''} missing — {items}"
