"""The public satisfaction survey page (engine/runtime/automation/surveys.py): opened from the
link a closed ticket sent, answered without signing in, in Chinese or English, on a phone.

GET shows the question, a 1–5 choice and a comment box; POST stores the answer once. A link
that was used, replaced by a newer one, has expired or was never issued (a changed signature)
gets a page saying so and writes nothing; a wrong answer (no score) shows the form again with
the field named, status 400.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from engine.metamodel.surveys import SCALE
from engine.runtime.automation.surveys import Refusal, SurveyDesk, SurveyInputError, SurveyLink, SurveyRefused
from engine.runtime.web.screens.i18n import LANGUAGES, translate
from engine.runtime.web.screens.site import Site

_STATUS = {Refusal.FORGED: 404, Refusal.REPLACED: 410, Refusal.EXPIRED: 410, Refusal.USED: 409}


@dataclass(frozen=True, slots=True)
class SurveyContext:
    """What the survey page shows: the form (`question` set), or a closing message."""

    action: str
    question: str = ""
    subject: str = ""
    scale: tuple[int, ...] = SCALE
    score: str = ""
    comment: str = ""
    error: str | None = None
    error_field: str | None = None
    message: str | None = None
    message_kind: str = ""   # thanks | used | expired | replaced | forged


def _lang(site: Site, request: Request) -> str:
    """`?lang=en` on the link picks the language (kept in the session); else the visitor's choice."""
    chosen = request.query_params.get("lang")
    if chosen in (site.model.settings.languages or LANGUAGES):
        request.session["lang"] = chosen
    return site.lang(request)


def _render(site: Site, request: Request, context: SurveyContext, status: int = 200) -> HTMLResponse:
    lang = site.lang(request)
    return site.render(request, None, "survey.html", context, translate(lang, "survey_title"), status=status)


def _form(site: Site, request: Request, link: SurveyLink, lang: str, **values: Any) -> SurveyContext:
    spec = link.survey
    entity = site.model.entity(spec.entity)
    subject = str(link.record.get(entity.title_field) or "")
    return SurveyContext(action=request.url.path, question=spec.question.text(lang), subject=subject, **values)


def _refused(site: Site, request: Request, refusal: Refusal) -> HTMLResponse:
    lang = site.lang(request)
    context = SurveyContext(action="", message=translate(lang, f"survey_{refusal.value}"), message_kind=refusal.value)
    return _render(site, request, context, status=_STATUS[refusal])


def survey_page(site: Site, desk: SurveyDesk, request: Request, survey: str, token: str,
                now: dt.datetime) -> HTMLResponse:
    lang = _lang(site, request)
    try:
        link = desk.open(survey, token, now)
    except SurveyRefused as refused:
        return _refused(site, request, refused.refusal)
    return _render(site, request, _form(site, request, link, lang))


def survey_answer(site: Site, desk: SurveyDesk, request: Request, survey: str, token: str, form: Any,
                  now: dt.datetime) -> HTMLResponse:
    lang = site.lang(request)
    score, comment = str(form.get("score", "")), str(form.get("comment", ""))
    try:
        desk.answer(survey, token, score, comment, now)
    except SurveyRefused as refused:
        return _refused(site, request, refused.refusal)
    except SurveyInputError as wrong:
        try:
            link = desk.open(survey, token, now)
        except SurveyRefused as refused:
            return _refused(site, request, refused.refusal)
        context = _form(site, request, link, lang, score=score, comment=comment[:2000],
                        error=translate(lang, wrong.key), error_field=wrong.field)
        return _render(site, request, context, status=400)
    context = SurveyContext(action="", message=translate(lang, "survey_thanks"), message_kind="thanks")
    return _render(site, request, context)
