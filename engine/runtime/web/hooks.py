"""The inbound webhooks route, /hooks/{source}: the raw delivery is logged, then processed by the
intake (engine/runtime/automation/sources.py) in one write; the answer says the outcome."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from engine.runtime.automation.sources import MAX_BODY, PREVIEW_BYTES, DeliveryStatus, Intake, IntakeResult
from engine.runtime.storage.database import Database
from engine.runtime.storage.jsontext import JSONResponse


def webhook_routes(intake: Intake, db: Database) -> list[BaseRoute]:
    """The /hooks/{source} route; answers JSON with the outcome and the delivery id."""
    async def receive(request: Request) -> JSONResponse:
        source = request.path_params["source"]
        headers, query = dict(request.headers), request.scope["query_string"].decode("latin-1")
        body, size = await _read_bounded(request)
        if size > MAX_BODY:  # logged with its size and first bytes, never read whole
            message = f"body larger than {MAX_BODY} bytes"
            delivery_id = await db.run(lambda: intake.log_refused(source, headers, query, body, size,
                                                                  DeliveryStatus.REJECTED, message), write=True)
            return JSONResponse({"outcome": "rejected", "delivery_id": delivery_id,
                                 "message": f"{message} ({size} bytes); send a smaller payload"}, status_code=413)

        def log_and_process() -> IntakeResult:
            """The raw delivery is written on its own first: it is kept even if processing it fails."""
            delivery_id = intake.log_delivery(source, headers, query, body)
            return intake.process_logged(source, delivery_id, headers, dict(request.query_params), body)
        result = await db.run(log_and_process, write=True)
        return JSONResponse(result.body(), status_code=result.status)

    return [Route("/hooks/{source}", receive, methods=["POST"])]


async def _read_bounded(request: Request) -> tuple[bytes, int]:
    """The body, or — once it passes MAX_BODY — its first PREVIEW_BYTES and its full size (the
    rest is read and dropped, so a huge body never sits in memory)."""
    kept = bytearray()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= MAX_BODY:
            kept += chunk
        elif len(kept) < PREVIEW_BYTES:
            kept += chunk[:PREVIEW_BYTES - len(kept)]
        else:
            del kept[PREVIEW_BYTES:]
    return bytes(kept), size
