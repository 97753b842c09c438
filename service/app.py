"""The Hug application: thin routes under ``/v1`` over the plain functions of ``service``.

The WSGI callable is ``service.app:__hug_wsgi__``; `rul serve` runs it under gunicorn and calls
`start()` in each worker after it forks; any other WSGI server starts the service lazily, from
the environment (`service.settings`), at the first request. Routes read the raw body
themselves (``parse_body=False``) so that size limits hold before a body is read and every
error has the one shape of `service.errors`; route functions carry no return annotations, which
hug would take as output transforms.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from gunicorn.http.errors import ParseException

from rul.errors import RulError
from service import alerts, assets, auth, health, metrics, openapi, predict, report
from service.compat import falcon, hug
from service.errors import ApiError, bad_request, error_body, not_found_body, too_large
from service.models import ModelRegistry, list_models, model_card
from service.requests import NPY_CONTENT_TYPE, check_unknown_query, query_text
from service.settings import Settings, from_env
from service.storage import StorageError, Store
from service.timeouts import deadline

log = logging.getLogger("rul.service")

V1 = "/v1"


@dataclass
class Service:
    """What the routes work with, made once per worker process."""

    settings: Settings
    registry: ModelRegistry
    store: Store
    dispatcher: alerts.Dispatcher | None = None


_service: Service | None = None
_lock = threading.Lock()


def start(settings: Settings | None = None) -> Service:
    """Load the models, open the database and start webhook delivery (once per process)."""
    global _service
    with _lock:
        if _service is None:
            settings = settings or from_env()
            registry = ModelRegistry.load(settings.model, settings.models_dir,
                                          threads=settings.threads_per_worker)
            store = Store(settings.db)
            store.initialise()
            service = Service(settings, registry, store)
            if settings.webhook_urls:
                service.dispatcher = alerts.Dispatcher(store, settings, metrics.observe_delivery)
                service.dispatcher.start()
            _service = service
        return _service


def stop() -> None:
    global _service
    with _lock:
        if _service is not None and _service.dispatcher is not None:
            _service.dispatcher.stop()
        _service = None


def service() -> Service:
    return _service if _service is not None else start()


# --------------------------------------------------------------------------- plumbing


@dataclass(frozen=True)
class Body:
    """A non-JSON answer (CSV, HTML, metrics text) with its content type."""

    data: bytes
    content_type: str


@hug.format.content_type("application/json")
def output(data: Any, request: Any = None, response: Any = None) -> bytes:
    """Every answer: JSON through orjson, or a `Body` as it is."""
    if isinstance(data, Body):
        response.content_type = data.content_type
        return data.data
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)


def read_body(request: Any, settings: Settings) -> bytes:
    """The request body, refused with 413 beyond RUL_MAX_BODY_BYTES before it is read, with
    408 when it has not arrived within RUL_READ_TIMEOUT and 400 when it is cut off or badly
    chunked."""
    limit = settings.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(f"the request body is {length} bytes; at most {limit} "
                        "(RUL_MAX_BODY_BYTES)", "body")
    try:
        with deadline(settings.read_timeout):
            if length is not None:
                data = request.bounded_stream.read()
            else:
                data = request.stream.read(limit + 1)  # chunked: no length to check up front
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within "
                       f"{settings.read_timeout:g} s (RUL_READ_TIMEOUT)", "body") from None
    except (OSError, ParseException) as exc:  # gunicorn: cut off, or a malformed chunk
        raise bad_request(f"the request body is cut off or malformed ({type(exc).__name__}: "
                          f"{exc})", "body") from None
    if length is not None and len(data) < length:
        raise bad_request(f"the request body ended after {len(data)} of its {length} bytes "
                          "(Content-Length)", "body")
    if len(data) > limit:
        raise too_large(f"the request body is over {limit} bytes (RUL_MAX_BODY_BYTES)", "body")
    return data


class ServiceMiddleware:
    """Auth and metrics around every request (falcon middleware)."""

    def process_request(self, request: Any, response: Any) -> None:
        request.context.started = time.perf_counter()

    def process_resource(self, request: Any, response: Any, resource: Any, params: Any) -> None:
        # After routing (paths no route serves answer 404 with or without a key), before
        # the route runs.
        if auth.needs_key(request.path):
            auth.check_key(request.get_header(auth.HEADER), service().settings.api_keys)

    def process_response(self, request: Any, response: Any, resource: Any,
                         succeeded: bool) -> None:
        started = getattr(request.context, "started", None)
        if started is not None:
            metrics.observe_request(request.method, request.uri_template,
                                    int(response.status[:3]), time.perf_counter() - started)


def _answer_error(response: Any, status: int, body: dict[str, Any],
                  headers: dict[str, str] | None = None) -> None:
    response.status = falcon.get_http_status(status)
    response.content_type = "application/json"
    response.data = orjson.dumps(body)
    for name, value in (headers or {}).items():
        response.set_header(name, value)


def _on_api_error(error: ApiError, request: Any, response: Any, params: Any) -> None:
    _answer_error(response, error.status, error.body(), error.headers)


def _on_http_error(error: falcon.HTTPError, request: Any, response: Any, params: Any) -> None:
    """falcon's own errors (405, a bad Content-Length, ...) in the one shape."""
    status = int(error.status[:3])
    message = error.description or error.title
    if status == 405:
        message = f"{request.method} is not allowed on {request.path}"
    headers = dict(error.headers or {})
    _answer_error(response, status, error_body(status, message), headers)


def _on_storage_error(error: Exception, request: Any, response: Any, params: Any) -> None:
    log.error("storage unavailable for %s %s: %s", request.method, request.path, error)
    _answer_error(response, 503, error_body(503, f"the database is unavailable ({error}); "
                                            "retry shortly"), {"Retry-After": "1"})


def _on_rul_error(error: RulError, request: Any, response: Any, params: Any) -> None:
    # A check of the data layer below the request parsing: still the client's input.
    _answer_error(response, 400, error_body(400, str(error)))


def _on_unexpected(error: Exception, request: Any, response: Any, params: Any) -> None:
    log.exception("unexpected error in %s %s", request.method, request.path)
    _answer_error(response, 500, error_body(500, "internal error; the request was not applied "
                                            "(see the server log)"))


def build_wsgi() -> falcon.API:
    """The falcon app hug builds, with the service's middleware and error handlers."""
    api.http.add_middleware(ServiceMiddleware())
    wsgi = api.http.server()
    # `?asset_id=a,b` is one asset id with a comma in it (ids may hold commas), not two.
    wsgi.req_options.auto_parse_qs_csv = False
    # falcon runs the handler of the most specific matching type, newest first.
    wsgi.add_error_handler(Exception, _on_unexpected)
    wsgi.add_error_handler(RulError, _on_rul_error)
    wsgi.add_error_handler(StorageError, _on_storage_error)
    wsgi.add_error_handler(sqlite3.OperationalError, _on_storage_error)
    wsgi.add_error_handler(falcon.HTTPError, _on_http_error)
    wsgi.add_error_handler(ApiError, _on_api_error)
    return wsgi


# --------------------------------------------------------------------------- routes

api = hug.API(__name__)


def read(url: str) -> Any:
    """A read-only route: GET, and HEAD for probes that only look at the status (falcon sends
    HEAD answers without their body)."""
    return hug.http(url, accept=("GET", "HEAD"), output=output)


@read(f"{V1}/health")
def get_health():
    """Liveness: the process answers (no key needed)."""
    return health.health()


@read(f"{V1}/ready")
def get_ready(response):
    """Readiness: models loaded and the database writable; 503 otherwise."""
    svc = service()
    body = health.readiness(svc.registry, svc.store)
    if body["status"] != "ready":
        response.status = falcon.HTTP_503
    return body


@read(f"{V1}/models")
def get_models():
    return list_models(service().registry)


@read(f"{V1}/models/{{name}}")
def get_model(name):
    return model_card(service().registry, name)


@hug.post(f"{V1}/predict", output=output, parse_body=False)
def post_predict(request):
    svc = service()
    check_unknown_query(request.params, [])
    return predict.predict_one(svc.registry, read_body(request, svc.settings),
                               max_rows=svc.settings.max_rows, observe=metrics.observe_inference)


@hug.post(f"{V1}/predict/batch", output=output, parse_body=False)
def post_predict_batch(request):
    svc = service()
    data = read_body(request, svc.settings)
    if (request.content_type or "").split(";")[0].strip().lower() == NPY_CONTENT_TYPE:
        check_unknown_query(request.params, ["model"])
        return predict.predict_npy(svc.registry, data, query_text(request.params, "model"),
                                   max_assets=svc.settings.max_assets,
                                   observe=metrics.observe_inference)
    check_unknown_query(request.params, [])
    return predict.predict_batch(svc.registry, data, max_assets=svc.settings.max_assets,
                                 max_rows=svc.settings.max_rows,
                                 observe=metrics.observe_inference)


@read(f"{V1}/assets")
def get_assets(request):
    svc = service()
    return assets.list_assets(svc.store, svc.settings, request.params)


@read(f"{V1}/assets/{{asset_id}}")
def get_asset(asset_id, request):
    svc = service()
    check_unknown_query(request.params, [])
    return assets.get_asset(svc.store, svc.settings, asset_id)


@hug.put(f"{V1}/assets/{{asset_id}}", output=output, parse_body=False)
def put_asset(asset_id, request):
    svc = service()
    check_unknown_query(request.params, [])
    return assets.configure_asset(svc.store, svc.registry, svc.settings, asset_id,
                                  read_body(request, svc.settings))


@hug.post(f"{V1}/assets/{{asset_id}}/readings", output=output, parse_body=False)
def post_readings(asset_id, request):
    svc = service()
    answer = assets.ingest_readings(svc.store, svc.registry, svc.settings, asset_id,
                                    read_body(request, svc.settings),
                                    request.params, observe=metrics.observe_inference)
    metrics.READINGS.inc(answer["stored"])
    if answer["alert"] is not None:
        metrics.ALERTS_RAISED.inc()
    return answer


@read(f"{V1}/assets/{{asset_id}}/history")
def get_history(asset_id, request):
    svc = service()
    return assets.history(svc.store, svc.settings, asset_id, request.params)


@read(f"{V1}/assets/{{asset_id}}/forecast")
def get_forecast(asset_id, request):
    svc = service()
    return assets.latest(svc.store, svc.registry, asset_id, request.params)


@read(f"{V1}/alerts")
def get_alerts(request):
    svc = service()
    return alerts.recent(svc.store, svc.settings, request.params)


@read(f"{V1}/report")
def get_report(request):
    svc = service()
    content_type, body = report.fleet_report(svc.store, svc.settings, request.params)
    return body if isinstance(body, dict) else Body(body, content_type)


@read(f"{V1}/openapi.json")
def get_openapi():
    return openapi.document()


@read("/metrics")
def get_metrics():
    return Body(metrics.exposition(), metrics.CONTENT_TYPE)


@hug.not_found(output=output)
def not_found(request, response):
    """Any path no route serves: 404 in the one error shape (instead of hug's documentation)."""
    response.status = falcon.HTTP_404
    return not_found_body(request.method, request.path)


__hug_wsgi__ = build_wsgi()
