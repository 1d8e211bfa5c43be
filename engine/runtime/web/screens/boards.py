"""The board: a kanban of one choice field; dropping a card on a column calls RecordService.transition."""

from __future__ import annotations

import json
from urllib.parse import urlencode
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from engine.metamodel import EntitySpec, FieldType
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import RecordError, StageRefused, ValidationFailed
from engine.runtime.records.queries import Filter, ListQuery
from engine.runtime.web.screens.contexts import BoardColumn, BoardContext, Card, Choice
from engine.runtime.web.screens.funnels import refusal_text
from engine.runtime.web.screens.error_texts import error_text
from engine.runtime.web.screens.handovers import handover_panel
from engine.runtime.web.screens.i18n import field_error_text, translate
from engine.runtime.web.screens.lists import cell_renderer
from engine.runtime.web.screens.site import Site
from engine.runtime.web.screens.workday import format_amount

CARDS_PER_COLUMN = 50


def board_field(entity: EntitySpec, requested: str | None) -> str:
    """`?field=` when it names a choice field, else the blueprint's board field, else the first choice field."""
    choices = [spec.name for spec in entity.fields if spec.type is FieldType.CHOICE]
    if requested is not None and requested in choices:
        return requested
    if entity.board is not None:
        return entity.board.field
    if not choices:
        raise RecordError(f"{entity.name} has no choice field to show as a board", field="field")
    return choices[0]


def _amount(entity: EntitySpec, field: str, total: Any, lang: str) -> str:
    """A column's total, named: "预算 1,280,000.00 CNY" (empty when the column has nothing to add up)."""
    shown = format_amount(total, entity.field(field).currency)
    return f"{entity.field(field).label.text(lang)} {shown}" if shown else ""


def board_screen(site: Site, request: Request, actor: Actor, entity_name: str) -> HTMLResponse:
    entity = site.records.entity(entity_name)
    lang = site.lang(request)
    name = board_field(entity, request.query_params.get("field"))
    spec = entity.field(name)
    hidden = site.records.access.permissions(actor, entity.name).hidden
    card_fields = [n for n in (entity.board.card if entity.board and entity.board.field == name
                               else entity.list_view().columns[:4]) if n not in hidden and n != entity.title_field]
    sort = entity.list_view().sort
    declared = entity.board.sum if entity.board and entity.board.field == name else None
    money = next((field for field in ([declared] if declared else card_fields) if field in entity.money_fields
                  and field not in hidden), None)  # never a money field nobody asked to add up
    pages = [(choice, site.records.list(entity.name, ListQuery(filters=(Filter(name, "eq", choice.value),),
                                                               sort=sort, per_page=CARDS_PER_COLUMN), actor=actor,
                                        sums=[money] if money else ()))
             for choice in spec.choices]
    items = [item for _, page in pages for item in page.items]
    renderers = {n: cell_renderer(site, actor, entity, n, [item.get(n) for item in items], lang) for n in card_fields}
    columns = tuple(BoardColumn(choice.value, choice.label.text(lang), page.total_text, tuple(
        Card(item["id"], f"/{entity.name}/{item['id']}", str(item.get(entity.title_field) or f"#{item['id']}"),
             item["version"], tuple(renderers[n](item.get(n)) for n in card_fields if item.get(n) not in (None, "")))
        for item in page.items), f"/{entity.name}?{urlencode({name: choice.value})}" if page.more
        else None, _amount(entity, money, page.extra.get("sums", {}).get(money), lang) if money else "")
        for choice, page in pages)
    handover = site.model.handover_for(entity.name, name)
    panel = handover_panel(site, request, handover, [item["id"] for item in items], lang) if handover else None
    context = BoardContext(
        entity=entity.name, title=f"{entity.plural.text(lang)} · {spec.label.text(lang)}", field=name,
        field_label=spec.label.text(lang),
        fields=tuple(Choice(s.name, s.label.text(lang), s.name == name) for s in entity.fields
                     if s.type is FieldType.CHOICE and s.name not in hidden),
        columns=columns, move_url=f"/{entity.name}/move", list_url=f"/{entity.name}",
        can_move=site.may(actor, entity.name, "update") and name not in
        site.records.access.permissions(actor, entity.name).readonly, handover=panel)
    return site.render(request, actor, "board.html", context, context.title)


def move_card(site: Site, request: Request, actor: Actor, entity_name: str, body: bytes) -> JSONResponse:
    """Answer a drop: {ok, version} or {ok: false, message} with the server's reason."""
    try:
        payload: Any = json.loads(body[:10_000] or b"{}")
        record_id, target, field = int(payload["id"]), str(payload["to"])[:64], str(payload["field"])[:64]
        version = int(payload["version"]) if payload.get("version") is not None else None
        if not 0 < record_id < 2**31:
            raise ValueError("not a record id")
    except (ValueError, KeyError, TypeError, RecursionError, AttributeError):
        return JSONResponse({"ok": False, "message": "send {id, field, to, version}"}, status_code=400)
    ok, status, answer = _move(site, request, actor, entity_name, record_id, field, target, version)
    if ok:
        return JSONResponse({"ok": True, "version": answer}, status_code=status)
    if isinstance(answer, StageRefused):  # the card shows every missing item and how to satisfy it
        lang = site.lang(request)
        return JSONResponse({"ok": False, "message": translate(lang, "move_refused", reason=answer.headline(lang)),
                             "missing": answer.items(lang)}, status_code=status)
    return JSONResponse({"ok": False, "message": answer}, status_code=status)


def move_card_form(site: Site, request: Request, actor: Actor, entity_name: str, form: Any) -> Response:
    """The same move from the per-card select (phones, keyboards, no JavaScript): back to the board."""
    entity = site.records.entity(entity_name)
    field = str(form.get("field", ""))
    version = str(form.get("version", ""))
    try:
        record_id = int(str(form.get("id", "")))
    except ValueError:
        return RedirectResponse(f"/{entity.name}/board", status_code=303)
    ok, _, answer = _move(site, request, actor, entity.name, record_id, field, str(form.get("to", "")),
                          int(version) if version.isdigit() else None)
    lang = site.lang(request)
    if ok and entity.has_field(field):
        answer = translate(lang, "moved", label=entity.field(field).choice_label(str(form.get("to", "")), lang))
    elif isinstance(answer, StageRefused):
        answer = translate(lang, "move_refused", reason=refusal_text(answer, entity, lang))
    site.flash(request, str(answer))
    return RedirectResponse(f"/{entity.name}/board?field={field}", status_code=303)


def _move(site: Site, request: Request, actor: Actor, entity_name: str, record_id: int, field: str, target: str,
          version: int | None) -> tuple[bool, int, Any]:
    """(moved?, HTTP status, new version or the reason: a StageRefused, or text in the user's language)."""
    entity = site.records.entity(entity_name)
    lang = site.lang(request)
    try:
        record = site.records.transition(entity.name, record_id, target, field=field, actor=actor,
                                         expected_version=version)
    except StageRefused as refused:
        return False, refused.status, refused
    except ValidationFailed as failed:
        reason = "; ".join(field_error_text(entity, error, lang)
                           for error in failed.errors)
        return False, failed.status, translate(lang, "move_refused", reason=reason)
    except RecordError as error:
        return False, error.status, translate(lang, "move_refused", reason=error_text(error, lang, site.model, entity.name))
    return True, 200, record["version"]
