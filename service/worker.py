"""gunicorn's sync worker, answering requests it cannot parse in the API's one JSON error shape.

A malformed request line, bad headers, a path over gunicorn's limit or a broken chunk never
reach the app: gunicorn answers them itself, by default with an HTML page. This worker gives the
same status as gunicorn would, with the body every other error of the API has. It also bounds
how long the request line and headers may take to arrive (RUL_READ_TIMEOUT, as for the body):
a sync worker waits on one client at a time, and one that stalled mid-headers would otherwise
hold it until gunicorn's worker timeout killed it, and answer 500.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import orjson
from gunicorn.http import errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.sync import SyncWorker

from service.errors import error_body
from service.timeouts import cancel_deadline, deadline


class HeadersTimeout(errors.ParseException):
    """The request line and headers were not all in within the read timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds

    def __str__(self) -> str:
        return (f"the request line and headers did not arrive within {self.seconds:g} s "
                "(RUL_READ_TIMEOUT)")


# gunicorn's own status for the parse errors that are not a plain 400 (getattr: not every
# gunicorn version has every class).
_STATUS = {getattr(errors, name): status for name, status in (
    ("LimitRequestLine", 414), ("LimitRequestHeaders", 431), ("ForbiddenProxyRequest", 403),
    ("UnsupportedTransferCoding", 501), ("ExpectationFailed", 417),
) if hasattr(errors, name)} | {HeadersTimeout: 408}
# Parse errors that are the server's fault, not the request's: gunicorn's 500 handling.
_NOT_THE_CLIENT = tuple(getattr(errors, name) for name in (
    "InvalidResponseHeader", "InvalidResponseHeaderName", "ConfigurationProblem",
) if hasattr(errors, name))


def error_status(exc: BaseException) -> int | None:
    """The status for a request gunicorn could not parse; None for any other error."""
    if not isinstance(exc, errors.ParseException) or isinstance(exc, _NOT_THE_CLIENT):
        return None
    return next((status for cls, status in _STATUS.items() if isinstance(exc, cls)), 400)


class JsonErrorWorker(SyncWorker):
    read_timeout: float  # set by init_process, from RUL_READ_TIMEOUT

    def init_process(self) -> None:
        from service.settings import from_env

        self.read_timeout = from_env().read_timeout  # checked by the master before forking
        super().init_process()  # runs the worker's loop; never returns

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        seconds = self.read_timeout
        with deadline(seconds, lambda: HeadersTimeout(seconds)):
            super().handle(listener, client, addr)

    def handle_request(self, listener: Any, req: Any, client: Any, addr: Any) -> None:
        cancel_deadline()  # the headers are in; the app bounds the body (service.app.read_body)
        super().handle_request(listener, req, client, addr)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status = error_status(exc)
        if status is None:
            super().handle_error(req, client, addr, exc)
            return
        addr = addr or ("", -1)  # a unix socket has none
        self.log.warning("Invalid request from ip=%s: %s", addr[0], exc)
        body = orjson.dumps(error_body(status, f"malformed HTTP request: {exc}"))
        line = f"{status} {HTTPStatus(status).phrase}"
        head = (f"HTTP/1.1 {line}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        if req is None and isinstance(exc, (errors.InvalidHeader, errors.InvalidHeaderName)):
            req = getattr(exc, "req", None)  # the request parsed up to its bad header
        if req is not None:
            self._access_line(req, client, addr, line, len(body))
        with contextlib.suppress(OSError):  # a client that is gone has nothing to be told
            client.sendall(head.encode("latin-1") + body)

    def _access_line(self, req: Any, client: Any, addr: Any, line: str, length: int) -> None:
        """The access log's line for this answer, as gunicorn writes one for its own."""
        try:
            environ = default_environ(req, client, self.cfg)
            environ.update(REMOTE_ADDR=addr[0], REMOTE_PORT=str(addr[1]))
            answer = Response(req, client, self.cfg)
            answer.status, answer.response_length = line, length
            self.log.access(answer, req, environ, timedelta(0))
        except Exception:  # a log line is never worth the worker
            self.log.exception("could not log the answer to an invalid request")
