"""The screens' routes, and the one wrapper every screen goes through: sign-in required,
CSRF checked on every POST, RecordService refusals turned into 403 and 404 pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from engine.runtime.web.services import WebServices
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import NotFound, RecordError, UnknownEntity
from engine.runtime.records.permissions import Forbidden
from engine.runtime.web.screens.error_texts import error_text
from engine.runtime.web.screens.catalogue import catalogue
from engine.runtime.web.screens import (accounts, admin, boards, collab, dashboards, forms, funnels, lists,
                                         record_page, surveys, transfers, workday)
from engine.runtime.web.screens.contexts import ErrorContext
from engine.runtime.web.screens.i18n import permission_word, translate
from engine.runtime.web.screens.security import CSRF_FIELD, CSRF_HEADER, CsrfRefused, check_csrf
from engine.runtime.web.screens.site import TEMPLATES, Site
from engine.runtime.web.widgets import WidgetRegistry

STATIC = TEMPLATES.parent / "static"
Endpoint = Callable[[Request], Awaitable[Response]]


def error_page(site: Site, request: Request, actor: Actor | None, error: Exception) -> HTMLResponse:
    """A 403 page naming the missing permission, or a 404 page; never an empty list."""
    lang = site.lang(request)
    if isinstance(error, CsrfRefused):
        context = ErrorContext(403, translate(lang, "forbidden_title"), translate(lang, "csrf_refused"))
    elif isinstance(error, Forbidden):
        entity = str(error.details.get("entity") or "")
        label = site.model.entity(entity).plural.text(lang) if site.model.has_entity(entity) else \
            translate(lang, f"permission_area_{entity}") if f"permission_area_{entity}" in catalogue(lang) else entity
        context = ErrorContext(403, translate(lang, "forbidden_title"), translate(
            lang, "forbidden_text", permission=permission_word(lang, str(error.details.get("permission", ""))),
            entity=label), error.message if lang == "en" else "")
    elif isinstance(error, (NotFound, UnknownEntity)) or not isinstance(error, RecordError):
        context = ErrorContext(404, translate(lang, "not_found_title"), translate(lang, "not_found_text"),
                               getattr(error, "message", "") if lang == "en" else "")
    else:
        context = ErrorContext(error.status, translate(lang, "problem_title"), error_text(error, lang, site.model))
    return site.render(request, actor, "error.html", context, context.title, status=context.status)


class ScreenRoutes:
    """Route table of the screens for one runtime; `routes()` is mounted by create_app."""

    def __init__(self, services: WebServices, widgets: WidgetRegistry) -> None:
        self.site = Site(services, widgets)

    def routes(self) -> list[Any]:
        screen = self._screen
        return [
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
            Route("/", screen(self.home), methods=["GET"]),
            Route("/login", self._public(self.login_page), methods=["GET"]),
            Route("/login", self._public(self.login_post, check=True), methods=["POST"]),
            Route("/logout", self._public(self.logout, check=True), methods=["POST"]),
            Route("/language", self._public(self.language, check=True), methods=["POST"]),
            Route("/survey/{survey}/{token}", self._public(self.survey), methods=["GET"]),
            Route("/survey/{survey}/{token}", self._public(self.survey_answer, check=True), methods=["POST"]),
            Route("/admin", self.admin_home, methods=["GET"]),
            Route("/admin/users", screen(self.users), methods=["GET"]),
            Route("/admin/users/{user_id:int}", screen(self.change_user), methods=["POST"]),
            Route("/admin/tokens/revoke", screen(self.revoke_token), methods=["POST"]),
            Route("/admin/users/{user_id:int}", screen(self.user), methods=["GET"]),
            Route("/admin/users/new", screen(self.new_user), methods=["GET"]),
            Route("/admin/users/new", screen(self.create_user), methods=["POST"]),
            Route("/admin/audit", screen(self.audit), methods=["GET"]),
            Route("/admin/blueprint", screen(self.blueprint), methods=["GET"]),
            Route("/admin/outbox", screen(self.outbox), methods=["GET"]),
            Route("/admin/outbox/retry", screen(self.retry_outbox), methods=["POST"]),
            Route("/inbox", screen(self.inbox), methods=["GET"]),
            Route("/inbox/read", screen(self.mark_read), methods=["POST"]),
            Route("/inbox/{notice_id:int}/open", screen(self.open_notice), methods=["GET"]),
            Route("/search", screen(self.search), methods=["GET"]),
            Route("/favicon.ico", self.favicon, methods=["GET"]),
            Route("/dashboards/charts.css", self.charts_css, methods=["GET"]),
            Route("/dashboards/{name}", screen(self.dashboard), methods=["GET"]),
            Route("/dashboards/{name}/{widget}.{kind}", screen(self.export_widget), methods=["GET"]),
            Route("/imports", screen(self.imports), methods=["GET"]),
            Route("/imports", screen(self.upload), methods=["POST"]),
            Route("/imports/review", screen(self.review_import), methods=["POST"]),
            Route("/imports/run", screen(self.run_import), methods=["POST"]),
            Route("/imports/{import_id:int}", screen(self.import_page), methods=["GET"]),
            Route("/imports/{import_id:int}/errors", screen(self.import_errors), methods=["GET"]),
            Route("/{entity}", screen(self.list), methods=["GET"]),
            Route("/{entity}/export.xlsx", screen(self.export_xlsx), methods=["GET"]),
            Route("/{entity}/export", screen(self.export), methods=["GET"]),
            Route("/{entity}/board", screen(self.board), methods=["GET"]),
            Route("/{entity}/new", screen(self.new), methods=["GET"]),
            Route("/{entity}/new", screen(self.create), methods=["POST"]),
            Route("/{entity}/assign", screen(self.assign), methods=["POST"]),
            Route("/{entity}/move", screen(self.move), methods=["POST"]),
            Route("/{entity}/{record_id:int}", screen(self.record), methods=["GET"]),
            Route("/{entity}/{record_id:int}/edit", screen(self.edit), methods=["GET"]),
            Route("/{entity}/{record_id:int}/edit", screen(self.update), methods=["POST"]),
            Route("/{entity}/{record_id:int}/delete", screen(self.delete), methods=["POST"]),
            Route("/{entity}/{record_id:int}/transition", screen(self.advance), methods=["POST"]),
            Route("/{entity}/{record_id:int}/convert", screen(self.convert), methods=["POST"]),
            Route("/{entity}/{record_id:int}/log", screen(self.log_activity), methods=["POST"]),
            Route("/{entity}/{record_id:int}/set_aside", screen(self.set_aside), methods=["POST"]),
            Route("/{entity}/{record_id:int}/attach", screen(self.attach), methods=["POST"]),
            Route("/{entity}/{record_id:int}/checklist", screen(self.tick), methods=["POST"]),
            Route("/{entity}/{record_id:int}/approvals/{approval}", screen(self.request_approval), methods=["POST"]),
            Route("/{entity}/{record_id:int}/comments", screen(self.comment), methods=["POST"]),
            Route("/approval_task/{record_id:int}/decide", screen(self.decide), methods=["POST"]),
            Route("/approval/{record_id:int}/withdraw", screen(self.withdraw), methods=["POST"]),
        ]

    # -- wrappers --------------------------------------------------------------------------

    def _public(self, handler: Callable[[Request], Awaitable[Response]], *, check: bool = False) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            if check:
                try:
                    form = await request.form()
                    check_csrf(request, str(form.get(CSRF_FIELD, "")))
                except CsrfRefused as refused:
                    return await run_in_threadpool(error_page, self.site, request, None, refused)
            return await handler(request)
        return endpoint

    def _screen(self, handler: Callable[[Request, Actor], Awaitable[Response]]) -> Endpoint:
        site = self.site

        async def endpoint(request: Request) -> Response:
            actor: Actor | None = getattr(request.state, "actor", None)
            if actor is None:
                return self._to_login(request)
            try:
                for key in ("record_id", "user_id"):  # ids are 32-bit columns: a larger one names nothing
                    if not 0 < int(request.path_params.get(key, 1)) < 2**31:
                        raise NotFound(f"{str(request.path_params[key])[:40]} is not an id", field="id")
                if request.method == "POST":
                    submitted = request.headers.get(CSRF_HEADER)
                    if submitted is None and "form" in request.headers.get("content-type", ""):
                        submitted = str((await request.form(max_files=20, max_fields=1000)).get(CSRF_FIELD, ""))
                    check_csrf(request, submitted)
                return await handler(request, actor)
            except (Forbidden, NotFound, UnknownEntity, CsrfRefused) as error:
                if request.headers.get(CSRF_HEADER) is not None:
                    message = error_text(error, site.lang(request), site.model, request.path_params.get("entity")) \
                        if isinstance(error, RecordError) else translate(site.lang(request), "csrf_refused")
                    return JSONResponse({"ok": False, "message": message},
                                        status_code=404 if isinstance(error, (NotFound, UnknownEntity)) else 403)
                return await run_in_threadpool(error_page, site, request, actor, error)
            except RecordError as error:  # e.g. a delete refused because other records link here
                if request.method != "POST":
                    return await run_in_threadpool(error_page, site, request, actor, error)
                site.flash(request, error_text(error, site.lang(request), site.model, request.path_params.get("entity")))
                referer = urlsplit(request.headers.get("referer", "/"))
                return RedirectResponse(accounts.safe_next(referer.path + (f"?{referer.query}" if referer.query
                                                                            else "")), status_code=303)
        return endpoint

    def _to_login(self, request: Request) -> Response:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        expired = "&expired=1" if "crm_session" in request.cookies and not request.session else ""
        if request.method != "GET":
            return RedirectResponse("/login" + expired.replace("&", "?"), status_code=303)
        return RedirectResponse(f"/login?next={quote(here, safe='')}{expired}", status_code=303)

    # -- handlers (each runs its synchronous screen function in the thread pool) -------------

    async def login_page(self, request: Request) -> Response:
        if getattr(request.state, "actor", None) is not None:
            return RedirectResponse(accounts.safe_next(request.query_params.get("next")), status_code=303)
        return await run_in_threadpool(accounts.login_screen, self.site, request)

    async def login_post(self, request: Request) -> Response:
        return await run_in_threadpool(accounts.sign_in, self.site, request, await request.form())

    async def logout(self, request: Request) -> Response:
        everywhere = (await request.form()).get("everywhere") == "1"
        return await run_in_threadpool(accounts.sign_out, self.site, request, everywhere=everywhere)

    async def survey(self, request: Request) -> Response:
        desk = self.site.services.surveys
        if desk is None:
            return await not_found_page(self.site, request)
        return await run_in_threadpool(surveys.survey_page, self.site, desk, request, request.path_params["survey"],
                                       request.path_params["token"], self.site.services.clock.now())

    async def survey_answer(self, request: Request) -> Response:
        desk = self.site.services.surveys
        if desk is None:
            return await not_found_page(self.site, request)
        form = await request.form(max_files=0, max_fields=10)
        return await run_in_threadpool(surveys.survey_answer, self.site, desk, request, request.path_params["survey"],
                                       request.path_params["token"], form, self.site.services.clock.now())

    async def language(self, request: Request) -> Response:
        return accounts.switch_language(self.site, request, await request.form())

    async def home(self, request: Request, actor: Actor) -> Response:
        home = self.site.model.home_dashboard(actor.role)  # the role's dashboard first (blueprint `home:`)
        if home is not None:
            return RedirectResponse(f"/dashboards/{home.name}", status_code=303)
        first = next((link.url for section in self.site.menu(actor, "en", "/") for link in section.links
                      if not link.url.startswith("/dashboards/")), None)
        if first is None:
            return await run_in_threadpool(error_page, self.site, request, actor, Forbidden(
                "your role may read none of the entities", field=None, permission="read", entity=""))
        return RedirectResponse(first, status_code=303)

    async def dashboard(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(dashboards.dashboard_screen, self.site, request, actor,
                                       request.path_params["name"])

    async def export_widget(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(dashboards.export_widget, self.site, request, actor,
                                       request.path_params["name"], request.path_params["widget"],
                                       request.path_params["kind"])

    async def charts_css(self, request: Request) -> Response:
        return dashboards.charts_css_response()

    async def users(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(admin.users_screen, self.site, request, actor)

    async def change_user(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(admin.change_user, self.site, request, actor,
                                       request.path_params["user_id"], form)

    async def revoke_token(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(admin.revoke_token, self.site, request, actor, form)

    async def user(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(admin.user_screen, self.site, request, actor, request.path_params["user_id"])

    async def new_user(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(admin.new_user_screen, self.site, request, actor)

    async def create_user(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(admin.create_user, self.site, request, actor, form)

    async def audit(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(admin.audit_screen, self.site, request, actor)

    async def blueprint(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(admin.blueprint_screen, self.site, request, actor)

    async def outbox(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(admin.outbox_screen, self.site, request, actor)

    async def retry_outbox(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(admin.retry_messages, self.site, request, actor, form)

    # -- inbox, comments, search (engine/runtime/web/screens/collab.py) -------------------------

    async def inbox(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(collab.inbox_screen, self.site, request, actor)

    async def mark_read(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(collab.mark_read, self.site, request, actor, form)

    async def open_notice(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(collab.open_notice, self.site, request, actor, request.path_params["notice_id"])

    async def search(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(collab.search_screen, self.site, request, actor)

    async def comment(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        entity, record_id = request.path_params["entity"], request.path_params["record_id"]
        result = await run_in_threadpool(collab.post_comment, self.site, request, actor, entity, record_id, form)
        if isinstance(result, str):
            return await run_in_threadpool(record_page.record_screen, self.site, request, actor, entity, record_id,
                                           comment_draft=str(form.get("body", "")), comment_error=result, status=422)
        return result

    async def admin_home(self, request: Request) -> Response:
        """/admin is where people type to reach the admin screens: the users screen (which signs
        in or refuses like every admin screen)."""
        return RedirectResponse("/admin/users", status_code=303)

    async def favicon(self, request: Request) -> Response:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})

    async def list(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(lists.list_screen, self.site, request, actor, request.path_params["entity"])

    async def export(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(lists.export_list, self.site, request, actor, request.path_params["entity"],
                                      "csv")

    async def export_xlsx(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(lists.export_list, self.site, request, actor, request.path_params["entity"],
                                      "xlsx")

    async def imports(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(transfers.imports_screen, self.site, request, actor)

    async def upload(self, request: Request, actor: Actor) -> Response:
        return await transfers.upload(self.site, request, actor)

    async def review_import(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(transfers.review, self.site, request, actor, form)

    async def run_import(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(transfers.run, self.site, request, actor, form)

    async def import_page(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(transfers.import_screen, self.site, request, actor,
                                       request.path_params["import_id"])

    async def import_errors(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(transfers.error_file, self.site, request, actor,
                                       request.path_params["import_id"])

    async def board(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(boards.board_screen, self.site, request, actor, request.path_params["entity"])

    async def move(self, request: Request, actor: Actor) -> Response:
        if "form" in request.headers.get("content-type", ""):
            form = await request.form()
            return await run_in_threadpool(boards.move_card_form, self.site, request, actor,
                                           request.path_params["entity"], form)
        body = await request.body()
        return await run_in_threadpool(boards.move_card, self.site, request, actor, request.path_params["entity"],
                                       body)

    async def assign(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(lists.bulk_assign, self.site, request, actor, request.path_params["entity"],
                                       form)

    async def record(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(record_page.record_screen, self.site, request, actor,
                                       request.path_params["entity"], request.path_params["record_id"])

    async def delete(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(record_page.delete_record, self.site, request, actor,
                                       request.path_params["entity"], request.path_params["record_id"], form)

    async def new(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(forms.new_form, self.site, request, actor, request.path_params["entity"])

    async def edit(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(forms.edit_form, self.site, request, actor, request.path_params["entity"],
                                       request.path_params["record_id"])

    async def create(self, request: Request, actor: Actor) -> Response:
        form = await forms.read_form(request, self.site, actor)
        return await run_in_threadpool(forms.save_form, self.site, request, actor, request.path_params["entity"],
                                       None, form)

    async def update(self, request: Request, actor: Actor) -> Response:
        form = await forms.read_form(request, self.site, actor)
        return await run_in_threadpool(forms.save_form, self.site, request, actor, request.path_params["entity"],
                                       request.path_params["record_id"], form)


    # -- the funnel and approvals on the record page (engine/runtime/web/screens/funnels.py) ---------

    async def convert(self, request: Request, actor: Actor) -> Response:
        return await run_in_threadpool(workday.convert, self.site, request, actor, request.path_params["entity"],
                                       request.path_params["record_id"])

    async def log_activity(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        entity, record_id = request.path_params["entity"], request.path_params["record_id"]
        result = await run_in_threadpool(workday.log_activity, self.site, request, actor, entity, record_id, form)
        if isinstance(result, workday.LogPanel):
            return await run_in_threadpool(record_page.record_screen, self.site, request, actor, entity, record_id,
                                           log=result, status=422)
        return result

    async def advance(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(funnels.advance, self.site, request, actor, request.path_params["entity"],
                                       request.path_params["record_id"], form)

    async def set_aside(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(funnels.set_aside, self.site, request, actor, request.path_params["entity"],
                                       request.path_params["record_id"], form)

    async def attach(self, request: Request, actor: Actor) -> Response:
        form = await forms.read_form(request, self.site, actor)
        return await run_in_threadpool(funnels.attach, self.site, request, actor, request.path_params["entity"],
                                       request.path_params["record_id"], form)

    async def tick(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(funnels.tick, self.site, request, actor, request.path_params["entity"],
                                       request.path_params["record_id"], form)

    async def request_approval(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(funnels.request_approval, self.site, request, actor,
                                       request.path_params["entity"], request.path_params["record_id"],
                                       request.path_params["approval"], form)

    async def decide(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(funnels.decide, self.site, request, actor, request.path_params["record_id"],
                                       form)

    async def withdraw(self, request: Request, actor: Actor) -> Response:
        form = await request.form()
        return await run_in_threadpool(funnels.withdraw, self.site, request, actor, request.path_params["record_id"],
                                       form)


async def not_found_page(site: Site, request: Request) -> HTMLResponse:
    actor = getattr(request.state, "actor", None)
    return await run_in_threadpool(error_page, site, request, actor, NotFound(f"no page at {request.url.path}"))
