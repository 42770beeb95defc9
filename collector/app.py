"""The collector's HTTP server, assembled: receivers, the read API, ``/metrics``, the edge.

- `collector.receivers`: the wire formats ingested (OTLP/HTTP protobuf and JSON on
  ``/v1/traces``, Zipkin v2 JSON on ``/api/v2/spans``) as a registry keyed by path and media
  type, and the receive path they share (ingest token, admission, decoding, ingest).
- `collector.edge`: admission, body limits and timeouts, the ingest-token check, request
  counting, and the connection guard served with uvicorn's protocol.
- `collector.readapi`: ``/api/graph``, ``/api/services/NAME``, ``/metrics``, ``/healthz``.
- `collector.errors`: JSON error answers, Starlette's own 404/405 among them.

Errors a client can cause answer with a message saying what was wrong: OTLP errors as a
``google.rpc.Status`` in the request's encoding, everything else as JSON
``{"error": message}``; no response reflects input as HTML, and every response carries
``X-Content-Type-Options: nosniff``. The read API is GET only (405 otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from collector import readapi
from collector.edge import RequestCounter
from collector.errors import http_error_handler
from collector.exposition import IngestCounters
from collector.readapi import ReadApi
from collector.receivers import RECEIVERS, ReceiverApi, ReceiverRegistry
from collector.service import CollectorService


def create_app(
    service: CollectorService, registry: CollectorRegistry, counters: IngestCounters,
    *, receivers: ReceiverRegistry = RECEIVERS,
) -> ASGIApp:
    """The Starlette app for ``service``: a POST route per path of ``receivers`` (as registered
    now), the read API, then other concerns' routes (``service.routes``)."""
    ingest = ReceiverApi(service, counters)
    registry.register(ingest.admission)
    routes = [*ingest.routes(receivers), *ReadApi(service, registry).routes(), *service.routes]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for start in service.on_startup:
            await start()
        try:
            yield
        finally:
            for stop in reversed(service.on_shutdown):
                await stop()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error_handler(receivers.paths())})
    app.state.service = service
    return RequestCounter(app, counters, (*receivers.paths(), *readapi.COUNTED_PATHS))
