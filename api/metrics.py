"""Prometheus metrics: campaign gauges and counters read from the database at scrape time (so
they agree across API replicas and Celery workers), and an HTTP request latency histogram."""
from __future__ import annotations

import logging
import time
from http import HTTPStatus

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from evoforge.db.models import Campaign

log = logging.getLogger(__name__)
STATUSES = ("queued", "running", "paused", "completed", "cancelled", "failed")
# Label values come from closed sets, whatever a client sends: a junk method (any token is a
# valid HTTP method) or path must not add a time series, or /metrics grows without bound.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
STATUS_CODES = frozenset(str(s.value) for s in HTTPStatus)


class CampaignCollector:
    def __init__(self, sessions):
        self.sessions = sessions

    def collect(self):
        try:
            with self.sessions() as s:
                by_status = dict(s.execute(select(Campaign.status, func.count()).group_by(Campaign.status)).all())
                totals = s.execute(select(
                    func.coalesce(func.sum(Campaign.evaluations), 0),
                    func.coalesce(func.sum(Campaign.cache_hits), 0),
                    func.coalesce(func.sum(Campaign.failures), 0),
                    func.coalesce(func.sum(Campaign.sandbox_runs), 0),
                    func.coalesce(func.sum(Campaign.tokens), 0),
                    func.coalesce(func.sum(Campaign.cost_usd), 0.0))).one()
        except Exception:
            log.exception("metrics: database not readable")
            return
        g = GaugeMetricFamily("evoforge_campaigns", "Campaigns by status.", labels=["status"])
        for status in sorted(set(STATUSES) | set(by_status)):
            g.add_metric([status], by_status.get(status, 0))
        yield g
        names = [("evoforge_evaluations", "Evaluations committed (cache hits included)."),
                 ("evoforge_cache_hits", "Evaluations answered by the code or functional cache."),
                 ("evoforge_failures", "Evaluations that failed (error, timeout, memory, ...)."),
                 ("evoforge_sandbox_runs", "Candidate runs in a sandbox."),
                 ("evoforge_tokens", "LLM tokens used."),
                 ("evoforge_cost_usd", "LLM cost in USD.")]
        for (name, doc), value in zip(names, totals):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(value))
            yield c


class Metrics:
    def __init__(self, sessions):
        self.registry = CollectorRegistry()
        self.registry.register(CampaignCollector(sessions))
        self.latency = Histogram("evoforge_http_request_duration_seconds",
                                 "HTTP request latency (until the response headers are sent).",
                                 ["method", "route", "status"], registry=self.registry,
                                 buckets=(.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))


class LatencyMiddleware:
    """Pure ASGI (streams pass through untouched); labels by route template, not raw path, and
    folds unknown methods and status codes into "other" (unmatched paths are "unmatched")."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}

        async def _send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                route = scope.get("route")
                path = getattr(route, "path", None)
                if path is None:
                    path = "unmatched"
                elif scope["path"].startswith("/api/v1") and not path.startswith("/api/v1"):
                    path = "/api/v1" + path  # routers keep their own paths; label the full one
                method = scope["method"] if scope["method"] in METHODS else "other"
                code = str(status["code"])
                code = code if code in STATUS_CODES else "other"
                self.metrics.latency.labels(method, path, code).observe(time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, _send)
