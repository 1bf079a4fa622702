"""Prometheus metrics of the UI process, served at /metrics on the UI's own port.

The UI decodes nothing, so it exposes what a dashboard needs from the front: queue depth per Celery queue
(Redis LLEN) and live workers per queue (heartbeats), read at scrape time, plus the process collectors. It uses
a registry of its own, so the worker metrics defined in workers/metrics.py (imported here for the collector)
do not show up empty. Gradio builds its FastAPI app inside launch(); `app_kwargs` hands it the route.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from settings import Settings
from workers.metrics import register_redis_collector

METRICS_PATH = "/metrics"

_registry: CollectorRegistry | None = None


def registry() -> CollectorRegistry:
    """The UI's registry, built on first use (nothing is registered at import)."""
    global _registry
    if _registry is None:
        built = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            built.register(collector)
        register_redis_collector(built)
        _registry = built
    return _registry


def metrics_endpoint(_request: Request) -> Response:
    """GET /metrics; a plain function, so Starlette runs it (and its Redis reads) in a worker thread."""
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)


def app_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for gr.Blocks.launch(app_kwargs=...): the /metrics route when S2S_UI_METRICS is on.

    Routes given to the FastAPI constructor come before the ones Gradio adds, so /metrics is never shadowed.
    """
    if not settings.ui_metrics:
        return {}
    return {"routes": [Route(METRICS_PATH, metrics_endpoint, methods=["GET"])]}
