"""The inbound webhooks route, /hooks/{source}: the raw delivery is logged, then processed by the
intake (engine/runtime/automation/sources.py) in one write; the answer says the outcome."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from engine.runtime.automation.sources import MAX_BODY, Intake, IntakeResult
from engine.runtime.storage.database import Database
from engine.runtime.storage.jsontext import JSONResponse


def webhook_routes(intake: Intake, db: Database) -> list[BaseRoute]:
    """The /hooks/{source} route; answers JSON with the outcome and the delivery id."""
    async def receive(request: Request) -> JSONResponse:
        source = request.path_params["source"]
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"outcome": "rejected", "message": f"body larger than {MAX_BODY} bytes"},
                                status_code=413)
        headers, query = dict(request.headers), request.scope["query_string"].decode("latin-1")

        def log_and_process() -> IntakeResult:
            """The raw delivery is written on its own first: it is kept even if processing it fails."""
            delivery_id = intake.log_delivery(source, headers, query, body)
            return intake.process(source, delivery_id, headers, dict(request.query_params), body)
        result = await db.run(log_and_process, write=True)
        return JSONResponse(result.body(), status_code=result.status)

    return [Route("/hooks/{source}", receive, methods=["POST"])]
