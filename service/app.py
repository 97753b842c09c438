"""The Hug application: thin routes under ``/v1`` over plain functions, JSON in and out.

The WSGI callable is ``service.app:__hug_wsgi__``, which hug sets on this module when the API
below is created. Route functions carry no return annotations: hug would take one as an output
transform.
"""

from service import errors, health
from service.compat import hug

V1 = "/v1"

api = hug.API(__name__)


@hug.get(f"{V1}/health", output=hug.output_format.json)
def get_health():
    """Liveness: ``{"status": "ok", "version": ...}``."""
    return health.health()


@hug.not_found(output=hug.output_format.json)
def not_found(request):
    """Any path no route serves: 404 in the one error shape (instead of hug's documentation)."""
    return errors.not_found_body(request.method, request.path)
