"""A record's funnel outlook as JSON (GET /api/{entity}/{id}/funnel), in the reader's language:
the stages with done / current / next, the next stage's requirements — each met, or with what it
asks and how to satisfy it — and the current stage's guidance and talk tracks."""

from __future__ import annotations

from typing import Any

from engine.metamodel import EntitySpec, Metamodel
from engine.rules.funnels import item_json
from engine.runtime.automation.funnels import FunnelOutlook


def outlook_json(outlook: FunnelOutlook, model: Metamodel, entity: EntitySpec, lang: str) -> dict[str, Any]:
    current = outlook.current
    track_field = entity.field(outlook.funnel.talk_track_field) if outlook.funnel.talk_track_field else None
    return {
        "funnel": outlook.funnel.name, "field": outlook.funnel.field,
        "stage": current.name if current else None,
        "entered_at": outlook.entered_at.isoformat() if outlook.entered_at else None,
        "stages": [{"name": item.stage.name, "label": item.stage.label.text(lang), "kind": item.stage.kind.value,
                    "probability": item.stage.probability, "state": item.state} for item in outlook.stages],
        "next": None if outlook.next is None or outlook.next_move is None else {
            "stage": outlook.next.name, "label": outlook.next.label.text(lang), "move": outlook.next_move.kind.value,
            "allowed": outlook.next_move.is_allowed and not any(check.is_missing for check in outlook.checks),
            "requirements": [item_json(check, model, entity, lang) for check in outlook.checks if check.applies]},
        "guidance": current.guidance.text(lang) if current else "",
        "talk_tracks": [{"value": value, "label": "*" if value == "*" or track_field is None
                         else track_field.choice_label(value, lang), "text": text.text(lang),
                         "is_current": value == outlook.track} for value, text in outlook.talk_tracks()],
    }
