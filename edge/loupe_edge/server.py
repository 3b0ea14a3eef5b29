"""``loupe-edge serve``: the line's current deployment over HTTP (Starlette on uvicorn).

``POST /v1/inspect`` (the image as the body, or a multipart form with one file) returns the
verdict as JSON; ``GET /v1/health`` what runs; ``GET /metrics`` Prometheus text. The model
is swapped between requests when the line's pointer changes (:class:`Inspector`).
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from loupe_edge.runtime import BadImageError, Inspector

#: Largest request body taken (bytes).
MAX_BODY = 20 * 1024 * 1024
#: An oversized body up to this many times the limit is read and dropped before the 413,
#: so that a client which sends it all reads the reason instead of a broken pipe.
DRAIN_FACTOR = 16


class Metrics:
    """The counters of one server, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("loupe_edge_requests", "Inspect requests by outcome",
                                ["status"], registry=self.registry)
        self.latency = Histogram("loupe_edge_latency_seconds", "Time to a verdict",
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
        self.decisions = Counter("loupe_edge_decisions", "Verdicts by decision and label",
                                 ["decision", "label"], registry=self.registry)
        self.drift = Gauge("loupe_edge_drift_statistic", "Largest shift of an image "
                           "statistic's mean over the window, in reference standard "
                           "deviations", registry=self.registry)
        self.drifted = Gauge("loupe_edge_drift_flag", "1 when the window drifted",
                             registry=self.registry)
        self.deployment = Gauge("loupe_edge_deployment", "1 for the deployment serving",
                                ["deployment_id", "version"], registry=self.registry)
        self.swaps = Gauge("loupe_edge_swaps", "Deployments swapped in since the start",
                           registry=self.registry)
        self.shadow = Gauge("loupe_edge_shadow_agreement", "Share of images on which the "
                            "shadow deployment gave the same decision",
                            ["deployment_id"], registry=self.registry)


def create_app(inspector: Inspector, *, token: str | None = None,
               max_body: int = MAX_BODY) -> Starlette:
    """The ASGI application around ``inspector`` (whose pointer watching the caller
    starts). With ``token``, every request needs ``Authorization: Bearer <token>``."""
    metrics = Metrics()
    started = time.time()

    def allowed(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else ""
        return hmac.compare_digest(given.encode(), token.encode())

    def refuse(status: int, reason: str) -> JSONResponse:
        metrics.requests.labels(status=str(status)).inc()
        return JSONResponse({"error": reason}, status_code=status)

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        declared_size = int(declared) if declared is not None and declared.isdigit() else 0
        if declared_size > DRAIN_FACTOR * max_body:
            raise _TooLargeError(declared_size)  # too much even to read and drop
        chunks, size, too_large = [], 0, declared_size > max_body
        async for chunk in request.stream():
            size += len(chunk)
            too_large = too_large or size > max_body
            if too_large:  # read and drop the rest, so the client reads the 413, not a
                if size > DRAIN_FACTOR * max_body:  # broken pipe
                    break
                continue
            chunks.append(chunk)
        if too_large:
            raise _TooLargeError(max(size, declared_size))
        data = b"".join(chunks)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            return await _multipart_file(data, request.headers)
        return data

    async def inspect(request: Request) -> Response:
        if not allowed(request):
            return refuse(401, "a token is needed: Authorization: Bearer <token>")
        try:
            data = await body_of(request)
        except _TooLargeError as error:
            return refuse(413, f"the body has {error.size:,} bytes or more; at most "
                               f"{max_body:,} are taken")
        except BadImageError as error:
            return refuse(400, str(error))
        start = time.perf_counter()
        try:
            verdict = await run_in_threadpool(inspector.inspect_bytes, data)
        except BadImageError as error:
            return refuse(400, str(error))
        except Exception as error:  # never die on one request
            return refuse(500, f"{type(error).__name__}: {error}")
        metrics.latency.observe(time.perf_counter() - start)
        metrics.requests.labels(status="200").inc()
        metrics.decisions.labels(decision=str(verdict.get("decision")),
                                 label=str(verdict.get("label"))).inc()
        return JSONResponse(verdict)

    def health(request: Request) -> Response:
        if not allowed(request):
            return refuse(401, "a token is needed: Authorization: Bearer <token>")
        deployment = inspector.current.deployment
        return JSONResponse({
            "status": "ok", "line": inspector.line, "deployment_id": deployment.deployment_id,
            "version": deployment.version, "task": deployment.task,
            "classes": deployment.classes, "swaps": inspector.swaps,
            "drift": {"statistic": _number(inspector.drift.statistic),
                      "drifted": inspector.drift.drifted, "moved": inspector.drift.moved(),
                      "window": len(inspector.drift.values)},
            "shadow": None if inspector.challenger is None else {
                "deployment_id": inspector.challenger.deployment.deployment_id,
                "version": inspector.challenger.deployment.version,
                "images": inspector.shadow_seen,
                "agreement": _number(inspector.shadow_agreement)},
            "events": list(inspector.events)[-5:], "uptime_s": round(time.time() - started)})

    def prometheus(request: Request) -> Response:
        if not allowed(request):
            return refuse(401, "a token is needed: Authorization: Bearer <token>")
        deployment = inspector.current.deployment
        metrics.deployment.clear()
        metrics.deployment.labels(deployment_id=deployment.deployment_id,
                                  version=deployment.version).set(1)
        statistic = inspector.drift.statistic
        metrics.drift.set(statistic if statistic == statistic else 0.0)
        metrics.drifted.set(1 if inspector.drift.drifted else 0)
        metrics.swaps.set(inspector.swaps)
        if inspector.challenger is not None and inspector.shadow_seen:
            metrics.shadow.labels(
                deployment_id=inspector.challenger.deployment.deployment_id).set(
                inspector.shadow_agreement)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/v1/inspect", inspect, methods=["POST"]),
                             Route("/v1/health", health), Route("/metrics", prometheus)])


class _TooLargeError(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


async def _multipart_file(data: bytes, headers: Any) -> bytes:
    """The first file of a multipart form (parsed by python-multipart, via Starlette)."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartParser

    async def stream():
        yield data

    try:
        form = await MultiPartParser(headers, stream()).parse()
    except Exception as error:  # a malformed form
        raise BadImageError(f"the multipart form is malformed ({error})") from None
    for value in form.values():
        if isinstance(value, UploadFile):
            return await value.read()
    raise BadImageError("the multipart form holds no file: send the image as a file field")


def _number(value: float) -> float | None:
    return None if value != value else round(value, 4)


__all__ = ["MAX_BODY", "Metrics", "create_app"]
